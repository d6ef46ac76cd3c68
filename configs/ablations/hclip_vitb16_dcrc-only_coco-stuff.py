# Ablation, Table 3, row 4: DCRC only (blocks frozen at I / 0, relation maps trained).
# Paper (ViT-B/16, 0.01M parameters), mIoU: A-847 | PC-459 | A-150 | PC-59 | PAS-20 | PAS-20b
#                                           7.6 | 10.9 | 26.8 | 53.6 | 92.7 | 74.5
# Ours: 5,288 trainable (f3, f4, alpha);
# the counts are explained in docs/param_report.md.
# Everything else as configs/hclip_vitb16_coco-stuff.py.
#
#   bash tools/dist_train.sh configs/ablations/hclip_vitb16_dcrc-only_coco-stuff.py 4
# Evaluate (the same knob on a benchmark config):
#   bash tools/dist_test.sh configs/hclip_vitb16_ade847.py CKPT 4 \
#       --cfg-options model.backbone.adapter.train=dcrc_only
_base_ = ['../hclip_vitb16_coco-stuff.py']
model = dict(backbone=dict(adapter=dict(train='dcrc_only')))

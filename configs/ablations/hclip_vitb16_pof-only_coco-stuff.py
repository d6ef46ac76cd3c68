# Ablation, Table 3, row 3: POF only (DCRC off).
# Paper (ViT-B/16, 5.62M parameters), mIoU: A-847 | PC-459 | A-150 | PC-59 | PAS-20 | PAS-20b
#                                           12.3 | 19.0 | 31.6 | 56.4 | 94.6 | 76.3
# Ours: 7,864,320 trainable (6,279,168 effective);
# the counts are explained in docs/param_report.md.
# Everything else as configs/hclip_vitb16_coco-stuff.py.
#
#   bash tools/dist_train.sh configs/ablations/hclip_vitb16_pof-only_coco-stuff.py 4
# Evaluate (the same knob on a benchmark config):
#   bash tools/dist_test.sh configs/hclip_vitb16_ade847.py CKPT 4 \
#       --cfg-options model.backbone.adapter.dcrc=off
_base_ = ['../hclip_vitb16_coco-stuff.py']
model = dict(backbone=dict(adapter=dict(dcrc='off')))

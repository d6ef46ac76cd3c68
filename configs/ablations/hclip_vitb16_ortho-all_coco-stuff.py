# Ablation, Table 4b, "with": both towers orthogonal (Cayley blocks everywhere).
# Paper (ViT-B/16, 3.76M parameters), mIoU: A-847 | PC-459 | A-150 | PC-59 | PAS-20 | PAS-20b
#                                           12.2 | 19.1 | 31.4 | 57.1 | 94.3 | 76.8
# Ours: 7,869,608 trainable (3,906,728 effective);
# the counts are explained in docs/param_report.md.
# Everything else as configs/hclip_vitb16_coco-stuff.py.
#
#   bash tools/dist_train.sh configs/ablations/hclip_vitb16_ortho-all_coco-stuff.py 4
# Evaluate (the same knob on a benchmark config):
#   bash tools/dist_test.sh configs/hclip_vitb16_ade847.py CKPT 4 \
#       --cfg-options model.backbone.adapter.orthogonal=all
_base_ = ['../hclip_vitb16_coco-stuff.py']
model = dict(backbone=dict(adapter=dict(orthogonal='all')))

# Ablation, Table 4b, "w/o": no orthogonality constraint (both towers free).
# Paper (ViT-B/16, 7.51M parameters), mIoU: A-847 | PC-459 | A-150 | PC-59 | PAS-20 | PAS-20b
#                                           11.9 | 18.5 | 32.2 | 57.5 | 95.3 | 76.9
# Ours: 7,869,608 trainable (7,869,608 effective);
# the counts are explained in docs/param_report.md.
# Everything else as configs/hclip_vitb16_coco-stuff.py.
#
#   bash tools/dist_train.sh configs/ablations/hclip_vitb16_ortho-none_coco-stuff.py 4
# Evaluate (the same knob on a benchmark config):
#   bash tools/dist_test.sh configs/hclip_vitb16_ade847.py CKPT 4 \
#       --cfg-options model.backbone.adapter.orthogonal=none
_base_ = ['../hclip_vitb16_coco-stuff.py']
model = dict(backbone=dict(adapter=dict(orthogonal='none')))

# Ablation, Table 3, row 1 ("Freeze"): CLIP frozen, no adapter.
# Paper (ViT-B/16, 0M parameters), mIoU: A-847 | PC-459 | A-150 | PC-59 | PAS-20 | PAS-20b
#                                        4.4 | 6.6 | 24.8 | 49.4 | 92.5 | 71.9
# Ours: no trainable CLIP parameter (only the decode head trains).
# Everything else as configs/hclip_vitb16_coco-stuff.py.
#
#   bash tools/dist_train.sh configs/ablations/hclip_vitb16_frozen_coco-stuff.py 4
# Evaluate (the same knob on a benchmark config):
#   bash tools/dist_test.sh configs/hclip_vitb16_ade847.py CKPT 4 \
#       --cfg-options model.backbone.adapter=None
_base_ = ['../hclip_vitb16_coco-stuff.py']
model = dict(backbone=dict(adapter=None))

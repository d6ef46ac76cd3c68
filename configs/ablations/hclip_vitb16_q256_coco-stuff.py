# Ablation, Table 4a: block size q = 256.
# Paper (ViT-B/16, 22.52M parameters), mIoU: A-847 | PC-459 | A-150 | PC-59 | PAS-20 | PAS-20b
#                                            12.4 | 19.2 | 32.7 | 57.6 | 95.4 | 77.9
# Ours: 15,733,538 trainable (12,575,522 effective);
# the counts are explained in docs/param_report.md.
# Everything else as configs/hclip_vitb16_coco-stuff.py.
#
#   bash tools/dist_train.sh configs/ablations/hclip_vitb16_q256_coco-stuff.py 4
# Evaluate (the same knob on a benchmark config):
#   bash tools/dist_test.sh configs/hclip_vitb16_ade847.py CKPT 4 \
#       --cfg-options model.backbone.adapter.block_size=256
_base_ = ['../hclip_vitb16_coco-stuff.py']
model = dict(backbone=dict(adapter=dict(block_size=256)))

# Ablation, Table 4a: block size q = 128 = the main config.
# Paper (ViT-B/16, 5.63M parameters), mIoU: A-847 | PC-459 | A-150 | PC-59 | PAS-20 | PAS-20b
#                                           12.4 | 19.3 | 32.4 | 57.9 | 95.2 | 78.2
# Ours: 7,869,608 trainable (6,284,456 effective);
# the counts are explained in docs/param_report.md.
# Everything else as configs/hclip_vitb16_coco-stuff.py.
#
#   bash tools/dist_train.sh configs/ablations/hclip_vitb16_q128_coco-stuff.py 4
# Evaluate with the benchmark configs as they are, e.g.
#   bash tools/dist_test.sh configs/hclip_vitb16_ade847.py CKPT 4
_base_ = ['../hclip_vitb16_coco-stuff.py']
model = dict(backbone=dict(adapter=dict(block_size=128)))  # = parent

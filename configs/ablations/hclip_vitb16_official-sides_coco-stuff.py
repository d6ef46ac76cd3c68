# Ablation, not in the paper: the sides of the authors' released code (q, k, v input side W·B,
# out_proj output side B·W) instead of the paper's input side everywhere.
# No paper number.
# Ours: 7,869,608 trainable (6,284,456 effective);
# the counts are explained in docs/param_report.md.
# Everything else as configs/hclip_vitb16_coco-stuff.py.
#
#   bash tools/dist_train.sh configs/ablations/hclip_vitb16_official-sides_coco-stuff.py 4
# Evaluate (the same knob on a benchmark config):
#   bash tools/dist_test.sh configs/hclip_vitb16_ade847.py CKPT 4 \
#       --cfg-options model.backbone.adapter.sides=official
_base_ = ['../hclip_vitb16_coco-stuff.py']
model = dict(backbone=dict(adapter=dict(sides='official')))

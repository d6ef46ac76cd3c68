# Ablation, not in the paper's tables: the linear DCRC of Eq. 16 (identity-initialised S3, S4,
# no nonlinearity, no alpha) instead of the 2-layer MLPs of Eq. 17.
# No paper number.
# Ours: 7,866,724 trainable (6,281,572 effective);
# the counts are explained in docs/param_report.md.
# Everything else as configs/hclip_vitb16_coco-stuff.py.
#
#   bash tools/dist_train.sh configs/ablations/hclip_vitb16_dcrc-linear_coco-stuff.py 4
# Evaluate (the same knob on a benchmark config):
#   bash tools/dist_test.sh configs/hclip_vitb16_ade847.py CKPT 4 \
#       --cfg-options model.backbone.adapter.dcrc=linear
_base_ = ['../hclip_vitb16_coco-stuff.py']
model = dict(backbone=dict(adapter=dict(dcrc='linear')))

# Quickstart baseline: the pretrained tiny CLIP frozen, only the cost-aggregation head trains
# (the paper's Table 3 "Freeze" row at toy scale). Everything else as hclip_tiny_shapes.py.
#   python tools/train.py configs/quickstart/frozen_tiny_shapes.py
_base_ = ['./hclip_tiny_shapes.py']
model = dict(backbone=dict(adapter=None))

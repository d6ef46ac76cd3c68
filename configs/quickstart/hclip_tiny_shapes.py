# Quickstart: the real H-CLIP model (backbone + adapter, text neck, cost-aggregation head,
# segmentor, hooks, IoU metric) at toy size on the embedded shapes dataset, CPU-only, with a
# tiny CLIP pretrained on captioned shape scenes (it knows the unseen names' words together).
#   python tools/quickstart.py           (or: bash tools/quickstart.sh)
#   python tools/train.py configs/quickstart/hclip_tiny_shapes.py
# Train vocabulary: background + 8 seen "<colour> <shape>" names; evaluation vocabulary adds
# 4 unseen combinations of seen words. Data is generated on first use (deterministic).
# The same setting with the CLIP frozen / with all attention weights fine-tuned:
# frozen_tiny_shapes.py, attn-ft_tiny_shapes.py (children of this file).
_base_ = ['../_base_/models/hclip_tiny.py', '../_base_/default_runtime.py']

# The CLIP of mmseg_hclip/quickstart/tiny_clip.py (TINY_CLIP_ARCH), pretrained contrastively
# by tools/quickstart/pretrain_tiny_clip.py; an ordinary open_clip state dict loaded through
# `pretrained=` like real CLIP weights.
tiny_clip = dict(
    embed_dim=32,
    vision_cfg=dict(image_size=96, layers=3, width=64, head_width=32, patch_size=16),
    text_cfg=dict(context_length=24, vocab_size=49408, width=32, heads=2, layers=2))
pretrained_clip = '{{fileDirname}}/../../mmseg_hclip/quickstart/tiny_clip_shapes.pt'

data_root = 'data/shapes'
shapes_cfg = dict(num_train=320, num_val=64, size=96, seed=0)
train_classes = ('background', 'red circle', 'red square', 'green circle', 'green square',
                 'blue square', 'blue triangle', 'yellow circle', 'yellow triangle')
unseen_classes = ('blue circle', 'yellow square', 'green triangle', 'red triangle')

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=8,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type='ShapesDataset',
        data_root=data_root,
        generate_cfg=shapes_cfg,
        metainfo=dict(classes=train_classes),
        data_prefix=dict(img_path='img_dir/train', seg_map_path='ann_dir/train'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='ShapesDataset',
        data_root=data_root,
        generate_cfg=shapes_cfg,
        data_prefix=dict(img_path='img_dir/val', seg_map_path='ann_dir/val'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(
    type='SeenUnseenIoUMetric',
    iou_metrics=['mIoU'],
    seen_classes=train_classes,
    unseen_classes=unseen_classes)
test_evaluator = val_evaluator

model = dict(
    backbone=dict(arch=tiny_clip, pretrained=pretrained_clip),
    test_cfg=dict(_delete_=True, mode='whole'))

# As the paper's recipe (configs/_base_/schedules/schedule_80k_adam.py): the head learns
# head_lr_mult x faster than the CLIP side (adapter / fine-tuned weights), at toy scale.
max_iters = 300
head_lr = 2e-3
clip_lr_mult = 0.1
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=head_lr, weight_decay=1e-4),
    clip_grad=dict(max_norm=1.0, norm_type=2),
    paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=clip_lr_mult)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=40),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=False, begin=40, end=max_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=75)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=20, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters, max_keep_ckpts=1),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook', interval=4))  # test: draws batches 4 and 8
randomness = dict(seed=0)

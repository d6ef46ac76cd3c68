# Quickstart: the real H-CLIP model (backbone + adapter, text neck, cost-aggregation head,
# segmentor, hooks, IoU metric) at toy size on the embedded shapes dataset, CPU-only.
#   python tools/quickstart.py           (or: bash tools/quickstart.sh)
# Train vocabulary: background + 8 seen "<colour> <shape>" names; evaluation vocabulary adds
# 4 unseen combinations of seen words. Data is generated on first use (deterministic).
_base_ = ['../_base_/models/hclip_tiny.py', '../_base_/default_runtime.py']

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

model = dict(test_cfg=dict(_delete_=True, mode='whole'))

max_iters = 1200
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-3, weight_decay=1e-4),
    clip_grad=dict(max_norm=1.0, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=False, begin=50, end=max_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=300)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=25, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters, max_keep_ckpts=1),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook', interval=4))  # test: draws batches 4 and 8
randomness = dict(seed=0)

# Paper recipe (H-CLIP §5): Adam, lr 5e-6 for CLIP, weight decay 1e-4, 80k iterations.
# The CLIP learning rate is the base lr; the decoder head uses `head_lr_mult` x it
# through paramwise_cfg (child configs may change both).
clip_lr = 5e-6
head_lr_mult = 40.0  # head lr 2e-4, as in the authors' released recipe
optimizer = dict(type='Adam', lr=clip_lr, weight_decay=1e-4)
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=optimizer,
    paramwise_cfg=dict(custom_keys={'decode_head': dict(lr_mult=head_lr_mult)}))
param_scheduler = [
    dict(type='PolyLR', eta_min=0.0, power=0.9, begin=0, end=80000, by_epoch=False)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=80000, val_interval=8000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=8000, max_keep_ckpts=3),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))

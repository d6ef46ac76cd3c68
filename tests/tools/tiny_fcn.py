"""A small stock MMSeg model and a synthetic dataset for tool-level tests."""
import os
import os.path as osp

import numpy as np
from PIL import Image

CONFIG = '''
_base_ = ['{root}/configs/_base_/default_runtime.py']
crop = (32, 32)
data_root = '{data}'
classes = ('background', 'square')
metainfo = dict(classes=classes, palette=[[0, 0, 0], [255, 0, 0]])
train_pipeline = [
    dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
    {flip}dict(type='PackSegInputs')]
test_pipeline = [
    dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'), dict(type='PackSegInputs')]
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type='BaseSegDataset', data_root=data_root, metainfo=metainfo,
                 data_prefix=dict(img_path='img_dir/train', seg_map_path='ann_dir/train'),
                 img_suffix='.jpg', seg_map_suffix='.png', pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='BaseSegDataset', data_root=data_root, metainfo=metainfo,
                 data_prefix=dict(img_path='img_dir/val', seg_map_path='ann_dir/val'),
                 img_suffix='.jpg', seg_map_suffix='.png', pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
norm_cfg = {norm_cfg}
model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(type='SegDataPreProcessor', mean=[123.7, 116.3, 103.5],
                           std=[58.4, 57.1, 57.4], bgr_to_rgb=True, pad_val=0,
                           seg_pad_val=255, size=crop),
    backbone=dict(type='ResNetV1c', depth=18, stem_channels=8, base_channels=8,
                  num_stages=4, out_indices=(3, ), norm_cfg=norm_cfg),
    decode_head=dict(type='FCNHead', in_channels=64, in_index=0, channels=16, num_convs=1,
                     num_classes=2, norm_cfg=norm_cfg, align_corners=False, dropout_ratio=0.0,
                     loss_decode=dict(type='CrossEntropyLoss', loss_weight=1.0)),
    train_cfg=dict(), test_cfg=dict(mode='whole'))
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.01, momentum=0.9))
param_scheduler = [dict(type='PolyLR', power=0.9, begin=0, end=6, by_epoch=False)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=4, val_interval=100)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=1, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=2),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
randomness = dict(seed=0)
'''


def write_squares_dataset(root, n_train=4, n_val=2, size=32, seed=0, val_size=None):
    """Images with one bright square (class 1) on a dark background (class 0).

    ``size`` / ``val_size``: int or (h, w) of the train / val images (val defaults to ``size``).
    """
    rng = np.random.default_rng(seed)
    for split, n, hw in (('train', n_train, size), ('val', n_val, val_size or size)):
        h, w = (hw, hw) if isinstance(hw, int) else hw
        os.makedirs(osp.join(root, 'img_dir', split), exist_ok=True)
        os.makedirs(osp.join(root, 'ann_dir', split), exist_ok=True)
        for i in range(n):
            img = rng.integers(0, 40, (h, w, 3), dtype=np.uint8)
            ann = np.zeros((h, w), np.uint8)
            y, x = rng.integers(0, h // 2), rng.integers(0, w // 2)
            s = min(h, w) // 2
            img[y:y + s, x:x + s] = 220
            ann[y:y + s, x:x + s] = 1
            Image.fromarray(img).save(osp.join(root, 'img_dir', split, f'{i:04d}.jpg'))
            Image.fromarray(ann).save(osp.join(root, 'ann_dir', split, f'{i:04d}.png'))


def write_tiny_fcn_config(path, repo_root, data_root, norm_cfg="dict(type='BN', requires_grad=True)",
                          flip=True):
    """Write the tiny FCN config to ``path`` (a .py file) and return it."""
    text = CONFIG.format(root=repo_root, data=data_root, norm_cfg=norm_cfg,
                         flip="dict(type='RandomFlip', prob=0.5), " if flip else '')
    with open(path, 'w') as f:
        f.write(text)
    return path

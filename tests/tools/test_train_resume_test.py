"""End-to-end: tools/train.py trains, --resume continues, tools/test.py evaluates.

Uses a small stock MMSeg model (ResNet-18 with 8 base channels + FCN head) on a
synthetic dataset written in MMSeg's folder layout, so the foundation is tested
independently of the H-CLIP model.
"""
import json
import os
import os.path as osp
import re

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import run_tool

CONFIG = '''
_base_ = ['{root}/configs/_base_/default_runtime.py']
crop = (32, 32)
data_root = '{data}'
classes = ('background', 'square')
metainfo = dict(classes=classes, palette=[[0, 0, 0], [255, 0, 0]])
train_pipeline = [
    dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
    dict(type='RandomFlip', prob=0.5), dict(type='PackSegInputs')]
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
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(type='SegDataPreProcessor', mean=[123.7, 116.3, 103.5],
                           std=[58.4, 57.1, 57.4], bgr_to_rgb=True, pad_val=0,
                           seg_pad_val=255, size=crop),
    backbone=dict(type='ResNetV1c', depth=18, stem_channels=8, base_channels=8,
                  num_stages=4, out_indices=(3, ), norm_cfg=norm_cfg),
    decode_head=dict(type='FCNHead', in_channels=64, in_index=0, channels=16, num_convs=1,
                     num_classes=2, norm_cfg=norm_cfg, align_corners=False,
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


def write_squares_dataset(root, n_train=4, n_val=2, size=32, seed=0):
    """Images with one bright square (class 1) on a dark background (class 0)."""
    rng = np.random.default_rng(seed)
    for split, n in (('train', n_train), ('val', n_val)):
        os.makedirs(osp.join(root, 'img_dir', split), exist_ok=True)
        os.makedirs(osp.join(root, 'ann_dir', split), exist_ok=True)
        for i in range(n):
            img = rng.integers(0, 40, (size, size, 3), dtype=np.uint8)
            ann = np.zeros((size, size), np.uint8)
            y, x = rng.integers(0, size // 2, 2)
            s = size // 2
            img[y:y + s, x:x + s] = 220
            ann[y:y + s, x:x + s] = 1
            Image.fromarray(img).save(osp.join(root, 'img_dir', split, f'{i:04d}.jpg'))
            Image.fromarray(ann).save(osp.join(root, 'ann_dir', split, f'{i:04d}.png'))


@pytest.fixture(scope='module')
def tiny_setup(tmp_path_factory, repo_root):
    tmp = tmp_path_factory.mktemp('e2e')
    data = tmp / 'data'
    write_squares_dataset(str(data))
    cfg = tmp / 'tiny_fcn.py'
    cfg.write_text(CONFIG.format(root=repo_root, data=data))
    return tmp, cfg


def test_train_resume_and_test(tiny_setup):
    tmp, cfg = tiny_setup
    work = tmp / 'work'
    proc = run_tool(['tools/train.py', str(cfg), '--work-dir', str(work)])
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (work / 'iter_2.pth').is_file() and (work / 'iter_4.pth').is_file()

    # --resume (no value) picks the latest checkpoint in the work dir and continues.
    proc = run_tool(['tools/train.py', str(cfg), '--work-dir', str(work), '--resume',
                     '--cfg-options', 'train_cfg.max_iters=6'])
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert re.search(r'resumed? .*iter_4\.pth|Resumed? from.*iter_4', out, re.I) or \
        'resumed epoch' in out.lower() or 'iter_4.pth' in out, out[-3000:]
    assert (work / 'iter_6.pth').is_file()
    # Training went on from iteration 4, not from 0.
    assert re.search(r'Iter\(train\) \[5/6\]', out), out[-3000:]
    assert not re.search(r'Iter\(train\) \[1/6\]', out), out[-3000:]

    # The resumed checkpoint loads with torch's safe loading and holds the
    # message hub (HistoryBuffer + numpy) that used to break --resume.
    import mmseg_hclip  # noqa: F401  (registers the allow-list)
    ckpt = torch.load(str(work / 'iter_6.pth'), map_location='cpu', weights_only=True)
    assert ckpt['meta']['iter'] == 6
    assert 'log_scalars' in ckpt['message_hub']

    # Evaluate with tools/test.py and MMSeg's IoUMetric.
    test_dir = tmp / 'test'
    proc = run_tool(['tools/test.py', str(cfg), str(work / 'iter_6.pth'),
                     '--work-dir', str(test_dir), '--show-dir', str(tmp / 'vis')])
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert 'mIoU' in out
    jsons = list(test_dir.rglob('*.json'))
    assert jsons, 'tools/test.py wrote no metrics json'
    metrics = json.loads(jsons[0].read_text())
    assert 0.0 <= metrics['mIoU'] <= 100.0
    assert list((tmp / 'vis').rglob('*.png')), '--show-dir wrote no visualisation'


def test_refuses_unsafe_checkpoint(tiny_setup):
    """A checkpoint that pickles a callable is refused and never executed."""
    tmp, cfg = tiny_setup
    marker = tmp / 'PWNED'

    class Payload:
        def __reduce__(self):
            return (os.system, (f'touch {marker}', ))

    evil = tmp / 'evil.pth'
    torch.save({'state_dict': {}, 'meta': {}, 'payload': Payload()}, str(evil))
    proc = run_tool(['tools/test.py', str(cfg), str(evil), '--work-dir', str(tmp / 'evil')])
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert 'refused to load checkpoint' in out and 'evil.pth' in out, out[-3000:]
    assert 'system' in out  # torch names the offending global
    assert not marker.exists(), 'the pickled payload was executed'

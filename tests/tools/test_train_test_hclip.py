"""End to end: tools/train.py trains the tiny H-CLIP model, tools/test.py evaluates it on a
benchmark with a different class list (vocabulary switch), with IoUMetric and --show-dir."""
import json
import re

import pytest
from PIL import Image

from tests.conftest import run_tool
from tests.tools.tiny_fcn import write_squares_dataset

TRAIN_CLASSES = ('background', 'square')
TEST_CLASSES = ('background', 'square, box', 'circle', 'sky, heaven')

CONFIG = '''
_base_ = ['{root}/configs/_base_/default_runtime.py',
          '{root}/configs/_base_/models/hclip_tiny.py']
data_root = '{data}'
train_meta = dict(classes={train}, palette=[[0, 0, 0], [255, 0, 0]])
test_meta = dict(classes={test},
                 palette=[[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]])
train_pipeline = [
    dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
    dict(type='RandomFlip', prob=0.5), dict(type='PackSegInputs')]
# no Resize: the segmentor's reference protocol resizes and returns original-size results
test_pipeline = [
    dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'), dict(type='PackSegInputs')]

train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type='BaseSegDataset', data_root=data_root, metainfo=train_meta,
                 data_prefix=dict(img_path='img_dir/train', seg_map_path='ann_dir/train'),
                 img_suffix='.jpg', seg_map_suffix='.png', pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='BaseSegDataset', data_root=data_root, metainfo=train_meta,
                 data_prefix=dict(img_path='img_dir/val', seg_map_path='ann_dir/val'),
                 img_suffix='.jpg', seg_map_suffix='.png', pipeline=test_pipeline))
# the benchmark: the same images, scored against another (longer) class list
test_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='BaseSegDataset', data_root=data_root, metainfo=test_meta,
                 data_prefix=dict(img_path='img_dir/val', seg_map_path='ann_dir/val'),
                 img_suffix='.jpg', seg_map_suffix='.png', pipeline=test_pipeline))
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-3))
param_scheduler = []
train_cfg = dict(type='IterBasedTrainLoop', max_iters=2, val_interval=2)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=1, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=2),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook', interval=1))
randomness = dict(seed=0)
'''


@pytest.fixture(scope='module')
def setup(tmp_path_factory, repo_root):
    tmp = tmp_path_factory.mktemp('hclip_e2e')
    # val images are not square: predictions must come back at the original size
    write_squares_dataset(str(tmp / 'data'), n_train=2, n_val=2, size=96, val_size=(72, 104))
    cfg = tmp / 'hclip_tiny_squares.py'
    cfg.write_text(CONFIG.format(root=repo_root, data=tmp / 'data', train=TRAIN_CLASSES,
                                 test=TEST_CLASSES))
    return tmp, cfg


def test_train_then_test_on_another_vocabulary(setup):
    tmp, cfg = setup
    work = tmp / 'work'
    proc = run_tool(['tools/train.py', str(cfg), '--work-dir', str(work)])
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert (work / 'iter_2.pth').is_file()
    assert 'VocabularyHook: train vocabulary of 2 classes' in out
    assert 'VocabularyHook: val vocabulary of 2 classes' in out
    assert re.search(r'mIoU', out), out[-3000:]

    proc = run_tool(['tools/test.py', str(cfg), str(work / 'iter_2.pth'), '--work-dir',
                     str(tmp / 'test'), '--show-dir', str(tmp / 'vis')])
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert 'VocabularyHook: test vocabulary of 4 classes' in out
    for name in ('circle', 'sky, heaven'):
        assert name in out  # IoUMetric's per-class table uses the test dataset's classes
    jsons = [p for p in (tmp / 'test').rglob('*.json') if 'mIoU' in p.read_text()]
    assert jsons, 'tools/test.py wrote no metrics json'
    metrics = json.loads(jsons[0].read_text())
    assert 0.0 <= metrics['mIoU'] <= 100.0
    pngs = list((tmp / 'vis').rglob('*.png'))
    assert pngs, '--show-dir wrote no visualisation'
    # painted side by side at the original size (72x104 -> 72x208)
    assert Image.open(pngs[0]).size == (208, 72)

"""End-to-end: tools/train.py trains, --resume continues, tools/test.py evaluates.

Uses a small stock MMSeg model (ResNet-18 with 8 base channels + FCN head) on a
synthetic dataset written in MMSeg's folder layout, so the foundation is tested
independently of the H-CLIP model.
"""
import json
import os
import re

import pytest
import torch

from tests.conftest import run_tool
from tests.tools.tiny_fcn import write_squares_dataset, write_tiny_fcn_config

@pytest.fixture(scope='module')
def tiny_setup(tmp_path_factory, repo_root):
    tmp = tmp_path_factory.mktemp('e2e')
    data = tmp / 'data'
    write_squares_dataset(str(data))
    cfg = write_tiny_fcn_config(tmp / 'tiny_fcn.py', repo_root, data)
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
                     '--work-dir', str(test_dir), '--show-dir', str(tmp / 'vis'),
                     '--cfg-options', 'default_hooks.visualization.interval=1'])
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


def test_checkpoint_of_another_model_is_refused(tiny_setup):
    """mmengine loads non-strictly; tools/test.py lists what does not fit instead."""
    tmp, cfg = tiny_setup
    other = tmp / 'other.pth'
    torch.save({'meta': {}, 'state_dict': {'backbone.stem.0.weight': torch.zeros(3, 3, 3, 3),
                                           'neck.foo': torch.zeros(1)}}, str(other))
    proc = run_tool(['tools/test.py', str(cfg), str(other), '--work-dir', str(tmp / 'other')])
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert 'does not fit' in out and 'unexpected key(s)' in out and 'neck.foo' in out, out[-3000:]
    assert 'shape mismatch' in out and 'backbone.stem.0.weight' in out, out[-3000:]

"""tools/train.py --resume when last_checkpoint names a torn file (issue 12): it is named and
training goes on from the newest readable checkpoint; with none readable it stops, naming both
the torn file and where it looked. Before, it died with torch's bare "PytorchStreamReader failed
finding central directory" and the good checkpoint beside it was not used."""
import re

import pytest

from tests.conftest import run_tool
from tests.tools.tiny_fcn import write_squares_dataset, write_tiny_fcn_config


@pytest.fixture(scope='module')
def trained(tmp_path_factory, repo_root):
    tmp = tmp_path_factory.mktemp('torn')
    write_squares_dataset(str(tmp / 'data'))
    cfg = write_tiny_fcn_config(tmp / 'tiny_fcn.py', repo_root, tmp / 'data')
    work = tmp / 'work'
    proc = run_tool(['tools/train.py', str(cfg), '--work-dir', str(work), '--cfg-options',
                     'train_cfg.max_iters=2', 'default_hooks.checkpoint.interval=1'])
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert (work / 'iter_1.pth').is_file() and (work / 'iter_2.pth').is_file()
    assert (work / 'last_checkpoint').read_text().strip().endswith('iter_2.pth')
    return cfg, work


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def test_resume_onto_a_torn_checkpoint(trained):
    cfg, work = trained
    _truncate(work / 'iter_2.pth')
    proc = run_tool(['tools/train.py', str(cfg), '--work-dir', str(work), '--resume',
                     '--cfg-options', 'train_cfg.max_iters=3',
                     'default_hooks.checkpoint.interval=1'])
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert re.search(r'iter_2\.pth \(named by .*last_checkpoint\) cannot be read', out), out[-3000:]
    assert 'resuming from the newest readable checkpoint beside it' in out
    # training went on from iteration 1: iteration 2 is trained again, then 3
    assert re.search(r'Iter\(train\) \[2/3\]', out) and re.search(r'Iter\(train\) \[3/3\]', out)
    assert not re.search(r'Iter\(train\) \[1/3\]', out), out[-3000:]
    assert (work / 'iter_3.pth').is_file()


def test_resume_with_no_readable_checkpoint_stops_naming_both(trained):
    cfg, work = trained
    for path in work.glob('iter_*.pth'):
        _truncate(path)
    proc = run_tool(['tools/train.py', str(cfg), '--work-dir', str(work), '--resume'])
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert 'cannot resume' in out and 'iter_3.pth' in out and str(work) in out, out[-3000:]
    assert 'Traceback' not in out, out[-3000:]

"""tools/dist_train.sh for real: 2 CPU processes (gloo) vs 1 process, same global batch."""
import os
import subprocess
import sys

import pytest
import torch

from mmseg_hclip.utils import load_checkpoint_safely
from tests.conftest import ROOT, run_tool
from tests.tools.tiny_fcn import write_squares_dataset, write_tiny_fcn_config

GN = "dict(type='GN', num_groups=4, requires_grad=True)"  # batch-size independent norm


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason='tests the CPU/gloo path')
def test_two_process_gloo_matches_single_process(tmp_path):
    data = tmp_path / 'data'
    write_squares_dataset(str(data), n_train=8)
    cfg = write_tiny_fcn_config(tmp_path / 'cfg.py', ROOT, data, norm_cfg=GN, flip=False)
    common = ['--cfg-options', 'train_cfg.max_iters=4', 'default_hooks.checkpoint.interval=4']

    single = tmp_path / 'single'
    proc = run_tool(['tools/train.py', str(cfg), '--work-dir', str(single)] + common +
                    ['train_dataloader.batch_size=2'])
    assert proc.returncode == 0, proc.stderr[-3000:]

    multi = tmp_path / 'multi'
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(_free_port()), OMP_NUM_THREADS='1',
               PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    proc = subprocess.run(
        ['bash', 'tools/dist_train.sh', str(cfg), '2', '--work-dir', str(multi)] + common +
        ['train_dataloader.batch_size=1'],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert 'Distributed training: True' in out, out[-3000:]
    assert 'GPU number: 2' in out, out[-3000:]  # mmengine's name for the world size

    # Both ranks trained; rank 0 alone wrote the checkpoint, once.
    ckpts = sorted(p.name for p in multi.glob('*.pth'))
    assert ckpts == ['iter_4.pth'], ckpts
    assert out.count('Saving checkpoint at 4 iterations') == 1, out[-3000:]

    a = load_checkpoint_safely(str(single / 'iter_4.pth'))['state_dict']
    b = load_checkpoint_safely(str(multi / 'iter_4.pth'))['state_dict']
    assert a.keys() == b.keys()
    compared = 0
    for k in a:
        if not a[k].is_floating_point():
            continue
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=f'{k} differs')
        compared += 1
    assert compared > 0


def test_dist_scripts_print_usage():
    for script in ('tools/dist_train.sh', 'tools/dist_test.sh'):
        proc = subprocess.run(['bash', script], cwd=ROOT, capture_output=True, text=True)
        assert proc.returncode == 2 and 'usage' in proc.stderr, script

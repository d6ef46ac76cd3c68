"""tools/analysis/gpu_check.{sh,py}: the CPU dry run (--device cpu --tiny) trains both settings
in fp32 and bf16 and reports every column (no timing assertions)."""
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT, load_script


@pytest.fixture(scope='module')
def gpu_check():
    return load_script('tools/analysis/gpu_check.py')


def test_dry_run_reports_every_setting(gpu_check, tmp_path):
    threads = torch.get_num_threads()
    out = tmp_path / 'gpu_check.md'
    with torch.random.fork_rng():
        res = gpu_check.main(['--device', 'cpu', '--steps', '1', '--warmup', '0', '--tiny',
                              '--impls', 'fast', '--out', str(out)])
    torch.set_num_threads(threads)
    keys = {(s, p, 'fast') for s in ('paper', 'authors') for p in ('fp32', 'bf16')}
    assert set(res['results']) == keys
    for r in res['results'].values():
        assert r['images_per_s'] > 0 and r['peak_bytes'] > 0
        assert set(r['split']) == {'text_tower', 'image_tower', 'head', 'optimizer'}
    assert res['meta']['authors']['matmul_precision'] == 'high'
    assert res['meta']['paper']['matmul_precision'] == 'highest'
    assert res['meta']['authors']['optimizer'] == 'AdamW'
    assert torch.get_float32_matmul_precision() == 'highest'  # restored
    for acc in res['accuracy'].values():
        assert 0 < acc['logits_rel_l2'] < 0.1 and acc['loss_rel'] < 0.05
    text = out.read_text()
    assert text.count('| paper |') == 2 + 1 and text.count('| authors |') == 2 + 1


def test_shell_wrapper_dry_run(tmp_path):
    """The wrapper without its setup step runs the script with the given arguments."""
    env = dict(os.environ, PYTHON_BIN=sys.executable, OMP_NUM_THREADS='1')
    proc = subprocess.run(
        ['bash', osp.join(ROOT, 'tools', 'analysis', 'gpu_check.sh'), '--skip-setup',
         '--device', 'cpu', '--steps', '1', '--warmup', '0', '--tiny', '--settings', 'authors',
         '--precisions', 'fp32', '--impls', 'fast', '--json', str(tmp_path / 'r.json')],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert '| authors | fp32 | fast |' in proc.stdout
    assert (tmp_path / 'r.json').exists()

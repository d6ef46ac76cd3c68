"""tools/analysis/benchmark.py on the tiny inline CLIP: every setup is measured and reported,
ratios and memory are positive, merged and unmerged inference agree (no timing assertions)."""

import pytest
import torch

from tests.conftest import load_script

SETUPS = ('H-CLIP', 'frozen CLIP', 'LoRA (q, k, v, out)', 'attention FT (q, v)')
INFER = ('H-CLIP merged', 'H-CLIP unmerged', 'frozen CLIP (plain CLIP)')


@pytest.fixture(scope='module')
def bench():
    return load_script('tools/analysis/benchmark.py')


@pytest.fixture(scope='module')
def result(bench, tmp_path_factory):
    out = tmp_path_factory.mktemp('bench') / 'benchmark.md'
    threads = torch.get_num_threads()
    argv = ['--arch', 'tiny', '--img-size', '96', '--classes', '5', '--pad-len', '8',
            '--repeats', '2', '--warmup', '1', '--threads', '1', '--out', str(out)]
    with torch.random.fork_rng():
        res = bench.main(argv)
    torch.set_num_threads(threads)
    return res, out.read_text()


def test_every_setup_measured(result):
    res, _ = result
    assert tuple(res['step_times']) == SETUPS
    assert tuple(res['infer_times']) == INFER
    for times in list(res['step_times'].values()) + list(res['infer_times'].values()):
        assert len(times) == 2 and all(t > 0 for t in times)
    assert set(res['peak_memory']) == set(SETUPS)
    assert all(m > 0 for m in res['peak_memory'].values())


def test_trainable_counts(result):
    res, _ = result
    clip = res['clip_trainable']
    assert clip['frozen CLIP'] == 0
    assert clip['H-CLIP'] > 0 and clip['LoRA (q, k, v, out)'] > 0
    # q and v weights + biases of every block of both towers of the tiny CLIP (width 64,
    # 3 image + 2 text blocks): 5 * 2 * (64 * 64 + 64)
    assert clip['attention FT (q, v)'] == 5 * 2 * (64 * 64 + 64)
    # LoRA at rank block_size / 2 = 8 on q, k, v, out: 5 blocks * 4 targets * 2 * 64 * 8
    assert res['lora_rank'] == 8 and clip['LoRA (q, k, v, out)'] == 5 * 4 * 2 * 64 * 8
    assert len(set(res['head_trainable'].values())) == 1  # the same head everywhere
    assert res['persistent']['frozen CLIP'] == 0
    assert all(res['persistent'][n] > 0 for n in SETUPS if n != 'frozen CLIP')


def test_merged_equals_unmerged(result):
    res, _ = result
    assert res['merged_vs_unmerged_max_abs'] < 1e-5
    assert res['merged_vs_frozen_max_abs'] > 1e-5  # the perturbed adapter changes the model


def test_report(bench, result):
    res, report = result
    for name in SETUPS + INFER:
        assert f'| {name} |' in report
    step_ratio = bench.ratios(res['step_times'], 'H-CLIP')
    assert step_ratio['H-CLIP'] == 1 and all(r > 0 for r in step_ratio.values())
    for name, ratio in step_ratio.items():
        assert f'| {ratio:.3f} |' in report
    for key in ('intra-op thread', 'load average', '96×96', '5 classes', 'pad_len 8',
                'Unmerged / merged inference time'):
        assert key in report
    assert 'Shrunk' not in report  # no reference setting for the tiny model


def test_shrunk_setting_is_stated(bench, result):
    res, _ = result
    report = bench.render(dict(res, arch='ViT-B-16', img_size=224, classes=171, pad_len=64))
    assert 'Shrunk' in report and '384²' in report and 'pad_len 256' in report

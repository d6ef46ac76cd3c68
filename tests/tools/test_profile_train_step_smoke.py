"""tools/analysis/profile_train_step.py on the tiny config: every part is timed with its
load average, every setup (head impl x allocator mode) and the bf16 path are reported, the
operator tables and the bf16 accuracy are filled (no timing assertions)."""
import os.path as osp

import pytest
import torch

from tests.conftest import ROOT, load_script


@pytest.fixture(scope='module')
def result(tmp_path_factory):
    module = load_script('tools/analysis/profile_train_step.py')
    out = tmp_path_factory.mktemp('profile') / 'profile.md'
    threads = torch.get_num_threads()
    argv = ['--config', osp.join(ROOT, 'configs/_base_/models/hclip_tiny.py'), '--classes', '5',
            '--repeats', '1', '--warmup', '0', '--threads', '1', '--bf16', '--ops', '4',
            '--out', str(out)]
    with torch.random.fork_rng():
        res = module.main(argv)
    torch.set_num_threads(threads)
    return res, out.read_text()


def test_every_part_timed_with_its_load(result):
    res, _ = result
    setups = ('fast, keep', 'fast, default', 'reference, default')
    parts = {f'{part}[{s}]' for part in ('step', 'head', 'head_inference') for s in setups}
    parts |= {f'{tower}[{a}]' for tower in ('text_tower', 'image_tower')
              for a in ('keep', 'default')}
    parts |= {'adapter_weights[keep]', 'step[fast, keep, bf16]', 'text_tower[keep, bf16]',
              'image_tower[keep, bf16]', 'head[fast, keep, bf16]',
              'head_inference[fast, keep, bf16]'}
    assert set(res['times']) == parts
    for name, times in res['times'].items():
        assert len(times) == 1 and times[0] > 0, name
        assert len(res['loads'][name]) == 1, name
    assert set(res['memory']) == {'step[fast]', 'step[reference]', 'step[fast, bf16]'}
    assert all(peak > 0 for peak, _ in res['memory'].values())


def test_bf16_accuracy_and_operator_tables(result):
    res, text = result
    acc = res['accuracy']
    assert 0 < acc['train_logits_rel_l2'] < 0.1 and 0 <= acc['loss_rel'] < 0.05
    assert 0 <= acc['eval_argmax_agreement'] <= 1
    assert set(res['ops']) == {'fast, keep', 'fast, default', 'reference, default'}
    assert all(len(t['rows']) == 4 for t in res['ops'].values())
    for heading in ('## Ratios (same run)', 'head[fast, keep] ÷ (text tower + image tower)[keep]',
                    'head[reference, default] ÷ (text tower + image tower)[default]',
                    '[fast, keep] ÷ [reference, default]: step', '## Peak memory',
                    'fast ÷ reference', '## bf16 autocast vs fp32',
                    '## Operators of head[fast, keep]'):
        assert heading in text

"""tools/analysis/compare_peft_versions.py on the tiny CLIP against d2a1ae2 (the peft package
before the refactor): both versions are loaded side by side, checked equal and timed; a
difference between them stops the script before timing (no timing assertions)."""
import os.path as osp
import statistics

import pytest
import torch

from tests.conftest import ROOT, load_script

AGAINST = 'd2a1ae2'
TINY = ['--model', 'tiny', '--image-size', '32', '--block-size', '16', '--prompts', '3',
        '--repeats', '1', '--warmup', '1', '--threads', '1', '--against', AGAINST]


@pytest.fixture(scope='module')
def tool():
    module = load_script('tools/analysis/compare_peft_versions.py')
    try:
        module.resolve(AGAINST)
    except module.RevisionError as err:  # a shallow clone: the only reason to skip
        pytest.skip(f'{AGAINST} is not in this clone: {err}')
    return module


def run_main(tool, argv):
    threads = torch.get_num_threads()
    try:
        with torch.random.fork_rng():
            return tool.main(argv)
    finally:
        torch.set_num_threads(threads)


def test_report_has_both_versions_and_ratios(tool, tmp_path):
    out = tmp_path / 'compare.md'
    res = run_main(tool, TINY + ['--step', '--out', str(out)])
    report = out.read_text()
    assert res['old'].startswith(f'{AGAINST} (') and res['new'].startswith('working tree')
    assert f'- old: {res["old"]}' in report and f'- new: {res["new"]}' in report
    setups = ['paper param', 'paper step', 'official param', 'official step']
    assert list(res['ratios']) == setups
    for setup in setups:
        old, new = res['times'][f'{setup}|old'], res['times'][f'{setup}|new']
        assert len(old) == len(new) == 1 and min(old + new) > 0
        ratio = res['ratios'][setup]
        assert ratio['median'] == pytest.approx(statistics.median(new) / statistics.median(old))
        assert f"| {setup} | {ratio['median']:.3f} | {ratio['min']:.3f} |" in report
        assert f'| {setup} | old |' in report and f'| {setup} | new |' in report
    for variant in ('paper', 'official'):
        check = res['checks'][variant]
        assert check['weight_rel'] <= 1e-5 and check['gradient_rel'] <= 1e-5
    for key in ('uptime before', 'uptime after', 'intra-op threads', 'torch ', res['command']):
        assert key in report


def test_old_version_is_the_old_package(tool):
    old, _ = tool.load_peft(AGAINST)
    assert osp.commonpath([old.__file__, ROOT]) != ROOT  # extracted, not the working tree
    assert not osp.exists(osp.join(osp.dirname(old.__file__), '_engine.py'))  # pre-refactor
    new, _ = tool.load_peft(None)
    assert osp.exists(osp.join(osp.dirname(new.__file__), '_engine.py'))
    assert old.HCLIPAdapter is not new.HCLIPAdapter


def test_differing_versions_refused_before_timing(tool, tmp_path, monkeypatch):
    copy = tool.copy_parameters

    def copy_then_nudge(src, dst):  # the old side ends up with slightly different generators
        copy(src, dst)
        with torch.no_grad():
            tool.canonical_parameters(dst)['tower.text'][0, 0, 0, 1] += 1e-3

    monkeypatch.setattr(tool, 'copy_parameters', copy_then_nudge)
    monkeypatch.setattr(tool.bp, 'interleaved_times',
                        lambda *a, **k: pytest.fail('timed despite differing versions'))
    out = tmp_path / 'compare.md'
    with pytest.raises(tool.VersionsDiffer, match=r'differ beyond --rtol 1e-05.*refusing'):
        run_main(tool, TINY + ['--variants', 'paper', '--out', str(out)])
    assert not out.exists()


def test_missing_revision_named(tool):
    with pytest.raises(tool.RevisionError, match=r"'0123abcd0123'.*git fetch"):
        tool.load_peft('0123abcd0123')


def test_mm_import_refused(tool, tmp_path):
    (tmp_path / '__init__.py').write_text('from .adapter import X\n')
    (tmp_path / 'adapter.py').write_text('import torch\nfrom mmseg_hclip.peft import dcrc\n')
    with pytest.raises(tool.RevisionError, match=r'adapter.py:2 imports mmseg_hclip'):
        tool.check_imports(str(tmp_path), 'test')

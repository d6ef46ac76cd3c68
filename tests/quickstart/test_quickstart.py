"""The quickstart's three settings are child configs of one file that differ only in the
adapter, load the shipped tiny CLIP through ``pretrained=``, and tools/quickstart.py runs
them end to end (slow)."""
import json
import os
import sys

import pytest
from mmengine.config import Config

from mmseg_hclip.quickstart.tiny_clip import TINY_CLIP_ARCH
from tests.conftest import ROOT, run_tool

QS = os.path.join(ROOT, 'configs', 'quickstart')


def flatten(d, prefix=''):
    out = {}
    for k, v in d.items():
        key = f'{prefix}.{k}' if prefix else k
        if isinstance(v, dict):
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def load(name):
    return Config.fromfile(os.path.join(QS, name))


def test_settings_differ_only_in_the_adapter():
    hclip = load('hclip_tiny_shapes.py')
    frozen = load('frozen_tiny_shapes.py')
    attn = load('attn-ft_tiny_shapes.py')
    assert hclip.model.backbone.adapter.type == 'HCLIPAdapter'
    assert frozen.model.backbone.adapter is None
    assert attn.model.backbone.adapter == dict(type='AttentionFinetuneAdapter',
                                               targets=('q', 'k', 'v', 'out'), train_bias=True)
    # the same targets as H-CLIP: "full fine-tuning of CLIP attention"
    assert tuple(hclip.model.backbone.adapter.targets) == ('q', 'k', 'v', 'out')
    base = flatten(hclip.to_dict())
    for child in (frozen, attn):
        flat = flatten(child.to_dict())
        diff = {k for k in base.keys() | flat.keys() if base.get(k, '?') != flat.get(k, '?')}
        assert all(k.startswith(('model.backbone.adapter', 'custom_imports')) for k in diff), diff
    # one CLIP-side learning rate for both tuned settings (the head's x clip_lr_mult)
    assert hclip.optim_wrapper.paramwise_cfg.custom_keys.backbone.lr_mult == hclip.clip_lr_mult


def test_configs_load_the_shipped_tiny_clip():
    cfg = load('hclip_tiny_shapes.py')
    backbone = cfg.model.backbone
    assert backbone.arch == TINY_CLIP_ARCH
    assert os.path.isfile(backbone.pretrained), backbone.pretrained
    assert os.path.samefile(backbone.pretrained,
                            os.path.join(ROOT, 'mmseg_hclip/quickstart/tiny_clip_shapes.pt'))


def test_quickstart_arguments():
    sys.path.insert(0, os.path.join(ROOT, 'tools'))
    try:
        import quickstart
    finally:
        sys.path.pop(0)
    args = quickstart.parse_args(['--fast'])
    assert args.settings == ['hclip'] and args.seeds == 1
    args = quickstart.parse_args([])
    assert args.settings == ['frozen', 'attn-ft', 'hclip'] and args.seeds == 3
    for name, (path, _) in quickstart.SETTINGS.items():
        assert os.path.isfile(os.path.join(ROOT, path)), name
    with pytest.raises(SystemExit):
        quickstart.parse_args(['--seeds', '0'])


@pytest.mark.slow
def test_quickstart_end_to_end(tmp_path):
    res = run_tool(['tools/quickstart.py', '--settings', 'frozen', 'hclip', '--seeds', '2',
                    '--iters', '4', '--jobs', '2', '--work-dir', str(tmp_path)], timeout=1200)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert 'same scores as its last validation' in res.stdout
    summary = json.loads((tmp_path / 'summary.json').read_text())
    assert [(r['setting'], r['seed']) for r in summary['runs']] == [
        ('frozen', 0), ('hclip', 0), ('frozen', 1), ('hclip', 1)]
    for name in ('miou_bars.png', 'training_curves.png', 'overlays.png'):
        assert (tmp_path / name).stat().st_size > 10000
    assert '±' in res.stdout and 'zero-shot retrieval' in res.stdout

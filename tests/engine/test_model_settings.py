"""Model settings recorded in checkpoints and checked on load (issue 12, silent wrong result #1).

The tiny model of ``configs/_base_/models/hclip_tiny.py`` is built under one setting and checked
against a record made under another; the ``--cfg-options`` the error prints are then applied to
the config, and the rebuilt model must match the record (the suggested fix really fixes it)."""
import io
import os.path as osp
import re
import warnings
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config, DictAction

import mmseg_hclip  # noqa: F401  (registers the modules)
from mmseg.registry import HOOKS
from mmseg_hclip.engine.model_settings import (SETTINGS_META_KEY, ModelSettingsMismatchError,
                                               cfg_option, check_model_settings,
                                               model_settings)
from tests.conftest import ROOT

TINY = osp.join(ROOT, 'configs', '_base_', 'models', 'hclip_tiny.py')
A = 'model.backbone.adapter.'


def build(options=None, sides=None):
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    cfg = Config.fromfile(TINY)
    if options:
        cfg.merge_from_dict(options)
    if sides is not None:  # a dict cannot be merged over the config's string
        cfg.model.backbone.adapter.sides = sides
    init_default_scope('mmseg')
    return MODELS.build(cfg.model)


@pytest.fixture(scope='module')
def default_model():
    return build()


def suggested_options(message: str) -> dict:
    """The ``--cfg-options`` of an error message, parsed as tools/test.py would parse them."""
    match = re.search(r'--cfg-options (.+)', message)
    assert match, message
    action = DictAction(option_strings=['--cfg-options'], dest='cfg_options', nargs='+')
    ns = SimpleNamespace()
    # the shell removes the quotes around a list value: key="[a,b]" -> key=[a,b]
    action(None, ns, [t.replace('"', '') for t in match.group(1).split()])
    return ns.cfg_options


def test_record_holds_the_resolved_settings(default_model):
    rec = model_settings(default_model)
    assert rec['backbone.adapter.type'] == 'HCLIPAdapter'
    assert rec['backbone.adapter.orthogonal'] == 'text'
    assert rec['backbone.adapter.sides'] == 'input'
    assert rec['backbone.adapter.dcrc'] == 'mlp'
    assert rec['backbone.adapter.block_size'] == 16
    assert rec['backbone.adapter.cayley_convention'] == 'paper'
    assert rec['backbone.adapter.targets'] == ['q', 'k', 'v', 'out']
    adapter = default_model.backbone.adapter
    assert rec['backbone.adapter.dcrc_hidden'] == [adapter.num_slices, adapter.num_positions]
    assert rec['backbone.guidance_layers'] == [0, 1]
    assert rec['backbone.quick_gelu'] is False
    assert rec['neck.templates'] == 'single' and rec['neck.synonyms'] == 'first'
    assert rec['decode_head.pad_len'] == 16
    # survives a save and a safe (weights_only) load unchanged
    buffer = io.BytesIO()
    torch.save({'meta': {SETTINGS_META_KEY: rec}}, buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True)['meta'][SETTINGS_META_KEY] == rec


MISMATCHES = {
    # the probes
    'orthogonal': ({'model.backbone.adapter.orthogonal': 'none'}, [A + 'orthogonal']),
    'cayley': ({A + 'cayley_convention': 'official'}, [A + 'cayley_convention']),
    'sides': ({A + 'sides': 'official'}, [A + 'sides']),
    # other settings that change what the weights mean
    'dcrc-linear-per-layer': ({A + 'dcrc': 'linear', A + 'dcrc_per_layer': True},
                              [A + 'dcrc', A + 'dcrc_hidden', A + 'dcrc_per_layer']),
    'activation': ({A + 'dcrc_activation': 'relu'}, [A + 'dcrc_activation']),
    'templates': ({'model.neck.templates': 'imagenet80'}, ['model.neck.templates']),
    'synonyms': ({'model.neck.synonyms': 'average'}, ['model.neck.synonyms']),
    'pad_len': ({'model.decode_head.pad_len': 32}, ['model.decode_head.pad_len']),
    'guidance': ({'model.backbone.guidance_layers': (1, )}, ['model.backbone.guidance_layers']),
    'quick_gelu': ({'model.backbone.quick_gelu': True}, ['model.backbone.quick_gelu']),
}


@pytest.mark.parametrize('name', sorted(MISMATCHES))
def test_a_different_setting_is_refused_with_the_fix(default_model, name):
    options, keys = MISMATCHES[name]
    meta = {SETTINGS_META_KEY: model_settings(default_model)}  # trained with the defaults
    other = build(options)  # evaluated under another setting
    with pytest.raises(ModelSettingsMismatchError) as err:
        check_model_settings(other, meta, source='checkpoint iter_2.pth', target='the config')
    message = str(err.value)
    listed = re.findall(r'^  (model\.[\w.]+): ', message, re.M)
    assert sorted(listed) == sorted(keys), message
    fix = suggested_options(message)
    assert sorted(fix) == sorted(keys), message
    # applying the printed options to the mismatched config gives the checkpoint's settings
    fixed = build({**options, **fix})
    check_model_settings(fixed, meta)


def test_message_names_both_values_and_the_option(default_model):
    meta = {SETTINGS_META_KEY: model_settings(default_model)}
    with pytest.raises(ModelSettingsMismatchError) as err:
        check_model_settings(build({A + 'orthogonal': 'none'}), meta,
                             source='checkpoint work_dirs/x/iter_2.pth')
    message = str(err.value)
    assert 'checkpoint work_dirs/x/iter_2.pth' in message
    assert "model.backbone.adapter.orthogonal: 'text' (checkpoint) vs 'none' (config)" in message
    assert '--cfg-options model.backbone.adapter.orthogonal=text' in message


def test_equal_settings_pass_silently(default_model):
    meta = {SETTINGS_META_KEY: model_settings(default_model)}
    same = build()
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        check_model_settings(same, meta, source='checkpoint same.pth')
    # an explicit value equal to the default is the same setting
    check_model_settings(build(sides=dict(q='input', k='input', v='input', out='input')), meta)


def test_checkpoint_without_record_loads_with_a_warning(default_model):
    with pytest.warns(UserWarning, match='records no model settings'):
        check_model_settings(build({A + 'orthogonal': 'none'}), {'iter': 2},
                             source='checkpoint old-format.pth')


def test_merged_checkpoint_skips_adapter_settings_only(default_model):
    record = model_settings(default_model)
    meta = {SETTINGS_META_KEY: record, 'hclip_merged': True}
    no_adapter = build({'model.backbone.adapter': None})
    check_model_settings(no_adapter, meta)  # the adapter is folded in: its settings are moot
    with pytest.raises(ModelSettingsMismatchError, match='model.neck.templates'):
        check_model_settings(build({'model.backbone.adapter': None,
                                    'model.neck.templates': 'imagenet80'}), meta)
    # an unmerged checkpoint with an adapter, config without: named, with no option to add
    with pytest.raises(ModelSettingsMismatchError) as err:
        check_model_settings(no_adapter, {SETTINGS_META_KEY: record})
    assert 'model.backbone.adapter.type' in str(err.value)
    assert '--cfg-options' not in str(err.value)


def test_values_that_cfg_options_cannot_express_are_named_for_the_config(default_model):
    sides = dict(q='input', k='output', v='input', out='output')
    meta = {SETTINGS_META_KEY: model_settings(build(sides=sides))}
    with pytest.raises(ModelSettingsMismatchError) as err:
        check_model_settings(default_model, meta)
    assert "model.backbone.adapter.sides = {'q': 'input', 'k': 'output'" in str(err.value)
    assert cfg_option('neck.templates', ['a photo of a {}.']) is None  # spaces
    assert cfg_option('backbone.adapter.orthogonal', 'none') == \
        'model.backbone.adapter.orthogonal=none'
    assert cfg_option('backbone.guidance_layers', [3, 7]) == \
        'model.backbone.guidance_layers="[3,7]"'
    assert cfg_option('backbone.adapter.dcrc_hidden', None) == \
        'model.backbone.adapter.dcrc_hidden=None'
    assert cfg_option('x', 'None') is None and cfg_option('x', '16') is None  # would parse back


def test_hook_writes_the_record_and_checks_on_load(default_model):
    hook = HOOKS.build(dict(type='ModelSettingsHook'))
    runner = SimpleNamespace(model=default_model, cfg=SimpleNamespace(filename='cfg.py'),
                             _load_from='ckpt.pth')
    checkpoint = {'meta': {'iter': 2}, 'state_dict': {}}
    hook.before_save_checkpoint(runner, checkpoint)
    assert checkpoint['meta'][SETTINGS_META_KEY] == model_settings(default_model)
    hook.after_load_checkpoint(runner, checkpoint)  # same model: fine
    other = SimpleNamespace(model=build({A + 'cayley_convention': 'official'}),
                            cfg=runner.cfg, _load_from='ckpt.pth')
    with pytest.raises(ModelSettingsMismatchError, match='cayley_convention=paper'):
        hook.after_load_checkpoint(other, checkpoint)

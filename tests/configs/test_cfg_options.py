"""``--cfg-options`` with a key the config does not have.

mmengine's ``Config.merge_from_dict`` adds any key silently. A misspelt argument of a registered
module then fails when the module is built (the class and the argument are named), but a
misspelt key of a plain dict that code reads with ``.get`` (``model.test_cfg``) is ignored.
``cfg_options_check.check_cfg_options`` catches both before anything is built.
"""
import copy
import os.path as osp

import pytest
from mmengine.config import Config
from mmseg.registry import MODELS
from mmseg.utils import register_all_modules

from mmseg_hclip.utils import check_cfg_options

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
register_all_modules(init_default_scope=True)


@pytest.fixture(scope='module')
def main_cfg():
    return Config.fromfile(osp.join(ROOT, 'configs', 'hclip_vitb16_coco-stuff.py'))


def test_mmengine_merges_unknown_keys_silently(main_cfg):
    cfg = copy.deepcopy(main_cfg)
    cfg.merge_from_dict({'model.test_cfg.resize_too': (512, 512), 'modle.backbone.with_cp': True})
    assert cfg.model.test_cfg.resize_too == (512, 512) and cfg.modle.backbone.with_cp


def test_misspelt_module_argument_fails_at_build_naming_it():
    cfg = Config.fromfile(osp.join(ROOT, 'configs', '_base_', 'models', 'hclip_tiny.py'))
    cfg.merge_from_dict({'model.backbone.adapter.blok_size': 8})
    with pytest.raises(TypeError, match='blok_size'):
        MODELS.build(cfg.model)


@pytest.mark.parametrize('key, message', [
    ('model.backbone.adapter.blok_size', "HCLIPAdapter .* takes no argument 'blok_size'"),
    ('model.test_cfg.resize_too', "model.test_cfg has no key 'resize_too'"),
    ('modle.backbone.with_cp', "the config has no key 'modle'"),
    ('model.backbone.adaptr.block_size', "HCLIPBackbone .* takes no argument 'adaptr'"),
    ('train_cfg.val_intervall', "IterBasedTrainLoop .* takes no argument 'val_intervall'"),
    ('train_dataloader.dataset.pipeline.9.crop_size', "has no key '9'"),
])
def test_check_rejects_unknown_keys(main_cfg, key, message):
    with pytest.raises(KeyError, match=message):
        check_cfg_options(main_cfg, {key: 1})


@pytest.mark.parametrize('key', [
    'model.backbone.adapter.block_size',  # existing leaf
    'model.backbone.adapter',  # a whole dict (e.g. =None: frozen CLIP)
    'model.backbone.with_cp',
    'model.backbone.merge_in_eval',  # new, but an HCLIPBackbone argument
    'optim_wrapper.clip_grad.max_norm',  # new, an OptimWrapper argument
    'train_dataloader.dataset.pipeline.3.crop_size',  # list index
    'randomness.seed',  # new top-level key the Runner takes
    'work_dir',
])
def test_check_accepts_real_keys(main_cfg, key):
    check_cfg_options(main_cfg, {key: 1})

# Copyright (c) mmseg_hclip contributors. Licensed under the Apache License 2.0.
"""Records the model settings in every checkpoint and checks them on every load."""
from mmengine.hooks import Hook
from mmseg.registry import HOOKS

from ..model_settings import SETTINGS_META_KEY, check_model_settings, model_settings

__all__ = ['ModelSettingsHook']


@HOOKS.register_module()
class ModelSettingsHook(Hook):
    """Write the settings that give the weights their meaning into every checkpoint's meta,
    and refuse to load a checkpoint written under other settings.

    On save (``before_save_checkpoint``, every checkpoint the runner writes):
    ``checkpoint['meta']['hclip_model_settings']`` = :func:`~mmseg_hclip.engine.model_settings.
    model_settings` of the model (adapter ``block_size``, ``orthogonal``, ``sides``, ``dcrc``,
    ``cayley_convention``, ...; prompt templates; guidance layers; QuickGELU; the head's
    ``pad_len``). On load (``after_load_checkpoint``: ``load_from``, ``--resume``,
    ``tools/test.py``): the record is compared with the model built from the config and a
    difference raises :class:`~mmseg_hclip.engine.model_settings.ModelSettingsMismatchError`
    naming each setting, both values and the ``--cfg-options`` that match the checkpoint. A
    checkpoint without a record loads with a warning.

    ``tools/test.py``, ``tools/demo.py``, :func:`mmseg_hclip.apis.init_model` and
    ``tools/train.py --resume`` run the same check themselves, so it also holds for configs
    without this hook; the hook is what writes the record.

    Args:
        check_on_load (bool): Compare on load. Defaults to True.
    """

    priority = 'VERY_LOW'  # after other hooks have edited the checkpoint

    def __init__(self, check_on_load: bool = True):
        self.check_on_load = check_on_load

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        settings = model_settings(runner.model)
        if settings:
            checkpoint.setdefault('meta', {})[SETTINGS_META_KEY] = settings

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if not self.check_on_load:
            return
        path = getattr(runner, '_load_from', None)
        if not path and getattr(runner, '_resume', False):
            from mmengine.runner import find_latest_checkpoint
            path = find_latest_checkpoint(runner.work_dir)
        source = f'checkpoint {path}' if path else 'the loaded checkpoint'
        check_model_settings(runner.model, checkpoint.get('meta'), source=source,
                             target=f'the config {runner.cfg.filename or ""}'.rstrip())

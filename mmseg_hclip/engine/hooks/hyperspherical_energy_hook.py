# Copyright (c) mmseg_hclip contributors. Licensed under the Apache License 2.0.
"""Logs the hyperspherical-energy drift of the H-CLIP targets during training (paper §3.1)."""
from typing import Optional, Sequence

import torch
from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmseg.registry import HOOKS

__all__ = ['HypersphericalEnergyHook']


@HOOKS.register_module()
class HypersphericalEnergyHook(Hook):
    """Log the relative hyperspherical-energy drift of every adapted target.

    Every ``interval`` training iterations (and once before training), computes for each
    target of the chosen towers (q, k, v slices of ``attn.in_proj_weight`` and
    ``attn.out_proj.weight`` of every block) ``|HE(W') - HE(W)| / HE(W)`` between the
    transformed and the pretrained weight (Eq. 1, normalised; see
    :meth:`mmseg_hclip.peft.HCLIPAdapter.energy_drift`). With POF the text targets on the input
    side stay at zero up to rounding; this hook makes that visible.

    The model must be an H-CLIP segmentor: ``runner.model.backbone`` (unwrapped from DDP/FSDP
    wrappers) with attributes ``clip`` (open_clip CLIP) and ``adapter`` (``HCLIPAdapter``).
    Without an adapter the hook logs a note once and does nothing.

    Written to the message hub: ``train/he_drift_mean`` and ``train/he_drift_max`` (printed by
    the LoggerHook and sent to visual backends), every target as ``he_drift/{tower}.{layer}.{
    target}`` and the whole dict as runtime info ``he_drift``; plus one logger line.

    Args:
        interval (int): Log every ``interval`` training iterations. Defaults to 1000.
        towers (Sequence[str]): Towers to report ('text', 'image'). Defaults to ('text', ).
        before_train (bool): Also log once before the first iteration. Defaults to True.
        chunk_size (int): Rows per chunk of the energy computation. Defaults to 1024.
        dtype (str): Computation dtype of the energies. Defaults to 'float64'.
    """

    priority = 'LOW'

    def __init__(self,
                 interval: int = 1000,
                 towers: Sequence[str] = ('text', ),
                 before_train: bool = True,
                 chunk_size: int = 1024,
                 dtype: str = 'float64'):
        if not isinstance(interval, int) or interval <= 0:
            raise ValueError(f'interval must be a positive integer, got {interval!r}')
        if not hasattr(torch, dtype) or not isinstance(getattr(torch, dtype), torch.dtype):
            raise ValueError(f"dtype must name a torch dtype such as 'float64', got {dtype!r}")
        self.interval = interval
        self.towers = (towers, ) if isinstance(towers, str) else tuple(towers)
        self.log_before_train = before_train
        self.chunk_size = chunk_size
        self.dtype = getattr(torch, dtype)
        self._warned = False

    def _clip_and_adapter(self, runner):
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        backbone = getattr(model, 'backbone', None)
        clip = getattr(backbone, 'clip', None)
        adapter = getattr(backbone, 'adapter', None)
        if adapter is not None and not hasattr(adapter, 'energy_drift'):
            if not self._warned:
                print_log(f'HypersphericalEnergyHook: {type(adapter).__name__} does not report '
                          'energy drift (only HCLIPAdapter does); nothing to log.',
                          logger='current')
                self._warned = True
            return None, None
        if clip is None or adapter is None:
            if not self._warned:
                print_log(
                    'HypersphericalEnergyHook: the model has no backbone.clip / '
                    'backbone.adapter (an H-CLIP backbone with an adapter); nothing to log.',
                    logger='current')
                self._warned = True
            return None, None
        return clip, adapter

    def _log(self, runner) -> Optional[dict]:
        if not is_main_process():
            return None
        clip, adapter = self._clip_and_adapter(runner)
        if adapter is None:
            return None
        drifts = adapter.energy_drift(
            clip, towers=self.towers, chunk_size=self.chunk_size, dtype=self.dtype)
        if not drifts:
            return drifts
        values = list(drifts.values())
        worst = max(drifts, key=drifts.get)
        hub = runner.message_hub
        hub.update_scalar('train/he_drift_mean', sum(values) / len(values))
        hub.update_scalar('train/he_drift_max', max(values))
        for key, value in drifts.items():
            hub.update_scalar(f'he_drift/{key}', value)
        hub.update_info('he_drift', dict(drifts))
        runner.logger.info(
            f"Hyperspherical-energy drift ({'+'.join(self.towers)}, {len(values)} targets) at "
            f'iter {runner.iter}: mean {sum(values) / len(values):.3e}, max {max(values):.3e} '
            f'({worst})')
        return drifts

    def before_train(self, runner) -> None:
        if self.log_before_train:
            self._log(runner)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self.every_n_train_iters(runner, self.interval):
            self._log(runner)

# Copyright (c) mmseg_hclip contributors. Licensed under the Apache License 2.0.
"""Sets torch's float32 matmul precision for a run (TF32 on Ampere and newer GPUs)."""
from typing import Optional

import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmseg.registry import HOOKS

__all__ = ['Float32MatmulPrecisionHook']

_PRECISIONS = ('highest', 'high', 'medium')


@HOOKS.register_module()
class Float32MatmulPrecisionHook(Hook):
    """Call ``torch.set_float32_matmul_precision(precision)`` for the run.

    The H-CLIP authors' ``train_net.py`` sets ``"high"`` before training and
    evaluation: float32 matrix products may then use TensorFloat-32 on NVIDIA
    Ampere and newer GPUs (about 10 mantissa bits, faster), and nothing
    changes on CPUs or older GPUs. PyTorch's default is ``"highest"``. The
    previous setting is restored after the run (``after_run``).

    Args:
        precision (str): ``'highest'``, ``'high'`` or ``'medium'``.
            Defaults to ``'high'`` (the reference).
    """

    priority = 'VERY_HIGH'

    def __init__(self, precision: str = 'high') -> None:
        if precision not in _PRECISIONS:
            raise ValueError(f'precision={precision!r}; use one of {_PRECISIONS} '
                             "(torch.set_float32_matmul_precision; 'high' = the reference)")
        self.precision = precision
        self._previous: Optional[str] = None

    def before_run(self, runner) -> None:
        self._previous = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision(self.precision)
        print_log(f'float32 matmul precision: {self.precision} (was {self._previous})',
                  logger='current')

    def after_run(self, runner) -> None:
        if self._previous is not None:
            torch.set_float32_matmul_precision(self._previous)
            self._previous = None

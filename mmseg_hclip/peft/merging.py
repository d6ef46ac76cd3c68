"""Safe in-place merging of adapter weights into a model (shared by every adapter).

An adapter with ``forward(model, dtype=...) -> {parameter name: new weight}`` gets
``merge`` / ``unmerge`` / ``merged`` from :class:`MergeableAdapterMixin`: the new weights are
computed in fp32 with autocast off, checked to be finite, and only then written in place
(peft's ``safe_merge``); ``unmerge`` restores the replaced weights bit-exactly.
"""
from typing import Dict, Optional

import torch
from torch import Tensor, nn

from .block_transforms import _no_autocast

__all__ = ['MergeableAdapterMixin']


class MergeableAdapterMixin:
    """``merge`` / ``unmerge`` / ``merged`` for adapters that return new weights by name.

    The class using it calls :meth:`_init_merge_state` in its constructor and implements
    ``forward(model, dtype=None) -> Dict[str, Tensor]``.
    """

    def _init_merge_state(self) -> None:
        self._merged = False
        self._originals: Optional[Dict[str, Tensor]] = None

    @property
    def merged(self) -> bool:
        """Whether the adapter's weights are currently folded into the model's weights."""
        return self._merged

    @torch.no_grad()
    def merge(self, model: nn.Module, keep_original: bool = True) -> None:
        """Write the adapted weights into ``model`` in place (zero-overhead inference).

        The weights are computed in fp32 with autocast off, checked to be finite and only
        then written; afterwards ``model`` is a plain model of its class.

        Args:
            model (nn.Module): the model (an open_clip CLIP) the adapter was built for.
            keep_original (bool): keep a copy of the replaced weights so :meth:`unmerge`
                restores them bit-exactly (costs their memory).

        Raises:
            RuntimeError: already merged.
            ValueError: an adapted weight is not finite (``model`` is left unchanged).
        """
        if self._merged:
            raise RuntimeError('the adapter is already merged into this model; call '
                               'unmerge(clip) first')
        device = next(self.parameters()).device
        with _no_autocast(device.type):
            weights = self.forward(model, dtype=torch.float32)
        bad = [name for name, w in weights.items() if not torch.isfinite(w).all()]
        if bad:
            raise ValueError(f'merge refused: {len(bad)} adapted weight(s) are not finite '
                             f'(first: {bad[0]}); the adapter parameters hold inf/NaN. The model '
                             'was left unchanged.')
        params = {name: model.get_parameter(name) for name in weights}
        self._originals = ({name: p.detach().clone() for name, p in params.items()}
                           if keep_original else None)
        for name, weight in weights.items():
            params[name].copy_(weight.to(params[name].dtype))
        self._merged = True

    @torch.no_grad()
    def unmerge(self, model: nn.Module) -> None:
        """Restore the weights replaced by :meth:`merge`, bit-exactly.

        Raises:
            RuntimeError: not merged, or merged with ``keep_original=False``.
        """
        if not self._merged:
            raise RuntimeError('the adapter is not merged; nothing to unmerge')
        if self._originals is None:
            raise RuntimeError('merged with keep_original=False: the pretrained weights were '
                               'not kept; reload them from the checkpoint instead')
        for name, weight in self._originals.items():
            model.get_parameter(name).copy_(weight)
        self._originals = None
        self._merged = False

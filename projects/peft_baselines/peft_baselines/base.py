"""Common ground of the PEFT baselines: an adapter that produces new attention weights.

Every baseline here has the interface of :class:`mmseg_hclip.peft.HCLIPAdapter`, so
``HCLIPBackbone`` uses it unchanged:

* ``Adapter(clip, **kwargs)``: built for one open_clip ViT CLIP (the model is not registered
  as a submodule: ``state_dict()`` holds the adapter's own parameters only);
* ``adapter(clip) -> dict``: ``clip.named_parameters()`` names -> new weights, for
  ``torch.func.functional_call``; empty while merged;
* ``merge(clip)`` / ``unmerge(clip)`` / ``merged``: fold the new weights into ``clip`` for
  zero-overhead inference, and restore the pretrained ones bit-exactly.

Pure PyTorch (no mm* imports); the package ``__init__`` registers the classes in MMSeg.
"""
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from mmseg_hclip.peft import (TARGETS, MergeableAdapterMixin, TowerSpec, find_vit_towers,
                              freeze_module)

__all__ = ['AttentionWeightAdapter', 'TOWERS', 'QKV']

TOWERS = ('image', 'text')
QKV = ('q', 'k', 'v')


class AttentionWeightAdapter(MergeableAdapterMixin, nn.Module):
    """Base class: new ``attn.in_proj_weight`` / ``attn.out_proj.weight`` (and biases) of both
    towers of an open_clip ViT CLIP.

    Subclasses implement :meth:`_tower_weights`. This class finds the targets by name
    (:func:`mmseg_hclip.peft.find_vit_towers`), validates the common arguments and implements
    ``forward`` / ``merge`` / ``unmerge`` / ``merged`` / ``parameter_counts``.

    Args:
        clip (nn.Module): an ``open_clip.CLIP`` with ViT towers.
        targets (Sequence[str]): subset of ``('q', 'k', 'v', 'out')``: the q/k/v row slices
            of every ``attn.in_proj_weight`` and every ``attn.out_proj.weight``.
        towers (Sequence[str]): towers to adapt, ``('image', 'text')`` by default.
        freeze_clip (bool): set ``requires_grad=False`` on every CLIP parameter.
    """

    def __init__(self,
                 clip: nn.Module,
                 targets: Sequence[str] = TARGETS,
                 towers: Sequence[str] = TOWERS,
                 freeze_clip: bool = True):
        super().__init__()
        self.targets = self._check_names('target', targets, TARGETS)
        self.adapted_towers = self._check_names('tower', towers, TOWERS)
        image, text = find_vit_towers(clip)
        self.towers: Dict[str, TowerSpec] = {'image': image, 'text': text}
        if freeze_clip:
            freeze_module(clip)
        self._init_merge_state()

    @staticmethod
    def _check_names(what: str, values: Union[str, Sequence[str]],
                     valid: Tuple[str, ...]) -> Tuple[str, ...]:
        values = (values, ) if isinstance(values, str) else tuple(values)
        unknown = [v for v in values if v not in valid]
        if unknown or not values or len(set(values)) != len(values):
            raise ValueError(f'{what}s must be a non-empty subset of {valid} without repeats; '
                             f'got {values}' + (f' (unknown: {unknown})' if unknown else ''))
        return tuple(v for v in valid if v in values)

    # ------------------------------------------------------------------ to implement
    def _tower_weights(self, clip: nn.Module, spec: TowerSpec,
                       dtype: Optional[torch.dtype]) -> Dict[str, Tensor]:
        """New weights of one adapted tower: parameter name -> tensor."""
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _params(clip: nn.Module, names: Sequence[str]):
        try:
            return [clip.get_parameter(name) for name in names]
        except AttributeError as err:
            raise ValueError(f'the given model has no parameter {err}; pass the CLIP this '
                             'adapter was built for') from err

    def _check_shapes(self, clip: nn.Module, spec: TowerSpec) -> None:
        w = self._params(clip, spec.in_proj_names[:1])[0]
        if tuple(w.shape) != (3 * spec.width, spec.width):
            raise ValueError(f'{spec.in_proj_names[0]} has shape {tuple(w.shape)}, but the '
                             f'adapter was built for {(3 * spec.width, spec.width)}; pass the '
                             'CLIP it was built for')

    # ------------------------------------------------------------------ interface
    def forward(self,
                clip: nn.Module,
                towers: Union[str, Sequence[str]] = TOWERS,
                dtype: Optional[torch.dtype] = None) -> Dict[str, Tensor]:
        """New target weights for ``torch.func.functional_call``.

        Args:
            clip (nn.Module): the CLIP the adapter was built for (its frozen weights are read).
            towers (str | Sequence[str]): towers to build weights for; towers the adapter does
                not adapt contribute nothing.
            dtype (torch.dtype | None): compute dtype (default: the frozen weights' dtype).

        Returns:
            dict[str, Tensor]: ``clip.named_parameters()`` names (e.g.
            ``'visual.transformer.resblocks.0.attn.in_proj_weight'``) -> new tensors of the same
            shapes. Empty while merged (the model's own weights are then the new ones).
        """
        if self._merged:
            return {}
        towers = self._check_names('tower', towers, TOWERS)
        weights = {}
        for name in towers:
            if name in self.adapted_towers:
                spec = self.towers[name]
                self._check_shapes(clip, spec)
                weights.update(self._tower_weights(clip, spec, dtype))
        return weights

    # merged / merge / unmerge: mmseg_hclip.peft.MergeableAdapterMixin

    def parameter_counts(self) -> Dict[str, Dict[str, int]]:
        """Stored / trainable / effective parameters per tower and in total.

        Returns:
            dict: ``{'image'|'text'|'total': {'stored': n, 'trainable': n, 'effective': n}}``,
            the layout of ``HCLIPAdapter.parameter_counts`` (here every stored parameter is a
            free one: effective = stored).
        """
        counts = {}
        for tower in TOWERS:
            params = [p for n, p in self.named_parameters() if n.split('.')[1] == tower]
            n = sum(p.numel() for p in params)
            counts[tower] = dict(
                stored=n,
                trainable=sum(p.numel() for p in params if p.requires_grad),
                effective=n)
        counts['total'] = {
            key: counts['image'][key] + counts['text'][key]
            for key in ('stored', 'trainable', 'effective')
        }
        return counts

"""LoRA (Hu et al., ICLR 2022) on the attention weights of both CLIP towers.

Each target weight ``W [d_out, d_in]`` becomes ``W' = W + (α / r) · B · A`` with ``A [r, d_in]``
(uniform in ±1/√d_in, the ``nn.Linear`` / HuggingFace peft init) and ``B [d_out, r]`` zero, so
the adapted model at init is exactly the pretrained CLIP. Targets are those of H-CLIP: the
q, k and v row slices of every ``attn.in_proj_weight`` and every ``attn.out_proj.weight``.

Parameter count: ``2 · d · r`` per target of width ``d``; H-CLIP's block-diagonal transform of
the same target stores ``d · q``, so ``r = q / 2`` gives LoRA exactly the parameter count of
H-CLIP's POF blocks (ViT-B/16, q = 128: r = 64, 7,864,320 parameters; the paper's "7.5M" is
this count in units of 2^20).
"""
import math
from typing import Dict, Optional, Sequence

import torch
from torch import Tensor, nn

from mmseg_hclip.peft import TARGETS, TowerSpec
from .base import QKV, TOWERS, AttentionWeightAdapter

__all__ = ['LoRAAdapter']


class LoRAAdapter(AttentionWeightAdapter):
    """Low-rank updates ``W + (α/r)·B·A`` of the attention weights of an open_clip ViT CLIP.

    Parameters are stored per tower, stacked over layers and targets:
    ``lora_A.{tower}`` ``[L, n_targets, r, d]`` and ``lora_B.{tower}`` ``[L, n_targets, d, r]``
    (target order q, k, v, out as far as targeted). All updates of a tower are one batched
    matmul per call. LoRA's activation dropout has no weight-space equivalent and is not
    offered (HuggingFace peft's default is no dropout, too).

    Args:
        clip (nn.Module): an ``open_clip.CLIP`` with ViT towers.
        rank (int): ``r``. Default 64: ViT-B/16 then has exactly the parameter count of
            H-CLIP's POF blocks at q = 128 (rule: ``r = q / 2``).
        alpha (float | None): scaling numerator, ``α / r`` multiplies ``B·A``; None means
            ``α = r`` (scale 1).
        targets (Sequence[str]): subset of ``('q', 'k', 'v', 'out')``.
        towers (Sequence[str]): towers to adapt, both by default.
        freeze_clip (bool): set ``requires_grad=False`` on every CLIP parameter.

    Example:
        >>> adapter = LoRAAdapter(clip, rank=64)
        >>> weights = adapter(clip)  # {'visual.transformer.resblocks.0.attn.in_proj_weight': ...}
        >>> feats = torch.func.functional_call(clip, weights, (image, tokens), strict=False)
    """

    def __init__(self,
                 clip: nn.Module,
                 rank: int = 64,
                 alpha: Optional[float] = None,
                 targets: Sequence[str] = TARGETS,
                 towers: Sequence[str] = TOWERS,
                 freeze_clip: bool = True):
        super().__init__(clip, targets=targets, towers=towers, freeze_clip=freeze_clip)
        if isinstance(rank, bool) or not isinstance(rank, int) or rank <= 0:
            raise ValueError(f'rank must be a positive integer, got {rank!r}')
        widths = {name: self.towers[name].width for name in self.adapted_towers}
        too_big = {name: d for name, d in widths.items() if rank > d}
        if too_big:
            raise ValueError(f'rank={rank} exceeds the width of the {sorted(too_big)} tower(s) '
                             f'{too_big}; a LoRA update of rank r needs r <= width')
        self.rank = rank
        self.alpha = float(rank if alpha is None else alpha)
        self.scaling = self.alpha / rank
        n_t = len(self.targets)
        self.lora_A = nn.ParameterDict()
        self.lora_B = nn.ParameterDict()
        params = dict(clip.named_parameters())
        for name in self.adapted_towers:
            spec = self.towers[name]
            ref = params[spec.in_proj_names[0]]
            d, L = spec.width, spec.num_layers
            bound = 1.0 / math.sqrt(d)  # kaiming_uniform(a=√5) of an nn.Linear(d, r) weight
            a = torch.empty(L, n_t, rank, d, device=ref.device, dtype=ref.dtype)
            nn.init.uniform_(a, -bound, bound)
            self.lora_A[name] = nn.Parameter(a)
            self.lora_B[name] = nn.Parameter(
                torch.zeros(L, n_t, d, rank, device=ref.device, dtype=ref.dtype))

    def deltas(self, tower: str, dtype: Optional[torch.dtype] = None) -> Tensor:
        """The updates ``(α/r)·B·A`` of every target of one tower.

        Args:
            tower (str): 'image' or 'text' (an adapted tower).
            dtype (torch.dtype | None): compute dtype (default: the parameters').

        Returns:
            Tensor: ``[L, n_targets, d, d]``.
        """
        a, b = self.lora_A[tower], self.lora_B[tower]
        if dtype is not None:
            a, b = a.to(dtype), b.to(dtype)
        return torch.matmul(b, a) * self.scaling

    def _tower_weights(self, clip: nn.Module, spec: TowerSpec,
                       dtype: Optional[torch.dtype]) -> Dict[str, Tensor]:
        pos = {t: i for i, t in enumerate(self.targets)}
        w_in = self._params(clip, spec.in_proj_names)
        dtype = dtype or w_in[0].dtype
        delta = self.deltas(spec.name, dtype)  # [L, n_t, d, d]
        d = spec.width
        result = {}
        qkv = [t for t in QKV if t in pos]
        if qkv:
            zeros = None
            pieces = []
            for t in QKV:
                if t in pos:
                    pieces.append(delta[:, pos[t]])
                else:  # untargeted slice: unchanged (adding zeros is exact)
                    if zeros is None:
                        zeros = delta.new_zeros(spec.num_layers, d, d)
                    pieces.append(zeros)
            delta_in = torch.stack(pieces, dim=1).view(spec.num_layers, 3 * d, d)
            for layer, (name, w) in enumerate(zip(spec.in_proj_names, w_in)):
                result[name] = w.to(dtype) + delta_in[layer]
        if 'out' in pos:
            w_out = self._params(clip, spec.out_proj_names)
            for layer, (name, w) in enumerate(zip(spec.out_proj_names, w_out)):
                result[name] = w.to(dtype) + delta[layer, pos['out']]
        return result

    def extra_repr(self) -> str:
        towers = ', '.join(f'{n}: L={self.towers[n].num_layers} d={self.towers[n].width}'
                           for n in self.adapted_towers)
        return (f'rank={self.rank}, alpha={self.alpha:g}, targets={self.targets}, {towers}')

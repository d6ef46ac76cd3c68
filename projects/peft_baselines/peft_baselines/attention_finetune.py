"""CAT-Seg-style attention fine-tuning (Cho et al., CVPR 2024): the q and v projections of every
attention block of both CLIP towers are trained directly.

CAT-Seg (``clip_finetune='attention'``) sets ``requires_grad`` on the ``q_proj`` and ``v_proj``
parameters (weights and biases) of both towers. Here the trained weights are held by the adapter
as copies of the pretrained ones (same values at init, same gradients and same optimiser
updates, weight decay included, as training the CLIP parameters themselves), so the backbone,
checkpoints and merge/unmerge work exactly as for H-CLIP and the CLIP parameters stay frozen.
"""
from typing import Dict, Optional, Sequence

import torch
from torch import Tensor, nn

from mmseg_hclip.peft import TowerSpec
from .base import QKV, TOWERS, AttentionWeightAdapter

__all__ = ['AttentionFinetuneAdapter']


class AttentionFinetuneAdapter(AttentionWeightAdapter):
    """Direct training of attention projection weights (CAT-Seg's "attention" fine-tuning).

    Parameters: ``weights.{tower}`` ``[L, n_targets, d, d]`` (copies of the q / v row slices of
    ``attn.in_proj_weight``, and of ``attn.out_proj.weight`` if 'out' is a target) and, with
    ``train_bias``, ``biases.{tower}`` ``[L, n_targets, d]`` (the matching bias slices).

    Args:
        clip (nn.Module): an ``open_clip.CLIP`` with ViT towers, holding the pretrained weights
            (they are copied here, so build the adapter after loading them).
        targets (Sequence[str]): subset of ``('q', 'k', 'v', 'out')``; CAT-Seg: ``('q', 'v')``.
        train_bias (bool): train the bias slices of the targets too (CAT-Seg does: its
            ``q_proj`` / ``v_proj`` parameters include the biases).
        towers (Sequence[str]): towers to adapt, both by default.
        freeze_clip (bool): set ``requires_grad=False`` on every CLIP parameter.
    """

    def __init__(self,
                 clip: nn.Module,
                 targets: Sequence[str] = ('q', 'v'),
                 train_bias: bool = True,
                 towers: Sequence[str] = TOWERS,
                 freeze_clip: bool = True):
        super().__init__(clip, targets=targets, towers=towers, freeze_clip=freeze_clip)
        self.train_bias = bool(train_bias)
        self.weights = nn.ParameterDict()
        self.biases = nn.ParameterDict()
        with torch.no_grad():
            for name in self.adapted_towers:
                spec = self.towers[name]
                weights, biases = self._target_slices(clip, spec, bias=self.train_bias)
                self.weights[name] = nn.Parameter(weights.clone())
                if biases is not None:
                    self.biases[name] = nn.Parameter(biases.clone())

    def _target_slices(self, clip: nn.Module, spec: TowerSpec, bias: bool):
        """The pretrained target slices ``[L, n_t, d, d]`` (and biases ``[L, n_t, d]``)."""
        d = spec.width
        weights, biases = [], []
        for layer in range(spec.num_layers):
            attn = spec.in_proj_names[layer].rsplit('.', 1)[0]
            w_in, w_out = self._params(clip, [spec.in_proj_names[layer],
                                              spec.out_proj_names[layer]])
            rows = [w_in[i * d:(i + 1) * d] for i, t in enumerate(QKV) if t in self.targets]
            if 'out' in self.targets:
                rows.append(w_out)
            weights.append(torch.stack(rows))
            if bias:
                b_in = _optional_param(clip, f'{attn}.in_proj_bias')
                b_out = _optional_param(clip, f'{attn}.out_proj.bias')
                if b_in is None or ('out' in self.targets and b_out is None):
                    raise ValueError(f'{attn} has no bias; build with train_bias=False')
                slices = [b_in[i * d:(i + 1) * d] for i, t in enumerate(QKV)
                          if t in self.targets]
                if 'out' in self.targets:
                    slices.append(b_out)
                biases.append(torch.stack(slices))
        return torch.stack(weights), (torch.stack(biases) if bias else None)

    def _tower_weights(self, clip: nn.Module, spec: TowerSpec,
                       dtype: Optional[torch.dtype]) -> Dict[str, Tensor]:
        pos = {t: i for i, t in enumerate(self.targets)}
        d = spec.width
        trained_w = self.weights[spec.name]
        trained_b = self.biases[spec.name] if spec.name in self.biases else None
        dtype = dtype or self._params(clip, spec.in_proj_names[:1])[0].dtype
        result = {}
        for layer in range(spec.num_layers):
            attn = spec.in_proj_names[layer].rsplit('.', 1)[0]
            if any(t in pos for t in QKV):
                w_in = clip.get_parameter(spec.in_proj_names[layer])
                rows = [trained_w[layer, pos[t]] if t in pos else w_in[i * d:(i + 1) * d]
                        for i, t in enumerate(QKV)]
                result[spec.in_proj_names[layer]] = torch.cat(rows).to(dtype)
                if trained_b is not None:
                    b_in = clip.get_parameter(f'{attn}.in_proj_bias')
                    parts = [trained_b[layer, pos[t]] if t in pos else b_in[i * d:(i + 1) * d]
                             for i, t in enumerate(QKV)]
                    result[f'{attn}.in_proj_bias'] = torch.cat(parts).to(dtype)
            if 'out' in pos:
                result[spec.out_proj_names[layer]] = trained_w[layer, pos['out']].to(dtype)
                if trained_b is not None:
                    result[f'{attn}.out_proj.bias'] = trained_b[layer, pos['out']].to(dtype)
        return result

    def extra_repr(self) -> str:
        towers = ', '.join(f'{n}: L={self.towers[n].num_layers} d={self.towers[n].width}'
                           for n in self.adapted_towers)
        return f'targets={self.targets}, train_bias={self.train_bias}, {towers}'


def _optional_param(module: nn.Module, name: str) -> Optional[Tensor]:
    try:
        return module.get_parameter(name)
    except AttributeError:
        return None

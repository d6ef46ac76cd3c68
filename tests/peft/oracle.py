"""The slow oracle for adapter tests: an adapter's parameters run through ``peft/reference.py``.

Only the adapter's *parameters* and settings are read here (the stored blocks are reshaped
from ``[L_t · n_targets, b, q, q]`` to the mathematical ``[L_t, n_targets, b, q, q]``); the
DCRC mixing, the Cayley map and the weight products are the reference's dense einsums and
explicit inverses. Differentiable: the result depends on the adapter's parameter tensors
themselves, so ``torch.autograd.grad`` of it gives the reference gradient.
"""
from typing import Dict

import torch
from torch import Tensor, nn

from mmseg_hclip.peft import reference

QKV = ('q', 'k', 'v')


def reference_blocks(adapter) -> Dict[str, Tensor]:
    """tower -> final blocks ``[L_t, n_targets, b_t, q, q]`` from :func:`reference.final_blocks`."""
    q, n_t = adapter.block_size, len(adapter.targets)
    raw = {
        tower: adapter.raw_parameters()[tower].reshape(spec.num_layers, n_t, spec.width // q, q, q)
        for tower, spec in adapter.towers.items()
    }
    params, activation = None, 'gelu'
    if adapter.dcrc_variant == 'mlp':
        d = adapter.dcrc
        params = dict(f3=(d.f3.weight1, d.f3.weight2), f4=(d.f4.weight1, d.f4.weight2),
                      alpha=d.alpha)
        activation = d.f3.activation
    elif adapter.dcrc_variant == 'linear':
        params = dict(S3=adapter.dcrc.s3, S4=adapter.dcrc.s4)
    return reference.final_blocks(
        raw,
        dcrc=adapter.dcrc_variant,
        dcrc_params=params,
        orthogonal=adapter.orthogonal_towers,
        cayley_convention=adapter.cayley_convention,
        activation=activation)


def reference_weights(adapter, clip: nn.Module) -> Dict[str, Tensor]:
    """name -> adapted ``in_proj_weight`` / ``out_proj.weight`` of every layer (Eq. 5)."""
    blocks = reference_blocks(adapter)
    params = dict(clip.named_parameters())
    out = {}
    for tower, spec in adapter.towers.items():
        d = spec.width
        for layer in range(spec.num_layers):
            w_in = params[spec.in_proj_names[layer]].detach()
            rows = []
            for i, name in enumerate(QKV):
                W = w_in[i * d:(i + 1) * d]
                if name in adapter.targets:
                    W = reference.adapted_weight(W.to(blocks[tower].dtype), blocks, tower, layer,
                                                 adapter.targets.index(name),
                                                 adapter.sides[name])
                rows.append(W.to(w_in.dtype))
            if any(name in adapter.targets for name in QKV):
                out[spec.in_proj_names[layer]] = torch.cat(rows)
            if 'out' in adapter.targets:
                W = params[spec.out_proj_names[layer]].detach()
                out[spec.out_proj_names[layer]] = reference.adapted_weight(
                    W.to(blocks[tower].dtype), blocks, tower, layer,
                    adapter.targets.index('out'), adapter.sides['out']).to(W.dtype)
    return out

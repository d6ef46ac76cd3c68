"""What an :class:`~mmseg_hclip.peft.HCLIPAdapter` reports about itself: the hyperspherical
energy drift of its adapted weights (Eq. 1) and its parameter counts (DESIGN §3)."""
from typing import Dict, Sequence, Union

import torch
from torch import Tensor, nn

from .clip_towers import TOWERS
from .energy import hyperspherical_energy, relative_energy_drift

__all__ = ['energy_drift', 'parameter_counts']

QKV = ('q', 'k', 'v')


def _reference_energy(adapter, key, weight: Tensor, **kwargs) -> Tensor:
    """HE of a pretrained weight, kept in ``adapter._energy_cache`` while it is unchanged."""
    stamp = (weight.data_ptr(), weight._version)
    cached = adapter._energy_cache.get(key)
    if cached is None or cached[:2] != stamp:
        cached = (*stamp, hyperspherical_energy(weight, **kwargs))
        adapter._energy_cache[key] = cached
    return cached[2]


@torch.no_grad()
def energy_drift(adapter,
                 clip: nn.Module,
                 towers: Union[str, Sequence[str]] = ('text', ),
                 **kwargs) -> Dict[str, float]:
    """Relative hyperspherical-energy drift of every target against its pretrained weight.

    ``|HE(W') - HE(W)| / HE(W)`` (Eq. 1, normalised) for the q, k, v slices and out_proj of
    every layer. Zero (to rounding) for orthogonal towers on the input side. The pretrained
    energies are cached (invalidated when the frozen weights change).

    Args:
        adapter (HCLIPAdapter): the adapter (merged or not).
        clip (nn.Module): the CLIP it was built for.
        towers (str | Sequence[str]): towers to report (default: text).
        **kwargs: forwarded to :func:`hyperspherical_energy` (``chunk_size``, ``dtype``).

    Returns:
        dict[str, float]: ``'{tower}.{layer}.{target}'`` -> drift.
    """
    towers = adapter._check_towers_arg(towers)
    if adapter.merged:
        if adapter._originals is None:
            raise RuntimeError('merged with keep_original=False: no pretrained weights to '
                               'compare against')
        current = {n: clip.get_parameter(n) for n in adapter._originals}
        original = adapter._originals
    else:
        current = adapter(clip, towers)
        original = {n: clip.get_parameter(n) for n in current}
    drifts = {}
    for tower in towers:
        spec = adapter.towers[tower]
        for layer in range(spec.num_layers):
            for target in adapter.targets:
                if target == 'out':
                    name, rows = spec.out_proj_names[layer], slice(None)
                else:
                    i = QKV.index(target)
                    name, rows = spec.in_proj_names[layer], slice(i * spec.width,
                                                                  (i + 1) * spec.width)
                ref = original[name][rows]
                ref_energy = _reference_energy(adapter, (name, target), ref, **kwargs)
                drift = relative_energy_drift(
                    current[name][rows], ref, reference_energy=ref_energy, **kwargs)
                drifts[f'{tower}.{layer}.{target}'] = drift.item()
    return drifts


def parameter_counts(adapter) -> Dict[str, Dict[str, int]]:
    """Stored and effective parameter counts (the parameter report of DESIGN §3).

    Returns:
        dict: ``{'image'|'text'|'dcrc'|'total': {'stored': n, 'trainable': n,
        'effective': n}}``. ``effective`` counts the degrees of freedom: a Cayley block has
        ``q(q-1)/2`` (its skew part), a free block ``q²``; relation maps count in full.
    """
    q = adapter.block_size
    counts = {}
    raw = adapter.raw_parameters()
    for name in TOWERS:
        param = raw[name]
        n_blocks = param.shape[0] * param.shape[1]
        per_block = q * (q - 1) // 2 if name in adapter.orthogonal_towers else q * q
        counts[name] = dict(
            stored=param.numel(),
            trainable=param.numel() if param.requires_grad else 0,
            effective=n_blocks * per_block)
    dcrc_params = list(adapter.dcrc.parameters()) if adapter.dcrc is not None else []
    n_dcrc = sum(p.numel() for p in dcrc_params)
    counts['dcrc'] = dict(
        stored=n_dcrc,
        trainable=sum(p.numel() for p in dcrc_params if p.requires_grad),
        effective=n_dcrc)
    counts['total'] = {
        key: sum(counts[k][key] for k in ('image', 'text', 'dcrc'))
        for key in ('stored', 'trainable', 'effective')
    }
    return counts

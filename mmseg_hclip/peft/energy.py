"""Hyperspherical energy of a layer's neurons (paper §3.1, Eq. 1).

``HE(W) = sum_{i != j} ||ŵ_i - ŵ_j||^{-1}`` over the unit-normalised rows ``ŵ_i = w_i / ||w_i||``
of a weight ``W [n, d]`` (the neurons of ``y = x W^T``). The sum runs over ordered pairs, i.e.
every unordered pair counts twice, exactly as written in the paper.

The energy is computed in row chunks from the Gram matrix ``G = Ŵ_c Ŵ^T`` and
``||ŵ_i - ŵ_j||^2 = 2 - 2 G_ij``: memory is ``O(chunk · n)``, never ``O(n^2 · d)``, so a
2304 x 768 ``in_proj_weight`` needs a few MB. fp64 is the default to keep the cancellation in
``2 - 2G`` harmless for nearly parallel neurons.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['hyperspherical_energy', 'relative_energy_drift']


def hyperspherical_energy(weight: Tensor,
                          chunk_size: int = 1024,
                          power: float = 1.0,
                          dtype: Optional[torch.dtype] = torch.float64) -> Tensor:
    """Hyperspherical energy of the rows of ``weight`` (§3.1, the energies compared in Eq. 1).

    Args:
        weight (Tensor): ``W`` of shape ``[n, d]``; rows are neurons. Zero rows stay zero after
            normalisation (``F.normalize``); duplicated neurons give an infinite energy.
        chunk_size (int): rows per chunk; peak extra memory is ``chunk_size · n`` entries.
        power (float): ``s`` of the generalised energy ``sum ||ŵ_i - ŵ_j||^{-s}``; the paper
            uses ``s = 1``.
        dtype (torch.dtype | None): computation dtype (default fp64); ``None`` keeps
            ``weight.dtype``.

    Returns:
        Tensor: 0-dim energy in ``dtype``. Differentiable with respect to ``weight``.
    """
    if weight.dim() != 2:
        raise ValueError(f'hyperspherical_energy expects a 2-D weight [n, d], got shape '
                         f'{tuple(weight.shape)}')
    if chunk_size <= 0:
        raise ValueError(f'chunk_size must be positive, got {chunk_size}')
    x = weight if dtype is None else weight.to(dtype)
    x = F.normalize(x, dim=1)
    n = x.shape[0]
    total = x.new_zeros(())
    cols = torch.arange(n, device=x.device)
    for start in range(0, n, chunk_size):
        rows = cols[start:start + chunk_size]
        gram = x[start:start + chunk_size] @ x.T  # [c, n]
        dist_sq = (2.0 - 2.0 * gram).clamp_min(0.0)
        off_diag = rows[:, None] != cols[None, :]
        inv = torch.where(off_diag, dist_sq, torch.ones_like(dist_sq)).pow(-0.5 * power)
        total = total + torch.where(off_diag, inv, torch.zeros_like(inv)).sum()
    return total


def relative_energy_drift(weight: Tensor,
                          reference: Tensor,
                          signed: bool = False,
                          reference_energy: Optional[Tensor] = None,
                          **kwargs) -> Tensor:
    """Relative hyperspherical-energy drift ``|HE(W) - HE(W0)| / HE(W0)`` (Eq. 1, normalised).

    Zero (up to rounding) whenever ``W = W0 · B`` with an orthogonal ``B``; the quantity POF keeps
    at zero for the text tower.

    Args:
        weight (Tensor): fine-tuned ``W`` ``[n, d]``.
        reference (Tensor): pretrained ``W0`` ``[n, d]`` (ignored when ``reference_energy`` is
            given, except for its shape check).
        signed (bool): return ``(HE(W) - HE(W0)) / HE(W0)`` instead of its absolute value.
        reference_energy (Tensor | None): precomputed ``HE(W0)`` (saves one energy).
        **kwargs: forwarded to :func:`hyperspherical_energy` (``chunk_size``, ``power``,
            ``dtype``).

    Returns:
        Tensor: 0-dim relative drift.
    """
    if weight.shape != reference.shape:
        raise ValueError(f'weight {tuple(weight.shape)} and reference {tuple(reference.shape)} '
                         'must have the same shape')
    energy = hyperspherical_energy(weight, **kwargs)
    if reference_energy is None:
        reference_energy = hyperspherical_energy(reference, **kwargs)
    drift = (energy - reference_energy) / reference_energy
    return drift if signed else drift.abs()

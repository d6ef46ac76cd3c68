"""Dual cross-relation communication, DCRC (paper §4.3, Eq. 6-7 and 16-17).

All blocks of both towers form one 4-order tensor ``T ∈ R^{q×q×S×M}`` (Eq. 7): mode 3 runs over
the ``S = b_text + b_image`` blocks of a weight (the paper's ``b + b``, text blocks first), mode 4
over the ``M = n_targets · L`` (target, layer) positions, layer-major
(``m = layer · n_targets + target``). Two relation maps mix it once per model forward:

* ``'mlp'`` (paper, Eq. 17 with k = 2): ``T_w = f4(f3(T))``, ``f_n(X) = σ(X ×_n W1) ×_n W2``,
  then ``T ← T + α ⊙ T_w`` with ``α ∈ R^{S×M}`` zero-initialised (the model at init is exactly
  the pretrained CLIP);
* ``'linear'`` (Eq. 16, the authors' released code): ``T ← T ×_3 S3 ×_4 S4`` with identity-
  initialised ``S3 ∈ R^{S×S}`` and ``S4 ∈ R^{M×M}``; optionally one ``S3`` per layer index
  (the released code's twelve 10×10 maps). The mode-4 mix comes first and the mode-3 map is
  the one of the *destination* position's layer, as in the released code (which builds the
  blocks of layer ℓ by mixing mode 3 of all positions with ``S3[ℓ]``, then mode 4, then taking
  ℓ's positions): ``out[:, :, :, d] = S3[layer(d)] · Σ_m S4[d, m] · T[:, :, :, m]`` along mode
  3. With a single ``S3`` the two mode products commute and this is plain Eq. 16.

Memory layout: the mathematical tensor ``T[i, j, s, m]`` is stored as ``[M, S, q, q]``
(``stored[m, s] = T[:, :, s, m]``, one contiguous q×q block per entry, the layout the Cayley
solve and the weight products need). Both mode products are copy-free matrix products on it:
``T ×_4 S4 = S4 @ T.view(M, S·q·q)`` (one ``mm``) and ``T ×_3 S3`` is one ``bmm`` of ``S3``
(broadcast over the M positions) with ``T.view(M, S, q·q)``; their backward passes are copy-free
too (an earlier ``[S, q, q, M]`` layout needed cache-hostile transposes of the whole tensor to
reach the blocks). :meth:`HCLIPAdapter.dcrc_tensor` returns the ``q×q×S×M`` view.
"""
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ['DCRC_VARIANTS', 'RelationMLP', 'DCRC']

DCRC_VARIANTS = ('mlp', 'linear', 'off')

_ACTIVATIONS = {
    'gelu': F.gelu,
    'relu': F.relu,
    'tanh': torch.tanh,
    'silu': F.silu,
}


def _mix(weight: Tensor, x: Tensor, mode: int) -> Tensor:
    """``x ×_mode weight`` on the stored layout ``x [M, S, q·q]`` (paper modes 3 and 4).

    Args:
        weight (Tensor): ``[new, old]``, or ``[G, new, old]`` for mode 3 with one matrix per
            group of ``M / G`` consecutive positions.
        x (Tensor): ``[M, S, q·q]``.
        mode (int): 3 or 4 (paper numbering).

    Returns:
        Tensor: ``[M, new, q·q]`` (mode 3) or ``[new, S, q·q]`` (mode 4).
    """
    m, s, qq = x.shape
    if mode == 4:
        return (weight @ x.reshape(m, s * qq)).reshape(weight.shape[0], s, qq)
    if weight.dim() == 3:  # one mode-3 map per group of positions (per layer index)
        groups = weight.shape[0]
        weight = weight[:, None].expand(groups, m // groups, *weight.shape[1:])
    else:
        weight = weight.expand(m, *weight.shape)
    # an explicit bmm: torch.matmul would fold [S', S] @ [M, S, qq] through transposed copies
    return torch.bmm(weight.reshape(m, *weight.shape[-2:]), x)


class RelationMLP(nn.Module):
    """One relation map ``f_n`` of Eq. 17 with two layers: ``f_n(X) = σ(X ×_n W1) ×_n W2``.

    Args:
        size (int): length of the mode it acts on (``S`` for ``f3``, ``M`` for ``f4``).
        hidden (int): hidden width of the MLP.
        activation (str): the scalar nonlinearity ``σ``: 'gelu', 'relu', 'tanh' or 'silu'.
        mode (int): 3 or 4, the mode of ``T`` it acts on.
    """

    def __init__(self, size: int, hidden: int, activation: str = 'gelu', mode: int = 3):
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f'unknown DCRC activation {activation!r}; choose one of '
                             f'{sorted(_ACTIVATIONS)}')
        if mode not in (3, 4):
            raise ValueError(f'mode must be 3 or 4, got {mode}')
        self.size, self.hidden, self.mode, self.activation = size, hidden, mode, activation
        self.weight1 = nn.Parameter(torch.empty(hidden, size))
        self.weight2 = nn.Parameter(torch.empty(size, hidden))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``nn.Linear``'s default initialisation for both layers."""
        nn.init.kaiming_uniform_(self.weight1, a=math.sqrt(5))
        nn.init.kaiming_uniform_(self.weight2, a=math.sqrt(5))

    def forward(self, x: Tensor) -> Tensor:
        """Apply ``f_n`` (Eq. 17).

        Args:
            x (Tensor): stored-layout tensor ``[M, S, q·q]``.

        Returns:
            Tensor: same shape as ``x``.
        """
        act = _ACTIVATIONS[self.activation]
        return _mix(self.weight2, act(_mix(self.weight1, x, self.mode)), self.mode)

    def extra_repr(self) -> str:
        return (f'mode={self.mode}, size={self.size}, hidden={self.hidden}, '
                f'activation={self.activation}')


class DCRC(nn.Module):
    """Dual cross-relation communication over the block tensor (Eq. 16 or Eq. 17).

    Args:
        num_slices (int): ``S``, blocks per weight summed over both towers (mode 3).
        num_positions (int): ``M``, (target, layer) positions (mode 4).
        variant (str): 'mlp' (Eq. 17 + zero-initialised α) or 'linear' (Eq. 16).
        hidden (tuple[int, int] | None): hidden widths of ``f3`` and ``f4`` ('mlp'); defaults to
            ``(S, M)``.
        activation (str): nonlinearity of the 'mlp' variant.
        mode3_groups (int): 'linear' only: number of separate ``S3`` maps, each acting on
            ``M / mode3_groups`` consecutive positions (1 = Eq. 16; ``L`` = one map per layer
            index as in the authors' code). The map of a group is applied after ``S4``, to
            the positions of the group (the destinations of the mode-4 mix).
    """

    def __init__(self,
                 num_slices: int,
                 num_positions: int,
                 variant: str = 'mlp',
                 hidden: Optional[tuple] = None,
                 activation: str = 'gelu',
                 mode3_groups: int = 1):
        super().__init__()
        if variant not in ('mlp', 'linear'):
            raise ValueError(f"DCRC variant must be 'mlp' or 'linear', got {variant!r}")
        self.variant = variant
        self.num_slices, self.num_positions = num_slices, num_positions
        S, M = num_slices, num_positions
        if variant == 'mlp':
            if mode3_groups != 1:
                raise ValueError('mode3_groups is a setting of the linear DCRC variant only')
            h3, h4 = hidden if hidden is not None else (S, M)
            self.f3 = RelationMLP(S, h3, activation, mode=3)
            self.f4 = RelationMLP(M, h4, activation, mode=4)
            self.alpha = nn.Parameter(torch.zeros(S, M))
        else:
            if hidden is not None:
                raise ValueError('hidden is a setting of the mlp DCRC variant only')
            if mode3_groups < 1 or M % mode3_groups:
                raise ValueError(f'mode3_groups={mode3_groups} must divide the {M} positions')
            eye = torch.eye(S)
            self.s3 = nn.Parameter(eye.clone() if mode3_groups == 1 else
                                   eye.repeat(mode3_groups, 1, 1))
            self.s4 = nn.Parameter(torch.eye(M))

    def forward(self, blocks: Tensor) -> Tensor:
        """Mix the block tensor once.

        Args:
            blocks (Tensor): stored layout ``[M, S, q, q]`` of ``T ∈ R^{q×q×S×M}``.

        Returns:
            Tensor: the communicated tensor, same shape. 'mlp': ``T + α ⊙ f4(f3(T))``;
            'linear': ``T ×_4 S4`` then ``×_3 S3`` of each destination position's group
            (``T ×_3 S3 ×_4 S4`` when there is one ``S3``).
        """
        M, S, q, _ = blocks.shape
        if (M, S) != (self.num_positions, self.num_slices):
            raise ValueError(f'DCRC built for M={self.num_positions}, S={self.num_slices}; got a '
                             f'block tensor [M={M}, S={S}, {q}, {q}]')
        x = blocks.reshape(M, S, q * q)
        if self.variant == 'mlp':
            mixed = self.f4(self.f3(x))  # T_w, Eq. 17
            out = torch.addcmul(x, self.alpha.t().unsqueeze(-1), mixed)  # T + α ⊙ T_w
        else:
            # S4 first, then the S3 of the destination's group (= T ×3 S3 ×4 S4 for one S3)
            out = _mix(self.s3, _mix(self.s4, x, 4), 3)
        return out.reshape(M, S, q, q)

    def extra_repr(self) -> str:
        return f'variant={self.variant}, S={self.num_slices}, M={self.num_positions}'

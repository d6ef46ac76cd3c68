"""H-CLIP's method read slowly: one short function per equation of the paper (§4.2-4.3).

This module is the page to open first, and the oracle the tests of the fast engine compare
with. It works on the *mathematical* layouts of the paper — a weight ``W [out, in]`` (rows are
neurons, ``y = x W^T``), a block-diagonal ``B = diag(R_1, ..., R_b)`` and the block tensor
``T ∈ R^{q×q×S×M}`` — with dense matrices, explicit inverses and ``einsum``. No caches, no
storage layouts, no custom autograd: everything is differentiable by plain autograd, in any
float dtype. It is slow on purpose; the adapter (:class:`~mmseg_hclip.peft.HCLIPAdapter`)
computes the same numbers fast.

Reading order (paper numbering):

=====================  ================================================================
Eq. 2 (+ Eq. 3)        :func:`skew`, :func:`cayley` (paper's and the authors' convention)
Eq. 4                  :func:`block_diagonal`
Eq. 5                  :func:`transform_weight` (``W · B`` input side, ``B · W`` output side)
Eq. 6-7                :func:`layer_slot`, :func:`block_tensor`, :func:`split_block_tensor`
Eq. 11, 16-17          :func:`mode_product` (modes 3 and 4, 1-based as in the paper)
Eq. 16                 :func:`dcrc_linear` (one ``S3``, or one per layer as the authors)
Eq. 17, ``T + αT_w``   :func:`relation_mlp`, :func:`dcrc_mlp`
all of it              :func:`final_blocks`, :func:`adapted_weight`
=====================  ================================================================

Conventions the paper leaves open (and ``docs/method.md`` explains): mode 3 of ``T`` lists the
text tower's ``b_text`` blocks first, then the image tower's ``b_image``
(``S = b_text + b_image``); mode 4 runs over ``M = n_targets · L_max`` (layer, target)
positions, layer-major (``m = slot · n_targets + target``); a tower shallower than ``L_max``
puts its layer ``l`` at slot ``(l + 1) · L_max // L_t - 1`` and leaves zeros elsewhere.

Pure torch; nothing from ``mmseg_hclip`` is imported, so the tests built on it are independent
of the code they check.
"""
from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    'skew', 'cayley', 'block_diagonal', 'transform_weight', 'layer_slot', 'block_tensor',
    'split_block_tensor', 'mode_product', 'dcrc_linear', 'relation_mlp', 'dcrc_mlp',
    'final_blocks', 'adapted_weight'
]

#: the scalar nonlinearities σ of Eq. 17 the adapter offers
ACTIVATIONS = {'gelu': F.gelu, 'relu': F.relu, 'tanh': torch.tanh, 'silu': F.silu}
#: order of the towers along mode 3 of T
TOWER_ORDER = ('text', 'image')


# ---------------------------------------------------------------- POF (§4.2)
def skew(P: Tensor) -> Tensor:
    """The skew-symmetric part ``Q = (P - P^T) / 2`` of square matrices (Eq. 2: "Q skew").

    Args:
        P (Tensor): ``[..., q, q]``.

    Returns:
        Tensor: ``[..., q, q]``, ``Q^T = -Q``.
    """
    return 0.5 * (P - P.transpose(-1, -2))


def cayley(P: Tensor, convention: str = 'paper') -> Tensor:
    """Cayley map of the skew part of ``P`` (Eq. 2); the result is orthogonal (Eq. 3).

    * ``'paper'`` (Eq. 2): ``R = (I + Q)(I - Q)^{-1}``;
    * ``'official'`` (the authors' released code): ``R = (I - Q)(I + Q)^{-1}``, i.e. the paper's
      map of ``-Q``.

    Args:
        P (Tensor): ``[..., q, q]`` generators (any square matrices; only ``skew(P)`` counts).
        convention (str): 'paper' or 'official'.

    Returns:
        Tensor: ``[..., q, q]`` with ``R^T R = R R^T = I``; ``P = 0`` gives ``R = I``.
    """
    if convention not in ('paper', 'official'):
        raise ValueError(f"convention must be 'paper' or 'official', got {convention!r}")
    Q = skew(P)
    eye = torch.eye(P.shape[-1], dtype=P.dtype, device=P.device)
    if convention == 'paper':
        return (eye + Q) @ torch.linalg.inv(eye - Q)
    return (eye - Q) @ torch.linalg.inv(eye + Q)


def block_diagonal(blocks: Tensor) -> Tensor:
    """``B = diag(R_1, ..., R_b)`` as a dense matrix (Eq. 4).

    Args:
        blocks (Tensor): ``[b, q, q]``.

    Returns:
        Tensor: ``[b·q, b·q]``.
    """
    return torch.block_diag(*blocks.unbind(0))


def transform_weight(W: Tensor, blocks: Tensor, side: str) -> Tensor:
    """The adapted weight of one target, ``W · B`` or ``B · W`` (Eq. 5, ``B`` from Eq. 4).

    Eq. 5 writes ``R_ℓ W_ℓ`` (``side='output'``: the neurons, rows of ``W``, are mixed within
    each block). Only ``side='input'`` (``W · B``: every neuron rotated by the same ``B``) keeps
    the hyperspherical energy of an orthogonal ``B`` (§3.1).

    Args:
        W (Tensor): frozen weight ``[out, in]``.
        blocks (Tensor): ``[b, q, q]``, ``b·q = in`` (input side) or ``out`` (output side).
        side (str): 'input' or 'output'.

    Returns:
        Tensor: ``[out, in]``.
    """
    B = block_diagonal(blocks)
    if side == 'input':
        return W @ B
    if side == 'output':
        return B @ W
    raise ValueError(f"side must be 'input' or 'output', got {side!r}")


# ---------------------------------------------------------------- DCRC (§4.3)
def layer_slot(layer: int, num_layers: int, num_layers_max: int) -> int:
    """Layer slot along mode 4 of a tower with ``num_layers`` layers: relative depth, last
    layers aligned (``(l + 1) · L_max // L_t - 1``; the identity for equal depths)."""
    return (layer + 1) * num_layers_max // num_layers - 1


def block_tensor(blocks: Dict[str, Tensor]) -> Tensor:
    """The 4-order block tensor ``T ∈ R^{q×q×S×M}`` (Eq. 6-7).

    ``T[:, :, s, m]`` is block ``s`` of position ``m``: ``s < b_text`` are the text tower's
    blocks, then the image tower's; ``m = slot · n_targets + target``. Slots a shallower tower
    does not fill are zero.

    Args:
        blocks (dict[str, Tensor]): 'text' and 'image' -> ``[L_t, n_targets, b_t, q, q]``
            (layer, target, block).

    Returns:
        Tensor: ``[q, q, S, M]``.
    """
    L_max = max(blocks[t].shape[0] for t in TOWER_ORDER)
    n_t, q = blocks['text'].shape[1], blocks['text'].shape[-1]
    columns = []  # one [q, q, S] slice per position m
    for slot in range(L_max):
        for target in range(n_t):
            slices = []
            for tower in TOWER_ORDER:
                x = blocks[tower]
                layers = [l for l in range(x.shape[0]) if layer_slot(l, x.shape[0], L_max) == slot]
                if layers:
                    slices.append(x[layers[0], target])  # [b_t, q, q]
                else:
                    slices.append(x.new_zeros(x.shape[2], q, q))
            columns.append(torch.cat(slices).permute(1, 2, 0))
    return torch.stack(columns, dim=-1)


def split_block_tensor(T: Tensor, shapes: Dict[str, Sequence[int]]) -> Dict[str, Tensor]:
    """Inverse of :func:`block_tensor`: each tower's blocks back from ``T`` (padding dropped).

    Args:
        T (Tensor): ``[q, q, S, M]``.
        shapes (dict[str, Sequence[int]]): tower -> ``(L_t, n_targets, b_t)``.

    Returns:
        dict[str, Tensor]: tower -> ``[L_t, n_targets, b_t, q, q]``.
    """
    L_max = max(shapes[t][0] for t in TOWER_ORDER)
    out, offset = {}, 0
    for tower in TOWER_ORDER:
        L, n_t, b = shapes[tower]
        out[tower] = torch.stack([
            torch.stack([
                T[:, :, offset:offset + b, layer_slot(l, L, L_max) * n_t + t].permute(2, 0, 1)
                for t in range(n_t)
            ]) for l in range(L)
        ])
        offset += b
    return out


def mode_product(T: Tensor, A: Tensor, mode: int) -> Tensor:
    """Mode-n product ``T ×_n A`` of ``T [q, q, S, M]`` for the paper's modes 3 and 4 (Eq. 11).

    ``(T ×_3 A)[i, j, t, m] = Σ_s A[t, s] T[i, j, s, m]`` and
    ``(T ×_4 A)[i, j, s, d] = Σ_m A[d, m] T[i, j, s, m]``.
    """
    if mode == 3:
        return torch.einsum('ts,ijsm->ijtm', A, T)
    if mode == 4:
        return torch.einsum('dm,ijsm->ijsd', A, T)
    raise ValueError(f'mode must be 3 or 4, got {mode}')


def dcrc_linear(T: Tensor, S3: Tensor, S4: Tensor) -> Tensor:
    """Linear DCRC, ``T ← T ×_3 S_3 ×_4 S_4`` (Eq. 16).

    With one map per layer (``S3 [L_max, S, S]``, the authors' released code), layer ℓ's
    blocks are built as the authors build them: mode 4 of every position is mixed with ``S4``
    first, then mode 3 of each *destination* position ``d`` with the map of its layer,
    ``out[..., d] = (Σ_m S4[d, m] T[..., m]) ×_3 S3[d // n_targets]``. With a single ``S3`` the
    two products commute and this is Eq. 16 as printed.

    Args:
        T (Tensor): ``[q, q, S, M]``.
        S3 (Tensor): ``[S, S]``, or ``[L_max, S, S]`` (one per layer slot; ``M / L_max``
            consecutive positions each).
        S4 (Tensor): ``[M, M]``.

    Returns:
        Tensor: ``[q, q, S, M]``.
    """
    if S3.dim() == 2:
        return mode_product(mode_product(T, S3, 3), S4, 4)
    X = mode_product(T, S4, 4)
    per_layer = T.shape[3] // S3.shape[0]
    return torch.stack([
        torch.einsum('ts,ijs->ijt', S3[d // per_layer], X[..., d]) for d in range(T.shape[3])
    ], dim=-1)


def relation_mlp(X: Tensor, W1: Tensor, W2: Tensor, mode: int, activation: str) -> Tensor:
    """One relation map of Eq. 17 with ``k = 2``: ``f_n(X) = σ(X ×_n W1) ×_n W2``.

    Args:
        X (Tensor): ``[q, q, S, M]``.
        W1 (Tensor): ``[hidden, size]``; W2 (Tensor): ``[size, hidden]`` (``size`` = S for
            mode 3, M for mode 4).
        mode (int): 3 (``f3``) or 4 (``f4``).
        activation (str): σ: 'gelu', 'relu', 'tanh' or 'silu'.
    """
    return mode_product(ACTIVATIONS[activation](mode_product(X, W1, mode)), W2, mode)


def dcrc_mlp(T: Tensor, f3: Sequence[Tensor], f4: Sequence[Tensor], alpha: Tensor,
             activation: str = 'gelu') -> Tensor:
    """MLP DCRC: ``T_w = f4(f3(T))`` (Eq. 17) and ``T ← T + α ⊙ T_w`` (§4.3, after Eq. 17).

    Args:
        T (Tensor): ``[q, q, S, M]``.
        f3, f4 (Sequence[Tensor]): ``(W1, W2)`` of each map.
        alpha (Tensor): ``[S, M]``, broadcast over the ``q×q`` entries.
        activation (str): σ.
    """
    T_w = relation_mlp(relation_mlp(T, *f3, 3, activation), *f4, 4, activation)
    return T + alpha * T_w


# ---------------------------------------------------------------- everything together
def final_blocks(raw: Dict[str, Tensor],
                 dcrc: str = 'mlp',
                 dcrc_params: Optional[Dict[str, object]] = None,
                 orthogonal: Sequence[str] = ('text', ),
                 cayley_convention: str = 'paper',
                 activation: str = 'gelu') -> Dict[str, Tensor]:
    """The blocks ``R`` every target weight is transformed with: Eq. 6-7, then 16 or 17, then 2.

    Args:
        raw (dict[str, Tensor]): 'text' and 'image' -> ``[L_t, n_targets, b_t, q, q]``: the
            trained parameters (``R`` itself for a free tower, the generators ``P`` for an
            orthogonal one).
        dcrc (str): 'mlp', 'linear' or 'off'.
        dcrc_params (dict | None): 'mlp': ``f3=(W1, W2), f4=(W1, W2), alpha``; 'linear':
            ``S3, S4``.
        orthogonal (Sequence[str]): towers whose blocks go through the Cayley map.
        cayley_convention (str): 'paper' or 'official'.
        activation (str): σ of the 'mlp' variant.

    Returns:
        dict[str, Tensor]: tower -> ``[L_t, n_targets, b_t, q, q]``.
    """
    mixed = raw
    if dcrc != 'off':
        T = block_tensor(raw)
        if dcrc == 'mlp':
            T = dcrc_mlp(T, dcrc_params['f3'], dcrc_params['f4'], dcrc_params['alpha'],
                         activation)
        elif dcrc == 'linear':
            T = dcrc_linear(T, dcrc_params['S3'], dcrc_params['S4'])
        else:
            raise ValueError(f"dcrc must be 'mlp', 'linear' or 'off', got {dcrc!r}")
        mixed = split_block_tensor(T, {t: raw[t].shape[:3] for t in TOWER_ORDER})
    return {t: cayley(mixed[t], cayley_convention) if t in orthogonal else mixed[t]
            for t in TOWER_ORDER}


def adapted_weight(W: Tensor, blocks: Dict[str, Tensor], tower: str, layer: int, target: int,
                   side: str) -> Tensor:
    """The adapted weight of any target (Eq. 5): ``W · diag(R)`` or ``diag(R) · W``.

    Args:
        W (Tensor): the frozen target weight ``[d, d]`` (a q, k or v row slice of
            ``attn.in_proj_weight``, or ``attn.out_proj.weight``).
        blocks (dict[str, Tensor]): the output of :func:`final_blocks`.
        tower (str): 'text' or 'image'.
        layer (int): the layer of that tower.
        target (int): index of the target in the adapter's target list.
        side (str): 'input' or 'output'.

    Returns:
        Tensor: ``[d, d]``.
    """
    return transform_weight(W, blocks[tower][layer, target], side)

"""Block-diagonal transforms of POF (paper §4.2, Eq. 2-5).

A block-diagonal matrix ``B = diag(R_1, ..., R_b)`` (Eq. 4) with ``q x q`` blocks is never formed
densely: it is held as its blocks ``[..., b, q, q]`` and applied to a weight ``W [out, in]``
(``y = x W^T``; the neurons are the rows of ``W``) on either side:

* input side ``W' = W · B`` (``B`` is ``in x in``): every neuron is rotated by the same ``B``, so
  with an orthogonal ``B`` the pairwise angles between neurons, hence the hyperspherical
  energy, are unchanged;
* output side ``W' = B · W`` (``B`` is ``out x out``): the neurons are mixed within each block
  of ``q`` rows. This is the ``R_ℓ W_ℓ`` form written in Eq. 5.

Orthogonal blocks come from the Cayley map (Eq. 2), computed in fp32 (even under autocast) with
one batched ``torch.linalg.solve`` and no explicit inverse.

Mixed precision: the custom autograd functions declare their autocast behaviour with
``torch.amp.custom_fwd(cast_inputs=torch.float32)`` / ``custom_bwd`` for every autocast device,
so their forward *and* backward run in fp32 with autocast off, also when ``backward()`` is called
inside an autocast region. The transformed weights are formed in fp32 from the fp32 blocks and
cast once to the autocast dtype (a bf16 block ``I + 1e-3`` would round to ``I``).
"""
import contextlib
import ctypes
import functools
import os
from typing import Callable, Optional, Tuple

import torch
from torch import Tensor

__all__ = [
    'skew', 'cayley', 'block_diagonal', 'apply_block_diagonal', 'layerwise_block_product', 'SIDES'
]

SIDES = ('input', 'output')


def _no_autocast(device_type: str):
    """A context that disables autocast on ``device_type`` (a no-op where autocast is absent)."""
    if torch.amp.is_autocast_available(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()


def skew(P: Tensor) -> Tensor:
    """Skew-symmetric part ``Q = (P - P^T) / 2`` of square matrices.

    Args:
        P (Tensor): ``[..., q, q]``.

    Returns:
        Tensor: ``[..., q, q]`` with ``Q^T = -Q``.
    """
    return 0.5 * (P - P.transpose(-1, -2))


#: devices whose autocast the custom autograd functions below declare
_AMP_DEVICES = ('cpu', 'cuda')


def _fp32_forward(forward: Callable) -> Callable:
    """``torch.amp.custom_fwd(cast_inputs=torch.float32)`` for every autocast device.

    Under autocast on any of :data:`_AMP_DEVICES`, floating inputs of that device (except
    fp64) are cast to fp32 and ``forward`` runs with autocast off; the matching
    :func:`_autocast_free_backward` then runs ``backward`` with autocast off as well.
    """
    for device in _AMP_DEVICES:
        forward = torch.amp.custom_fwd(forward, device_type=device, cast_inputs=torch.float32)
    return forward


def _autocast_free_backward(backward: Callable) -> Callable:
    """``torch.amp.custom_bwd`` for every autocast device (the state of the forward: off)."""
    for device in _AMP_DEVICES:
        backward = torch.amp.custom_bwd(backward, device_type=device)
    return backward


def _autocast_dtype(device_type: str) -> Optional[torch.dtype]:
    """The dtype autocast casts matrix products to on ``device_type``, or None when it is off."""
    if torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None


def _accumulate_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """fp32, or fp64 when an input is fp64: the dtype transformed weights are formed in."""
    out = torch.float32
    for dtype in dtypes:
        out = torch.promote_types(out, dtype)
    return out


@functools.lru_cache(maxsize=None)
def _mkl_set_local_threads() -> Optional[Callable[[int], int]]:
    """MKL's ``mkl_set_num_threads_local`` from torch's own MKL, or None where absent.

    It sets the number of MKL threads *of the calling thread only* and returns the previous
    thread-local value (0: the process-wide setting), so unlike ``torch.set_num_threads``
    (which also sets the count that every thread started later inherits, and is not safe to
    switch back and forth from several threads) it changes nothing for other threads.
    """
    if not torch.backends.mkl.is_available():
        return None
    libdir = os.path.join(os.path.dirname(torch.__file__), 'lib')
    for name in ('libtorch_cpu.so', 'libtorch_cpu.dylib', 'torch_cpu.dll'):
        path = os.path.join(libdir, name)
        if not os.path.exists(path):
            continue
        try:
            fn = ctypes.CDLL(path).MKL_Set_Num_Threads_Local
        except (OSError, AttributeError):
            return None
        fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
        return fn
    return None


@contextlib.contextmanager
def _serial_small_linalg(device: torch.device):
    """Run small batched LAPACK calls single-threaded on CPU, in this thread only.

    ``torch.linalg.solve`` on a batch of q x q systems calls LAPACK (MKL) once per matrix; with
    more than one thread, MKL threads every tiny call and, on a loaded machine, pays a thread
    hand-off per matrix (measured in ``docs/small_solve_threads.md``: 192 systems of
    128 x 128, several times slower with 2 threads than with 1 on a loaded 2-core CPU). The
    switch is MKL's thread-local setting: the process-wide thread count that
    ``torch.get_num_threads()`` reports, and that threads started meanwhile inherit, is never
    touched. Without MKL (or off CPU) this is a no-op.
    """
    set_local = _mkl_set_local_threads() if device.type == 'cpu' else None
    if set_local is None:
        yield
        return
    previous = set_local(1)
    try:
        yield
    finally:
        set_local(previous)


class _CayleySolve(torch.autograd.Function):
    """``R = (I - Q)^{-1}(I + Q)`` for skew ``Q`` by one batched solve, with its gradient.

    Backward: ``dR = (I - Q)^{-1} dQ (R + I)``, so ``dL/dQ = (I - Q)^{-T} G (R + I)^T`` with
    ``(I - Q)^T = I + Q``: one more batched solve, no explicit inverse.
    """

    @staticmethod
    @_fp32_forward
    def forward(ctx, Q: Tensor) -> Tensor:
        eye = torch.eye(Q.shape[-1], dtype=Q.dtype, device=Q.device)
        with _serial_small_linalg(Q.device):
            R = torch.linalg.solve(eye - Q, eye + Q)
        ctx.save_for_backward(Q, R)
        return R

    @staticmethod
    @_autocast_free_backward
    def backward(ctx, grad_R: Tensor) -> Tensor:
        Q, R = ctx.saved_tensors
        eye = torch.eye(Q.shape[-1], dtype=Q.dtype, device=Q.device)
        rhs = grad_R @ (R + eye).transpose(-1, -2)
        with _serial_small_linalg(Q.device):
            return torch.linalg.solve(eye + Q, rhs)


def cayley(P: Tensor) -> Tensor:
    """Cayley map of the skew part of ``P``: ``R = (I + Q)(I - Q)^{-1}``, ``Q = skew(P)`` (Eq. 2).

    ``R`` is orthogonal (Eq. 3: ``R^T R = R R^T = I``) for every ``P``, and ``P = 0`` gives
    ``R = I`` exactly. Because ``I + Q`` and ``(I - Q)^{-1}`` commute, ``R = (I - Q)^{-1}(I + Q)``
    is computed as one batched ``torch.linalg.solve(I - Q, I + Q)`` (``I - Q`` is always
    invertible: its eigenvalues are ``1 - iλ``); the backward pass is one more batched solve.
    The computation runs in fp32 (fp64 inputs stay fp64) with autocast disabled, so bf16/fp16
    training keeps exactly orthogonal blocks.

    Args:
        P (Tensor): raw square blocks ``[..., q, q]``, any float dtype.

    Returns:
        Tensor: orthogonal blocks ``[..., q, q]`` in fp32 (fp64 for fp64 input).
    """
    if P.dim() < 2 or P.shape[-1] != P.shape[-2]:
        raise ValueError(f'cayley expects square blocks [..., q, q], got shape {tuple(P.shape)}')
    dtype = torch.float64 if P.dtype == torch.float64 else torch.float32
    with _no_autocast(P.device.type):
        return _CayleySolve.apply(skew(P.to(dtype)))


def block_diagonal(blocks: Tensor) -> Tensor:
    """Dense ``diag(R_1, ..., R_b)`` (Eq. 4), for tests and small examples.

    Args:
        blocks (Tensor): ``[..., b, q, q]``.

    Returns:
        Tensor: ``[..., b * q, b * q]``.
    """
    *batch, b, q, _ = blocks.shape
    eye = torch.eye(b, dtype=blocks.dtype, device=blocks.device)
    # out[..., i, r, j, c] = δ_ij R_i[r, c]
    dense = torch.einsum('ij,...irc->...irjc', eye, blocks)
    return dense.reshape(*batch, b * q, b * q)


def apply_block_diagonal(weight: Tensor, blocks: Tensor, side: str = 'input') -> Tensor:
    """Transform weights by a block-diagonal matrix without forming it (Eq. 4-5).

    Args:
        weight (Tensor): ``W`` of shape ``[..., out, in]``.
        blocks (Tensor): ``[..., b, q, q]`` (batch dims broadcast with ``weight``'s), with
            ``b * q == in`` for ``side='input'`` and ``b * q == out`` for ``side='output'``.
            Cast to ``weight``'s dtype when they differ (autocast still applies).
        side (str): ``'input'`` for ``W · B`` or ``'output'`` for ``B · W``.

    Returns:
        Tensor: the transformed weight ``[..., out, in]``. Cost ``out · in · q`` multiply-adds
        per weight (a dense ``B`` would cost ``out · in · in``).
    """
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    *_, b, q, q2 = blocks.shape
    if q != q2:
        raise ValueError(f'blocks must be square [..., b, q, q], got {tuple(blocks.shape)}')
    out_features, in_features = weight.shape[-2:]
    width = in_features if side == 'input' else out_features
    if b * q != width:
        raise ValueError(f'{b} blocks of size {q} do not cover the {side} width {width} of a '
                         f'weight of shape {tuple(weight.shape)}')
    if blocks.dtype != weight.dtype:
        blocks = blocks.to(weight.dtype)
    if side == 'input':
        # W' [o, (b j)] = sum_i W [o, (b i)] R_b [i, j]
        w = weight.reshape(*weight.shape[:-1], b, q)
        out = torch.einsum('...obi,...bij->...obj', w, blocks)
    else:
        # W' [(b i), k] = sum_j R_b [i, j] W [(b j), k]
        w = weight.reshape(*weight.shape[:-2], b, q, in_features)
        out = torch.einsum('...bij,...bjk->...bik', blocks, w)
    return out.reshape(weight.shape)


#: devices on which the block gradient of all layers is one stacked ``bmm`` (else layer by layer)
_STACKED_BACKWARD_DEVICES = ('cuda', )


class _LayerwiseBlockProduct(torch.autograd.Function):
    """One batched product for all layers, returned and differentiated layer by layer.

    Forward: a single ``bmm`` over every (layer, weight, block); the result is handed out as one
    tensor per layer. Backward: runs once, with the gradients of all L weights (autograd calls
    it when every output's gradient is complete); each layer's block gradient is computed by
    its own ``bmm`` straight into one preallocated buffer, so the L weight gradients are never
    stacked into one big tensor (that copy cost as much as the product itself on CPU). Both run in fp32 (fp64 for fp64 inputs) with autocast off; the
    weights are cast once to ``dtype`` and the block gradient is returned in the blocks' dtype.
    """

    @staticmethod
    @_fp32_forward
    def forward(ctx, frozen: Tensor, blocks: Tensor, side: str, dtype: torch.dtype):
        L, n, b, q = blocks.shape[:4]
        acc = _accumulate_dtype(frozen.dtype, blocks.dtype)
        ctx.side, ctx.blocks_dtype, ctx.acc = side, blocks.dtype, acc
        frozen_c = frozen.to(acc)
        blocks_c = blocks.to(acc).reshape(L * n * b, q, q)
        if side == 'input':  # W'[:, block i] = W[:, block i] @ R_i
            d_out = frozen.shape[3]
            out = torch.bmm(frozen_c.reshape(L * n * b, d_out, q), blocks_c).to(dtype)
            out = out.view(L, n, b, d_out, q)
            weights = tuple(out[l].transpose(1, 2).reshape(n * d_out, b * q) for l in range(L))
        else:  # W'[block i, :] = R_i @ W[block i, :]
            d_in = frozen.shape[4]
            out = torch.bmm(blocks_c, frozen_c.reshape(L * n * b, q, d_in)).to(dtype)
            weights = tuple(out.view(L, n * b * q, d_in).unbind(0))
        ctx.save_for_backward(frozen)  # the caller's tensor (no copy kept alive)
        ctx.shape = (L, n, b, q)
        return weights

    @staticmethod
    @_autocast_free_backward
    def backward(ctx, *grads):
        (frozen, ) = ctx.saved_tensors
        frozen = frozen.to(ctx.acc)
        L, n, b, q = ctx.shape
        if frozen.device.type in _STACKED_BACKWARD_DEVICES and all(g is not None for g in grads):
            # on a GPU the stacking copy is cheap and one launch beats L of them
            grad = torch.stack(grads).to(ctx.acc)
            grad_blocks = _block_grad(frozen.flatten(0, 1), grad.view(L * n, -1, grad.shape[-1]),
                                      b, q, ctx.side)
            return None, grad_blocks.view(L, n, b, q, q).to(ctx.blocks_dtype), None, None
        grad_blocks = frozen.new_zeros(L, n * b, q, q)
        for l, grad in enumerate(grads):
            if grad is not None:
                _block_grad(frozen[l], grad.to(ctx.acc).view(n, -1, grad.shape[-1]), b, q,
                            ctx.side, out=grad_blocks[l])
        return None, grad_blocks.view(L, n, b, q, q).to(ctx.blocks_dtype), None, None


def _block_grad(frozen: Tensor, grad: Tensor, b: int, q: int, side: str, out=None) -> Tensor:
    """Gradient of the blocks of ``N`` weights from the gradient of the transformed weights.

    Args:
        frozen (Tensor): ``[N, b, d_out, q]`` (input side) or ``[N, b, q, d_in]`` (output side).
        grad (Tensor): ``[N, d_out, d_in]``, gradient of ``W'``.
        b (int): blocks per weight.
        q (int): block size.
        side (str): 'input' or 'output'.
        out (Tensor | None): ``[N · b, q, q]`` buffer to write into.

    Returns:
        Tensor: ``[N · b, q, q]``.
    """
    N, d_out, d_in = grad.shape
    if side == 'input':  # dR_i = W[:, block i]^T @ dW'[:, block i]
        g = grad.view(N, d_out, b, q).transpose(1, 2).reshape(N * b, d_out, q)
        return torch.bmm(frozen.reshape(N * b, d_out, q).transpose(1, 2), g, out=out)
    # output side: dR_i = dW'[block i, :] @ W[block i, :]^T
    w = frozen.reshape(N * b, q, d_in).transpose(1, 2)
    return torch.bmm(grad.reshape(N * b, q, d_in), w, out=out)


def layerwise_block_product(frozen: Tensor,
                            blocks: Tensor,
                            side: str,
                            dtype: Optional[torch.dtype] = None) -> Tuple[Tensor, ...]:
    """Transform the weights of every layer with their block-diagonal matrices (Eq. 4-5).

    The product is formed in fp32 (fp64 for fp64 inputs) with autocast off, whatever the
    autocast state, and the result is cast once to ``dtype``; the block gradient is formed in
    fp32 as well and returned in the blocks' dtype.

    Args:
        frozen (Tensor): the frozen weights of ``L`` layers, ``n`` weights each (e.g. q, k, v),
            laid out in blocks: ``[L, n, b, d_out, q]`` for ``side='input'`` (the q-column
            blocks of each ``W [d_out, b·q]``) or ``[L, n, b, q, d_in]`` for ``side='output'``
            (the q-row blocks of each ``W [b·q, d_in]``). Must not require grad.
        blocks (Tensor): ``[L, n, b, q, q]``.
        side (str): 'input' (``W · B``) or 'output' (``B · W``).
        dtype (torch.dtype | None): dtype of the returned weights; default: the autocast dtype
            of ``blocks``' device when autocast is on there, else ``frozen``'s dtype.

    Returns:
        tuple[Tensor, ...]: ``L`` tensors ``[n · d_out, d_in]``: the ``n`` transformed weights of
        each layer stacked along rows (the layout of a packed ``in_proj_weight``).
    """
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    if frozen.requires_grad:
        raise ValueError('layerwise_block_product differentiates the blocks only; the frozen '
                         'weights must not require grad')
    if dtype is None:
        dtype = _autocast_dtype(blocks.device.type) or frozen.dtype
    return _LayerwiseBlockProduct.apply(frozen, blocks, side, dtype)

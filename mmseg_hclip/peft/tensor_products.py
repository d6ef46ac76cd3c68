"""Tensor products of paper §3.2 and §4.3 (Eq. 8-15) and supplementary A (Eq. S-1 to S-14).

Conventions (paper notation, 0-based code):

* A p-order tensor ``A`` has shape ``[n1, n2, ..., np]``. ``A_k`` is the (p-1)-order tensor
  obtained by holding the last index at ``k`` (``A[..., k]``).
* The first two modes are the "matrix" modes of every frontal slice; modes 3..p (code dims
  ``2..p-1``) are the "tube" modes that the T-product convolves over.
* ``T ×_n M`` (:func:`mode_product`) multiplies mode ``n`` (0-based) of ``T`` by the matrix ``M``
  of shape ``[new_size, T.shape[n]]``: ``out[.., i, ..] = sum_j M[i, j] T[.., j, ..]``.

Everything here is plain PyTorch, works on any device and dtype (complex included) and is
differentiable. These functions document and test the theory behind DCRC; the adapter itself
only needs :func:`mode_product`-style mixing (see :mod:`mmseg_hclip.peft.dcrc`).
"""
from typing import Sequence, Union

import torch
from torch import Tensor

__all__ = [
    'unfold', 'fold', 'circ', 't_product', 't_product_dft', 'mode_product', 'mode_solve',
    'slice_product', 'transform_product', 'dft_matrix'
]


def _check_order(tensor: Tensor, name: str, min_order: int = 3) -> None:
    if tensor.dim() < min_order:
        raise ValueError(f'{name} must be a tensor of order >= {min_order}, '
                         f'got shape {tuple(tensor.shape)}')


def unfold(A: Tensor) -> Tensor:
    """Stack the last-mode slices of ``A`` along mode 1 (paper §3.2, ``unfold``).

    ``unfold(A) = [A_1; A_2; ...; A_np]``: row block ``k`` holds ``A_k``.

    Args:
        A (Tensor): ``[n1, n2, ..., np]``, order ``p >= 3``.

    Returns:
        Tensor: ``[n1 * np, n2, ..., n_{p-1}]`` with ``out[k * n1 + i, ...] = A[i, ..., k]``.
    """
    _check_order(A, 'A')
    n1, n_p = A.shape[0], A.shape[-1]
    return A.movedim(-1, 0).reshape(n_p * n1, *A.shape[1:-1])


def fold(M: Tensor, n_p: int) -> Tensor:
    """Inverse of :func:`unfold`: ``fold(unfold(A), np) = A`` (paper §3.2).

    Args:
        M (Tensor): ``[n1 * np, n2, ..., n_{p-1}]``.
        n_p (int): size of the last mode to restore.

    Returns:
        Tensor: ``[n1, n2, ..., n_{p-1}, np]``.
    """
    if M.dim() < 2 or M.shape[0] % n_p != 0:
        raise ValueError(f'fold: the first mode of shape {tuple(M.shape)} is not a multiple '
                         f'of n_p={n_p}')
    n1 = M.shape[0] // n_p
    return M.reshape(n_p, n1, *M.shape[1:]).movedim(0, -1)


def circ(A: Tensor) -> Tensor:
    """Block-circulant arrangement of the last-mode slices of ``A`` (paper §3.2, ``circ``).

    Block ``(i, j)`` is ``A_{(i - j) mod np}``, so the first block row reads
    ``A_1, A_np, A_{np-1}, ..., A_2`` as in the paper. Each block is a (p-1)-order tensor
    ``[n1, n2, n3, ..., n_{p-1}]``; blocks are laid out along modes 1 and 2 (Martin, Shafer and
    LaRue's order-p construction, which the paper's Definition 4.2 uses).

    Args:
        A (Tensor): ``[n1, n2, ..., np]``, order ``p >= 3``.

    Returns:
        Tensor: ``[n1 * np, n2 * np, n3, ..., n_{p-1}]`` (a matrix when ``p = 3``).
    """
    _check_order(A, 'A')
    n1, n2, n_p = A.shape[0], A.shape[1], A.shape[-1]
    rest = A.shape[2:-1]
    k = torch.arange(n_p, device=A.device)
    index = (k[:, None] - k[None, :]) % n_p  # [np (block row i), np (block col j)]
    blocks = A.movedim(-1, 0)[index]  # [np, np, n1, n2, *rest]
    blocks = blocks.permute(0, 2, 1, 3, *range(4, blocks.dim()))  # [np, n1, np, n2, *rest]
    return blocks.reshape(n_p * n1, n_p * n2, *rest)


def t_product(A: Tensor, B: Tensor) -> Tensor:
    """T-product by its definition, for any order ``p >= 3`` (Eq. 8, Eq. 9; Eq. S-1, S-2).

    ``A * B = fold(circ(A) · unfold(B))``. For ``p = 3`` the product ``·`` is the matrix product;
    for ``p > 3`` it is the (p-1)-order T-product of ``circ(A)`` and ``unfold(B)``, which is
    evaluated recursively. Equivalently, the last mode is circularly convolved:
    ``C_k = sum_j A_{(k - j) mod np} * B_j``.

    Args:
        A (Tensor): ``[n1, n2, n3, ..., np]``.
        B (Tensor): ``[n2, l, n3, ..., np]``.

    Returns:
        Tensor: ``C`` of shape ``[n1, l, n3, ..., np]``.
    """
    _check_order(A, 'A')
    _check_order(B, 'B')
    if A.dim() != B.dim() or A.shape[1] != B.shape[0] or A.shape[2:] != B.shape[2:]:
        raise ValueError('t_product needs A [n1, n2, n3..np] and B [n2, l, n3..np]; got '
                         f'{tuple(A.shape)} and {tuple(B.shape)}')
    n_p = A.shape[-1]
    if A.dim() == 3:
        product = circ(A) @ unfold(B)  # [n1 np, n2 np] @ [n2 np, l]
    else:
        product = t_product(circ(A), unfold(B))  # (p-1)-order T-product
    return fold(product, n_p)


def mode_product(T: Tensor, M: Tensor, n: int) -> Tensor:
    """Mode-n product ``T ×_n M`` (used in Eq. 11-17).

    Args:
        T (Tensor): any shape ``[..., T.shape[n], ...]``.
        M (Tensor): ``[new_size, T.shape[n]]``.
        n (int): 0-based mode of ``T`` (negative values count from the end).

    Returns:
        Tensor: ``T`` with mode ``n`` replaced by ``new_size``:
        ``out[.., i, ..] = sum_j M[i, j] T[.., j, ..]``. Real and complex inputs are promoted to
        a common dtype.
    """
    n = n % T.dim()
    if M.dim() != 2 or M.shape[1] != T.shape[n]:
        raise ValueError(f'mode_product: M must have shape [new_size, {T.shape[n]}] to act on '
                         f'mode {n} of a tensor of shape {tuple(T.shape)}; got {tuple(M.shape)}')
    dtype = torch.promote_types(T.dtype, M.dtype)
    out = torch.tensordot(T.to(dtype), M.to(dtype), dims=([n], [1]))  # new mode last
    return out.movedim(-1, n)


def mode_solve(T: Tensor, M: Tensor, n: int) -> Tensor:
    """Inverse mode-n product ``T ×_n M^{-1}`` through a linear solve (Eq. 12, 15).

    Args:
        T (Tensor): any shape with ``T.shape[n] == M.shape[0]``.
        M (Tensor): invertible ``[T.shape[n], T.shape[n]]``.
        n (int): 0-based mode.

    Returns:
        Tensor: same shape as ``T``.
    """
    n = n % T.dim()
    if M.dim() != 2 or M.shape[0] != M.shape[1] or M.shape[0] != T.shape[n]:
        raise ValueError(f'mode_solve: M must be square [{T.shape[n]}, {T.shape[n]}], '
                         f'got {tuple(M.shape)}')
    dtype = torch.promote_types(T.dtype, M.dtype)
    moved = T.to(dtype).movedim(n, 0)
    solved = torch.linalg.solve(M.to(dtype), moved.reshape(moved.shape[0], -1))
    return solved.reshape(moved.shape).movedim(0, n)


def slice_product(A: Tensor, B: Tensor) -> Tensor:
    """Frontal-slice-wise product ``A ⊙ B`` (Eq. 10, 13): one matrix product per tube index.

    Args:
        A (Tensor): ``[n1, n2, n3, ..., np]``.
        B (Tensor): ``[n2, l, n3, ..., np]``.

    Returns:
        Tensor: ``[n1, l, n3, ..., np]`` with ``C[:, :, k] = A[:, :, k] @ B[:, :, k]``.
    """
    dtype = torch.promote_types(A.dtype, B.dtype)
    return torch.einsum('ij...,jl...->il...', A.to(dtype), B.to(dtype))


def dft_matrix(n: int, dtype: torch.dtype = torch.complex128, device=None) -> Tensor:
    """The DFT matrix ``F_n`` with ``F[j, k] = exp(-2πi jk / n)`` (Eq. S-6).

    Args:
        n (int): size.
        dtype (torch.dtype): complex dtype of the result.
        device: device of the result.

    Returns:
        Tensor: ``[n, n]``; ``T ×_k F_n`` equals ``torch.fft.fft(T, dim=k)``.
    """
    k = torch.arange(n, dtype=torch.float64, device=device)
    angle = -2 * torch.pi * torch.outer(k, k) / n
    return torch.polar(torch.ones_like(angle), angle).to(dtype)


def t_product_dft(A: Tensor, B: Tensor) -> Tensor:
    """T-product in the Fourier domain (Eq. S-5, and Eq. 13 with every ``S_k`` the DFT).

    ``C = DFT^{-1}(DFT(A) ⊙ DFT(B))`` with the DFT taken along every tube mode (3..p).

    Args:
        A (Tensor): ``[n1, n2, n3, ..., np]`` (real).
        B (Tensor): ``[n2, l, n3, ..., np]`` (real).

    Returns:
        Tensor: ``[n1, l, n3, ..., np]``, real (the imaginary part is rounding noise).
    """
    _check_order(A, 'A')
    _check_order(B, 'B')
    dims = tuple(range(2, A.dim()))
    C_hat = slice_product(torch.fft.fftn(A, dim=dims), torch.fft.fftn(B, dim=dims))
    C = torch.fft.ifftn(C_hat, dim=dims)
    return C.real if not (A.is_complex() or B.is_complex()) else C


def transform_product(A: Tensor, B: Tensor, transforms: Union[str, Sequence[Tensor]]) -> Tensor:
    """Transform-domain product ``C = S~^{-1}(S~(A) ⊙ S~(B))`` (Eq. 10-15; Eq. S-8 to S-14).

    ``S~(A) = A ×_3 S_3 ×_4 S_4 ... ×_p S_p`` (Eq. 11, 14) and ``S~^{-1}`` applies the inverse
    matrices (Eq. 12, 15, computed by linear solves). With every ``S_k`` the DFT matrix this is
    exactly the T-product of Eq. 8-9; with any other invertible ``S_k`` it is the generalised
    product of Kernfeld et al. that DCRC's relation matrices are modelled on.

    Args:
        A (Tensor): ``[n1, n2, n3, ..., np]``.
        B (Tensor): ``[n2, l, n3, ..., np]``.
        transforms (str | Sequence[Tensor]): ``'dft'`` or one invertible matrix ``[nk, nk]`` per
            tube mode ``k = 3..p`` (``p - 2`` matrices, real or complex).

    Returns:
        Tensor: ``[n1, l, n3, ..., np]`` in the promoted dtype of the inputs and matrices
        (complex when a matrix is complex; take ``.real`` for a DFT of real inputs).
    """
    _check_order(A, 'A')
    _check_order(B, 'B')
    if isinstance(transforms, str):
        if transforms != 'dft':
            raise ValueError(f"transforms must be 'dft' or a list of matrices, got {transforms!r}")
        return t_product_dft(A, B)
    transforms = list(transforms)
    if len(transforms) != A.dim() - 2:
        raise ValueError(f'transform_product needs {A.dim() - 2} matrices (one per tube mode of '
                         f'an order-{A.dim()} tensor), got {len(transforms)}')
    A_hat, B_hat = A, B
    for mode, S in enumerate(transforms, start=2):
        A_hat = mode_product(A_hat, S, mode)
        B_hat = mode_product(B_hat, S, mode)
    C = slice_product(A_hat, B_hat)
    for mode, S in enumerate(transforms, start=2):
        C = mode_solve(C, S, mode)
    return C

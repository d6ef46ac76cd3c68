"""Tensor products (Eq. 8-15, supplementary A) against independent computations."""
import pytest
import torch

from mmseg_hclip.peft import (circ, dft_matrix, fold, mode_product, t_product, t_product_dft,
                              transform_product, unfold)

DT = torch.float64


def _rand(*shape, seed=0):
    return torch.randn(*shape, dtype=DT, generator=torch.Generator().manual_seed(seed))


def _circular_conv(A, B):
    """C_k = sum_j A_{(k - j) mod n} @ B_j over the last mode, by a plain double loop (p = 3)."""
    n = A.shape[-1]
    C = torch.zeros(A.shape[0], B.shape[1], n, dtype=A.dtype)
    for k in range(n):
        for j in range(n):
            C[:, :, k] += A[:, :, (k - j) % n] @ B[:, :, j]
    return C


def _circular_conv_2d(A, B):
    """Two-mode circular convolution for p = 4, by a plain quadruple loop."""
    n3, n4 = A.shape[2:]
    C = torch.zeros(A.shape[0], B.shape[1], n3, n4, dtype=A.dtype)
    for k3 in range(n3):
        for k4 in range(n4):
            for j3 in range(n3):
                for j4 in range(n4):
                    C[:, :, k3, k4] += A[:, :, (k3 - j3) % n3, (k4 - j4) % n4] @ B[:, :, j3, j4]
    return C


def _explicit_transform_product(A, B, mats):
    """C = (S^-1 ⊗ I) · bdiag(Â_k) · (S ⊗ I) · vec(B) with explicit Kronecker matrices.

    vec stacks the frontal slices with the LAST tube mode slowest (unfold order); for p = 4 the
    transform matrix is S4 ⊗ S3. Written without mode products or einsum.
    """
    n1, n2 = A.shape[:2]
    l = B.shape[1]
    tubes = A.shape[2:]
    S = mats[0]
    for M in mats[1:]:
        S = torch.kron(M, S)  # S4 ⊗ S3 (slowest mode first)
    S = S.to(torch.complex128)
    n = S.shape[0]
    # frontal slices in unfold order: index = k3 + n3 * k4
    A_slices = A.permute(*range(A.dim() - 1, 1, -1), 0, 1).reshape(n, n1, n2).to(S.dtype)
    B_slices = B.permute(*range(B.dim() - 1, 1, -1), 0, 1).reshape(n, n2, l).to(S.dtype)
    A_hat = torch.einsum('ij,jab->iab', S, A_slices)  # Â_k = sum_j S[k, j] A_j
    D = torch.block_diag(*A_hat)  # [n n1, n n2]
    big_S = torch.kron(S, torch.eye(n2, dtype=S.dtype))
    big_S_inv = torch.kron(torch.linalg.inv(S).contiguous(), torch.eye(n1, dtype=S.dtype))
    C_vec = big_S_inv @ D @ big_S @ B_slices.reshape(n * n2, l)
    C = C_vec.reshape(*reversed(tubes), n1, l)
    return C.permute(-2, -1, *range(len(tubes) - 1, -1, -1))


def test_unfold_fold_roundtrip_and_layout():
    A = _rand(3, 4, 5)
    U = unfold(A)
    assert U.shape == (15, 4)
    for k in range(5):
        torch.testing.assert_close(U[3 * k:3 * (k + 1)], A[:, :, k])
    torch.testing.assert_close(fold(U, 5), A)
    A4 = _rand(2, 3, 4, 5)
    assert unfold(A4).shape == (10, 3, 4)
    torch.testing.assert_close(fold(unfold(A4), 5), A4)


def test_circ_matches_paper_layout():
    A = _rand(2, 3, 4)
    C = circ(A)
    assert C.shape == (8, 12)
    # first block row: A_1, A_np, A_{np-1}, ..., A_2
    expected_first_row = [0, 3, 2, 1]
    for j, k in enumerate(expected_first_row):
        torch.testing.assert_close(C[0:2, 3 * j:3 * (j + 1)], A[:, :, k])
    # every block row is the previous one shifted right by one block
    torch.testing.assert_close(C[2:4], torch.roll(C[0:2], shifts=3, dims=1))
    assert circ(_rand(2, 3, 4, 5)).shape == (10, 15, 4)


@pytest.mark.parametrize('p', [3, 4])
def test_t_product_definition_dft_and_transform_domain_agree(p):
    shape_a = (3, 4, 5) if p == 3 else (3, 4, 3, 5)
    A = _rand(*shape_a, seed=1)
    B = _rand(4, 2, *shape_a[2:], seed=2)
    by_definition = t_product(A, B)
    independent = _circular_conv(A, B) if p == 3 else _circular_conv_2d(A, B)
    torch.testing.assert_close(by_definition, independent)
    # DFT domain (Eq. S-5 / Eq. 13 with the DFT), through torch.fft ...
    torch.testing.assert_close(t_product_dft(A, B), by_definition)
    torch.testing.assert_close(transform_product(A, B, 'dft'), by_definition)
    # ... and through the generic invertible-S path with explicit DFT matrices (Eq. 11-15)
    mats = [dft_matrix(n) for n in shape_a[2:]]
    generic = transform_product(A, B, mats)
    assert generic.imag.abs().max() < 1e-10
    torch.testing.assert_close(generic.real, by_definition)
    # a permuted DFT diagonalises the circulant just as well
    perm = [torch.eye(n, dtype=torch.complex128)[torch.randperm(n)] @ F
            for n, F in zip(shape_a[2:], mats)]
    torch.testing.assert_close(transform_product(A, B, perm).real, by_definition)
    # and the explicit Kronecker form with DFT matrices is the T-product too (Eq. S-3, S-10)
    explicit = _explicit_transform_product(A, B, mats)
    torch.testing.assert_close(explicit.real, by_definition)


@pytest.mark.parametrize('p', [3, 4])
def test_transform_product_any_invertible_s(p):
    tubes = (5, ) if p == 3 else (3, 4)
    A = _rand(3, 4, *tubes, seed=3)
    B = _rand(4, 2, *tubes, seed=4)
    mats = [_rand(n, n, seed=10 + n) + n * torch.eye(n, dtype=DT) for n in tubes]
    got = transform_product(A, B, mats)
    explicit = _explicit_transform_product(A, B, mats)
    assert explicit.imag.abs().max() < 1e-10
    torch.testing.assert_close(got, explicit.real)
    # a generic S defines a different product than the circulant T-product
    assert not torch.allclose(got, t_product(A, B))


def test_circ_is_block_diagonalised_by_the_dft():
    """Eq. S-3: (F ⊗ I) circ(A) (F* ⊗ I) / n = bdiag(DFT_3(A))."""
    A = _rand(2, 3, 5)
    n = 5
    F = dft_matrix(n)
    left = torch.kron(F, torch.eye(2, dtype=F.dtype))
    right = torch.kron(F.conj().T.contiguous(), torch.eye(3, dtype=F.dtype))
    D = left @ circ(A).to(F.dtype) @ right / n
    A_hat = torch.fft.fft(A, dim=2)
    torch.testing.assert_close(D, torch.block_diag(*A_hat.permute(2, 0, 1)))


def test_mode_product_against_loops():
    T = _rand(2, 3, 4)
    M = _rand(5, 3)
    out = mode_product(T, M, 1)
    assert out.shape == (2, 5, 4)
    for i in range(5):
        torch.testing.assert_close(out[:, i, :], sum(M[i, j] * T[:, j, :] for j in range(3)))
    torch.testing.assert_close(mode_product(T, _rand(6, 4), -1).shape, torch.Size([2, 3, 6]))
    with pytest.raises(ValueError, match='mode_product'):
        mode_product(T, _rand(5, 4), 1)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match='order >= 3'):
        t_product(_rand(3, 4), _rand(4, 2))
    with pytest.raises(ValueError, match='t_product needs'):
        t_product(_rand(3, 4, 5), _rand(3, 2, 5))
    with pytest.raises(ValueError, match='needs 2 matrices'):
        transform_product(_rand(3, 4, 5, 2), _rand(4, 2, 5, 2), [torch.eye(5)])

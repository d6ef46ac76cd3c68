"""Hyperspherical energy (§3.1, Eq. 1): chunked vs naive, invariance under orthogonal transforms."""
import itertools

import pytest
import torch

from mmseg_hclip.peft import (apply_block_diagonal, block_diagonal, cayley,
                              hyperspherical_energy, relative_energy_drift)


def _naive_energy(W):
    """sum_{i != j} ||ŵ_i - ŵ_j||^{-1} with a plain double loop."""
    rows = [w / w.norm() for w in W.double()]
    total = 0.0
    for i, j in itertools.permutations(range(len(rows)), 2):
        total += 1.0 / (rows[i] - rows[j]).norm().item()
    return total


@pytest.mark.parametrize('chunk_size', [1, 5, 100])
def test_chunked_energy_equals_naive_double_loop(chunk_size):
    W = torch.randn(12, 5, generator=torch.Generator().manual_seed(0))
    got = hyperspherical_energy(W, chunk_size=chunk_size)
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(_naive_energy(W), rel=1e-12)


def test_energy_is_invariant_under_orthogonal_input_side_transform():
    g = torch.Generator().manual_seed(1)
    W = torch.randn(48, 32, generator=g)
    P = torch.randn(4, 8, 8, generator=g)
    R = cayley(P)
    rotated = apply_block_diagonal(W, R, 'input')  # W·B with B orthogonal
    e0 = hyperspherical_energy(W)
    assert hyperspherical_energy(rotated).item() == pytest.approx(e0.item(), rel=1e-5)
    assert relative_energy_drift(rotated, W).item() <= 1e-5
    # a free (non-orthogonal) B changes the energy
    free = apply_block_diagonal(W, torch.eye(8) + 0.5 * P, 'input')
    assert relative_energy_drift(free, W).item() > 1e-3
    # signed drift and a precomputed reference energy
    signed = relative_energy_drift(free, W, signed=True, reference_energy=e0)
    assert signed.abs().item() == pytest.approx(relative_energy_drift(free, W).item())
    # the energy is a function of the pairwise angles only: row scaling does not change it
    assert hyperspherical_energy(W * torch.rand(48, 1, generator=g) + 0).item() == pytest.approx(
        e0.item(), rel=1e-10)
    # dense check that the block form is W @ B
    torch.testing.assert_close(rotated, W @ block_diagonal(R))


def test_energy_of_a_large_weight_is_chunked():
    W = torch.randn(2304, 768, generator=torch.Generator().manual_seed(2))
    e_small_chunks = hyperspherical_energy(W, chunk_size=256, dtype=torch.float32)
    e_one_chunk = hyperspherical_energy(W, chunk_size=4096, dtype=torch.float32)
    assert e_small_chunks.item() == pytest.approx(e_one_chunk.item(), rel=1e-5)


def test_energy_errors():
    with pytest.raises(ValueError, match='2-D'):
        hyperspherical_energy(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match='same shape'):
        relative_energy_drift(torch.zeros(2, 3), torch.zeros(3, 3))

"""``peft/reference.py`` checked on its own, so the oracle of the fast-path tests is not circular:
hand-computed tiny cases, element-by-element loops, math identities (orthogonality, the
commuting mode products) and the authors' loop formulation of ``test_dcrc_official.py``."""
import math

import pytest
import torch
import torch.nn.functional as F

from mmseg_hclip.peft import reference as ref

from .test_dcrc_official import N_TARGETS, _authors_cayley, _authors_layer_blocks

f64 = dict(dtype=torch.float64)


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), **f64)


def test_cayley_hand_computed_2x2_and_conventions():
    # skew(P) = [[0, -1/2], [1/2, 0]]; (I + Q)(I - Q)^{-1} = [[1 - a², -2a], [2a, 1 - a²]] / (1 + a²)
    P = torch.tensor([[0.0, -1.0], [0.0, 0.0]], **f64)
    torch.testing.assert_close(ref.cayley(P), torch.tensor([[0.6, -0.8], [0.8, 0.6]], **f64))
    torch.testing.assert_close(ref.cayley(P, 'official'),
                               torch.tensor([[0.6, 0.8], [-0.8, 0.6]], **f64))
    with pytest.raises(ValueError, match='convention'):
        ref.cayley(P, 'other')


@pytest.mark.parametrize('convention', ['paper', 'official'])
def test_cayley_is_orthogonal_identity_at_zero_and_skew_only(convention):
    P = _randn(5, 7, 7)
    R = ref.cayley(P, convention)
    eye = torch.eye(7, **f64)
    torch.testing.assert_close(R.transpose(-1, -2) @ R, eye.expand_as(R))  # Eq. 3
    torch.testing.assert_close(R @ R.transpose(-1, -2), eye.expand_as(R))
    assert torch.equal(ref.cayley(torch.zeros(2, 3, 3, **f64), convention),
                       torch.eye(3, **f64).expand(2, 3, 3))
    torch.testing.assert_close(ref.cayley(P + 3 * (P + P.transpose(-1, -2)), convention), R)
    other = 'official' if convention == 'paper' else 'paper'
    torch.testing.assert_close(R, ref.cayley(-P, other))  # the official map is the paper's of -Q


def test_transform_weight_hand_computed():
    W = torch.arange(8, **f64).reshape(2, 4)  # [[0, 1, 2, 3], [4, 5, 6, 7]]
    blocks = torch.tensor([[[0.0, 1.0], [1.0, 0.0]], [[2.0, 0.0], [0.0, 3.0]]], **f64)
    # input side: swap columns 0/1, scale column 2 by 2 and column 3 by 3
    torch.testing.assert_close(ref.transform_weight(W, blocks, 'input'),
                               torch.tensor([[1.0, 0, 4, 9], [5, 4, 12, 21]], **f64))
    # output side: B = diag(R_1, R_2) of size 4 acting on the rows of a [4, 2] weight
    W2 = W.T.contiguous()  # [[0, 4], [1, 5], [2, 6], [3, 7]]
    torch.testing.assert_close(ref.transform_weight(W2, blocks, 'output'),
                               torch.tensor([[1.0, 5], [0, 4], [4, 12], [9, 21]], **f64))
    with pytest.raises(ValueError, match='side'):
        ref.transform_weight(W, blocks, 'left')


def test_input_side_orthogonal_keeps_the_angles_between_neurons():
    """§3.1: W·B with an orthogonal B keeps every pairwise angle between the rows of W."""
    W = _randn(6, 8)
    out = ref.transform_weight(W, ref.cayley(_randn(2, 4, 4, seed=1)), 'input')
    gram = lambda X: F.normalize(X, dim=1) @ F.normalize(X, dim=1).T
    torch.testing.assert_close(gram(out), gram(W))


def test_block_tensor_entries_and_padding_by_hand():
    """text: 2 layers, 1 block; image: 3 layers, 2 blocks; 2 targets -> S = 3, M = 6."""
    q, n_t = 2, 2
    text, image = _randn(2, n_t, 1, q, q, seed=2), _randn(3, n_t, 2, q, q, seed=3)
    T = ref.block_tensor(dict(text=text, image=image))
    assert T.shape == (q, q, 3, 6)
    # text layer 0 -> slot 0, layer 1 -> slot 2 (last layers aligned); slot 1 is padding
    assert [ref.layer_slot(l, 2, 3) for l in range(2)] == [0, 2]
    assert [ref.layer_slot(l, 3, 3) for l in range(3)] == [0, 1, 2]
    for t in range(n_t):
        torch.testing.assert_close(T[:, :, 0, 0 * n_t + t], text[0, t, 0])
        torch.testing.assert_close(T[:, :, 0, 2 * n_t + t], text[1, t, 0])
        assert torch.count_nonzero(T[:, :, 0, 1 * n_t + t]) == 0
        for layer in range(3):
            for i in range(2):
                torch.testing.assert_close(T[:, :, 1 + i, layer * n_t + t], image[layer, t, i])
    back = ref.split_block_tensor(T, dict(text=(2, n_t, 1), image=(3, n_t, 2)))
    assert torch.equal(back['text'], text) and torch.equal(back['image'], image)


def test_mode_products_against_loops():
    T, A3, A4 = _randn(2, 2, 3, 4), _randn(5, 3, seed=1), _randn(6, 4, seed=2)
    m3, m4 = ref.mode_product(T, A3, 3), ref.mode_product(T, A4, 4)
    for i in range(2):
        for j in range(2):
            for m in range(4):
                for t in range(5):
                    assert math.isclose(m3[i, j, t, m],
                                        sum(A3[t, s] * T[i, j, s, m] for s in range(3)),
                                        rel_tol=1e-12, abs_tol=1e-12)
            for s in range(3):
                for d in range(6):
                    assert math.isclose(m4[i, j, s, d],
                                        sum(A4[d, m] * T[i, j, s, m] for m in range(4)),
                                        rel_tol=1e-12, abs_tol=1e-12)


def test_linear_dcrc_equals_the_authors_loops_and_eq16_for_one_map():
    q, S, L = 2, 5, 3
    M = N_TARGETS * L
    T = _randn(q, q, S, M)
    S3, S4 = _randn(L, S, S, seed=1), _randn(M, M, seed=2)
    got = ref.dcrc_linear(T, S3, S4)
    R = T.permute(0, 1, 3, 2)  # the authors' [q, q, M, S]
    for layer in range(L):
        expected = _authors_layer_blocks(R, S3, S4, layer)  # [n_targets, S, q, q]
        for k in range(N_TARGETS):
            torch.testing.assert_close(got[..., layer * N_TARGETS + k],
                                       expected[k].permute(1, 2, 0))
    # one map: the order of the two products does not matter, and equals the per-layer form
    one = ref.dcrc_linear(T, S3[0], S4)
    torch.testing.assert_close(one, ref.mode_product(ref.mode_product(T, S4, 4), S3[0], 3))
    torch.testing.assert_close(one, ref.dcrc_linear(T, S3[:1].expand(L, S, S), S4))


def test_mlp_dcrc_against_loops_and_zero_alpha():
    q, S, M, h3, h4 = 1, 2, 3, 4, 2
    T = _randn(q, q, S, M)
    f3 = (_randn(h3, S, seed=1), _randn(S, h3, seed=2))
    f4 = (_randn(h4, M, seed=3), _randn(M, h4, seed=4))
    alpha = _randn(S, M, seed=5)
    got = ref.dcrc_mlp(T, f3, f4, alpha, 'tanh')
    x = T[0, 0]  # [S, M]
    y = torch.zeros(S, M, **f64)  # f3: along S, per position
    for m in range(M):
        hidden = [math.tanh(sum(f3[0][k, s] * x[s, m] for s in range(S))) for k in range(h3)]
        for s in range(S):
            y[s, m] = sum(f3[1][s, k] * hidden[k] for k in range(h3))
    z = torch.zeros(S, M, **f64)  # f4: along M, per slice
    for s in range(S):
        hidden = [math.tanh(sum(f4[0][k, m] * y[s, m] for m in range(M))) for k in range(h4)]
        for m in range(M):
            z[s, m] = sum(f4[1][m, k] * hidden[k] for k in range(h4))
    torch.testing.assert_close(got[0, 0], x + alpha * z)
    assert torch.equal(ref.dcrc_mlp(T, f3, f4, torch.zeros(S, M, **f64)), T)


def test_final_blocks_official_compat_equal_the_authors_construction():
    """Per-layer linear DCRC then the official Cayley map on the text blocks, image as is."""
    q, L, b_text, b_image = 3, 2, 1, 2
    S, M = b_text + b_image, N_TARGETS * L
    raw = dict(text=_randn(L, N_TARGETS, b_text, q, q, seed=1),
               image=_randn(L, N_TARGETS, b_image, q, q, seed=2))
    S3, S4 = _randn(L, S, S, seed=3), _randn(M, M, seed=4)
    got = ref.final_blocks(raw, dcrc='linear', dcrc_params=dict(S3=S3, S4=S4),
                           orthogonal=('text', ), cayley_convention='official')
    R = ref.block_tensor(raw).permute(0, 1, 3, 2)  # [q, q, M, S]
    for layer in range(L):
        mixed = _authors_layer_blocks(R, S3, S4, layer)
        torch.testing.assert_close(got['text'][layer], _authors_cayley(mixed[:, :b_text]))
        torch.testing.assert_close(got['image'][layer], mixed[:, b_text:])
    same = ref.final_blocks(raw, dcrc='off', orthogonal=())
    assert torch.equal(same['text'], raw['text']) and torch.equal(same['image'], raw['image'])

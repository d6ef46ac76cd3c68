"""Cayley map (Eq. 2-3) and block-diagonal transforms (Eq. 4-5), against hand-computed cases and
``peft/reference.py`` (dense ``diag(R)``, explicit inverses, plain autograd)."""
import pytest
import torch

from mmseg_hclip.peft import apply_block_diagonal, block_diagonal, cayley, reference, skew


def _orth_error(R):
    eye = torch.eye(R.shape[-1], dtype=R.dtype)
    return (R.transpose(-1, -2) @ R - eye).abs().amax().item()


def test_cayley_is_orthogonal_and_matches_the_formula():
    P = torch.randn(6, 16, 16, generator=torch.Generator().manual_seed(0))
    R = cayley(P)
    assert R.dtype == torch.float32 and R.shape == P.shape
    assert _orth_error(R) <= 1e-5
    assert (R @ R.transpose(-1, -2) - torch.eye(16)).abs().max() <= 1e-5
    # the reference: R = (I + Q)(I - Q)^{-1} with an explicit inverse, in fp64
    torch.testing.assert_close(R.double(), reference.cayley(P.double()), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cayley(P.double()), reference.cayley(P.double()), atol=1e-12,
                               rtol=1e-10)
    # the authors' convention is the map of -P
    torch.testing.assert_close(cayley(-P.double()), reference.cayley(P.double(), 'official'),
                               atol=1e-12, rtol=1e-10)
    # only the skew part matters; P = 0 gives exactly I
    torch.testing.assert_close(cayley(P + 3 * (P + P.transpose(-1, -2))), R, atol=1e-5, rtol=1e-5)
    assert torch.equal(cayley(torch.zeros(2, 4, 4)), torch.eye(4).expand(2, 4, 4))
    torch.testing.assert_close(skew(P), -skew(P).transpose(-1, -2))


def test_cayley_stays_fp32_and_orthogonal_under_bf16_autocast():
    P = torch.randn(4, 32, 32, generator=torch.Generator().manual_seed(1)).bfloat16()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        R = cayley(P)
    assert R.dtype == torch.float32
    assert _orth_error(R) <= 1e-5


def test_cayley_rejects_non_square():
    with pytest.raises(ValueError, match='square'):
        cayley(torch.zeros(3, 4))


def test_input_and_output_side_hand_computed():
    """W [4, 4], q = 2: R1 swaps two coordinates, R2 scales by 2 and 3."""
    W = torch.arange(16.).view(4, 4)  # rows [0 1 2 3], [4 5 6 7], ...
    blocks = torch.tensor([[[0., 1.], [1., 0.]], [[2., 0.], [0., 3.]]])
    # input side W·B: columns 0 and 1 swapped, column 2 doubled, column 3 tripled
    expected_input = torch.tensor([[1., 0., 4., 9.], [5., 4., 12., 21.], [9., 8., 20., 33.],
                                   [13., 12., 28., 45.]])
    # output side B·W: rows 0 and 1 swapped, row 2 doubled, row 3 tripled
    expected_output = torch.tensor([[4., 5., 6., 7.], [0., 1., 2., 3.], [16., 18., 20., 22.],
                                    [36., 39., 42., 45.]])
    assert torch.equal(apply_block_diagonal(W, blocks, 'input'), expected_input)
    assert torch.equal(apply_block_diagonal(W, blocks, 'output'), expected_output)
    B = block_diagonal(blocks)
    assert torch.equal(B, torch.tensor([[0., 1, 0, 0], [1, 0, 0, 0], [0, 0, 2, 0], [0, 0, 0, 3]]))


def test_batched_block_transform_equals_dense_products():
    g = torch.Generator().manual_seed(2)
    W = torch.randn(3, 12, 8, generator=g)  # rectangular: out 12, in 8
    R_in = torch.randn(3, 2, 4, 4, generator=g)
    R_out = torch.randn(3, 3, 4, 4, generator=g)
    torch.testing.assert_close(apply_block_diagonal(W, R_in, 'input'), W @ block_diagonal(R_in))
    torch.testing.assert_close(apply_block_diagonal(W, R_out, 'output'), block_diagonal(R_out) @ W)
    for i in range(3):  # the reference's dense W·diag(R) / diag(R)·W (torch.block_diag)
        torch.testing.assert_close(apply_block_diagonal(W[i], R_in[i], 'input'),
                                   reference.transform_weight(W[i], R_in[i], 'input'))
        torch.testing.assert_close(apply_block_diagonal(W[i], R_out[i], 'output'),
                                   reference.transform_weight(W[i], R_out[i], 'output'))
    # transforming the weight = transforming the activations (DESIGN §3)
    x = torch.randn(5, 8, generator=g)
    y = x @ apply_block_diagonal(W[0], R_in[0], 'input').T
    torch.testing.assert_close(y, (x @ block_diagonal(R_in[0]).T) @ W[0].T)


def test_block_transform_errors():
    with pytest.raises(ValueError, match="side must be one of"):
        apply_block_diagonal(torch.zeros(4, 4), torch.zeros(2, 2, 2), 'left')
    with pytest.raises(ValueError, match='do not cover'):
        apply_block_diagonal(torch.zeros(4, 6), torch.zeros(2, 2, 2), 'input')


def test_cayley_gradient():
    P = torch.randn(3, 5, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(cayley, (P, ))
    # against plain autograd through the reference's explicit-inverse formula (fp64 and fp32)
    G = torch.randn(3, 5, 5, dtype=torch.float64)
    (grad, ) = torch.autograd.grad((cayley(P) * G).sum(), P)
    (expected, ) = torch.autograd.grad((reference.cayley(P) * G).sum(), P)
    torch.testing.assert_close(grad, expected, atol=1e-12, rtol=1e-10)
    P32 = P.detach().float().requires_grad_(True)
    (grad32, ) = torch.autograd.grad((cayley(P32) * G.float()).sum(), P32)
    torch.testing.assert_close(grad32, expected.float(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('stacked', [False, True])
@pytest.mark.parametrize('side', ['input', 'output'])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_layerwise_block_product_values_and_gradients(side, stacked, dtype, monkeypatch):
    if stacked:  # the GPU code path (one stacked bmm in backward), exercised on CPU
        monkeypatch.setattr('mmseg_hclip.peft.block_transforms._STACKED_BACKWARD_DEVICES',
                            ('cpu', 'cuda'))
    from mmseg_hclip.peft import layerwise_block_product
    g = torch.Generator().manual_seed(3)
    L, n, b, q, d = 3, 2, 2, 4, 8
    W = torch.randn(L, n, d, d, generator=g, dtype=dtype)
    if side == 'input':
        frozen = W.view(L, n, d, b, q).permute(0, 1, 3, 2, 4).contiguous()
    else:
        frozen = W.view(L, n, b, q, d)
    blocks = torch.randn(L, n, b, q, q, generator=g, dtype=dtype, requires_grad=True)
    outs = layerwise_block_product(frozen, blocks, side)
    # the reference: dense W·diag(R) / diag(R)·W per (layer, weight), plain autograd
    expected = torch.stack([
        torch.cat([reference.transform_weight(W[l, i], blocks[l, i], side) for i in range(n)])
        for l in range(L)
    ])
    tol = dict(atol=1e-12, rtol=1e-10) if dtype == torch.float64 else dict(atol=1e-5, rtol=1e-5)
    assert len(outs) == L
    for out, exp in zip(outs, expected):
        assert out.dtype == dtype
        torch.testing.assert_close(out, exp, **tol)
    grads = [torch.randn(n * d, d, generator=g, dtype=dtype) for _ in range(L)]
    (got, ) = torch.autograd.grad(outs, blocks, grads, retain_graph=True)
    (ref, ) = torch.autograd.grad(list(expected), blocks, grads, retain_graph=True)
    torch.testing.assert_close(got, ref, **tol)
    # a layer whose weight gets no gradient contributes none
    (partial, ) = torch.autograd.grad(outs[1:], blocks, grads[1:])
    assert torch.count_nonzero(partial[0]) == 0
    torch.testing.assert_close(partial[1:], ref[1:], **tol)
    if dtype == torch.float64:
        return
    # bf16 autocast: the weights come back in bf16 (formed in fp32), the block gradient in fp32
    with torch.autocast('cpu', dtype=torch.bfloat16):
        outs = layerwise_block_product(frozen, blocks, side)
    assert outs[0].dtype == torch.bfloat16
    (grad16, ) = torch.autograd.grad(outs, blocks, [g.bfloat16() for g in grads])
    assert grad16.dtype == torch.float32
    torch.testing.assert_close(grad16, ref, atol=0.2, rtol=0.05)

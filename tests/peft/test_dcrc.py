"""The DCRC module (Eq. 16-17) on its stored ``[M, S, q, q]`` layout against ``peft/reference.py``
on the paper's ``q×q×S×M`` tensor: values and gradients, fp32 and fp64."""
import pytest
import torch

from mmseg_hclip.peft import DCRC, reference

S, L, N_TARGETS, q = 5, 3, 4, 3
M = N_TARGETS * L

CASES = {
    'mlp-gelu': dict(variant='mlp'),
    'mlp-tanh-hidden': dict(variant='mlp', activation='tanh', hidden=(7, 2)),
    'linear': dict(variant='linear'),
    'linear-per-layer': dict(variant='linear', mode3_groups=L),
}


def _reference(dcrc, T):
    if dcrc.variant == 'linear':
        return reference.dcrc_linear(T, dcrc.s3, dcrc.s4)
    return reference.dcrc_mlp(T, (dcrc.f3.weight1, dcrc.f3.weight2),
                              (dcrc.f4.weight1, dcrc.f4.weight2), dcrc.alpha, dcrc.f3.activation)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('case', sorted(CASES))
def test_dcrc_equals_the_reference(case, dtype):
    torch.manual_seed(0)  # the relation MLPs' nn.Linear-style init
    dcrc = DCRC(S, M, **CASES[case]).to(dtype)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in dcrc.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=dtype))
    stored = torch.randn(M, S, q, q, generator=g, dtype=dtype, requires_grad=True)
    got = dcrc(stored)
    T = stored.permute(2, 3, 1, 0)  # the paper's q×q×S×M
    want = _reference(dcrc, T).permute(3, 2, 0, 1)
    tol = dict(atol=1e-12, rtol=1e-10) if dtype == torch.float64 else dict(atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got, want, **tol)
    assert (got - stored).abs().max() > 0.1  # the mixing does something
    G = torch.randn(got.shape, generator=g, dtype=dtype)
    inputs = [stored, *dcrc.parameters()]
    for a, b in zip(torch.autograd.grad((got * G).sum(), inputs),
                    torch.autograd.grad((want * G).sum(), inputs)):
        torch.testing.assert_close(a, b, **tol)


def test_linear_per_layer_source_layer_indexing_differs():
    """The reference can tell the destination-layer S3 (authors) from the source-layer one."""
    dcrc = DCRC(S, M, variant='linear', mode3_groups=L).double()
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        dcrc.s3.add_(torch.randn(dcrc.s3.shape, generator=g, dtype=torch.float64))
        dcrc.s4.add_(torch.randn(dcrc.s4.shape, generator=g, dtype=torch.float64))
    stored = torch.randn(M, S, q, q, generator=g, dtype=torch.float64)
    T = stored.permute(2, 3, 1, 0)
    source_first = torch.stack([
        reference.mode_product(T[..., m:m + 1], dcrc.s3[m // N_TARGETS].detach(), 3)[..., 0]
        for m in range(M)
    ], -1)
    wrong = reference.mode_product(source_first, dcrc.s4.detach(), 4).permute(3, 2, 0, 1)
    with torch.no_grad():
        got = dcrc(stored)
    want = reference.dcrc_linear(T, dcrc.s3.detach(), dcrc.s4.detach()).permute(3, 2, 0, 1)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-10)
    assert (got - wrong).abs().max() > 0.1

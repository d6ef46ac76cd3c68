"""The adapter under autocast: weights formed in fp32 and cast once, backward inside autocast,
and the single-threaded small solves leave the process-wide thread setting alone."""
import threading

import pytest
import torch
from torch.func import functional_call

from mmseg_hclip.peft import OFFICIAL_COMPAT, HCLIPAdapter, cayley, layerwise_block_product
from mmseg_hclip.peft.testing import perturb_adapter, random_inputs, tiny_clip

Q = 32
BF16 = torch.bfloat16
VARIANTS = {
    'pof-mlp': dict(),
    'none-linear': dict(orthogonal='none', dcrc='linear'),
    'official-compat': dict(OFFICIAL_COMPAT),
    'mixed-sides-qv': dict(targets=('q', 'v'), sides=dict(q='output', v='input')),
}


@pytest.fixture(scope='module')
def clip():
    return tiny_clip()


def _trained_like(clip, scale=0.01, **kwargs):
    """An adapter whose blocks sit a little off their init, as after a few steps of training:
    ``I + 1e-2·noise`` is not representable in bf16 (8 bits of mantissa), so rounding the
    blocks to bf16 before the product would lose most of the update."""
    return perturb_adapter(HCLIPAdapter(clip, block_size=Q, **kwargs), seed=1, scale=scale)


@pytest.mark.parametrize('variant', sorted(VARIANTS))
def test_weights_under_autocast_are_fp32_formed_then_cast_once(clip, variant):
    adapter = _trained_like(clip, **VARIANTS[variant])
    reference = adapter(clip)  # fp32, no autocast
    with torch.autocast('cpu', dtype=BF16):
        got = adapter(clip)
    assert set(got) == set(reference)
    for name, weight in got.items():
        assert weight.dtype == BF16, name
        # bit-identical to the fp32 weight cast once
        assert torch.equal(weight, reference[name].to(BF16)), name
    # and not what a bf16 product of bf16-rounded blocks gives (the update would be lost)
    name = 'visual.transformer.resblocks.0.attn.in_proj_weight'
    pretrained = clip.get_parameter(name)
    update = (reference[name] - pretrained).abs().max()
    assert (got[name].float() - reference[name]).abs().max() < 0.1 * update + 1e-2


def test_forward_and_backward_inside_bf16_autocast(clip):
    adapter = _trained_like(clip)
    image, tokens = random_inputs(clip)
    # fp32 reference gradients
    out = functional_call(clip, adapter(clip), (image, tokens), strict=False)
    (out[0] @ out[1].T).sum().backward()
    ref = {n: p.grad.clone() for n, p in adapter.named_parameters()}
    adapter.zero_grad(set_to_none=True)
    # the whole step, backward included, inside autocast (as a training loop may do)
    with torch.autocast('cpu', dtype=BF16):
        out = functional_call(clip, adapter(clip), (image, tokens), strict=False)
        loss = (out[0] @ out[1].T).float().sum()
        loss.backward()
    for name, param in adapter.named_parameters():
        assert param.grad is not None and param.grad.dtype == torch.float32, name
        assert torch.isfinite(param.grad).all(), name
        # bf16 activations: same direction, a few per cent off
        cos = torch.nn.functional.cosine_similarity(param.grad.flatten(), ref[name].flatten(),
                                                    dim=0)
        assert cos > 0.95, (name, cos.item())


def test_custom_functions_backward_inside_autocast():
    g = torch.Generator().manual_seed(0)
    # Cayley: its gradient inside autocast equals the one outside (fp32 both times)
    P = (0.1 * torch.randn(6, 8, 8, generator=g)).requires_grad_()
    G = torch.randn(6, 8, 8, generator=g)
    (ref, ) = torch.autograd.grad(cayley(P), P, G)
    with torch.autocast('cpu', dtype=BF16):
        R = cayley(P)
        (got, ) = torch.autograd.grad(R, P, G)
    assert R.dtype == torch.float32 and got.dtype == torch.float32
    torch.testing.assert_close(got, ref)
    # layer-wise block product: the block gradient inside autocast is formed in fp32 from the
    # bf16 weight gradient
    L, n, b, q, d = 2, 3, 2, 4, 8
    frozen = torch.randn(L, n, b, d, q, generator=g)
    blocks = torch.randn(L, n, b, q, q, generator=g, requires_grad=True)
    grads = [torch.randn(n * d, d, generator=g).to(BF16) for _ in range(L)]
    with torch.autocast('cpu', dtype=BF16):
        outs = layerwise_block_product(frozen, blocks, 'input')
        (got, ) = torch.autograd.grad(outs, blocks, grads)
    outs32 = layerwise_block_product(frozen, blocks, 'input')
    assert outs[0].dtype == BF16 and got.dtype == torch.float32
    (ref, ) = torch.autograd.grad(outs32, blocks, [x.float() for x in grads])
    torch.testing.assert_close(got, ref)


def test_small_solves_leave_the_thread_setting_of_other_threads_alone(monkeypatch):
    """The Cayley solve runs LAPACK single-threaded; a thread started meanwhile (a data loader
    pin-memory thread, a logger, ...) must still get the process's thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    seen = []
    solve = torch.linalg.solve

    def spy(*args, **kwargs):
        probe = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
        probe.start()
        probe.join()
        seen.append(('caller', torch.get_num_threads()))
        return solve(*args, **kwargs)

    monkeypatch.setattr(torch.linalg, 'solve', spy)
    try:
        P = torch.randn(4, 8, 8, generator=torch.Generator().manual_seed(0)).requires_grad_()
        cayley(P).sum().backward()  # forward and backward solve
    finally:
        torch.set_num_threads(before)
    assert seen == [2, ('caller', 2)] * 2


def test_concurrent_solves_restore_the_thread_setting():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    P = torch.randn(16, 16, 16, generator=torch.Generator().manual_seed(0))
    errors = []

    def work():
        try:
            for _ in range(20):
                cayley(P)
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    try:
        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        after = torch.get_num_threads()
        fresh = []
        t = threading.Thread(target=lambda: fresh.append(torch.get_num_threads()))
        t.start()
        t.join()
    finally:
        torch.set_num_threads(before)
    assert not errors
    assert after == 2 and fresh == [2]

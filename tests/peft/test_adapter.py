"""HCLIPAdapter on tiny open_clip CLIPs, against ``peft/reference.py`` (dense, per equation) and
unmodified open_clip."""
import copy
from unittest import mock

import pytest
import torch
from torch.func import functional_call

from mmseg_hclip.peft import OFFICIAL_COMPAT, HCLIPAdapter, reference
from mmseg_hclip.peft.testing import perturb_adapter as randomize
from mmseg_hclip.peft.testing import random_inputs, tiny_clip

from .oracle import reference_blocks, reference_weights

Q = 32  # block size for the tiny CLIP: image width 128 -> 4 blocks, text width 64 -> 2 blocks

VARIANTS = {
    'pof-mlp': dict(),
    'pof-linear': dict(dcrc='linear'),
    'pof-off': dict(dcrc='off'),
    'none-mlp': dict(orthogonal='none'),
    'all-linear': dict(orthogonal='all', dcrc='linear'),
    'all-off-official-sides': dict(orthogonal='all', dcrc='off', sides='official'),
    'official-compat': dict(OFFICIAL_COMPAT),
    'dcrc-only-mlp': dict(train='dcrc_only'),
    'dcrc-only-linear': dict(train='dcrc_only', dcrc='linear'),
    'mixed-sides-qv': dict(targets=('v', 'q'), sides=dict(q='output', v='input')),
    'out-only-output': dict(targets=('out', ), sides=dict(out='output')),
    'k-v-different-sides': dict(sides=dict(q='input', k='output', v='input', out='output')),
}


def _features(model, inputs, weights=None):
    image, tokens = inputs
    if weights is None:
        out = model(image, tokens)
    else:
        out = functional_call(model, weights, (image, tokens), strict=False)
    return out[0], out[1]


def _max_diff(a, b):
    return max((x - y).abs().max().item() for x, y in zip(a, b))


# ---------------------------------------------------------------- the oracle: peft/reference.py
def _reference_model(clip, adapter):
    """A copy of clip whose target weights are those of ``peft/reference.py`` (fp64 maths)."""
    ref = copy.deepcopy(clip)
    weights = reference_weights(copy.deepcopy(adapter).double(), copy.deepcopy(clip).double())
    with torch.no_grad():
        for name, w in weights.items():
            ref.get_parameter(name).copy_(w)
    return ref


def _raw_blocks(adapter):
    """tower -> the stored blocks as ``[L_t, n_targets, b_t, q, q]`` (layer, target, block)."""
    q, n_t = adapter.block_size, len(adapter.targets)
    return {t: adapter.raw_parameters()[t].reshape(s.num_layers, n_t, s.width // q, q, q)
            for t, s in adapter.towers.items()}


# ---------------------------------------------------------------- tests
@pytest.mark.parametrize('variant', sorted(VARIANTS))
def test_init_equals_unmodified_open_clip(base_clip, inputs, variant):
    expected = _features(base_clip, inputs)
    adapter = HCLIPAdapter(base_clip, block_size=Q, **VARIANTS[variant])
    got = _features(base_clip, inputs, adapter(base_clip))
    assert _max_diff(got, expected) <= 1e-5


def test_init_equals_open_clip_for_towers_of_different_depth():
    clip = tiny_clip(vision_layers=3, text_layers=2)
    inputs = random_inputs(clip)
    expected = _features(clip, inputs)
    for kwargs in (dict(), dict(dcrc='linear'), dict(OFFICIAL_COMPAT), dict(orthogonal='all')):
        adapter = HCLIPAdapter(clip, block_size=Q, **kwargs)
        assert adapter.num_positions == 4 * 3
        assert _max_diff(_features(clip, inputs, adapter(clip)), expected) <= 1e-5


@pytest.mark.parametrize('variant', sorted(VARIANTS))
def test_trained_adapter_matches_dense_reference(base_clip, inputs, variant):
    adapter = randomize(HCLIPAdapter(base_clip, block_size=Q, **VARIANTS[variant]))
    reference = _reference_model(base_clip, adapter)
    weights = adapter(base_clip)
    ref_params = dict(reference.named_parameters())
    for name, w in weights.items():
        torch.testing.assert_close(w, ref_params[name], atol=2e-5, rtol=1e-4)
    got = _features(base_clip, inputs, weights)
    assert _max_diff(got, _features(base_clip, inputs)) > 1e-3  # the adapter does something
    assert _max_diff(got, _features(reference, inputs)) <= 1e-4


@pytest.mark.parametrize('variant', sorted(VARIANTS))
def test_fp64_weights_blocks_and_gradients_equal_the_reference(variant):
    """fp64: weights and final blocks to rounding; gradients of every adapter parameter (custom
    Cayley and layer-wise backward) equal plain autograd through the reference. Towers of
    different depth (3 image, 2 text layers) exercise the padding slots."""
    clip = tiny_clip(vision_layers=3, text_layers=2).double()
    adapter = randomize(HCLIPAdapter(clip, block_size=Q, **VARIANTS[variant]), seed=4).double()
    weights, expected = adapter(clip), reference_weights(adapter, clip)
    assert set(weights) == set(expected)
    for name, w in weights.items():
        assert w.dtype == torch.float64
        torch.testing.assert_close(w, expected[name], atol=1e-12, rtol=1e-10)
    blocks, ref_blocks = adapter.transforms(), reference_blocks(adapter)
    for tower in blocks:
        torch.testing.assert_close(blocks[tower], ref_blocks[tower], atol=1e-12, rtol=1e-10)
    g = torch.Generator().manual_seed(1)
    G = {n: torch.randn(w.shape, generator=g, dtype=torch.float64) for n, w in weights.items()}
    params = [p for p in adapter.parameters() if p.requires_grad]
    loss = lambda ws: sum((ws[n] * G[n]).sum() for n in sorted(ws))
    got = torch.autograd.grad(loss(weights), params)
    want = torch.autograd.grad(loss(expected), params)
    for (name, _), a, b in zip([(n, p) for n, p in adapter.named_parameters() if p.requires_grad],
                               got, want):
        torch.testing.assert_close(a, b, atol=1e-11, rtol=1e-9, msg=name)


@pytest.mark.parametrize('variant', ['pof-mlp', 'official-compat', 'all-linear'])
def test_fp32_gradients_equal_the_reference(base_clip, variant):
    adapter = randomize(HCLIPAdapter(base_clip, block_size=Q, **VARIANTS[variant]), seed=6)
    weights, expected = adapter(base_clip), reference_weights(adapter, base_clip)
    g = torch.Generator().manual_seed(2)
    G = {n: torch.randn(w.shape, generator=g) for n, w in weights.items()}
    params = [p for p in adapter.parameters() if p.requires_grad]
    loss = lambda ws: sum((ws[n] * G[n]).sum() for n in sorted(ws))
    got = torch.autograd.grad(loss(weights), params)
    want = torch.autograd.grad(loss(expected), params)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-5)


def test_different_depth_slots_padding_and_reference():
    clip = tiny_clip(vision_layers=3, text_layers=2)
    inputs = random_inputs(clip)
    adapter = randomize(HCLIPAdapter(clip, block_size=Q))
    T = adapter.dcrc_tensor()
    q, S, M = T.shape[0], T.shape[2], T.shape[3]
    assert (q, S, M) == (Q, 2 + 4, 4 * 3)
    # text layers 0, 1 sit at layer slots 0 and 2 (last layers aligned); slot 1 is padding
    assert torch.count_nonzero(T[:, :, :2, 4:8]) == 0
    torch.testing.assert_close(T[:, :, 0, 8 + 3], adapter.generators['text'][4 + 3, 0].detach())
    for name, w in reference_weights(adapter, clip).items():
        torch.testing.assert_close(adapter(clip)[name], w, atol=2e-5, rtol=1e-4)
    reference = _reference_model(clip, adapter)
    assert _max_diff(_features(clip, inputs, adapter(clip)), _features(reference, inputs)) <= 1e-4


@pytest.mark.parametrize('layers', [(2, 2), (3, 2)])
def test_dcrc_tensor_is_the_papers_block_tensor(layers):
    """``dcrc_tensor()`` (raw and mixed) equals Eq. 6-7 (and 16/17) of the reference."""
    clip = tiny_clip(vision_layers=layers[0], text_layers=layers[1])
    for kwargs in (dict(dcrc='off'), dict(), dict(OFFICIAL_COMPAT)):
        adapter = randomize(HCLIPAdapter(clip, block_size=Q, **kwargs))
        T = reference.block_tensor(_raw_blocks(adapter))
        assert T.shape == (Q, Q, 2 + 4, 4 * max(layers))
        assert torch.equal(adapter.dcrc_tensor(), T)
        if adapter.dcrc is not None:
            d = adapter.dcrc
            mixed = (reference.dcrc_linear(T, d.s3, d.s4) if d.variant == 'linear' else
                     reference.dcrc_mlp(T, (d.f3.weight1, d.f3.weight2),
                                        (d.f4.weight1, d.f4.weight2), d.alpha))
            torch.testing.assert_close(adapter.dcrc_tensor(mixed=True), mixed, atol=1e-5,
                                       rtol=1e-5)


def test_weight_names_state_dict_and_tower_selection(base_clip):
    adapter = HCLIPAdapter(base_clip, block_size=Q)
    weights = adapter(base_clip)
    params = dict(base_clip.named_parameters())
    expected = {f'{p}.{l}.attn.{w}' for p in ('visual.transformer.resblocks',
                                               'transformer.resblocks') for l in range(2)
                for w in ('in_proj_weight', 'out_proj.weight')}
    assert set(weights) == expected
    for name, w in weights.items():
        assert w.shape == params[name].shape
    assert all(k.startswith(('blocks.image', 'generators.text', 'dcrc.')) for k in adapter.state_dict())
    assert set(adapter(base_clip, towers='text')) == {n for n in expected if
                                                     n.startswith('transformer.')}
    with pytest.raises(ValueError, match='unknown tower'):
        adapter(base_clip, towers='audio')


def test_one_dcrc_mixing_and_one_cayley_solve_per_call(base_clip):
    adapter = HCLIPAdapter(base_clip, block_size=Q, orthogonal='all')
    solve = torch.linalg.solve
    with mock.patch.object(adapter.dcrc, 'forward', wraps=adapter.dcrc.forward) as dcrc_fwd, \
            mock.patch('torch.linalg.solve', side_effect=solve) as solve_call:
        adapter(base_clip)
    assert dcrc_fwd.call_count == 1
    assert solve_call.call_count == 1


def test_gradients_reach_only_adapter_parameters(clip, inputs):
    adapter = randomize(HCLIPAdapter(clip, block_size=Q), scale=0.5)
    assert not any(p.requires_grad for p in clip.parameters())
    image_f, text_f = _features(clip, inputs, adapter(clip))
    (image_f @ text_f.T).square().sum().backward()
    assert all(p.grad is None for p in clip.parameters())
    for name, p in adapter.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # DCRC-only: blocks frozen, relation maps and α trained
    adapter = randomize(HCLIPAdapter(clip, block_size=Q, train='dcrc_only'), scale=0.5)
    image_f, text_f = _features(clip, inputs, adapter(clip))
    (image_f @ text_f.T).square().sum().backward()
    assert all(p.grad is None for p in adapter.raw_parameters().values())
    assert all(p.grad is not None for p in adapter.dcrc.parameters())
    assert all(p.grad is None for p in clip.parameters())


def test_merge_unmerge(clip, inputs):
    adapter = randomize(HCLIPAdapter(clip, block_size=Q, **OFFICIAL_COMPAT))
    originals = {n: p.detach().clone() for n, p in clip.named_parameters()}
    adapted = _features(clip, inputs, adapter(clip))
    adapter.merge(clip)
    assert adapter.merged
    assert adapter(clip) == {}
    merged_plain = _features(clip, inputs)  # a plain open_clip forward
    assert _max_diff(merged_plain, adapted) <= 1e-5
    # functional_call with the (empty) adapter weights is the merged model too
    assert _max_diff(_features(clip, inputs, adapter(clip)), adapted) <= 1e-5
    with pytest.raises(RuntimeError, match='already merged'):
        adapter.merge(clip)
    adapter.unmerge(clip)
    assert not adapter.merged
    for name, p in clip.named_parameters():
        assert torch.equal(p, originals[name]), name
    with pytest.raises(RuntimeError, match='not merged'):
        adapter.unmerge(clip)
    adapter.merge(clip, keep_original=False)
    with pytest.raises(RuntimeError, match='keep_original=False'):
        adapter.unmerge(clip)


def test_merge_refuses_non_finite(clip):
    adapter = HCLIPAdapter(clip, block_size=Q, orthogonal='none', dcrc='off')
    originals = {n: p.detach().clone() for n, p in clip.named_parameters()}
    with torch.no_grad():
        adapter.blocks['image'][3, 1, 0, 0] = float('inf')
    with pytest.raises(ValueError, match='not finite'):
        adapter.merge(clip)
    assert not adapter.merged
    for name, p in clip.named_parameters():
        assert torch.equal(p, originals[name]), name


def test_orthogonal_blocks_under_bf16_autocast(base_clip, inputs):
    adapter = randomize(HCLIPAdapter(base_clip, block_size=Q, orthogonal='all'))
    image, tokens = inputs
    with torch.autocast('cpu', dtype=torch.bfloat16):
        blocks = adapter.transforms()
        weights = adapter(base_clip)
        out = functional_call(base_clip, weights, (image, tokens), strict=False)
    eye = torch.eye(Q)
    for tower, R in blocks.items():
        assert R.dtype == torch.float32
        assert (R.transpose(-1, -2) @ R - eye).abs().max() <= 1e-5, tower
    reference = _features(base_clip, inputs, adapter(base_clip))  # fp32
    assert _max_diff(out[:2], reference) < 0.1  # bf16 forward, same model


def test_energy_drift_of_text_targets(clip):
    # DCRC off: the drift then depends only on the seeded block perturbation
    adapter = randomize(HCLIPAdapter(clip, block_size=Q, sides='official', dcrc='off'), seed=3)
    drift = adapter.energy_drift(clip)
    assert set(drift) == {f'text.{l}.{t}' for l in range(2) for t in ('q', 'k', 'v', 'out')}
    input_side = [v for k, v in drift.items() if not k.endswith('out')]
    output_side = [v for k, v in drift.items() if k.endswith('out')]
    assert max(input_side) <= 1e-8  # input side, orthogonal: the energy is preserved
    # output side: the rows are mixed, so the energy moves (little, for random rows)
    assert min(output_side) > max(1e-7, 100 * max(input_side))
    image_drift = adapter.energy_drift(clip, towers='image')
    assert min(image_drift.values()) > 1e-4  # free blocks change the energy
    adapter.merge(clip)
    merged = adapter.energy_drift(clip)
    for key in drift:
        assert merged[key] == pytest.approx(drift[key], rel=1e-3, abs=1e-6)


def test_parameter_counts(base_clip):
    adapter = HCLIPAdapter(base_clip, block_size=Q)
    counts = adapter.parameter_counts()
    assert counts['image']['stored'] == 4 * 2 * 4 * Q * Q
    assert counts['text']['stored'] == 4 * 2 * 2 * Q * Q
    assert counts['text']['effective'] == 4 * 2 * 2 * Q * (Q - 1) // 2
    S, M = 6, 8
    assert counts['dcrc']['stored'] == 2 * S * S + 2 * M * M + S * M
    assert counts['total']['trainable'] == sum(p.numel() for p in adapter.parameters())
    only = HCLIPAdapter(base_clip, block_size=Q, dcrc='linear', train='dcrc_only')
    assert only.parameter_counts()['total']['trainable'] == S * S + M * M


def test_bad_input_errors(base_clip):
    with pytest.raises(ValueError, match=r'q=48 does not divide the image width 128.*such as'):
        HCLIPAdapter(base_clip, block_size=48)
    with pytest.raises(ValueError, match=r'q=128 does not divide the text width 64.*64'):
        HCLIPAdapter(base_clip, block_size=128)
    for bad in (0, -32, 2.5, True):
        with pytest.raises(ValueError, match='positive integer'):
            HCLIPAdapter(base_clip, block_size=bad)
    with pytest.raises(ValueError, match=r"unknown target\(s\) \['mlp'\]"):
        HCLIPAdapter(base_clip, block_size=Q, targets=('q', 'mlp'))
    with pytest.raises(ValueError, match='unknown orthogonal'):
        HCLIPAdapter(base_clip, block_size=Q, orthogonal='some')
    with pytest.raises(ValueError, match='unknown sides'):
        HCLIPAdapter(base_clip, block_size=Q, sides='left')
    with pytest.raises(ValueError, match='missing'):
        HCLIPAdapter(base_clip, block_size=Q, sides=dict(q='input'))
    with pytest.raises(ValueError, match='unknown dcrc'):
        HCLIPAdapter(base_clip, block_size=Q, dcrc='conv')
    with pytest.raises(ValueError, match='unknown train'):
        HCLIPAdapter(base_clip, block_size=Q, train='all')
    with pytest.raises(ValueError, match='needs'):
        HCLIPAdapter(base_clip, block_size=Q, train='dcrc_only', dcrc='off')


def test_non_vit_models_are_rejected():
    from open_clip.model import CLIP
    resnet_clip = CLIP(
        32,
        vision_cfg=dict(layers=(1, 1, 1, 1), width=16, image_size=64),
        text_cfg=dict(context_length=8, width=64, heads=2, layers=1))
    with pytest.raises(ValueError, match='ModifiedResNet'):
        HCLIPAdapter(resnet_clip, block_size=32)
    with pytest.raises(ValueError, match='ViT image tower'):
        HCLIPAdapter(torch.nn.Linear(4, 4), block_size=2)


def test_state_dict_round_trip(base_clip, inputs):
    adapter = randomize(HCLIPAdapter(base_clip, block_size=Q, **OFFICIAL_COMPAT))
    clone = HCLIPAdapter(base_clip, block_size=Q, **OFFICIAL_COMPAT)
    clone.load_state_dict(adapter.state_dict())
    for name, w in adapter(base_clip).items():
        assert torch.equal(w, clone(base_clip)[name])


def test_checkpoints_with_the_old_parameter_names_load(base_clip):
    """Earlier versions kept the Cayley generators P under ``blocks.<tower>``; they now live
    under ``generators.<tower>`` and old state dicts load into the new names (a pre-hook)."""
    adapter = randomize(HCLIPAdapter(base_clip, block_size=Q, orthogonal='all'))
    state = adapter.state_dict()
    assert {'generators.text', 'generators.image'} <= set(state)
    assert not any(k.startswith('blocks.') for k in state)
    old = {k.replace('generators.', 'blocks.'): v.clone() for k, v in state.items()}
    clone = HCLIPAdapter(base_clip, block_size=Q, orthogonal='all')
    clone.load_state_dict(old)  # strict
    for name, w in adapter(base_clip).items():
        assert torch.equal(w, clone(base_clip)[name])
    pof = HCLIPAdapter(base_clip, block_size=Q)  # text generators, image blocks
    assert {'generators.text', 'blocks.image'} <= set(pof.state_dict())
    pof.load_state_dict({k: v for k, v in old.items() if k != 'blocks.image'} |
                        {'blocks.image': torch.eye(Q).expand(8, 4, Q, Q).clone()})
    assert torch.equal(pof.generators['text'], adapter.generators['text'])


def test_frozen_cache_follows_weight_changes(clip, inputs):
    adapter = randomize(HCLIPAdapter(clip, block_size=Q, dcrc='off'))
    before = _features(clip, inputs, adapter(clip))
    assert adapter._frozen_cache  # built by the first call
    with torch.no_grad():  # e.g. loading another checkpoint into the CLIP
        for p in clip.parameters():
            p.mul_(1.5)
    after = _features(clip, inputs, adapter(clip))
    reference = _features(_reference_model(clip, adapter), inputs)
    assert _max_diff(after, reference) <= 1e-4
    assert _max_diff(after, before) > 1e-3


def test_cache_frozen_switch(clip):
    adapter = randomize(HCLIPAdapter(clip, block_size=Q))
    cached = adapter(clip)
    assert adapter.cache_frozen and adapter._frozen_cache
    adapter.cache_frozen = False  # settable after construction: the kept stacks are dropped
    assert not adapter._frozen_cache
    uncached = adapter(clip)
    assert not adapter._frozen_cache
    for name, w in cached.items():
        assert torch.equal(w, uncached[name])


def test_gradients_equal_plain_autograd(base_clip, inputs):
    """The layer-wise custom backward gives the gradients of plain autograd."""
    grads = []
    for freeze in (True, False):
        clip = copy.deepcopy(base_clip).requires_grad_(True)
        adapter = randomize(HCLIPAdapter(clip, block_size=Q, freeze_clip=freeze), seed=5)
        torch.manual_seed(0)
        adapter.dcrc.f3.reset_parameters(), adapter.dcrc.f4.reset_parameters()
        image_f, text_f = _features(clip, inputs, adapter(clip))
        (image_f @ text_f.T).square().sum().backward()
        grads.append({n: p.grad.clone() for n, p in adapter.named_parameters()})
        if not freeze:  # the plain path also reached the CLIP weights
            assert clip.visual.transformer.resblocks[0].attn.in_proj_weight.grad is not None
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-6, rtol=1e-4)

"""HCLIPAdapter on tiny open_clip CLIPs, against independent dense computations."""
import copy
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from mmseg_hclip.peft import OFFICIAL_COMPAT, HCLIPAdapter, mode_product
from mmseg_hclip.peft.testing import perturb_adapter as randomize
from mmseg_hclip.peft.testing import random_inputs, tiny_clip

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


# ---------------------------------------------------------------- independent reference
def _positions(adapter, tower):
    """(layer, target) -> position along mode 4 (layer-major, relative-depth slots)."""
    l_max = max(s.num_layers for s in adapter.towers.values())
    spec = adapter.towers[tower]
    n_t = len(adapter.targets)
    return {(l, t): ((l + 1) * l_max // spec.num_layers - 1) * n_t + i
            for l in range(spec.num_layers) for i, t in enumerate(adapter.targets)}


def _slice_offset(adapter, tower):
    return 0 if tower == 'text' else adapter.towers['text'].width // adapter.block_size


def _reference_mixed(adapter):
    """T after DCRC, computed with mode products in the paper's q×q×S×M layout (fp64)."""
    T = adapter.dcrc_tensor().detach().double()
    dcrc = adapter.dcrc
    if dcrc is None:
        return T
    if dcrc.variant == 'mlp':
        act = {'gelu': F.gelu, 'relu': F.relu}[dcrc.f3.activation]
        f3 = lambda X: mode_product(act(mode_product(X, dcrc.f3.weight1.double(), 2)),
                                    dcrc.f3.weight2.double(), 2)
        f4 = lambda X: mode_product(act(mode_product(X, dcrc.f4.weight1.double(), 3)),
                                    dcrc.f4.weight2.double(), 3)
        return T + dcrc.alpha.double() * f4(f3(T))  # α [S, M] broadcasts over q×q
    s3, s4 = dcrc.s3.detach().double(), dcrc.s4.detach().double()
    if s3.dim() == 2:  # Eq. 16
        return mode_product(mode_product(T, s3, 2), s4, 3)
    # one S3 per layer index (M / L consecutive positions each), as the authors' code builds
    # layer l's blocks: mode 4 mixed first, then mode 3 with the map of the destination's layer
    X = mode_product(T, s4, 3)
    per = X.shape[3] // s3.shape[0]
    return torch.stack([mode_product(X[..., d], s3[d // per], 2) for d in range(X.shape[3])], -1)


def _reference_model(clip, adapter):
    """A copy of clip whose target weights are replaced by dense W·B / B·W (fp64 maths)."""
    T = _reference_mixed(adapter)
    q = adapter.block_size
    eye = torch.eye(q, dtype=torch.float64)
    ref = copy.deepcopy(clip)
    params = dict(ref.named_parameters())
    for tower, spec in adapter.towers.items():
        b, off = spec.width // q, _slice_offset(adapter, tower)
        for (layer, target), m in _positions(adapter, tower).items():
            blocks = [T[:, :, off + i, m] for i in range(b)]
            if tower in adapter.orthogonal_towers:
                sign = -1.0 if adapter.cayley_convention == 'official' else 1.0
                rs = []
                for P in blocks:
                    Qs = sign * 0.5 * (P - P.T)
                    rs.append((eye + Qs) @ torch.linalg.inv(eye - Qs))
                blocks = rs
            B = torch.block_diag(*blocks)
            if target == 'out':
                p, rows = params[spec.out_proj_names[layer]], slice(None)
            else:
                i = 'qkv'.index(target)
                p = params[spec.in_proj_names[layer]]
                rows = slice(i * spec.width, (i + 1) * spec.width)
            W = p.data[rows].double()
            new = W @ B if adapter.sides[target] == 'input' else B @ W
            p.data[rows] = new.float()
    return ref


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


def test_different_depth_slots_padding_and_reference():
    clip = tiny_clip(vision_layers=3, text_layers=2)
    inputs = random_inputs(clip)
    adapter = randomize(HCLIPAdapter(clip, block_size=Q))
    T = adapter.dcrc_tensor()
    q, S, M = T.shape[0], T.shape[2], T.shape[3]
    assert (q, S, M) == (Q, 2 + 4, 4 * 3)
    # text layers 0, 1 sit at layer slots 0 and 2 (last layers aligned); slot 1 is padding
    assert torch.count_nonzero(T[:, :, :2, 4:8]) == 0
    torch.testing.assert_close(T[:, :, 0, 8 + 3], adapter.blocks['text'][4 + 3, 0].detach())
    reference = _reference_model(clip, adapter)
    assert _max_diff(_features(clip, inputs, adapter(clip)), _features(reference, inputs)) <= 1e-4


def test_dcrc_tensor_layout(base_clip):
    adapter = randomize(HCLIPAdapter(base_clip, block_size=Q, dcrc='off'))
    T = adapter.dcrc_tensor()
    assert T.shape == (Q, Q, 2 + 4, 4 * 2)
    for tower, spec in adapter.towers.items():
        off = _slice_offset(adapter, tower)
        for (layer, target), m in _positions(adapter, tower).items():
            for i in range(spec.width // Q):
                torch.testing.assert_close(T[:, :, off + i, m], adapter.blocks[tower][m, i])


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
    assert all(k.startswith(('blocks.', 'dcrc.')) for k in adapter.state_dict())
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
    assert all(p.grad is None for p in adapter.blocks.parameters())
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

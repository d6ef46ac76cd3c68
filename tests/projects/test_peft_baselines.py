"""PEFT baselines of projects/peft_baselines: LoRA and CAT-Seg-style attention fine-tuning.

Checked on tiny open_clip CLIPs against independent computations (explicit per-layer weight
edits, gradients of a CLIP whose own weights are trained), and through HCLIPBackbone.
"""
import copy

import pytest
import torch
from torch.func import functional_call

from mmseg_hclip.peft import HCLIPAdapter
from mmseg_hclip.peft.testing import random_inputs, tiny_clip
from projects.peft_baselines.peft_baselines import AttentionFinetuneAdapter, LoRAAdapter

QKV = ('q', 'k', 'v')


def features(clip, weights=None):
    images, tokens = random_inputs(clip)
    if weights is None:
        out = clip(images, tokens)
    else:
        out = functional_call(clip, weights, (images, tokens), strict=False)
    return out[0], out[1]


def perturb(adapter, seed=0, scale=0.05):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return adapter


def rows(spec, layer, target):
    """(parameter name, row slice) of one target of one layer."""
    if target == 'out':
        return spec.out_proj_names[layer], slice(None)
    i = QKV.index(target)
    return spec.in_proj_names[layer], slice(i * spec.width, (i + 1) * spec.width)


# ------------------------------------------------------------------ LoRA
def test_lora_at_init_is_plain_clip():
    clip = tiny_clip()
    adapter = LoRAAdapter(clip, rank=8)
    weights = adapter(clip)
    assert len(weights) == 2 * (2 + 2)  # in_proj + out_proj of 2 image + 2 text blocks
    for name, w in weights.items():
        assert torch.equal(w, clip.get_parameter(name)), name  # W + 0 exactly
    for a, b in zip(features(clip, weights), features(clip)):
        # equal up to kernels: with weights that require grad, nn.MultiheadAttention leaves its
        # fused inference path
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize('targets', [('q', 'k', 'v', 'out'), ('q', 'v')])
def test_lora_weights_equal_explicit_low_rank_update(targets):
    clip = tiny_clip()
    adapter = perturb(LoRAAdapter(clip, rank=4, alpha=8, targets=targets))
    weights = adapter(clip)
    for tower, spec in adapter.towers.items():
        for layer in range(spec.num_layers):
            for t in ('q', 'k', 'v', 'out'):
                name, r = rows(spec, layer, t)
                expected = clip.get_parameter(name)[r].clone()
                if t in targets:
                    i = targets.index(t)
                    b = adapter.lora_B[tower][layer, i]
                    a = adapter.lora_A[tower][layer, i]
                    expected += 2.0 * (b @ a)  # alpha / rank = 8 / 4
                actual = weights.get(name, clip.get_parameter(name))  # untargeted: not returned
                torch.testing.assert_close(actual[r], expected, rtol=1e-6, atol=1e-6)


def test_lora_merge_unmerge_exact():
    clip = tiny_clip()
    pretrained = {n: p.clone() for n, p in clip.named_parameters()}
    adapter = perturb(LoRAAdapter(clip, rank=8))
    adapted = features(clip, adapter(clip))
    adapter.merge(clip)
    assert adapter.merged and adapter(clip) == {}
    for a, b in zip(features(clip), adapted):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    with pytest.raises(RuntimeError, match='already merged'):
        adapter.merge(clip)
    adapter.unmerge(clip)
    assert not adapter.merged
    for n, p in clip.named_parameters():
        assert torch.equal(p, pretrained[n]), n


def test_merge_refuses_non_finite_and_leaves_model_unchanged():
    clip = tiny_clip()
    pretrained = {n: p.clone() for n, p in clip.named_parameters()}
    adapter = LoRAAdapter(clip, rank=8)
    with torch.no_grad():
        adapter.lora_B['text'][0, 0, 0, 0] = float('nan')
    with pytest.raises(ValueError, match='not finite'):
        adapter.merge(clip)
    assert not adapter.merged
    assert all(torch.equal(p, pretrained[n]) for n, p in clip.named_parameters())


def test_only_lora_parameters_get_gradients():
    clip = tiny_clip()
    adapter = LoRAAdapter(clip, rank=8)
    assert not any(p.requires_grad for p in clip.parameters())
    img, txt = features(clip, adapter(clip))
    (img.square().sum() + txt.square().sum()).backward()
    assert all(p.grad is None for p in clip.parameters())
    # B = 0 at init: A gets no gradient yet, B does (in every layer, both towers)
    for tower in ('image', 'text'):
        grad_b = adapter.lora_B[tower].grad
        assert grad_b is not None and (grad_b.flatten(2).abs().sum(-1) > 0).all(), tower
    trainable = {n for n, p in adapter.named_parameters() if p.requires_grad}
    assert trainable == {'lora_A.image', 'lora_A.text', 'lora_B.image', 'lora_B.text'}


def test_lora_rank_matches_hclip_parameter_count():
    """r = q / 2: LoRA stores exactly as many parameters as H-CLIP's POF blocks."""
    import open_clip
    for name, expected in (('ViT-B-16', 7_864_320), ('ViT-L-14', 17_301_504)):
        clip = open_clip.create_model(name, pretrained=None, device='meta')
        lora = LoRAAdapter(clip, rank=64, freeze_clip=False).parameter_counts()
        hclip = HCLIPAdapter(clip, block_size=128, freeze_clip=False).parameter_counts()
        assert lora['total']['trainable'] == expected, name
        assert lora['total']['stored'] == hclip['image']['stored'] + hclip['text']['stored']
        if name == 'ViT-B-16':
            assert lora['total']['stored'] / 2**20 == 7.5  # the paper's "7.5M"
            attn = AttentionFinetuneAdapter(clip, freeze_clip=False).parameter_counts()
            assert attn['total']['trainable'] == 20_477_952  # 12 x 2 x (768² + 768 + 512² + 512)


@pytest.mark.parametrize('kwargs, message', [
    (dict(rank=0), 'positive integer'),
    (dict(rank=65), 'exceeds the width'),
    (dict(targets=('q', 'x')), 'unknown'),
    (dict(towers=()), 'non-empty'),
])
def test_lora_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LoRAAdapter(tiny_clip(text_width=64), **kwargs)


def test_lora_single_tower_leaves_other_tower_alone():
    clip = tiny_clip()
    adapter = perturb(LoRAAdapter(clip, rank=4, towers=('text', )))
    weights = adapter(clip)
    assert weights and all(n.startswith('transformer.') for n in weights)


# ------------------------------------------------------------------ attention fine-tuning
def test_attention_ft_at_init_is_plain_clip():
    clip = tiny_clip()
    adapter = AttentionFinetuneAdapter(clip)
    weights = adapter(clip)
    for name, w in weights.items():
        assert torch.equal(w, clip.get_parameter(name)), name
    assert sum('bias' in n for n in weights) == len(weights) // 2


def test_attention_ft_gradients_equal_training_clip_weights_directly():
    """Same gradient as training the q / v rows (and biases) of CLIP itself; k untouched."""
    clip = tiny_clip()
    direct = copy.deepcopy(clip)
    adapter = perturb(AttentionFinetuneAdapter(clip))
    with torch.no_grad():  # give the directly trained CLIP the same current values
        for name, w in adapter(clip).items():
            direct.get_parameter(name).copy_(w)
    direct.requires_grad_(False)
    for spec in adapter.towers.values():
        for name in spec.in_proj_names:
            direct.get_parameter(name).requires_grad_(True)
            direct.get_parameter(name[:-len('weight')] + 'bias').requires_grad_(True)

    def loss(out):
        return out[0].square().sum() + (out[1] * torch.arange(out[1].shape[-1])).sum()

    loss(features(clip, adapter(clip))).backward()
    loss(features(direct)).backward()
    assert all(p.grad is None for p in clip.parameters())
    for tower, spec in adapter.towers.items():
        d = spec.width
        for layer, name in enumerate(spec.in_proj_names):
            g_w = direct.get_parameter(name).grad
            g_b = direct.get_parameter(name[:-len('weight')] + 'bias').grad
            for i, t in enumerate(('q', 'v')):
                r = slice(QKV.index(t) * d, (QKV.index(t) + 1) * d)
                torch.testing.assert_close(adapter.weights[tower].grad[layer, i], g_w[r])
                torch.testing.assert_close(adapter.biases[tower].grad[layer, i], g_b[r])
    # the k rows are the frozen ones
    weights = adapter(clip)
    for spec in adapter.towers.values():
        name, r = rows(spec, 0, 'k')
        assert torch.equal(weights[name][r], clip.get_parameter(name)[r])


def test_attention_ft_merge_unmerge_exact():
    clip = tiny_clip()
    pretrained = {n: p.clone() for n, p in clip.named_parameters()}
    adapter = perturb(AttentionFinetuneAdapter(clip, targets=('q', 'v', 'out')))
    adapted = features(clip, adapter(clip))
    adapter.merge(clip, keep_original=True)
    for a, b in zip(features(clip), adapted):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    adapter.unmerge(clip)
    assert all(torch.equal(p, pretrained[n]) for n, p in clip.named_parameters())
    adapter.merge(clip, keep_original=False)
    with pytest.raises(RuntimeError, match='keep_original=False'):
        adapter.unmerge(clip)


# ------------------------------------------------------------------ through MMSeg
TINY_ARCH = dict(
    embed_dim=32,
    vision_cfg=dict(image_size=64, layers=3, width=64, head_width=32, patch_size=16),
    text_cfg=dict(context_length=77, vocab_size=49408, width=64, heads=2, layers=2))


@pytest.mark.parametrize('adapter_cfg, cls', [
    (dict(type='LoRAAdapter', rank=8), LoRAAdapter),
    (dict(type='AttentionFinetuneAdapter'), AttentionFinetuneAdapter),
])
def test_registered_and_used_by_the_backbone(adapter_cfg, cls):
    from mmseg.registry import MODELS
    assert MODELS.get(adapter_cfg['type']) is cls
    backbone = MODELS.build(dict(type='HCLIPBackbone', arch=TINY_ARCH, pretrained=None,
                                 img_size=64, guidance_layers=(0, 1), adapter=adapter_cfg))
    assert isinstance(backbone.adapter, cls)
    perturb(backbone.adapter)
    images = torch.randn(2, 3, 64, 64)
    tokens = backbone.tokenize(['a cat', 'a sofa'])
    backbone.train()
    weights = backbone.adapted_weights()
    dense = backbone(images, weights)['dense']
    text = backbone.encode_text(tokens, weights)
    (dense.square().mean() + text.square().mean()).backward()
    assert all(p.grad is not None for p in backbone.adapter.parameters())
    assert all(p.grad is None for p in backbone.clip.parameters())
    backbone.eval()
    with torch.no_grad():
        merged_w = backbone.adapted_weights()
        assert merged_w is None and backbone.merged
        torch.testing.assert_close(backbone(images, None)['dense'], dense.detach(),
                                   rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(backbone.encode_text(tokens), text.detach(),
                                   rtol=1e-4, atol=1e-4)
    state = backbone.state_dict()  # unmerges: checkpoints hold the pretrained CLIP
    assert not backbone.merged
    assert any(k.startswith('adapter.') for k in state)

"""HCLIPBackbone: dense value-path embeddings, guidance, text tower, weights, merge, AMP, CP."""
import copy

import pytest
import torch
import torch.nn.functional as F
import torch.utils.checkpoint

import mmseg_hclip  # noqa: F401  (registers the modules)
from mmseg_hclip.models.backbones import HCLIPBackbone

TINY = dict(
    embed_dim=32,
    vision_cfg=dict(image_size=64, layers=3, width=64, head_width=32, patch_size=16),
    text_cfg=dict(context_length=77, vocab_size=49408, width=64, heads=2, layers=2))
ADAPTER = dict(block_size=16, orthogonal='text', sides='input', dcrc='mlp', train='blocks+dcrc',
               targets=('q', 'k', 'v', 'out'))


def make_backbone(adapter=ADAPTER, seed=0, **kwargs):
    torch.manual_seed(seed)
    cfg = dict(arch=TINY, pretrained=None, img_size=64, guidance_layers=(0, 1), adapter=adapter)
    cfg.update(kwargs)
    return HCLIPBackbone(**cfg)


def perturb_adapter(backbone, scale=0.05, seed=1):
    """Move the adapter away from its identity init (DCRC alpha included)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in backbone.adapter.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


def hand_dense(clip, images):
    """The final block's value path from open_clip's own modules (CAT-Seg's dense forward)."""
    visual = clip.visual
    x = visual._embeds(images)
    for blk in visual.transformer.resblocks[:-1]:
        x = blk(x)
    last = visual.transformer.resblocks[-1]
    y = last.ln_1(x)
    _, _, v = F.linear(y, last.attn.in_proj_weight, last.attn.in_proj_bias).chunk(3, dim=-1)
    z = last.attn.out_proj(v) + x[:, :1]
    z = z + last.mlp(last.ln_2(z))
    z = visual.ln_post(z) @ visual.proj
    b, gh, gw = images.shape[0], images.shape[2] // 16, images.shape[3] // 16
    return z[:, 1:].reshape(b, gh, gw, -1).permute(0, 3, 1, 2)


def clip_with_weights(clip, weights):
    """A deep copy of ``clip`` whose parameters are replaced by ``weights``."""
    clip = copy.deepcopy(clip)
    with torch.no_grad():
        for name, w in weights.items():
            clip.get_parameter(name).copy_(w)
    return clip


def test_dense_equals_hand_value_path():
    bb = make_backbone(adapter=None).eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = bb(images)
        ref = hand_dense(bb.clip, images)
    assert out['dense'].shape == (2, 32, 4, 4)
    torch.testing.assert_close(out['dense'], ref, rtol=1e-5, atol=1e-5)
    # and it is not the ordinary (attention) output of the last block
    with torch.no_grad():
        tokens = bb.clip.visual.transformer(bb.clip.visual._embeds(images))
        ordinary = bb.clip.visual.ln_post(tokens[:, 1:]) @ bb.clip.visual.proj
    assert not torch.allclose(out['dense'].flatten(2).transpose(1, 2), ordinary, atol=1e-3)


def test_dense_and_text_use_the_adapted_weights():
    bb = make_backbone().train()
    perturb_adapter(bb)
    images = torch.randn(2, 3, 64, 64)
    tokens = bb.tokenize(['a photo of a cat', 'sky'])
    with torch.no_grad():
        weights = bb.adapted_weights()
        assert any(k.startswith('visual.') for k in weights)
        assert any(k.startswith('transformer.') for k in weights)
        out = bb(images, weights)
        text = bb.encode_text(tokens, weights)
        ref_clip = clip_with_weights(bb.clip, weights)
        ref_dense = hand_dense(ref_clip, images)
        ref_text = ref_clip.encode_text(tokens)
        plain = bb(images)
    torch.testing.assert_close(out['dense'], ref_dense, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(text, ref_text, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(plain['dense'], out['dense'], atol=1e-4)


def test_guidance_equals_outputs_of_named_blocks():
    bb = make_backbone(adapter=None, guidance_layers=(0, 1)).eval()
    images = torch.randn(2, 3, 64, 64)
    seen = {}
    hooks = [
        bb.clip.visual.transformer.resblocks[i].register_forward_hook(
            lambda m, a, o, i=i: seen.__setitem__(i, o.detach().clone())) for i in (0, 1)
    ]
    with torch.no_grad():
        bb.clip.encode_image(images)  # plain open_clip forward
    for h in hooks:
        h.remove()
    with torch.no_grad():
        guidance = bb(images)['guidance']
    assert len(guidance) == 2
    for g, i in zip(guidance, (0, 1)):
        ref = seen[i][:, 1:].reshape(2, 4, 4, 64).permute(0, 3, 1, 2)
        assert g.shape == (2, 64, 4, 4)
        torch.testing.assert_close(g, ref, rtol=1e-5, atol=1e-5)


def test_encode_text_equals_open_clip():
    bb = make_backbone().eval()
    prompts = ['A photo of a building in the scene', 'sky', 'a very long ' * 30 + 'prompt']
    tokens = bb.tokenize(prompts)
    assert tokens.shape == (3, 77)
    with torch.no_grad():
        bb.train()  # unmerged, adapter at init == plain CLIP
        ours = bb.encode_text(tokens, bb.adapted_weights())
        bb.eval()
        ref = bb.clip.encode_text(tokens)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_loading_keeps_the_stored_grid_and_other_sizes_resize_it(tmp_path):
    src = make_backbone(adapter=None)
    path = tmp_path / 'tiny.pt'
    torch.save(src.clip.state_dict(), path)
    bb = HCLIPBackbone(arch=TINY, pretrained=str(path), img_size=96, guidance_layers=(0, 1))
    # the checkpoint loads as it is (4x4 grid); img_size changes no weight
    loaded = bb.clip.state_dict()
    for name, value in src.clip.state_dict().items():
        assert torch.equal(loaded[name], value), name
    # a 96x96 input is served by resizing the stored embedding, on either model
    images = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        a = src.eval()(images)['dense']
        b = bb.eval()(images)['dense']
    assert a.shape == b.shape == (1, 32, 6, 6)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # tests/models/test_backbone_posembed.py checks the resize itself


def test_only_adapter_is_trainable():
    bb = make_backbone()
    trainable = {n for n, p in bb.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith('adapter.') for n in trainable)
    assert not any(p.requires_grad for p in bb.clip.parameters())
    frozen = make_backbone(adapter=None)
    assert not any(p.requires_grad for p in frozen.parameters())


def test_eval_merges_once_and_train_unmerges():
    bb = make_backbone().train()
    perturb_adapter(bb)
    images = torch.randn(1, 3, 64, 64)
    original = bb.clip.visual.transformer.resblocks[0].attn.in_proj_weight.detach().clone()
    with torch.no_grad():
        ref = bb(images, bb.adapted_weights())['dense']
        bb.eval()
        assert bb.adapted_weights() is None and bb.merged
        version = bb.weights_version
        assert bb.adapted_weights() is None and bb.weights_version == version  # merged once
        out = bb(images, None)['dense']
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    # checkpoints hold the pretrained weights, never the merged ones
    state = bb.state_dict()
    torch.testing.assert_close(
        state['clip.visual.transformer.resblocks.0.attn.in_proj_weight'], original, rtol=0,
        atol=0)
    assert 'adapter.blocks.image' in state
    bb.eval()
    with torch.no_grad():
        bb.adapted_weights()
    assert bb.merged
    bb.train()
    assert not bb.merged
    torch.testing.assert_close(bb.clip.visual.transformer.resblocks[0].attn.in_proj_weight,
                               original, rtol=0, atol=0)


def test_load_state_dict_while_merged():
    bb = make_backbone()
    perturb_adapter(bb)
    state = copy.deepcopy(bb.state_dict())
    other = make_backbone(seed=0)
    other.eval()
    with torch.no_grad():
        other.adapted_weights()  # merge the init adapter
    version = other.weights_version
    other.load_state_dict(state)
    assert not other.merged and other.weights_version > version
    images = torch.randn(1, 3, 64, 64)
    bb.eval()
    with torch.no_grad():
        a = bb(images, bb.adapted_weights())['dense']
        b = other(images, other.adapted_weights())['dense']
    torch.testing.assert_close(a, b)


def _loss(bb, images, tokens):
    weights = bb.adapted_weights()
    out = bb(images, weights)
    text = bb.encode_text(tokens, weights, normalize=True)
    return out['dense'].square().mean() + sum(g.mean() for g in out['guidance']) + \
        (text @ text.t()).sum()


def test_gradient_checkpointing_gives_same_gradients(monkeypatch):
    from mmseg_hclip.models.backbones import hclip_backbone
    calls = []

    def counting_checkpoint(*args, **kwargs):
        calls.append(1)
        return torch.utils.checkpoint.checkpoint(*args, **kwargs)

    monkeypatch.setattr(hclip_backbone, 'checkpoint', counting_checkpoint)
    images = torch.randn(2, 3, 64, 64)
    grads = []
    for with_cp in (False, True):
        bb = make_backbone(with_cp=with_cp).train()
        perturb_adapter(bb)
        tokens = bb.tokenize(['cat', 'dog', 'a photo of a tree'])
        _loss(bb, images, tokens).backward()
        grads.append({n: p.grad.clone() for n, p in bb.named_parameters() if p.requires_grad})
        # every block of both towers is checkpointed (3 image + 2 text), none without with_cp
        assert len(calls) == (5 if with_cp else 0)
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        assert grads[0][name].abs().sum() > 0, name
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-6)


def test_bf16_autocast_forward_backward():
    bb = make_backbone().train()
    perturb_adapter(bb)
    images = torch.randn(2, 3, 64, 64)
    tokens = bb.tokenize(['cat', 'dog'])
    with torch.autocast('cpu', dtype=torch.bfloat16):
        loss = _loss(bb, images, tokens)
    loss.float().backward()
    grads = [p.grad for p in bb.adapter.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_missing_weights_file_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match='does not exist'):
        HCLIPBackbone(arch='ViT-B-16', pretrained='/no/such/dir/ViT-B-16.pt')
    with pytest.raises(FileNotFoundError, match='weights file'):
        HCLIPBackbone(arch=TINY, pretrained='missing.pt')


def test_offline_tag_names_the_local_file_option(monkeypatch):
    from open_clip import pretrained as oc_pretrained

    def offline(*args, **kwargs):
        raise OSError('Network is unreachable')

    monkeypatch.setattr(oc_pretrained, 'download_pretrained', offline)
    with pytest.raises(RuntimeError) as err:
        HCLIPBackbone(arch='ViT-B-16', pretrained='openai')
    msg = str(err.value)
    assert "'openai'" in msg and 'local file' in msg and 'model.backbone.pretrained=' in msg


def test_bad_arguments():
    with pytest.raises(ValueError, match='intermediate block'):
        make_backbone(guidance_layers=(0, 2))  # 2 is the last block of 3
    with pytest.raises(ValueError, match='increasing'):
        make_backbone(guidance_layers=(1, 0))
    with pytest.raises(ValueError, match='Unknown open_clip architecture'):
        HCLIPBackbone(arch='ViT-X-99')
    with pytest.raises(ValueError, match='lacks'):
        HCLIPBackbone(arch=dict(embed_dim=32))
    with pytest.raises(ValueError, match='known open_clip tag'):
        HCLIPBackbone(arch='ViT-B-16', pretrained='no-such-tag')
    bb = make_backbone(adapter=None)
    with pytest.raises(ValueError, match=r'\[B, 3, H, W\]'):
        bb(torch.randn(3, 64, 64))


def test_quick_gelu_switch():
    from open_clip.transformer import QuickGELU
    bb = make_backbone(adapter=None, quick_gelu=True)
    assert isinstance(bb.clip.visual.transformer.resblocks[0].mlp.gelu, QuickGELU)
    bb = make_backbone(adapter=None)
    assert not isinstance(bb.clip.visual.transformer.resblocks[0].mlp.gelu, QuickGELU)


@pytest.mark.slow
def test_vitb16_at_384():
    bb = HCLIPBackbone(arch='ViT-B-16', pretrained=None, img_size=384, guidance_layers=(3, 7),
                       adapter=dict(block_size=128))
    with torch.no_grad():
        out = bb.eval()(torch.randn(1, 3, 384, 384))
    assert out['dense'].shape == (1, 512, 24, 24)
    assert [g.shape for g in out['guidance']] == [(1, 768, 24, 24)] * 2


def test_mmengine_savers_and_loaders_see_pretrained_weights():
    """mmengine's get_state_dict / load_state_dict skip some torch hooks; still safe."""
    from mmengine.runner.checkpoint import get_state_dict, load_state_dict
    bb = make_backbone()
    perturb_adapter(bb)
    name = 'clip.transformer.resblocks.0.attn.out_proj.weight'
    original = bb.get_parameter(name).detach().clone()
    bb.eval()
    with torch.no_grad():
        bb.adapted_weights()
    assert bb.merged and not torch.equal(bb.get_parameter(name), original)
    state = {k: v.clone() for k, v in get_state_dict(bb).items()}
    assert torch.equal(state[name], original) and not bb.merged
    with torch.no_grad():
        bb.adapted_weights()
    version = bb.weights_version
    load_state_dict(bb, state)
    assert not bb.merged and bb.weights_version > version
    assert torch.equal(bb.get_parameter(name), original)


def test_adapter_type_from_registry():
    """`adapter=dict(type=...)` builds any registered adapter with HCLIPAdapter's interface."""
    from mmseg.registry import MODELS

    from mmseg_hclip.peft import HCLIPAdapter

    @MODELS.register_module(name='_TestAdapter', force=True)
    class _TestAdapter(HCLIPAdapter):
        pass

    bb = make_backbone(adapter=dict(ADAPTER, type='_TestAdapter'))
    assert type(bb.adapter) is _TestAdapter
    ref = make_backbone()
    assert bb.adapter.state_dict().keys() == ref.adapter.state_dict().keys()
    with pytest.raises(KeyError, match="'NoSuchAdapter' is not registered"):
        make_backbone(adapter=dict(ADAPTER, type='NoSuchAdapter'))


def test_checkpoint_with_generators_under_their_old_name():
    """Earlier versions stored the text tower's Cayley generators as ``adapter.blocks.text``:
    the tools' key check accepts such a checkpoint and it loads to the same model."""
    from mmseg_hclip.apis import CheckpointMismatchError, check_state_dict
    bb = make_backbone()
    perturb_adapter(bb)
    state = bb.state_dict()
    assert 'adapter.generators.text' in state and 'adapter.blocks.text' not in state
    old = {k.replace('adapter.generators.', 'adapter.blocks.'): v.clone() for k, v in state.items()}
    other = make_backbone(seed=3)
    check_state_dict(other, old)
    assert 'adapter.blocks.text' in old  # the check does not change the caller's dict
    other.load_state_dict(old, strict=True)
    assert torch.equal(other.adapter.generators['text'], state['adapter.generators.text'])
    # a misspelt key is still a mismatch
    bad = dict(old)
    bad['adapter.blocks.txt'] = bad.pop('adapter.blocks.text')
    with pytest.raises(CheckpointMismatchError, match='adapter.generators.text'):
        check_state_dict(other, bad)

"""tools/model_converters: CAT-Seg and H-CLIP (authors' code) checkpoints -> our configs.

The source state dicts are written here in the layout of those repositories (names and
shapes read from their model code: CAT-Seg's ``cat_seg_model.py`` / ``Aggregator`` /
``model_vpt.py``, the H-CLIP fork's ``model_oft_relation_both_free_half.py``), from the
weights of one of our tiny models. The converted checkpoint must load strictly into the
target config and give exactly that model's outputs; the H-CLIP adapter must compute the
weights the authors' formulation gives for the source tensors (written here in fp64 loops).
"""
import os.path as osp
import sys

import pytest
import torch

pytest.importorskip('mmseg')

from tests.conftest import ROOT, load_script  # noqa: E402

TINY = osp.join(ROOT, 'configs', '_base_', 'models', 'hclip_tiny.py')
CLIP = 'sem_seg_head.predictor.clip_model.'
AGG = 'sem_seg_head.predictor.transformer.'
# Both towers 3 blocks deep (the authors' code needs equal depths); q = 16 gives the authors'
# 4 text + 6 image blocks (64 / 16, 96 / 16).
ARCH = dict(
    embed_dim=32,
    vision_cfg=dict(image_size=96, layers=3, width=96, head_width=32, patch_size=16),
    text_cfg=dict(context_length=77, vocab_size=49408, width=64, heads=2, layers=3))
HEAD = dict(guidance_channels=96, cost_embed_kernel_size=7, num_layers=2,
            decoder_channels=(32, 16))
OFFICIAL = dict(type='HCLIPAdapter', block_size=16, orthogonal='text', sides='official',
                dcrc='linear', dcrc_per_layer=True, cayley_convention='official',
                train='blocks+dcrc', targets=('q', 'k', 'v', 'out'))


def load_converter(name):
    folder = osp.join(ROOT, 'tools', 'model_converters')
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return load_script(f'tools/model_converters/{name}.py', f'hclip_converter_{name}')


def write_config(path, adapter, **head):
    path.write_text(f'_base_ = [{TINY!r}]\n'
                    f'model = dict(backbone=dict(arch={ARCH!r}, guidance_layers=(0, 1), '
                    f'adapter={adapter!r}), decode_head=dict(**{dict(HEAD, **head)!r}))\n')
    return str(path)


def build(config, seed=0):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    import mmseg_hclip  # noqa: F401
    init_default_scope('mmseg')
    torch.manual_seed(seed)
    model = MODELS.build(Config.fromfile(config).model)
    gen = torch.Generator().manual_seed(seed + 7)
    with torch.no_grad():  # no zero / identity left (padding tokens, biases, adapter)
        for name, p in model.named_parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model.eval()


# --------------------------------------------------------- the source repositories' layout
def _catseg_shift_mask(size, window, shift):
    """The attn_mask buffer of CAT-Seg's shifted SwinTransformerBlock (its formula)."""
    img = torch.zeros(1, size, size, 1)
    cnt = 0
    spans = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    for h in spans:
        for w in spans:
            img[:, h, w, :] = cnt
            cnt += 1
    win = img.view(1, size // window, window, size // window, window, 1).permute(
        0, 1, 3, 2, 4, 5).reshape(-1, window * window)
    mask = win.unsqueeze(1) - win.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


def catseg_layout(model, split_qkv=True):
    """``model``'s weights under the names and shapes of CAT-Seg's modules."""
    sd = {}
    for key, value in model.backbone.clip.state_dict().items():
        if split_qkv and key.endswith('attn.in_proj_weight'):  # model_vpt.Attention
            for part, chunk in zip('qkv', value.chunk(3)):
                sd[f'{CLIP}{key[:-len("in_proj_weight")]}{part}_proj_weight'] = chunk
        else:
            sd[CLIP + key] = value
    head = model.decode_head

    def lin(prefix, module):
        sd[prefix + '.weight'] = module.weight
        if getattr(module, 'bias', None) is not None:
            sd[prefix + '.bias'] = module.bias

    lin(AGG + 'conv1', head.cost_embed)
    lin(AGG + 'guidance_projection.0', head.appearance_guidance_proj.conv)
    lin(AGG + 'text_guidance_projection.0', head.text_guidance_proj[0])
    for i, layer in enumerate(head.layers):
        sw = f'{AGG}layers.{i}.swin_block.'
        for name, block in zip(('block_1', 'block_2'), layer.spatial.blocks):
            lin(sw + name + '.norm1', block.norm1)
            for part in ('q', 'k', 'v', 'proj'):
                lin(f'{sw}{name}.attn.{part}', getattr(block.attn.w_msa, part))
            lin(sw + name + '.norm2', block.norm2)
            lin(sw + name + '.mlp.fc1', block.ffn.layers[0][0])  # timm Mlp
            lin(sw + name + '.mlp.fc2', block.ffn.layers[1])
        size, window = head.feature_size[0], head.window_size
        sd[sw + 'block_2.attn_mask'] = _catseg_shift_mask(size, window, window // 2)
        lin(sw + 'guidance_norm', layer.spatial.guidance_norm)
        at = f'{AGG}layers.{i}.attention.'
        for part in ('q', 'k', 'v'):
            lin(f'{at}attention.{part}', getattr(layer.cls.attn, part))
        lin(at + 'MLP.0', layer.cls.ffn.layers[0][0])
        lin(at + 'MLP.2', layer.cls.ffn.layers[1])
        lin(at + 'norm1', layer.cls.norm1)
        lin(at + 'norm2', layer.cls.norm2)
        sd[at + 'padding_tokens'] = layer.cls.pad_token.view(1, 1, -1)
        sd[at + 'padding_guidance'] = layer.cls.pad_guidance.view(1, 1, -1)
    for i, stage in enumerate(head.decoder):
        lin(f'{AGG}decoder_guidance_projection.{i}.0', head.decoder_guidance_proj[i].conv)
        lin(f'upsample{i + 1}', head.decoder_guidance_up[i])
        dc = f'{AGG}decoder{i + 1}.'
        lin(dc + 'up', stage.up)
        lin(dc + 'conv.double_conv.0', stage.convs[0].conv)
        lin(dc + 'conv.double_conv.1', stage.convs[0].gn)
        lin(dc + 'conv.double_conv.3', stage.convs[1].conv)
        lin(dc + 'conv.double_conv.4', stage.convs[1].gn)
    lin(AGG + 'head', head.cls_head)
    return {k: v.detach().clone() for k, v in sd.items()}


def test_catseg_layout_has_catseg_shapes(tmp_path):
    """Shapes as CAT-Seg's constructors make them (C=32 hidden, Ga=Gt=16, guidance dims 32,
    decoder (32, 16) with guidance (16, 8) -> (8, 4), CLIP width 96, 2 layers)."""
    model = build(write_config(tmp_path / 'catseg.py', None))
    sd = catseg_layout(model)
    expect = {
        AGG + 'conv1.weight': (32, 1, 7, 7),
        AGG + 'guidance_projection.0.weight': (16, 32, 3, 3),
        AGG + 'text_guidance_projection.0.weight': (16, 32),
        AGG + 'layers.1.swin_block.block_1.attn.q.weight': (32, 48),
        AGG + 'layers.1.swin_block.block_1.attn.v.weight': (32, 32),
        AGG + 'layers.1.swin_block.block_2.mlp.fc1.weight': (128, 32),
        AGG + 'layers.1.swin_block.block_2.attn_mask': (4, 9, 9),
        AGG + 'layers.0.attention.attention.k.weight': (32, 48),
        AGG + 'layers.0.attention.MLP.2.weight': (32, 128),
        AGG + 'layers.0.attention.padding_tokens': (1, 1, 32),
        AGG + 'layers.0.attention.padding_guidance': (1, 1, 16),
        AGG + 'decoder1.up.weight': (32, 24, 2, 2),
        AGG + 'decoder1.conv.double_conv.0.weight': (32, 32, 3, 3),
        AGG + 'decoder2.up.weight': (32, 28, 2, 2),
        AGG + 'decoder2.conv.double_conv.4.weight': (16, ),
        AGG + 'decoder_guidance_projection.1.0.weight': (4, 8, 3, 3),
        AGG + 'head.weight': (1, 16, 3, 3),
        'upsample1.weight': (96, 16, 2, 2),
        'upsample2.weight': (96, 8, 4, 4),
        CLIP + 'visual.transformer.resblocks.2.attn.q_proj_weight': (96, 96),
        CLIP + 'transformer.resblocks.0.attn.v_proj_weight': (64, 64),
        CLIP + 'visual.transformer.resblocks.0.attn.in_proj_bias': (288, ),
    }
    for key, shape in expect.items():
        assert tuple(sd[key].shape) == shape, key
    assert not any(k.endswith('in_proj_weight') for k in sd)


def _tokens_images():
    import open_clip
    tokens = open_clip.tokenize(['a photo of a cat in the scene', 'wall'])
    images = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(3))
    return tokens, images


def _outputs(model):
    tokens, images = _tokens_images()
    model.set_vocabulary(['cat', 'wall', 'sky, heaven'])
    with torch.no_grad():
        feats = model.backbone(images)
        text = model.backbone.encode_text(tokens)
        logits = model.inference(images[:1], [dict(ori_shape=(96, 96), img_shape=(96, 96),
                                                    pad_shape=(96, 96))])
    return feats['dense'], feats['guidance'], text, logits


@pytest.mark.parametrize('split_qkv', [True, False])
def test_catseg_roundtrip_gives_the_same_model(tmp_path, split_qkv):
    from mmseg_hclip.apis import init_model
    from mmseg_hclip.utils import load_checkpoint_safely
    config = write_config(tmp_path / 'catseg.py', None)
    model = build(config)
    src = tmp_path / 'model_final.pth'
    torch.save({'model': catseg_layout(model, split_qkv), 'iteration': 79999}, src)
    out = tmp_path / 'converted.pth'
    converter = load_converter('catseg2mmseg')
    converter.main([str(src), str(out), '--config', config])
    ckpt = load_checkpoint_safely(str(out))
    assert ckpt['meta']['converted_from'].startswith('CAT-Seg')
    settings = ckpt['meta']['hclip_model_settings']  # what the tools check a config against
    assert settings['backbone.adapter.type'] is None and settings['decode_head.pad_len'] == 16
    converted = init_model(config, str(out))  # strict: every key, every shape
    for key, value in model.state_dict().items():
        assert torch.equal(converted.state_dict()[key], value), key
    for ours, ref in zip(_outputs(converted), _outputs(model)):
        if isinstance(ours, list):
            assert all(torch.equal(a, b) for a, b in zip(ours, ref))
        else:
            assert torch.equal(ours, ref)


def _convert_expecting(tmp_path, sd, match, config=None):
    converter = load_converter('catseg2mmseg')
    src = tmp_path / 'src.pth'
    torch.save({'model': sd}, src)
    config = config or write_config(tmp_path / 'catseg.py', None)
    with pytest.raises(SystemExit, match=match):
        converter.main([str(src), str(tmp_path / 'out.pth'), '--config', config])
    assert not (tmp_path / 'out.pth').exists()


def test_catseg_unknown_and_missing_keys_are_listed(tmp_path):
    sd = catseg_layout(build(write_config(tmp_path / 'catseg.py', None)))
    sd[AGG + 'layers.0.extra.weight'] = torch.ones(1)
    del sd[AGG + 'layers.1.attention.norm2.bias']
    _convert_expecting(tmp_path, sd, r'(?s)1 missing key.*layers\.1\.attention\.norm2\.bias.*'
                       r'1 unknown key.*layers\.0\.extra\.weight')


def test_catseg_layout_must_fit_the_config(tmp_path):
    """Two aggregation layers in the file, one in the config: the strict check lists them."""
    sd = catseg_layout(build(write_config(tmp_path / 'catseg.py', None)))
    small = write_config(tmp_path / 'small.py', None, num_layers=1)
    _convert_expecting(tmp_path, sd, r'(?s)unexpected key.*decode_head\.layers\.1\.',
                       config=small)


def test_catseg_shift_mask_must_match(tmp_path):
    sd = catseg_layout(build(write_config(tmp_path / 'catseg.py', None)))
    sd[AGG + 'layers.0.swin_block.block_2.attn_mask'] = torch.zeros(4, 9, 9)
    _convert_expecting(tmp_path, sd, 'shifted-window mask')


def test_catseg_rejects_an_adapter_config(tmp_path):
    sd = catseg_layout(build(write_config(tmp_path / 'catseg.py', None)))
    _convert_expecting(tmp_path, sd, 'has an adapter',
                       config=write_config(tmp_path / 'hclip.py', OFFICIAL))


# -------------------------------------------------------------- H-CLIP authors' code
def hclip_layout(model, seed=0):
    """A checkpoint of the authors' code for ``model``'s CLIP and head with random OFT/DCRC
    parameters: returns (state dict, T [q, q, M, S], S4 [M, M], S3 list of [S, S])."""
    q, depth, b_text, b_image = 16, 3, 4, 6
    M, S = 4 * depth, b_text + b_image
    gen = torch.Generator().manual_seed(seed)
    T = torch.zeros(q, q, M, S)
    T[..., :b_text] = 0.3 * torch.randn(q, q, M, b_text, generator=gen)  # text generators
    T[..., b_text:] = torch.eye(q)[..., None, None] + 0.1 * torch.randn(
        q, q, M, b_image, generator=gen)  # image blocks
    S4 = torch.eye(M) + 0.1 * torch.randn(M, M, generator=gen)
    S3 = [torch.eye(S) + 0.1 * torch.randn(S, S, generator=gen) for _ in range(depth)]
    sd = catseg_layout(model, split_qkv=False)  # the fork keeps nn.MultiheadAttention
    for tower, width, layers in (('visual.', 96, ('to_qkv_oft_vision', 'to_out_oft_vision')),
                                 ('', 64, ('to_qkv_oft', 'to_out_oft'))):
        for i in range(depth):
            base = f'{CLIP}{tower}transformer.resblocks.{i}.'
            sd[base + 'attn_q_proj_oft_layer_R'] = T.clone()  # one shared parameter
            sd[base + 'attn_q_proj_oft_relation_l_R.weight'] = S4.clone()
            for j in range(depth):
                sd[f'{base}attn_q_proj_oft_relation_m_R.{j}.weight'] = S3[j].clone()
            for layer in layers:
                sd[f'{base}{layer}.cross_attention_dim'] = torch.tensor(width)
                sd[f'{base}{layer}.hidden_size'] = torch.tensor(width)
    return sd, T, S4, S3


def authors_weights(clip_sd, T, S4, S3):
    """The transformed attention weights as the authors' code forms them (fp64 loops)."""
    q, _, M, S = T.shape
    T, S4 = T.double(), S4.double()
    out = {}
    for tower, first, count in (('visual.', 4, 6), ('', 0, 4)):
        for layer in range(M // 4):
            # mode 3 with the map of the layer being built, over all positions and slices
            mixed3 = torch.einsum('ts,abms->abmt', S3[layer].double(), T)[..., first:first + count]
            for t, name in enumerate(('q', 'k', 'v', 'out')):
                d = 4 * layer + t
                blocks = torch.einsum('m,abmt->tab', S4[d], mixed3)  # mode 4, position d
                if tower == '':  # text: (I - Q)(I + Q)^-1 of the skew part
                    eye = torch.eye(q, dtype=torch.float64)
                    skew = 0.5 * (blocks - blocks.transpose(1, 2))
                    blocks = torch.stack([(eye - k) @ torch.linalg.inv(eye + k) for k in skew])
                B = torch.block_diag(*blocks)
                base = f'{tower}transformer.resblocks.{layer}.attn.'
                w_in = clip_sd[base + 'in_proj_weight'].double()
                if name == 'out':
                    out[base + 'out_proj.weight'] = B @ clip_sd[base + 'out_proj.weight'].double()
                else:
                    rows = w_in.shape[0] // 3
                    part = w_in[t * rows:(t + 1) * rows] @ B
                    out.setdefault(base + 'in_proj_weight', [None] * 3)[t] = part
    return {k: torch.cat(v) if isinstance(v, list) else v for k, v in out.items()}


def test_hclip_official_conversion_matches_the_authors_formulation(tmp_path):
    from mmseg_hclip.apis import init_model
    config = write_config(tmp_path / 'official.py', OFFICIAL)
    model = build(config)
    sd, T, S4, S3 = hclip_layout(model)
    src = tmp_path / 'model_final.pth'
    torch.save({'model': sd, 'iteration': 10}, src)
    out = tmp_path / 'converted.pth'
    load_converter('hclip_official2mmseg').main([str(src), str(out), '--config', config])
    converted = init_model(config, str(out))
    adapter = converted.backbone.adapter
    # the stored blocks are the source tensor's slices: text first, then image
    assert torch.equal(adapter.generators['text'], T.permute(2, 3, 0, 1)[:, :4])
    assert torch.equal(adapter.blocks['image'], T.permute(2, 3, 0, 1)[:, 4:])
    assert torch.equal(adapter.dcrc.s4, S4) and torch.equal(adapter.dcrc.s3, torch.stack(S3))
    # the CLIP and head weights are the source model's
    for key, value in model.state_dict().items():
        if not key.startswith('backbone.adapter.'):
            assert torch.equal(converted.state_dict()[key], value), key
    # the adapted weights are those of the authors' formulation
    converted.train()
    clip = converted.backbone.clip
    with torch.no_grad():
        ours = adapter(clip)
    expected = authors_weights({k: v for k, v in clip.state_dict().items()}, T, S4, S3)
    assert sorted(ours) == sorted(expected)
    for key, value in expected.items():
        torch.testing.assert_close(ours[key].double(), value, rtol=1e-5, atol=1e-5)


def test_hclip_shared_copies_must_agree(tmp_path):
    config = write_config(tmp_path / 'official.py', OFFICIAL)
    sd, *_ = hclip_layout(build(config))
    sd[CLIP + 'transformer.resblocks.1.attn_q_proj_oft_relation_l_R.weight'] += 1e-3
    src = tmp_path / 'src.pth'
    torch.save({'model': sd}, src)
    with pytest.raises(SystemExit, match='relation_l_R.*differs'):
        load_converter('hclip_official2mmseg').main(
            [str(src), str(tmp_path / 'out.pth'), '--config', config])


def test_hclip_needs_the_official_adapter(tmp_path):
    config = write_config(tmp_path / 'official.py', OFFICIAL)
    sd, *_ = hclip_layout(build(config))
    src = tmp_path / 'src.pth'
    torch.save({'model': sd}, src)
    paper = write_config(tmp_path / 'paper.py', dict(OFFICIAL, sides='input', dcrc='mlp',
                                                     dcrc_per_layer=False))
    with pytest.raises(SystemExit, match="sides.*authors' code computes"):
        load_converter('hclip_official2mmseg').main(
            [str(src), str(tmp_path / 'out.pth'), '--config', paper])

"""tools/merge_weights.py: the merged checkpoint gives the training checkpoint's logits, the
open_clip export is a plain open_clip CLIP with the tuned features, bad inputs fail clearly.

Everything uses the tiny inline CLIP of configs/_base_/models/hclip_tiny.py."""
import json
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from torch.func import functional_call

from tests.conftest import ROOT, load_script, run_tool

TINY = osp.join(ROOT, 'configs', '_base_', 'models', 'hclip_tiny.py')
VOCAB = ('background', 'red square', 'blue circle, disc', 'sky')


def load_tool(name: str):
    """Import ``tools/<name>.py`` as a module (to call its ``main(argv)`` in-process)."""
    return load_script(f'tools/{name}.py', f'hclip_tool_{name}')


def build_tiny(cfg_options=None, seed=0):
    """The tiny model of ``hclip_tiny.py`` (random weights) with ``cfg_options`` applied."""
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    import mmseg_hclip  # noqa: F401
    cfg = Config.fromfile(TINY)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    init_default_scope('mmseg')
    torch.manual_seed(seed)
    return MODELS.build(cfg.model)


def make_tiny_checkpoint(path: str, cfg_options=None, seed=0, poison=False) -> str:
    """Save a 'trained' tiny checkpoint: the adapter is moved away from its identity init
    (blocks perturbed, DCRC alpha non-zero), so the merged CLIP differs from the pretrained
    one. ``poison`` puts an inf into the image blocks (a diverged run)."""
    model = build_tiny(cfg_options, seed)
    adapter = model.backbone.adapter
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in adapter.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
        if adapter.dcrc is not None and hasattr(adapter.dcrc, 'alpha'):
            adapter.dcrc.alpha.copy_(0.3 * torch.randn(adapter.dcrc.alpha.shape, generator=gen))
        if poison:
            adapter.blocks['image'][0, 0, 0, 0] = float('inf')
    torch.save({'state_dict': model.state_dict(), 'meta': {'seed': seed, 'iter': 10}}, path)
    return path


def other_arch_options():
    """A different tiny CLIP: 4 image blocks (3 in the tiny config), 1 text block (2)."""
    return {'model.backbone.arch.vision_cfg.layers': 4, 'model.backbone.arch.text_cfg.layers': 1}


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp('merge')
    ckpt = make_tiny_checkpoint(str(root / 'train.pth'))
    out = str(root / 'merged.pth')
    # the command line, once, end to end
    proc = run_tool(['tools/merge_weights.py', TINY, ckpt, out], timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'merged_open_clip' in proc.stdout
    return dict(root=root, ckpt=ckpt, out=out, open_clip=str(root / 'merged_open_clip.pth'),
                open_clip_cfg=str(root / 'merged_open_clip.json'))


def _logits(model, images):
    """Raw head logits [B, N, h, w] (before the sigmoid) for VOCAB."""
    model.set_vocabulary(VOCAB)
    with torch.no_grad():
        return model.decode_head(model.extract_feat(images))


def test_merged_checkpoint_gives_the_same_logits(files):
    from mmseg_hclip.apis import MERGED_META_KEY, init_model, read_checkpoint

    # reference: the training checkpoint, adapter applied on the fly (no merge at all)
    ref = init_model(TINY, files['ckpt'], cfg_options={'model.backbone.merge_in_eval': False})
    merged = init_model(TINY, files['out'])  # same config, no edit
    assert merged.backbone.adapter is None
    assert ref.backbone.adapter is not None
    images = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    expected = _logits(ref, images)
    assert not ref.backbone.merged  # the reference really took the functional path
    got = _logits(merged, images)
    assert got.shape == expected.shape == (2, len(VOCAB), 24, 24)
    assert (got - expected).abs().max() <= 1e-4

    sd, meta = read_checkpoint(files['out'])
    train_sd, _ = read_checkpoint(files['ckpt'])
    assert meta[MERGED_META_KEY] is True and meta['iter'] == 10  # training meta kept
    assert not any(k.startswith('backbone.adapter.') for k in sd)
    assert set(sd) == {k for k in train_sd if not k.startswith('backbone.adapter.')}
    # the merge changed the attention weights of both towers ...
    for key in ('backbone.clip.visual.transformer.resblocks.0.attn.in_proj_weight',
                'backbone.clip.transformer.resblocks.1.attn.out_proj.weight'):
        assert (sd[key] - train_sd[key]).abs().max() > 1e-3, key
    # ... and with the pretrained CLIP weights instead, the logits differ: the test has teeth
    plain = init_model(TINY, files['out'])
    plain.load_state_dict({k: train_sd[k] for k in sd})
    assert (_logits(plain, images) - expected).abs().max() > 1e-3


def test_merged_checkpoint_in_a_config_with_adapter(files):
    """mmengine's non-strict loader (tools/test.py's load_from) into the training config's
    model: the adapter stays at its identity init, so the logits are still right."""
    from mmengine.runner import load_checkpoint

    from mmseg_hclip.apis import init_model
    model = build_tiny(seed=123)
    load_checkpoint(model, files['out'], map_location='cpu', strict=False)
    model.eval()
    ref = init_model(TINY, files['ckpt'], cfg_options={'model.backbone.merge_in_eval': False})
    images = torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    assert (_logits(model, images) - _logits(ref, images)).abs().max() <= 1e-4


def test_open_clip_export_is_a_plain_open_clip_clip(files):
    import open_clip

    from mmseg_hclip.apis import init_model
    ref = init_model(TINY, files['ckpt'], cfg_options={'model.backbone.merge_in_eval': False})
    backbone = ref.backbone
    weights = backbone.adapter(backbone.clip)  # the tuned weights, computed independently
    images = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(2))
    tokens = backbone.tokenize(['a photo of a cat', 'sofa', 'a wall in the scene'])
    visual_w = {k[len('visual.'):]: v for k, v in weights.items() if k.startswith('visual.')}
    with torch.no_grad():
        want_img = functional_call(backbone.clip.visual, visual_w, (images, ))
        want_txt = backbone.encode_text(tokens, weights)

    # 1) open_clip's own factory, through the model-config JSON written beside the weights
    with open(files['open_clip_cfg']) as f:
        model_cfg = json.load(f)
    assert model_cfg['vision_cfg']['layers'] == 3 and model_cfg['quick_gelu'] is False
    open_clip.add_model_config(files['open_clip_cfg'])
    clip = open_clip.create_model('merged_open_clip', pretrained=files['open_clip'])
    # 2) the inline-arch route: CLIP(**cfg).load_state_dict(...)
    clip2 = open_clip.CLIP(**model_cfg)
    clip2.load_state_dict(torch.load(files['open_clip'], weights_only=True), strict=True)
    merged_clip = init_model(TINY, files['out']).backbone.clip
    for model in (clip, clip2, merged_clip):
        model.eval()
        assert type(model) is open_clip.CLIP
        with torch.no_grad():
            torch.testing.assert_close(model.encode_image(images), want_img, atol=1e-4,
                                       rtol=1e-4)
            torch.testing.assert_close(model.encode_text(tokens), want_txt, atol=1e-4,
                                       rtol=1e-4)
    # the tuned features are not the pretrained ones
    with torch.no_grad():
        assert (backbone.clip.encode_text(tokens) - want_txt).abs().max() > 1e-3


def test_another_architecture_lists_mismatched_keys(files, tmp_path):
    other = make_tiny_checkpoint(str(tmp_path / 'other.pth'), other_arch_options())
    out = tmp_path / 'merged.pth'
    with pytest.raises(SystemExit) as exc:
        load_tool('merge_weights').main([TINY, other, str(out)])
    msg = str(exc.value)
    assert 'does not fit' in msg and 'other.pth' in msg
    assert 'missing key' in msg and 'backbone.clip.transformer.resblocks.1.' in msg
    assert 'unexpected key' in msg and 'backbone.clip.visual.transformer.resblocks.3.' in msg
    assert 'shape mismatch' in msg and 'backbone.adapter.blocks.image: (16, 4, 16, 16) vs ' \
        '(12, 4, 16, 16)' in msg
    assert '... (' in msg  # long lists are cut after the first few
    assert not out.exists()


def test_non_finite_adapter_is_refused(tmp_path):
    bad = make_tiny_checkpoint(str(tmp_path / 'diverged.pth'), poison=True)
    out = tmp_path / 'merged.pth'
    with pytest.raises(SystemExit) as exc:
        load_tool('merge_weights').main([TINY, bad, str(out)])
    msg = str(exc.value)
    assert 'cannot merge' in msg and 'not finite' in msg and 'Nothing was written' in msg
    assert not out.exists() and not (tmp_path / 'merged_open_clip.pth').exists()


def test_bad_inputs(files, tmp_path):
    tool = load_tool('merge_weights')
    # missing checkpoint
    with pytest.raises(SystemExit, match='nothere.pth.*does not exist'):
        tool.main([TINY, str(tmp_path / 'nothere.pth'), str(tmp_path / 'm.pth')])
    # an already merged checkpoint
    with pytest.raises(SystemExit, match='already merged'):
        tool.main([TINY, files['out'], str(tmp_path / 'm.pth')])
    # a config without adapter (the checkpoint then does not fit: adapter keys unexpected)
    with pytest.raises(SystemExit, match='Only adapter parameters are unexpected'):
        tool.main([TINY, files['ckpt'], str(tmp_path / 'm.pth'), '--cfg-options',
                   'model.backbone.adapter=None'])
    # overwriting the input
    with pytest.raises(SystemExit, match='overwrite the input'):
        tool.main([TINY, files['ckpt'], files['ckpt']])
    assert not (tmp_path / 'm.pth').exists()

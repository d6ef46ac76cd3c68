"""CLIP weight files people download load into the backbone as they are, safely (issue 11/12).

The reference for each format is unmodified open_clip: its OpenAI loader
(``open_clip.load_openai_model``, which runs ``torch.jit.load``) for the TorchScript
archive, the source model's own state dict for the others.
"""
import os
import time
import warnings

import pytest
import torch
import torch.nn as nn

pytest.importorskip('mmseg')

from mmseg_hclip.models.backbones.hclip_backbone import (  # noqa: E402
    HCLIPBackbone, _download_tag)
from mmseg_hclip.utils.checkpoint import CheckpointFormatError  # noqa: E402

# OpenAI's layout at toy size: heads = width // 64 in both towers (as OpenAI's
# build_model infers them), QuickGELU, context 77.
ARCH = dict(
    embed_dim=32,
    vision_cfg=dict(image_size=32, layers=2, width=64, head_width=64, patch_size=16),
    text_cfg=dict(context_length=77, vocab_size=49408, width=64, heads=1, layers=2))


def _source_clip(quick_gelu=True, seed=1):
    import open_clip
    torch.manual_seed(seed)
    clip = open_clip.CLIP(**ARCH, quick_gelu=quick_gelu).eval()
    with torch.no_grad():
        for p in clip.parameters():  # not the init values: every tensor distinct
            p.add_(0.02 * torch.randn_like(p))
    return clip


class _OpenAIArchive(nn.Module):
    """The attribute layout of OpenAI's CLIP archives: the CLIP's modules and parameters,
    the causal mask as a plain attribute (not a buffer) and three scalar metadata buffers."""

    def __init__(self, clip):
        super().__init__()
        for name in ('visual', 'transformer', 'token_embedding', 'ln_final'):
            setattr(self, name, getattr(clip, name))
        self.positional_embedding = clip.positional_embedding
        self.text_projection = clip.text_projection
        self.logit_scale = clip.logit_scale
        self.register_buffer('input_resolution', torch.tensor(32))
        self.register_buffer('context_length', torch.tensor(77))
        self.register_buffer('vocab_size', torch.tensor(49408))

    def forward(self, x):
        return x * self.logit_scale.exp()


def _write_openai_torchscript(path, how='trace'):
    """A tiny TorchScript CLIP with OpenAI's keys, fp16 where OpenAI's are."""
    from open_clip.model import convert_weights_to_lp
    clip = _source_clip()
    convert_weights_to_lp(clip, torch.float16)  # OpenAI archives are partly float16
    module = _OpenAIArchive(clip).eval()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        jit = torch.jit.trace(module, torch.ones(2)) if how == 'trace' else torch.jit.script(
            module)
    jit.save(str(path))
    return clip


@pytest.mark.parametrize('how', ['trace', 'script'])
def test_openai_torchscript_archive_loads(tmp_path, how):
    import open_clip
    path = tmp_path / 'ViT-T-16.pt'
    _write_openai_torchscript(path, how)
    # no quick_gelu given: a TorchScript archive defining QuickGELU turns it on
    backbone = HCLIPBackbone(arch=ARCH, pretrained=str(path), img_size=32,
                             guidance_layers=(0, ), adapter=None)
    reference = open_clip.load_openai_model(str(path), precision='fp32', device='cpu')
    ours = backbone.clip.state_dict()
    theirs = reference.state_dict()
    assert sorted(ours) == sorted(theirs)
    for key, value in theirs.items():
        assert torch.equal(ours[key], value), key
    tokens = open_clip.tokenize(['a photo of a cat', 'stuff'])
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(backbone.encode_text(tokens), reference.encode_text(tokens),
                                   rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(backbone.clip.encode_image(images),
                                   reference.encode_image(images), rtol=1e-5, atol=1e-6)


def _state_dict_files(tmp_path):
    """The same CLIP saved in every state-dict format people download."""
    from safetensors.torch import save_file
    clip = _source_clip(quick_gelu=False, seed=3)
    sd = {k: v.detach().clone() for k, v in clip.state_dict().items()}
    files = {}
    files['zip'] = tmp_path / 'clip.pt'
    torch.save(sd, files['zip'])
    files['legacy'] = tmp_path / 'clip_legacy.pth'
    torch.save(sd, files['legacy'], _use_new_zipfile_serialization=False)
    files['open_clip_ckpt'] = tmp_path / 'epoch_32.pt'
    torch.save({'epoch': 32, 'name': 'run', 'state_dict': {f'module.{k}': v
                                                            for k, v in sd.items()}},
               files['open_clip_ckpt'])
    files['hf_bin'] = tmp_path / 'open_clip_pytorch_model.bin'
    torch.save(sd, files['hf_bin'])
    files['hf_safetensors'] = tmp_path / 'open_clip_model.safetensors'
    save_file({k: v.contiguous() for k, v in sd.items()}, str(files['hf_safetensors']))
    return sd, files


@pytest.mark.parametrize('kind', ['zip', 'legacy', 'open_clip_ckpt', 'hf_bin', 'hf_safetensors'])
def test_state_dict_files_load(tmp_path, kind):
    sd, files = _state_dict_files(tmp_path)
    backbone = HCLIPBackbone(arch=ARCH, pretrained=str(files[kind]), img_size=32,
                             guidance_layers=(0, ), adapter=None, quick_gelu=False)
    ours = backbone.clip.state_dict()
    assert sorted(ours) == sorted(sd)
    for key, value in sd.items():
        assert torch.equal(ours[key], value), key


@pytest.mark.parametrize('content', ['text', 'empty'])
def test_pretrained_not_a_weights_file(tmp_path, content):
    """Before: a text file gave `KeyError: 101`, an empty one `EOFError`."""
    path = tmp_path / 'ViT-B-16.pt'
    path.write_text('<html>Access denied</html>\n' if content == 'text' else '')
    with pytest.raises(CheckpointFormatError) as info:
        HCLIPBackbone(arch=ARCH, pretrained=str(path), img_size=32, guidance_layers=(0, ))
    assert str(path) in str(info.value) and 'TorchScript' in str(info.value)
    assert ('text file' if content == 'text' else 'empty') in str(info.value)


def test_weights_of_another_architecture(tmp_path):
    path = tmp_path / 'wide.pt'
    import open_clip
    arch = dict(ARCH, vision_cfg=dict(ARCH['vision_cfg'], width=128))
    torch.save(open_clip.CLIP(**arch).state_dict(), path)
    with pytest.raises(ValueError, match=r'image width 128.*backbone.arch'):
        HCLIPBackbone(arch=ARCH, pretrained=str(path), img_size=32, guidance_layers=(0, ))


# ------------------------------------------------------------------ offline 'openai' tag
@pytest.fixture
def offline(monkeypatch):
    """No network: every TCP connection fails after 1 s (as a dropped SYN would)."""
    import socket

    def refuse(*args, **kwargs):
        time.sleep(1.0)
        raise OSError(101, 'Network is unreachable')

    monkeypatch.setattr(socket, 'create_connection', refuse)
    for var in ('HF_HUB_OFFLINE', 'HTTPS_PROXY', 'https_proxy', 'ALL_PROXY', 'all_proxy'):
        monkeypatch.delenv(var, raising=False)
    return refuse


def test_openai_tag_offline_fails_fast(tmp_path, offline):
    """Before: ~1 min of hub retries. Now: one probe, the same advice, within seconds."""
    start = time.monotonic()
    with pytest.raises(RuntimeError) as info:
        HCLIPBackbone(arch='ViT-B-16', pretrained='openai', cache_dir=str(tmp_path),
                      adapter=None)
    elapsed = time.monotonic() - start
    assert elapsed < 5.0, elapsed
    msg = str(info.value)
    assert "weights 'openai' of ViT-B-16" in msg and 'Without internet' in msg
    assert 'model.backbone.pretrained=/path/to/ViT-B-16.pt' in msg
    assert 'no connection to' in msg


def test_openai_tag_hf_hub_offline_env(tmp_path, monkeypatch):
    import socket
    from open_clip.pretrained import get_pretrained_cfg

    def unexpected(*args, **kwargs):
        raise AssertionError('HF_HUB_OFFLINE is set: no connection may be tried')

    monkeypatch.setattr(socket, 'create_connection', unexpected)
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    with pytest.raises(RuntimeError, match='HF_HUB_OFFLINE'):
        _download_tag('ViT-B-16', 'openai', get_pretrained_cfg('ViT-B-16', 'openai'),
                      str(tmp_path))


def test_openai_tag_cached_file_used_offline(tmp_path, offline):
    """A file already in the Hugging Face cache is used without any connection."""
    from open_clip.pretrained import get_pretrained_cfg
    cfg = get_pretrained_cfg('ViT-B-16', 'openai')
    repo = cfg['hf_hub'].rstrip('/')
    root = tmp_path / f"models--{repo.replace('/', '--')}"
    (root / 'refs').mkdir(parents=True)
    (root / 'refs' / 'main').write_text('abc123')
    snapshot = root / 'snapshots' / 'abc123'
    snapshot.mkdir(parents=True)
    (snapshot / 'open_clip_model.safetensors').write_bytes(b'x')
    start = time.monotonic()
    path = _download_tag('ViT-B-16', 'openai', cfg, str(tmp_path))
    assert time.monotonic() - start < 0.5  # no probe either
    assert os.path.samefile(path, snapshot / 'open_clip_model.safetensors')

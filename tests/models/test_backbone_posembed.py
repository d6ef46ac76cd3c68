"""HCLIPBackbone's positional embedding: stored on the grid it was loaded with, resized to the
input grid at every forward as the H-CLIP / CAT-Seg reference code does (bicubic,
align_corners=False, no antialias), or like open_clip (antialiased) on request; checkpoints of
earlier versions (embedding already resized to img_size) still load."""
import math

import pytest
import torch

import mmseg_hclip  # noqa: F401  (registers the modules)
from mmseg_hclip.models.backbones import HCLIPBackbone
from tests.models.test_backbone import TINY, hand_dense

NATIVE, SIZE = 4, 6  # TINY: 64 px / patch 16 -> a 4x4 native grid; img_size 96 -> 6x6


def make(img_size=96, **kwargs):
    torch.manual_seed(0)
    return HCLIPBackbone(arch=TINY, pretrained=None, img_size=img_size, guidance_layers=(0, 1),
                         **kwargs).eval()


def _keys_cubic_matrix(n_in, n_out, a=-0.75):
    """[n_out, n_in] 1-D bicubic interpolation (Keys' kernel, a = -0.75, half-pixel centres
    (align_corners=False), border taps clamped): the resize of the reference code."""
    W = torch.zeros(n_out, n_in, dtype=torch.float64)
    for i in range(n_out):
        x = (i + 0.5) * n_in / n_out - 0.5
        x0 = math.floor(x)
        for k in range(-1, 3):
            d = abs(x - (x0 + k))
            if d <= 1:
                w = (a + 2) * d**3 - (a + 3) * d**2 + 1
            elif d < 2:
                w = a * d**3 - 5 * a * d**2 + 8 * a * d - 4 * a
            else:
                w = 0.0
            W[i, min(max(x0 + k, 0), n_in - 1)] += w
    return W


def _reference_resize(pos, n_in, n_out):
    """The class token unchanged, the patch grid resized separably with Keys' cubic."""
    W = _keys_cubic_matrix(n_in, n_out)
    grid = pos[1:].double().reshape(n_in, n_in, -1)
    resized = torch.einsum('ai,bj,ijc->abc', W, W, grid).reshape(n_out * n_out, -1)
    return torch.cat([pos[:1].double(), resized]).float()


def _open_clip_at(bb, size, pos):
    """An open_clip CLIP of the backbone's architecture built for ``size`` px, with the
    backbone's weights and the positional embedding ``pos``."""
    import open_clip
    cfg = dict(TINY, vision_cfg=dict(TINY['vision_cfg'], image_size=size))
    clip = open_clip.CLIP(**cfg).eval()
    state = dict(bb.clip.state_dict(), **{'visual.positional_embedding': pos})
    clip.load_state_dict(state, strict=True)
    return clip


def test_default_keeps_native_grid_and_resizes_like_the_reference():
    bb = make()
    assert bb.pos_embed_resize == 'bicubic'
    assert bb.clip.visual.positional_embedding.shape == (NATIVE * NATIVE + 1, 64)
    assert bb.pos_embed_grid == (NATIVE, NATIVE)
    native = bb.clip.visual.positional_embedding.detach()
    expected = _reference_resize(native, NATIVE, SIZE)
    with torch.no_grad():
        got = bb.pos_embed_for()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    # open_clip's (antialiased) rule is measurably different even when upsampling
    antialiased = make(pos_embed_resize='bicubic_antialias')
    with torch.no_grad():
        assert (antialiased.pos_embed_for() - expected).abs().max() > 1e-3
    # the forward at 96 px = an open_clip CLIP at 96 px holding the reference-resized embedding
    images = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        dense = bb(images)['dense']
        ref = hand_dense(_open_clip_at(bb, 96, expected), images)
    assert dense.shape == (2, 32, SIZE, SIZE)
    torch.testing.assert_close(dense, ref, rtol=1e-5, atol=1e-5)
    # the native size needs no resize: plain open_clip
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(bb(images)['dense'], hand_dense(bb.clip, images),
                                   rtol=1e-5, atol=1e-5)


def test_antialias_option_equals_open_clips_load_time_resize(tmp_path):
    """'bicubic_antialias' gives at img_size what loading through open_clip at img_size gives
    (the behaviour of earlier versions)."""
    import open_clip
    src = make()
    path = tmp_path / 'tiny.pt'
    torch.save(src.clip.state_dict(), path)
    bb = HCLIPBackbone(arch=TINY, pretrained=str(path), img_size=96, guidance_layers=(0, 1),
                       pos_embed_resize='bicubic_antialias').eval()
    assert bb.pos_embed_grid == (NATIVE, NATIVE)  # loaded as it is
    old = _open_clip_at(src, 96, torch.zeros(SIZE * SIZE + 1, 64))
    open_clip.load_checkpoint(old, str(path), strict=True)  # open_clip resizes at load
    images = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(bb.pos_embed_for(), old.visual.positional_embedding,
                                   rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(bb(images)['dense'], hand_dense(old, images), rtol=1e-5,
                                   atol=1e-5)


def test_checkpoint_of_earlier_versions_with_resized_embedding_loads():
    """Earlier versions saved the embedding resized to img_size ([6*6+1, D] here)."""
    from mmseg_hclip.apis import check_state_dict
    src = make(pos_embed_resize='bicubic_antialias')
    with torch.no_grad():
        old_pos = src.pos_embed_for().clone()
    state = dict(src.state_dict(), **{'clip.visual.positional_embedding': old_pos})
    bb = make(img_size=96)
    check_state_dict(bb, state)  # the grid is not a mismatch
    bb.load_state_dict(state, strict=True)
    assert bb.pos_embed_grid == (SIZE, SIZE)
    assert torch.equal(bb.clip.visual.positional_embedding, old_pos)
    images = torch.randn(1, 3, 96, 96)
    with torch.no_grad():  # the stored embedding is used as it is at img_size
        torch.testing.assert_close(bb(images)['dense'],
                                   hand_dense(_open_clip_at(src, 96, old_pos), images),
                                   rtol=1e-5, atol=1e-5)
        assert bb(torch.randn(1, 3, 64, 64))['dense'].shape == (1, 32, NATIVE, NATIVE)
    # a new model's state dict holds the stored (here 6x6) grid and loads back
    again = make(img_size=96)
    again.load_state_dict(bb.state_dict(), strict=True)
    assert again.pos_embed_grid == (SIZE, SIZE)
    # mmengine's loader (tools/train.py --resume, tools/test.py) takes the same path
    from mmengine.runner.checkpoint import load_state_dict
    third = make(img_size=96)
    load_state_dict(third, state, strict=True)
    assert third.pos_embed_grid == (SIZE, SIZE)


def test_embedding_of_no_known_grid_fails_clearly():
    bb = make(img_size=96)
    state = dict(bb.state_dict(), **{'clip.visual.positional_embedding': torch.zeros(31, 64)})
    with pytest.raises(ValueError, match=r'30 patch positions.*img_size=\(96, 96\)'):
        bb.load_state_dict(state)
    with pytest.raises(ValueError, match=r"pos_embed_resize='bilinear' is not one of"):
        make(pos_embed_resize='bilinear')


def test_open_clip_export_is_at_img_size():
    """The merged open_clip export holds the embedding the backbone uses at img_size."""
    from mmseg_hclip.apis.merge import open_clip_model_config, open_clip_state_dict
    import open_clip
    bb = make()
    cfg = open_clip_model_config(bb)
    assert cfg['vision_cfg']['image_size'] == [96, 96]
    clip = open_clip.CLIP(**cfg).eval()
    clip.load_state_dict(open_clip_state_dict(bb), strict=True)
    images = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(hand_dense(clip, images), bb(images)['dense'], rtol=1e-5,
                                   atol=1e-5)
    assert bb.clip.visual.positional_embedding.shape[0] == NATIVE * NATIVE + 1  # untouched

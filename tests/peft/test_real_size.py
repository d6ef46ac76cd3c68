"""Real open_clip architectures: ViT-L/14 (towers of different depth) on the meta device, and a
slow ViT-B/16 check with random weights (run with ``pytest -m slow``)."""
import pytest
import torch
from torch.func import functional_call

from mmseg_hclip.peft import OFFICIAL_COMPAT, HCLIPAdapter
from mmseg_hclip.peft.testing import perturb_adapter

open_clip = pytest.importorskip('open_clip')


def test_vit_l14_structure_on_meta_device():
    clip = open_clip.create_model('ViT-L-14', pretrained=None, device='meta')
    adapter = HCLIPAdapter(clip, block_size=128)
    T = adapter.dcrc_tensor()
    assert T.shape == (128, 128, 768 // 128 + 1024 // 128, 4 * 24)
    assert adapter.blocks['image'].shape == (4 * 24, 8, 128, 128)
    assert adapter.generators['text'].shape == (4 * 12, 6, 128, 128)
    weights = adapter(clip)
    params = dict(clip.named_parameters())
    assert len(weights) == 2 * (24 + 12)
    for name, w in weights.items():
        assert w.shape == params[name].shape
    with pytest.raises(ValueError, match='q=96 does not divide the image width 1024'):
        HCLIPAdapter(clip, block_size=96)


@pytest.mark.slow
@pytest.mark.parametrize('kwargs', [dict(), dict(OFFICIAL_COMPAT)])
def test_vit_b16_init_merge_and_adapted_forward(kwargs):
    torch.manual_seed(0)
    clip = open_clip.create_model('ViT-B-16', pretrained=None).eval()
    image = torch.randn(1, 3, 224, 224)
    tokens = torch.randint(1, 49000, (4, 77))
    with torch.no_grad():
        expected = clip(image, tokens)
        adapter = HCLIPAdapter(clip, block_size=128, **kwargs)
        got = functional_call(clip, adapter(clip), (image, tokens), strict=False)
        for a, b in zip(got[:2], expected[:2]):
            assert (a - b).abs().max() <= 1e-5
        perturb_adapter(adapter, scale=0.2)
        adapted = functional_call(clip, adapter(clip), (image, tokens), strict=False)
        adapter.merge(clip)
        merged = clip(image, tokens)
        adapter.unmerge(clip)
        restored = clip(image, tokens)
    for a, b in zip(merged[:2], adapted[:2]):
        assert (a - b).abs().max() <= 1e-4
    for a, b in zip(restored[:2], expected[:2]):
        assert torch.equal(a, b)

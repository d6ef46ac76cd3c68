"""The adapter on a GPU (skipped without CUDA): init equality, bf16 autocast, merge, gradients."""
import copy

import pytest
import torch
from torch.func import functional_call

from mmseg_hclip.peft import OFFICIAL_COMPAT, HCLIPAdapter
from mmseg_hclip.peft.testing import perturb_adapter, random_inputs, tiny_clip

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')


@pytest.fixture(scope='module')
def cuda_clip():
    return tiny_clip().cuda()


@pytest.fixture(scope='module')
def cuda_inputs(cuda_clip):
    return tuple(t.cuda() for t in random_inputs(cuda_clip))


@pytest.mark.parametrize('kwargs', [dict(), dict(OFFICIAL_COMPAT), dict(orthogonal='all')])
def test_cuda_init_equals_open_clip_and_bf16_orthogonality(cuda_clip, cuda_inputs, kwargs):
    image, tokens = cuda_inputs
    expected = cuda_clip(image, tokens)
    adapter = HCLIPAdapter(cuda_clip, block_size=32, **kwargs)
    assert all(p.is_cuda for p in adapter.parameters())
    got = functional_call(cuda_clip, adapter(cuda_clip), (image, tokens), strict=False)
    for a, b in zip(got[:2], expected[:2]):
        assert (a - b).abs().max() <= 1e-5
    perturb_adapter(adapter)
    with torch.autocast('cuda', dtype=torch.bfloat16):
        blocks = adapter.transforms()
        out = functional_call(cuda_clip, adapter(cuda_clip), (image, tokens), strict=False)
    assert out[0].dtype in (torch.bfloat16, torch.float32)
    eye = torch.eye(32, device='cuda')
    for tower in adapter.orthogonal_towers:
        R = blocks[tower]
        assert R.dtype == torch.float32
        assert (R.transpose(-1, -2) @ R - eye).abs().max() <= 1e-5


def test_cuda_merge_unmerge_and_gradients(cuda_clip, cuda_inputs):
    clip = copy.deepcopy(cuda_clip)
    image, tokens = cuda_inputs
    adapter = perturb_adapter(HCLIPAdapter(clip, block_size=32), scale=0.5)
    originals = {n: p.detach().clone() for n, p in clip.named_parameters()}
    image_f, text_f, _ = functional_call(clip, adapter(clip), (image, tokens), strict=False)
    (image_f @ text_f.T).sum().backward()
    assert all(p.grad is not None for p in adapter.parameters())
    assert all(p.grad is None for p in clip.parameters())
    adapter.merge(clip)
    merged = clip(image, tokens)
    assert (merged[0] - image_f).abs().max() <= 1e-5
    assert (merged[1] - text_f).abs().max() <= 1e-5
    adapter.unmerge(clip)
    for name, p in clip.named_parameters():
        assert torch.equal(p, originals[name]), name

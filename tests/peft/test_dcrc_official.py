"""Linear DCRC with one mode-3 map per layer (official-compat) against the authors' formulation.

The H-CLIP authors' released code keeps all blocks in one ``[q, q, M, S]`` tensor (``q×q``
blocks, ``M = 4·L`` (layer, target) positions layer-major, ``S`` slices with the text tower's
first), one ``S×S`` linear map per layer (``m_R[l]``) and one ``M×M`` map (``l_R``). To build
the blocks of layer ``l`` it

1. mixes the slice axis of *every* position with ``m_R[l]`` (an ``nn.Linear`` on the last axis),
2. mixes the position axis with ``l_R`` (an ``nn.Linear`` on the position axis),
3. keeps the 4 positions of layer ``l`` (q, k, v, out), text slices first;

then Cayley-maps the text blocks (``(I - A)(I + A)^{-1}``, ``A`` the skew part) and uses the
image blocks as they are: ``W·diag(R)`` for q, k, v, ``diag(R)·W`` for out_proj.

The functions below follow that description literally, in fp64 and with loops, and never call
``mmseg_hclip.peft.dcrc``.
"""
import pytest
import torch

from mmseg_hclip.peft import OFFICIAL_COMPAT, DCRC, HCLIPAdapter, mode_product
from mmseg_hclip.peft.testing import perturb_adapter, tiny_clip

N_TARGETS = 4


def _authors_layer_blocks(R, m_R, l_R, layer, n_targets=N_TARGETS):
    """Blocks of ``layer`` as the released code builds them.

    Args:
        R: ``[q, q, M, S]`` raw blocks.
        m_R: ``[L, S, S]`` per-layer slice maps (``nn.Linear`` weights, ``y = x W^T``).
        l_R: ``[M, M]`` position map (``nn.Linear`` weight).
        layer: the layer being built.

    Returns:
        ``[n_targets, S, q, q]``: the mixed blocks of that layer's positions.
    """
    q, _, M, S = R.shape
    # 1. the slice axis of all M positions, mixed with this layer's own map
    X = torch.zeros(q, q, M, S, dtype=torch.float64)
    for m in range(M):
        for t in range(S):
            for s in range(S):
                X[:, :, m, t] += m_R[layer][t, s] * R[:, :, m, s]
    # 2. the position axis, mixed with l_R; 3. this layer's positions only
    out = torch.zeros(n_targets, S, q, q, dtype=torch.float64)
    for k in range(n_targets):
        d = layer * n_targets + k
        for m in range(M):
            out[k] += l_R[d, m] * X[:, :, m, :].permute(2, 0, 1)
    return out


def _authors_cayley(data):
    """``(I - A)(I + A)^{-1}`` with ``A`` the skew part of ``data`` (the released code)."""
    skew = 0.5 * (data - data.transpose(-1, -2))
    eye = torch.eye(data.shape[-1], dtype=data.dtype)
    return (eye - skew) @ torch.linalg.inv(eye + skew)


def _authors_tensor(adapter):
    """The ``[q, q, M, S]`` tensor of the released code, filled entry by entry."""
    q = adapter.block_size
    b_text = adapter.towers['text'].width // q
    S, M = adapter.num_slices, adapter.num_positions
    R = torch.zeros(q, q, M, S, dtype=torch.float64)
    for tower, offset in (('text', 0), ('image', b_text)):
        blocks = adapter.raw_parameters()[tower].detach().double()  # [M, b, q, q], position-major
        for m in range(M):
            for i in range(blocks.shape[1]):
                R[:, :, m, offset + i] = blocks[m, i]
    return R


def _random_dcrc(S, M, L, seed):
    dcrc = DCRC(S, M, variant='linear', mode3_groups=L).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        dcrc.s3.add_(0.3 * torch.randn(dcrc.s3.shape, generator=g, dtype=torch.float64))
        dcrc.s4.add_(0.3 * torch.randn(dcrc.s4.shape, generator=g, dtype=torch.float64))
    blocks = torch.randn(M, S, 3, 3, generator=g, dtype=torch.float64)
    return dcrc, blocks


def test_per_layer_dcrc_builds_each_layer_like_the_authors():
    """The ViT-B/16 shape: 10 slices (4 text + 6 image), 48 = 4 x 12 positions."""
    S, L = 10, 12
    M = N_TARGETS * L
    dcrc, blocks = _random_dcrc(S, M, L, seed=0)
    with torch.no_grad():
        got = dcrc(blocks)  # [M, S, q, q]
    R = blocks.permute(2, 3, 0, 1)  # [q, q, M, S]
    s3, s4 = dcrc.s3.detach(), dcrc.s4.detach()
    wrong = torch.zeros_like(got)  # the map of the *source* layer before S4 (the old code)
    for d in range(M):
        for m in range(M):
            wrong[d] += s4[d, m] * torch.einsum('ts,sij->tij', s3[m // N_TARGETS], blocks[m])
    for layer in range(L):
        expected = _authors_layer_blocks(R, s3, s4, layer)
        rows = slice(layer * N_TARGETS, (layer + 1) * N_TARGETS)
        torch.testing.assert_close(got[rows], expected, rtol=1e-10, atol=1e-10)
        # the check can tell the two indexings apart
        assert (wrong[rows] - expected).abs().max() > 0.1 * expected.abs().max()


def test_one_mode3_map_commutes_with_mode4():
    """With one S3 the order of the mode products does not matter (Eq. 16)."""
    S, L = 6, 3
    M = N_TARGETS * L
    dcrc, blocks = _random_dcrc(S, M, L, seed=1)
    shared = DCRC(S, M, variant='linear', mode3_groups=1).double()
    with torch.no_grad():
        shared.s3.copy_(dcrc.s3[0])
        shared.s4.copy_(dcrc.s4)
        dcrc.s3.copy_(dcrc.s3[:1].expand_as(dcrc.s3))  # every layer's map = the shared one
        got_shared, got_grouped = shared(blocks), dcrc(blocks)
    T = blocks.permute(2, 3, 1, 0)  # the paper's q x q x S x M
    s3, s4 = shared.s3.detach(), shared.s4.detach()
    s3_first = mode_product(mode_product(T, s3, 2), s4, 3)
    s4_first = mode_product(mode_product(T, s4, 3), s3, 2)
    torch.testing.assert_close(s3_first, s4_first, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got_shared.permute(2, 3, 1, 0), s3_first, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(got_grouped, got_shared, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize('layers', [2, 3])
def test_official_compat_weights_equal_the_authors_construction(layers):
    """Final blocks and transformed weights of every layer, text and image, from the
    released code's construction (per-layer DCRC, official Cayley, official sides)."""
    q = 32
    clip = tiny_clip(vision_layers=layers, text_layers=layers)  # text 2 blocks, image 4 blocks
    adapter = perturb_adapter(HCLIPAdapter(clip, block_size=q, **OFFICIAL_COMPAT), seed=2)
    b_text = adapter.towers['text'].width // q
    R = _authors_tensor(adapter)
    m_R = adapter.dcrc.s3.detach().double()
    l_R = adapter.dcrc.s4.detach().double()
    assert m_R.shape == (layers, adapter.num_slices, adapter.num_slices)
    with torch.no_grad():
        got_blocks = adapter.transforms()  # tower -> [L, 4, b, q, q]
        got_weights = adapter(clip)
    params = dict(clip.named_parameters())
    for layer in range(layers):
        mixed = _authors_layer_blocks(R, m_R, l_R, layer)  # [4, S, q, q]
        per_tower = {'text': _authors_cayley(mixed[:, :b_text]), 'image': mixed[:, b_text:]}
        for tower, blocks in per_tower.items():
            torch.testing.assert_close(got_blocks[tower][layer].double(), blocks, rtol=1e-5,
                                       atol=1e-5)
            spec = adapter.towers[tower]
            d = spec.width
            w_in = params[spec.in_proj_names[layer]].detach().double()
            expected_in = torch.cat([
                w_in[i * d:(i + 1) * d] @ torch.block_diag(*blocks[i]) for i in range(3)])
            expected_out = (torch.block_diag(*blocks[3]) @
                            params[spec.out_proj_names[layer]].detach().double())
            torch.testing.assert_close(got_weights[spec.in_proj_names[layer]].double(),
                                       expected_in, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(got_weights[spec.out_proj_names[layer]].double(),
                                       expected_out, rtol=1e-4, atol=1e-5)

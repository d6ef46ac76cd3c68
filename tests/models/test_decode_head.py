"""HCLIPCostAggHead and its blocks, on tiny sizes, against independent computations."""
import math

import pytest
import torch
import torch.nn.functional as F

from mmseg_hclip.models.decode_heads import HCLIPCostAggHead
from mmseg_hclip.models.decode_heads.cost_aggregation_blocks import (ClassAggregation,
                                                                     GuidedShiftWindowMSA,
                                                                     LinearClassAttention)

torch.set_num_threads(1)

C, D, HW = 16, 24, 8  # joint width, raw guidance width, feature side

SMALL = dict(
    in_channels=C,
    guidance_channels=D,
    feature_size=(HW, HW),
    channels=32,
    num_layers=2,
    num_heads=4,
    window_size=HW // 2,
    appearance_guidance_channels=8,
    text_guidance_channels=8,
    decoder_channels=(16, 16),
    decoder_guidance_channels=(8, 8),
    decoder_guidance_proj_channels=(4, 4),
)


def make_head(**kw) -> HCLIPCostAggHead:
    torch.manual_seed(0)
    return HCLIPCostAggHead(**{**SMALL, **kw})


def make_inputs(b=2, n=3, p=1, hw=HW, shared=True, seed=1, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    dense = torch.randn(b, C, hw, hw, generator=g, dtype=dtype)
    text = torch.randn(*(() if shared else (b, )), n, p, C, generator=g, dtype=dtype)
    guidance = [torch.randn(b, D, hw, hw, generator=g, dtype=dtype) for _ in range(2)]
    return dict(dense=dense, guidance=guidance, text=F.normalize(text, dim=-1))


# --------------------------------------------------------------------- shapes
@pytest.mark.parametrize('n', [3, 256, 300])
def test_output_shape_for_any_class_count(n):
    head = make_head().eval()
    with torch.no_grad():
        out = head(make_inputs(b=2, n=n))
    assert out.shape == (2, n, 4 * HW, 4 * HW)
    assert torch.isfinite(out).all()


def test_per_image_text_and_non_window_multiple_size():
    head = make_head().eval()
    with torch.no_grad():
        out = head(make_inputs(b=2, n=5, shared=False, hw=HW + 2))  # 10x10, window 4: padded
    assert out.shape == (2, 5, 4 * (HW + 2), 4 * (HW + 2))


def test_reference_defaults_build_and_shapes():
    head = HCLIPCostAggHead()
    n_params = sum(p.numel() for p in head.parameters())
    assert not hasattr(head, 'conv_seg')
    assert head.num_classes == 171 and head.pad_len == 256 and head.window_size == 12
    # by hand: cost embed 6,400 + image-guidance proj 589,952 + text-guidance proj 65,664
    # + 2 aggregation layers 1,354,240 + decoder-guidance upsampling 2,359,680 and
    # projections 92,208 + decoder stages 160,096 and 40,112 + logit conv 289
    assert n_params == 4_668_641, n_params


# ---------------------------------------------------------------- cost volume
def test_cost_volume_is_cosine_similarity():
    inp = make_inputs(b=2, n=3, p=2, hw=3)
    dense = inp['dense'] * 7.0  # not normalised on purpose
    text = inp['text'] * 3.0
    cost = HCLIPCostAggHead.cost_volume(dense, text)
    assert cost.shape == (2, 3, 2, 3, 3)
    for b in range(2):
        for n in range(3):
            for p in range(2):
                for i in range(3):
                    for j in range(3):
                        u, v = dense[b, :, i, j], text[n, p]
                        ref = torch.dot(u, v) / (u.norm() * v.norm())
                        torch.testing.assert_close(cost[b, n, p, i, j], ref)
    per_image = HCLIPCostAggHead.cost_volume(dense, text.expand(2, -1, -1, -1))
    torch.testing.assert_close(per_image, cost)


# -------------------------------------------------------------- top-k classes
def test_topk_keeps_most_similar_classes_and_drops_the_rest():
    n, k = 300, 256
    head = make_head().eval()
    inp = make_inputs(b=2, n=n)
    with torch.no_grad():
        out = head(inp)
    # independent: max cosine similarity over positions, by matrix product
    img = inp['dense'].flatten(2).transpose(1, 2)  # [B, hw, C]
    img = img / img.norm(dim=-1, keepdim=True)
    txt = inp['text'][:, 0] / inp['text'][:, 0].norm(dim=-1, keepdim=True)  # [N, C]
    score = (img @ txt.T).max(dim=1).values  # [B, N]
    for b in range(2):
        order = score[b].argsort(descending=True).tolist()
        kept, dropped = sorted(order[:k]), order[k:]
        assert len(dropped) == n - k
        assert (out[b, dropped] == -100.).all()
        assert (out[b, kept] != -100.).any(dim=(1, 2)).all()
        # the kept logits are exactly the head run on the kept classes alone
        with torch.no_grad():
            alone = head(dict(dense=inp['dense'][b:b + 1],
                              guidance=[g[b:b + 1] for g in inp['guidance']],
                              text=inp['text'][kept]))
        torch.testing.assert_close(out[b, kept], alone[0].detach(), rtol=1e-4, atol=1e-4)


def test_exactly_pad_len_classes_neither_pads_nor_drops():
    head = make_head(pad_len=6).eval()
    with torch.no_grad():
        out = head(make_inputs(n=6))
    assert out.shape[1] == 6 and (out != -100.).all()


def test_pad_len_zero_disables_padding_and_selection():
    head = make_head(pad_len=0).eval()
    assert not [n for n, _ in head.named_parameters() if 'pad_' in n]
    with torch.no_grad():
        out = head(make_inputs(n=300))
    assert out.shape[1] == 300 and (out != -100.).all()


# -------------------------------------------------------------------- padding
def test_padding_tokens_are_extra_classes_whose_outputs_are_dropped():
    """Padded class aggregation == unpadded aggregation with the padding token appended as
    extra classes, restricted to the real classes."""
    torch.manual_seed(0)
    b, t, c, g, pad_len = 2, 3, 16, 8, 7
    padded = ClassAggregation(c, g, num_heads=4, pad_len=pad_len).eval()
    with torch.no_grad():
        padded.pad_token.normal_()
        padded.pad_guidance.normal_()
    plain = ClassAggregation(c, g, num_heads=4, pad_len=0).eval()
    plain.load_state_dict(
        {k: v for k, v in padded.state_dict().items() if not k.startswith('pad_')})
    x = torch.randn(b, t, 4, 4, c)
    guid = torch.randn(b, t, g)
    n_pad = pad_len - t
    x_ext = torch.cat([x, padded.pad_token.expand(b, n_pad, 4, 4, c)], dim=1)
    g_ext = torch.cat([guid, padded.pad_guidance.expand(b, n_pad, g)], dim=1)
    with torch.no_grad():
        out = padded(x, guid)
        ref = plain(x_ext, g_ext)[:, :t]
        assert out.shape == x.shape
        torch.testing.assert_close(out, ref)
        # and the padding does take part: without it the result differs
        assert not torch.allclose(out, plain(x, guid))


def test_padding_never_appears_in_predictions():
    head = make_head().eval()
    with torch.no_grad():
        for layer in head.layers:
            layer.cls.pad_token.fill_(50.)  # a leaked padding class would stand out
        inp = make_inputs(b=2, n=3)
        scores = head.predict(inp, [dict(img_shape=(40, 40))] * 2, test_cfg=None)
    assert scores.shape == (2, 3, 40, 40)
    assert scores.argmax(dim=1).max() < 3
    assert ((scores >= 0) & (scores <= 1)).all()


def test_predict_is_sigmoid_of_resized_logits():
    head = make_head().eval()
    inp = make_inputs(b=1, n=4)
    with torch.no_grad():
        logits = head(inp)
        scores = head.predict(inp, [dict(img_shape=(50, 60), pad_shape=(64, 64))], None)
    ref = F.interpolate(logits, size=(64, 64), mode='bilinear', align_corners=False).sigmoid()
    torch.testing.assert_close(scores, ref)


# --------------------------------------------------------- spatial aggregation
def _copy_to_mmseg(ours: GuidedShiftWindowMSA, theirs) -> None:
    with torch.no_grad():
        theirs.w_msa.qkv.weight.copy_(
            torch.cat([ours.w_msa.q.weight, ours.w_msa.k.weight, ours.w_msa.v.weight]))
        theirs.w_msa.qkv.bias.copy_(
            torch.cat([ours.w_msa.q.bias, ours.w_msa.k.bias, ours.w_msa.v.bias]))
        theirs.w_msa.proj.load_state_dict(ours.w_msa.proj.state_dict())
        theirs.w_msa.relative_position_bias_table.zero_()  # CAT-Seg has no position bias


@pytest.mark.parametrize('shift,hw', [(0, 8), (2, 8), (0, 6), (2, 6)])
def test_window_attention_matches_mmseg_shift_window_msa(shift, hw):
    """Without guidance, our windowing/shift/mask equals mmseg's ShiftWindowMSA."""
    from mmseg.models.backbones.swin import ShiftWindowMSA
    torch.manual_seed(0)
    ours = GuidedShiftWindowMSA(16, 0, num_heads=4, window_size=4, shift_size=shift)
    theirs = ShiftWindowMSA(16, num_heads=4, window_size=4, shift_size=shift)
    _copy_to_mmseg(ours, theirs)
    x = torch.randn(2, 3, hw, hw, 16)
    out = ours(x)
    ref = theirs(x.reshape(6, hw * hw, 16), (hw, hw)).view(2, 3, hw, hw, 16)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


class _ConcatWindowAttention(torch.nn.Module):
    """Reference: q, k from explicit [x ‖ g] concatenation, v from x, naive softmax;
    emits [out ‖ 0] so that mmseg's ShiftWindowMSA can carry it."""

    def __init__(self, ours, c):
        super().__init__()
        self.m, self.c = ours.w_msa, c

    def forward(self, win, mask=None):
        m, c = self.m, self.c
        bw, n, _ = win.shape
        q, k = win @ m.q.weight.T + m.q.bias, win @ m.k.weight.T + m.k.bias
        v = win[..., :c] @ m.v.weight.T + m.v.bias
        h = m.num_heads
        q, k, v = (z.view(bw, n, h, -1).transpose(1, 2) for z in (q, k, v))
        logits = q @ k.transpose(-1, -2) / math.sqrt(c // h)
        if mask is not None:
            logits = (logits.view(-1, mask.shape[0], h, n, n) + mask[None, :, None]).view(
                bw, h, n, n)
        out = (logits.softmax(-1) @ v).transpose(1, 2).reshape(bw, n, c)
        out = out @ m.proj.weight.T + m.proj.bias
        return torch.cat([out, torch.zeros_like(win[..., c:])], dim=-1)


@pytest.mark.parametrize('shift', [0, 2])
def test_guided_window_attention_matches_concatenation_reference(shift):
    """The broadcast guidance term equals concatenating the guidance to every class."""
    from mmseg.models.backbones.swin import ShiftWindowMSA
    torch.manual_seed(0)
    c, g, b, t, hw = 16, 8, 2, 3, 8
    ours = GuidedShiftWindowMSA(c, g, num_heads=4, window_size=4, shift_size=shift).double()
    carrier = ShiftWindowMSA(c + g, num_heads=4, window_size=4, shift_size=shift).double()
    carrier.w_msa = _ConcatWindowAttention(ours, c)
    x = torch.randn(b, t, hw, hw, c, dtype=torch.float64)
    guid = torch.randn(b, hw, hw, g, dtype=torch.float64)
    out = ours(x, guid)
    cat = torch.cat([x, guid[:, None].expand(b, t, hw, hw, g)], dim=-1)
    ref = carrier(cat.reshape(b * t, hw * hw, c + g), (hw, hw))[..., :c]
    torch.testing.assert_close(out, ref.view(b, t, hw, hw, c))
    # the guidance is used (q/k) but not as a value: zeroing its q/k weights removes it
    with torch.no_grad():
        ours.w_msa.q.weight[:, c:] = 0
        ours.w_msa.k.weight[:, c:] = 0
    torch.testing.assert_close(ours(x, guid), ours(x, torch.randn_like(guid)))


# ----------------------------------------------------------- class aggregation
def test_linear_class_attention_matches_explicit_kernel_attention():
    torch.manual_seed(0)
    b, s, t, c, g, h = 2, 5, 7, 16, 8, 4
    attn = LinearClassAttention(c, g, num_heads=h).double()
    x = torch.randn(b, s, t, c, dtype=torch.float64)
    guid = torch.randn(b, t, g, dtype=torch.float64)
    out = attn(x, guid)
    xg = torch.cat([x, guid[:, None].expand(b, s, t, g)], dim=-1)
    phi = lambda z: F.elu(z) + 1  # noqa: E731
    q = phi(xg @ attn.q.weight.T + attn.q.bias).view(b, s, t, h, -1).transpose(2, 3)
    k = phi(xg @ attn.k.weight.T + attn.k.bias).view(b, s, t, h, -1).transpose(2, 3)
    v = (x @ attn.v.weight.T + attn.v.bias).view(b, s, t, h, -1).transpose(2, 3)
    a = q @ k.transpose(-1, -2)  # [b, s, h, t, t], positive
    ref = (a @ v) / (a.sum(-1, keepdim=True) + attn.eps)
    torch.testing.assert_close(out, ref.transpose(2, 3).reshape(b, s, t, c))


def test_class_aggregation_is_permutation_equivariant_over_classes():
    torch.manual_seed(0)
    layer = ClassAggregation(16, 8, num_heads=4, pad_len=10).eval()
    x, guid = torch.randn(1, 5, 4, 4, 16), torch.randn(1, 5, 8)
    perm = torch.tensor([3, 0, 4, 1, 2])
    with torch.no_grad():
        torch.testing.assert_close(layer(x, guid)[:, perm], layer(x[:, perm], guid[:, perm]))


def test_class_aggregation_pools_in_training_only():
    torch.manual_seed(0)
    layer = ClassAggregation(16, 0, num_heads=4, pool_size=2, test_pool_size=1, pad_len=0)
    x = torch.randn(1, 3, 4, 4, 16)
    with torch.no_grad():
        train_out = layer.train()(x)
        eval_out = layer.eval()(x)
        # an explicitly pooled-and-upsampled pass reproduces the training output
        y = F.avg_pool2d(x.permute(0, 1, 4, 2, 3).reshape(3, 16, 4, 4), 2)
        y = y.view(1, 3, 16, 4).permute(0, 3, 1, 2)
        y = y + layer.attn(layer.norm1(y))
        y = y + layer.ffn.layers(layer.norm2(y))
        y = F.interpolate(y.permute(0, 2, 3, 1).reshape(3, 16, 2, 2), size=(4, 4),
                          mode='bilinear', align_corners=True)
        ref = x + y.view(1, 3, 16, 4, 4).permute(0, 1, 3, 4, 2)
    torch.testing.assert_close(train_out, ref)
    assert not torch.allclose(train_out, eval_out)


# ------------------------------------------------------------------ gradients
def test_gradient_reaches_every_parameter():
    head = make_head().train()
    inp = make_inputs(b=2, n=3)
    out = head(inp)
    (out.square().mean() + out.mean()).backward()
    missing = [n for n, p in head.named_parameters()
               if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0]
    assert not missing, missing


def test_gradient_checkpointing_gives_same_gradients():
    inp = make_inputs(b=1, n=3)
    grads = []
    for with_cp in (False, True):
        head = make_head(with_cp=with_cp).train()
        head(inp).sum().backward()
        grads.append({n: p.grad.clone() for n, p in head.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], msg=name)


def test_bf16_autocast_forward_backward_on_cpu():
    head = make_head().train()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = head(make_inputs(b=1, n=3))
    out.float().mean().backward()
    assert torch.isfinite(out.float()).all()


# --------------------------------------------------------------------- errors
def test_error_text_width_differs_from_dense_width():
    head = make_head()
    inp = make_inputs()
    inp['text'] = torch.randn(3, 1, C + 1)
    with pytest.raises(ValueError, match='text embedding width 17 differs'):
        head(inp)


def test_error_empty_class_set():
    head = make_head()
    inp = make_inputs()
    inp['text'] = torch.zeros(0, 1, C)
    with pytest.raises(ValueError, match='class set is empty'):
        head(inp)


@pytest.mark.parametrize('mutate,match', [
    (lambda i: i.update(dense=i['dense'][:, :-1]), r"inputs\['dense'\] must be"),
    (lambda i: i.update(guidance=i['guidance'][:1]), 'must be a list of 2'),
    (lambda i: i['guidance'].__setitem__(1, i['guidance'][1][..., :-1]), r"\[1\] must be"),
    (lambda i: i.update(text=i['text'].expand(-1, 2, -1)), 'prompt templates'),
    (lambda i: i.update(text=i['text'][None].expand(3, -1, -1, -1)), 'has batch 3'),
    (lambda i: i.update(dense=i['dense'][..., :3, :3]), 'smaller than the window'),
])
def test_error_bad_input_shapes(mutate, match):
    head = make_head()
    inp = make_inputs()
    mutate(inp)
    with pytest.raises(ValueError, match=match):
        head(inp)


def test_error_inputs_not_a_dict():
    with pytest.raises(TypeError, match='expects inputs=dict'):
        make_head()([torch.randn(1, C, HW, HW)])


@pytest.mark.parametrize('kw,match', [
    (dict(window_size=12), 'larger than the feature map'),
    (dict(num_heads=5), 'does not divide'),
    (dict(decoder_guidance_proj_channels=(4, )), 'same non-zero length'),
    (dict(loss_decode=dict(type='OneHotBCELoss', ignore_as_negative=False)), 'set it once'),
])
def test_error_bad_config(kw, match):
    with pytest.raises(ValueError, match=match):
        make_head(**kw)


# ----------------------------------------------------------------------- loss
def _samples(labels):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    out = []
    for lab in labels:
        s = SegDataSample()
        s.gt_sem_seg = PixelData(data=lab[None])
        out.append(s)
    return out


@pytest.mark.parametrize('ignore_as_negative', [True, False])
def test_head_loss_equals_hand_bce(ignore_as_negative):
    head = make_head(ignore_as_negative=ignore_as_negative).train()
    inp = make_inputs(b=2, n=3)
    labels = torch.randint(0, 3, (2, 40, 40))
    labels[:, :10] = 255
    losses = head.loss(inp, _samples(labels), train_cfg=None)
    assert set(losses) == {'loss_bce', 'acc_seg'}
    logits = F.interpolate(head(inp), size=(40, 40), mode='bilinear', align_corners=False)
    valid = labels != 255
    onehot = torch.stack([(labels == c) for c in range(3)], dim=1).float()
    x = logits
    elem = torch.clamp(x, min=0) - x * onehot + torch.log1p(torch.exp(-x.abs()))
    if ignore_as_negative:
        ref = elem.mean()
    else:
        ref = (elem * valid[:, None]).sum() / (valid.sum() * 3)
    torch.testing.assert_close(losses['loss_bce'], ref)
    losses['loss_bce'].backward()


def test_head_built_from_registry():
    from mmseg.registry import MODELS
    import mmseg_hclip  # noqa: F401
    head = MODELS.build(dict(type='HCLIPCostAggHead', **SMALL))
    assert isinstance(head, HCLIPCostAggHead)
    assert head.loss_decode.ignore_as_negative is True


# ----------------------------------------------------------- fast vs reference
def _grads_of(module, inputs, out, seed=3):
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(out.shape, generator=g, dtype=out.dtype)
    params = [p for p in module.parameters() if p.requires_grad]
    grads = torch.autograd.grad((out * weight).sum(), list(inputs) + params, allow_unused=True)
    return [torch.zeros(()) if gr is None else gr for gr in grads]


def _assert_rel(a, b, tol, what=''):
    err = ((a - b).norm() / b.norm().clamp_min(1e-30)).item()
    assert err <= tol, f'{what}: relative difference {err:.2e} > {tol:.0e}'


@pytest.mark.parametrize('dtype,tol', [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize('size', [(3, 3), (4, 5)])
def test_up_block_fast_equals_reference(dtype, tol, size):
    """Composed transposed conv + first conv, per-image guidance term, channels-last:
    the same outputs and gradients (inputs, every parameter) as the concatenation path."""
    from mmseg_hclip.models.decode_heads.cost_aggregation_blocks import GuidedUpBlock
    torch.manual_seed(0)
    block = GuidedUpBlock(32, 16, 8).to(dtype)
    with torch.no_grad():
        for p in block.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # GroupNorm affine away from (1, 0)
    b, t = 2, 3
    x = torch.randn(b * t, 32, *size, dtype=dtype, requires_grad=True)
    guid = torch.randn(b, 8, 2 * size[0], 2 * size[1], dtype=dtype, requires_grad=True)
    results = {}
    for impl in ('reference', 'fast'):
        block.impl = impl
        out = block(x, guid)
        results[impl] = [out] + _grads_of(block, (x, guid), out)
    assert results['fast'][0].shape == (b * t, 16, 2 * size[0], 2 * size[1])
    for i, (f, r) in enumerate(zip(results['fast'], results['reference'])):
        _assert_rel(f, r, tol, f'tensor {i}')


def test_compose_up_conv_is_the_composition():
    """compose_up_conv + ParityInterleave == conv3x3(conv_transpose2x2(x)) without biases."""
    from mmseg_hclip.models.decode_heads.cost_aggregation_blocks import (ParityInterleave,
                                                                         compose_up_conv)
    torch.manual_seed(0)
    x = torch.randn(2, 5, 3, 4, dtype=torch.float64)
    w_up = torch.randn(5, 6, 2, 2, dtype=torch.float64)
    w_conv = torch.randn(7, 6, 3, 3, dtype=torch.float64)
    ref = F.conv2d(F.conv_transpose2d(x, w_up, stride=2), w_conv, padding=1)
    y = F.conv2d(x, compose_up_conv(w_up, w_conv), padding=1)
    out = ParityInterleave.apply(y, 3, 4, None).permute(0, 3, 1, 2)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('train', [True, False])
def test_head_fast_equals_reference_float64(train):
    """The whole head, fast vs reference, in float64: logits and every gradient."""
    head = make_head().double().train(train)
    with torch.no_grad():
        for name, p in head.named_parameters():
            if 'pad_' in name or 'norm' in name or '.gn.' in name:
                p.add_(torch.randn_like(p) * 0.1)
    inp = make_inputs(b=2, n=5, dtype=torch.float64)
    leaves = [inp['dense'], *inp['guidance'], inp['text']]
    for leaf in leaves:
        leaf.requires_grad_()
    results = {}
    for impl in ('reference', 'fast'):
        head.impl = impl
        out = head(inp)
        results[impl] = [out] + _grads_of(head, leaves, out)
    for i, (f, r) in enumerate(zip(results['fast'], results['reference'])):
        if r.norm() > 1e-12:  # the key bias of softmax attention has no gradient (0 ± 1e-17)
            _assert_rel(f, r, 1e-10, f'tensor {i}')


def test_head_impl_switch_and_error():
    head = make_head(impl='reference')
    assert {m.impl for m in head.modules() if hasattr(m, 'impl')} == {'reference'}
    head.impl = 'fast'
    assert {m.impl for m in head.modules() if hasattr(m, 'impl')} == {'fast'}
    with pytest.raises(ValueError, match="impl='slow'"):
        make_head(impl='slow')


# ------------------------------------------------------------- initialisation
def _conv_modules(head):
    from mmcv.cnn import ConvModule
    return [m.conv for m in head.modules() if isinstance(m, ConvModule)]


@pytest.mark.parametrize('run_init_weights', [False, True])
def test_conv_init_pytorch_default_like_catseg(run_init_weights):
    """conv_init='pytorch' (default): ConvModule convs keep nn.Conv2d's default init,
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias, also after the runner's
    init_weights(); 'kaiming' gives ConvModule's N(0, 2/fan_out) with zero bias."""
    head = HCLIPCostAggHead()  # reference sizes: enough weights for the statistics
    if run_init_weights:
        head.init_weights()
    convs = _conv_modules(head)
    assert len(convs) == 1 + 2 + 4  # image guidance, 2 decoder guidance, 2 x 2 decoder
    for conv in convs:
        fan_in = conv.in_channels * 9
        bound = 1 / math.sqrt(fan_in)
        w = conv.weight
        assert w.abs().max() <= bound
        assert abs(w.std().item() - bound / math.sqrt(3)) < 0.05 * bound
        if conv.bias is not None:
            assert conv.bias.abs().max() <= bound and conv.bias.abs().sum() > 0
    head = HCLIPCostAggHead(conv_init='kaiming')
    if run_init_weights:
        head.init_weights()
    for conv in _conv_modules(head):
        fan_out = conv.out_channels * 9
        assert abs(conv.weight.std().item() - math.sqrt(2 / fan_out)) < 0.05 * math.sqrt(
            2 / fan_out)
        if conv.bias is not None:
            assert (conv.bias == 0).all()


def test_conv_init_error():
    with pytest.raises(ValueError, match="conv_init='xavier'"):
        make_head(conv_init='xavier')


def test_window_order_is_mmpretrains_roll_and_partition():
    from mmpretrain.models.utils.attention import ShiftWindowMSA
    from mmseg_hclip.models.decode_heads.cost_aggregation_blocks import window_order
    for (h, w, ws, shift) in [(8, 8, 4, 0), (8, 8, 4, 2), (8, 12, 4, 2), (6, 6, 3, 1)]:
        cells = torch.arange(h * w, dtype=torch.float64).view(1, h, w, 1)
        if shift:
            cells = torch.roll(cells, shifts=(-shift, -shift), dims=(1, 2))
        ref = ShiftWindowMSA.window_partition(cells, ws).reshape(-1).long()
        assert torch.equal(window_order(h, w, ws, shift), ref)


@pytest.mark.parametrize('dtype,tol', [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize('hw,guided', [(8, True), (8, False), (4, True), (6, True)])
def test_spatial_aggregation_fast_equals_reference(dtype, tol, hw, guided):
    """Window-ordered blocks (one gather per block, no roll/partition/reverse, q/k/v as
    strided head views) == mmseg-style windows; 4x4 = a single window (no shift), 6x6 is
    not a multiple of the window (padded: the fast path falls back to the reference)."""
    from mmseg_hclip.models.decode_heads.cost_aggregation_blocks import SpatialAggregation
    torch.manual_seed(0)
    g_dims = 8 if guided else 0
    agg = SpatialAggregation(16, g_dims, num_heads=4, window_size=4).to(dtype)
    b, t = 2, 3
    x = torch.randn(b, t, hw, hw, 16, dtype=dtype, requires_grad=True)
    guid = torch.randn(b, hw, hw, 8, dtype=dtype, requires_grad=True) if guided else None
    leaves = (x, guid) if guided else (x, )
    results = {}
    for impl in ('reference', 'fast'):
        agg.impl = impl
        out = agg(x, guid)
        results[impl] = [out] + _grads_of(agg, leaves, out)
    names = ['out', 'x', 'guidance'][:len(leaves) + 1] + [
        n for n, p in agg.named_parameters() if p.requires_grad]
    for name, f, r in zip(names, results['fast'], results['reference']):
        if name.endswith('.k.bias'):
            # the key bias adds the same q·b_k to every logit of a query: no gradient
            # (both paths give rounding noise, compared with the output's scale)
            assert max(f.abs().max(), r.abs().max()) <= tol * results['reference'][0].abs().max()
        else:
            _assert_rel(f, r, tol, name)


@pytest.mark.parametrize('dtype,tol', [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_pre_norm_mlp_residual_equals_modules(dtype, tol):
    """The fused MLP residual (norm and activation recomputed in backward) == mmcv's FFN on
    nn.LayerNorm: outputs and every gradient."""
    from mmcv.cnn.bricks.transformer import FFN
    from mmseg_hclip.models.decode_heads.cost_aggregation_blocks import PreNormMlpResidual
    torch.manual_seed(0)
    norm = torch.nn.LayerNorm(16).to(dtype)
    ffn = FFN(embed_dims=16, feedforward_channels=64, act_cfg=dict(type='GELU')).to(dtype)
    with torch.no_grad():
        norm.weight.add_(torch.randn(16, dtype=dtype) * 0.1)
        norm.bias.add_(torch.randn(16, dtype=dtype) * 0.1)
    x = torch.randn(2, 3, 5, 16, dtype=dtype, requires_grad=True)
    modules = torch.nn.ModuleList([norm, ffn])
    ref = ffn(norm(x), identity=x)
    fc1, fc2 = ffn.layers[0][0], ffn.layers[1]
    out = PreNormMlpResidual.apply(x, norm.weight, norm.bias, norm.eps, fc1.weight, fc1.bias,
                                   fc2.weight, fc2.bias, 'none')
    for f, r in zip([out] + _grads_of(modules, (x, ), out), [ref] + _grads_of(modules, (x, ), ref)):
        _assert_rel(f, r, tol)


@pytest.mark.parametrize('dtype,tol', [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize('bias,padding,channels_last', [(True, 1, True), (False, 1, False),
                                                        (False, 0, True)])
def test_group_norm_relu_conv_equals_modules(dtype, tol, bias, padding, channels_last):
    """conv(relu(GroupNorm(x))) with the norm and ReLU recomputed in backward == the modules:
    outputs and every gradient."""
    from mmseg_hclip.models.decode_heads.cost_aggregation_blocks import GroupNormReluConv
    torch.manual_seed(0)
    gn = torch.nn.GroupNorm(2, 8).to(dtype)
    conv = torch.nn.Conv2d(8, 5, 2 if padding == 0 else 3, padding=padding, bias=bias).to(dtype)
    with torch.no_grad():
        gn.weight.add_(torch.randn(8, dtype=dtype) * 0.3)
        gn.bias.add_(torch.randn(8, dtype=dtype) * 0.3)
    x = torch.randn(3, 8, 6, 7, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    modules = torch.nn.ModuleList([gn, conv])
    ref = conv(torch.relu(gn(x)))
    out = GroupNormReluConv.apply(x, gn.weight, gn.bias, 2, gn.eps, conv.weight, conv.bias,
                                  padding)
    for f, r in zip([out] + _grads_of(modules, (x, ), out), [ref] + _grads_of(modules, (x, ), ref)):
        _assert_rel(f, r, tol)

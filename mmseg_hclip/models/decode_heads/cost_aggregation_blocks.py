"""Building blocks of :class:`HCLIPCostAggHead` (cost aggregation after CAT-Seg, CVPR'24).

Tensor layout inside the aggregation: the cost embedding is kept channels-last as
``[B, T, H, W, C]`` (batch, classes, height, width, channels), so that one image's guidance
``[B, H, W, G]`` (spatial) or ``[B, T, G]`` (per class) can be *broadcast* over the other axis
instead of being copied once per class or once per position.

The blocks are not registered: they are private parts of the head and are built by it.
"""
import contextlib
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule, build_norm_layer
from mmcv.cnn.bricks.transformer import FFN
from mmengine.model import BaseModule
from mmpretrain.models.utils.attention import ShiftWindowMSA
from mmseg.utils import ConfigType, OptConfigType
from torch import Tensor


def guided_linear(linear: nn.Linear, x: Tensor, guidance: Optional[Tensor],
                  guidance_dim: int) -> Tensor:
    """``linear(cat([x, guidance], -1))`` without materialising the concatenation.

    ``linear`` maps ``C + G`` input channels (x first, guidance second). The guidance
    usually has fewer leading elements than ``x`` (one per image, not one per class); its
    term is computed once and broadcast, which gives the same numbers as concatenating a
    copy of the guidance to every element of ``x``.

    Args:
        linear (nn.Linear): weight ``[out, C + G]``.
        x (Tensor): ``[..., C]``.
        guidance (Tensor, optional): broadcastable to ``x.shape[:-1] + (G,)``.
        guidance_dim (int): G; 0 means ``linear`` maps C channels and there is no guidance.

    Returns:
        Tensor: ``[..., out]``.
    """
    c = x.shape[-1]
    if guidance_dim == 0:
        return linear(x)
    out = F.linear(x, linear.weight[:, :c], linear.bias)
    if guidance is not None:
        out = out + F.linear(guidance, linear.weight[:, c:])
    return out


class GuidedWindowMSA(BaseModule):
    """Window multi-head self-attention whose queries and keys also read a guidance map.

    Per window: ``q = W_q [x ‖ g]``, ``k = W_k [x ‖ g]``, ``v = W_v x``,
    ``out = W_o softmax(q kᵀ / √d + mask) v``.

    Why not mmseg's / mmpretrain's ``WindowMSA``: those project one input to q, k and v
    with a single ``qkv`` linear layer and add a learned relative position bias. CAT-Seg's
    spatial aggregation needs q and k computed from the cost embedding *concatenated with*
    the image guidance while v comes from the cost embedding alone (the output must stay a
    cost feature, not a blend of appearance features), and it uses no relative position
    bias. The window bookkeeping (partition, reverse, shift mask) is reused from mmpretrain
    through :class:`GuidedShiftWindowMSA`.

    The guidance is shared by all classes of an image, so its contribution to q and k is
    computed once per image and broadcast over the class axis (see :func:`guided_linear`).

    Args:
        embed_dims (int): C, channels of the cost embedding.
        num_heads (int): attention heads; must divide ``embed_dims``.
        window_size (tuple[int]): window height and width (kept for mmpretrain's builder).
        guidance_dims (int): G, channels of the guidance (0: plain window attention).
        qkv_bias (bool): bias in the q, k, v projections.
        attn_drop (float): dropout on the attention weights (training only).
        proj_drop (float): dropout after the output projection.
        init_cfg (dict, optional): mmengine init config.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 window_size: Tuple[int, int],
                 guidance_dims: int = 0,
                 qkv_bias: bool = True,
                 attn_drop: float = 0.,
                 proj_drop: float = 0.,
                 init_cfg: OptConfigType = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if embed_dims % num_heads:
            raise ValueError(f'num_heads={num_heads} does not divide embed_dims={embed_dims}; '
                             f'choose a divisor of {embed_dims}')
        self.embed_dims = embed_dims
        self.guidance_dims = guidance_dims
        self.num_heads = num_heads
        self.window_size = window_size
        self.q = nn.Linear(embed_dims + guidance_dims, embed_dims, bias=qkv_bias)
        self.k = nn.Linear(embed_dims + guidance_dims, embed_dims, bias=qkv_bias)
        self.v = nn.Linear(embed_dims, embed_dims, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: Tensor, guidance: Optional[Tensor] = None,
                mask: Optional[Tensor] = None) -> Tensor:
        """
        Args:
            x (Tensor): windows of the cost embedding ``[B, T, nW, N, C]``
                (N = tokens per window).
            guidance (Tensor, optional): windows of the (normalised) guidance
                ``[B, nW, N, G]``, shared by the T classes.
            mask (Tensor, optional): additive mask ``[nW, N, N]`` (0 or -100).

        Returns:
            Tensor: ``[B, T, nW, N, C]``.
        """
        b, t, nw, n, c = x.shape
        h = self.num_heads
        g = guidance.unsqueeze(1) if guidance is not None else None  # broadcast over T
        q = guided_linear(self.q, x, g, self.guidance_dims)
        k = guided_linear(self.k, x, g, self.guidance_dims)
        v = self.v(x)

        # [B*T, nW*heads, N, d]: windows and heads share one axis, so a mask of shape
        # [1, nW*heads, N, N] broadcasts over the batch and the fused SDPA kernels apply.
        def split(z: Tensor) -> Tensor:
            return z.view(b * t, nw, n, h, c // h).transpose(2, 3).reshape(b * t, nw * h, n, -1)

        attn_mask = None
        if mask is not None:
            attn_mask = mask.to(q.dtype)[:, None].expand(nw, h, n, n).reshape(1, nw * h, n, n)
        out = F.scaled_dot_product_attention(
            split(q), split(k), split(v), attn_mask=attn_mask,
            dropout_p=self.attn_drop if self.training else 0.)
        out = out.view(b, t, nw, h, n, c // h).transpose(3, 4).reshape(b, t, nw, n, c)
        return self.proj_drop(self.proj(out))

    def forward_fast(self, x: Tensor, guidance: Optional[Tensor] = None,
                     mask: Optional[Tensor] = None) -> Tensor:
        """:meth:`forward`'s numbers without copies for the heads.

        q, k and v stay in their ``[B, T, nW, N, C]`` layout and are handed to SDPA as
        strided ``[B·T·nW, heads, N, d]`` views (its CPU kernel returns the output, and its
        backward the gradients, in that same layout).

        Args:
            x (Tensor): ``[B, T, nW, N, C]``.
            guidance (Tensor, optional): ``[B, nW, N, G]``.
            mask (Tensor, optional): ``[B·T·nW, 1, N, N]`` additive mask, one per window
                of every map (see :func:`batched_window_mask`).

        Returns:
            Tensor: ``[B, T, nW, N, C]``.
        """
        b, t, nw, n, c = x.shape
        h = self.num_heads

        def project(linear: nn.Linear) -> Tensor:
            if self.guidance_dims and guidance is not None:
                # the bias goes with the per-image guidance term, so the per-class map is
                # a plain product (addmm would first copy the bias into the whole output);
                # out of place: an in-place add on the product (a view) costs autograd a
                # clone of the whole gradient in backward
                return F.linear(x, linear.weight[:, :c]) + F.linear(
                    guidance, linear.weight[:, c:], linear.bias).unsqueeze(1)
            return F.linear(x, linear.weight[:, :c], linear.bias)

        def heads(z: Tensor) -> Tensor:
            return z.view(b * t * nw, n, h, c // h).transpose(1, 2)

        dropout = self.attn_drop if self.training else 0.
        # the attention weights of a query sum to 1, so v's bias passes through the
        # attention unchanged and joins the projection's bias: W_o (A(XW_vᵀ) + b_v) + b_o
        # = W_o A(XW_vᵀ) + (W_o b_v + b_o) (not with attention dropout)
        fold_v_bias = self.v.bias is not None and dropout == 0
        v = F.linear(x, self.v.weight) if fold_v_bias else self.v(x)
        q = project(self.q)
        out = F.scaled_dot_product_attention(
            heads(q), heads(project(self.k)), heads(v),
            attn_mask=None if mask is None else mask.to(q.dtype), dropout_p=dropout)
        out = out.transpose(1, 2).reshape(b, t, nw, n, c)
        if fold_v_bias:
            bias = F.linear(self.v.bias, self.proj.weight, self.proj.bias)
            return self.proj_drop(F.linear(out, self.proj.weight, bias))
        return self.proj_drop(self.proj(out))


def window_order(height: int, width: int, window: int, shift: int,
                 device: Optional[torch.device] = None) -> Tensor:
    """Positions of a ``height × width`` map in (shifted-)window order.

    ``order[k]`` is the row-major index of the cell that comes ``k``-th when the map is
    rolled by ``-shift`` along both axes (as ``torch.roll``) and cut into ``window ×
    window`` windows (window-major, row-major inside a window), i.e. what mmpretrain's
    roll + ``window_partition`` do to the cells.
    """
    idx = torch.arange(height * width, device=device).view(height, width)
    if shift:
        idx = torch.roll(idx, shifts=(-shift, -shift), dims=(0, 1))
    idx = idx.view(height // window, window, width // window, window).transpose(1, 2)
    return idx.reshape(-1)


def batched_window_mask(mask: Tensor, maps: int) -> Tensor:
    """``[nW, N, N]`` → ``[maps·nW, 1, N, N]`` (window-minor), for SDPA's batch axis."""
    return mask.repeat(maps, 1, 1).unsqueeze(1)


class PermutePositions(torch.autograd.Function):
    """``x.index_select(2, index)`` whose backward is the inverse gather (``index`` is a
    permutation), not autograd's scatter-add."""

    @staticmethod
    def forward(ctx, x: Tensor, index: Tensor) -> Tensor:  # type: ignore[override]
        inverse = torch.empty_like(index)
        inverse[index] = torch.arange(index.numel(), device=index.device)
        ctx.save_for_backward(inverse)
        return x.index_select(2, index)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        inverse, = ctx.saved_tensors
        return grad.index_select(2, inverse), None


class GuidedShiftWindowMSA(ShiftWindowMSA):
    """(Shifted) window attention over a per-class cost embedding with shared guidance.

    Reuses mmpretrain's :class:`ShiftWindowMSA` for the window partition / reverse and the
    shifted-window mask (its ``window_msa`` hook builds a :class:`GuidedWindowMSA`); only
    ``forward`` differs, because the guidance has to be padded, rolled and partitioned
    with ``x`` and is shared by all classes. As in CAT-Seg (and the original Swin), the
    shift is dropped when the feature map is a single window; feature maps whose size is
    not a multiple of the window are zero-padded as in mmseg's Swin.

    Args:
        embed_dims (int): C.
        guidance_dims (int): G (0: no guidance).
        num_heads (int): attention heads.
        window_size (int): window side length.
        shift_size (int): cyclic shift (0: regular windows).
        attn_drop (float): attention dropout.
        proj_drop (float): output-projection dropout.
        dropout_layer (dict): drop path before the residual.
        init_cfg (dict, optional): mmengine init config.
    """

    def __init__(self,
                 embed_dims: int,
                 guidance_dims: int,
                 num_heads: int,
                 window_size: int,
                 shift_size: int = 0,
                 attn_drop: float = 0.,
                 proj_drop: float = 0.,
                 dropout_layer: ConfigType = dict(type='DropPath', drop_prob=0.),
                 init_cfg: OptConfigType = None) -> None:
        super().__init__(
            embed_dims=embed_dims,
            num_heads=num_heads,
            window_size=window_size,
            shift_size=shift_size,
            dropout_layer=dropout_layer,
            window_msa=GuidedWindowMSA,
            init_cfg=init_cfg,
            guidance_dims=guidance_dims,
            attn_drop=attn_drop,
            proj_drop=proj_drop)

    def forward(self, x: Tensor,  # type: ignore[override]
                guidance: Optional[Tensor] = None) -> Tensor:
        """
        Args:
            x (Tensor): ``[B, T, H, W, C]``.
            guidance (Tensor, optional): ``[B, H, W, G]``.

        Returns:
            Tensor: ``[B, T, H, W, C]``.
        """
        b, t, hgt, wid, c = x.shape
        ws = self.window_size
        if min(hgt, wid) < ws:
            raise ValueError(f'feature map {hgt}x{wid} is smaller than the window size {ws}; '
                             'use a larger input image or a smaller window_size')
        shift = self.shift_size if min(hgt, wid) > ws else 0
        pad_r, pad_b = (ws - wid % ws) % ws, (ws - hgt % ws) % ws
        if pad_r or pad_b:
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
            if guidance is not None:
                guidance = F.pad(guidance, (0, 0, 0, pad_r, 0, pad_b))
        hp, wp = hgt + pad_b, wid + pad_r
        if shift:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(2, 3))
            if guidance is not None:
                guidance = torch.roll(guidance, shifts=(-shift, -shift), dims=(1, 2))
        mask = self.get_attn_mask((hp, wp), ws, shift, device=x.device)

        nw = (hp // ws) * (wp // ws)
        x_win = self.window_partition(x.reshape(b * t, hp, wp, c), ws).view(b, t, nw, ws * ws, c)
        g_win = None
        if guidance is not None:
            g_win = self.window_partition(guidance.contiguous(), ws).view(b, nw, ws * ws, -1)
        out = self.w_msa(x_win, g_win, mask)
        out = self.window_reverse(out.reshape(b * t * nw, ws, ws, c), hp, wp, ws)
        if shift:
            out = torch.roll(out, shifts=(shift, shift), dims=(1, 2))
        out = out[:, :hgt, :wid].reshape(b, t, hgt, wid, c)
        return self.drop(out)


class PreNormMlpResidual(torch.autograd.Function):
    """``x + fc2(act(fc1(LayerNorm(x))))`` (act: GELU) that keeps less for backward.

    Autograd would keep the norm's output, ``fc1``'s output and the activation's output
    (``1 + 4 + 4`` maps of ``x``'s size for an MLP ratio of 4). This keeps ``x``, the norm's
    statistics and ``fc1``'s output, and recomputes the norm and the activation in
    backward with the same kernels (same numbers). Without autocast only (the caller uses
    the modules under autocast).
    """

    @staticmethod
    def forward(ctx, x: Tensor, ln_weight: Tensor, ln_bias: Tensor,  # type: ignore[override]
                eps: float, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor,
                approximate: str) -> Tensor:
        c = x.shape[-1]
        x2 = x.reshape(-1, c)
        normed, mean, rstd = torch.native_layer_norm(x2, [c], ln_weight, ln_bias, eps)
        hidden = F.linear(normed, w1, b1)
        del normed
        out = x2 + F.linear(F.gelu(hidden, approximate=approximate), w2, b2)
        ctx.save_for_backward(x2, mean, rstd, hidden, ln_weight, ln_bias, w1, w2)
        ctx.eps, ctx.approximate = eps, approximate
        return out.view(x.shape)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        x2, mean, rstd, hidden, ln_weight, ln_bias, w1, w2 = ctx.saved_tensors
        c = x2.shape[-1]
        g = grad.reshape(-1, c)
        act = F.gelu(hidden, approximate=ctx.approximate)
        grad_w2, grad_b2 = g.t().mm(act), g.sum(0)
        del act
        grad_hidden = torch.ops.aten.gelu_backward(g.mm(w2), hidden, approximate=ctx.approximate)
        normed = torch.native_layer_norm(x2, [c], ln_weight, ln_bias, ctx.eps)[0]
        grad_w1, grad_b1 = grad_hidden.t().mm(normed), grad_hidden.sum(0)
        del normed
        grad_x, grad_ln_w, grad_ln_b = torch.ops.aten.native_layer_norm_backward(
            grad_hidden.mm(w1), x2, [c], mean, rstd, ln_weight, ln_bias, [True, True, True])
        grad_x = grad_x + g
        return (grad_x.view(grad.shape), grad_ln_w, grad_ln_b, None, grad_w1, grad_b1, grad_w2,
                grad_b2, None)


def _plain_gelu_mlp(norm: nn.Module, ffn: FFN, x: Tensor) -> bool:
    """Whether ``ffn(norm(x), identity=x)`` is exactly ``PreNormMlpResidual``'s formula
    (LayerNorm, two linears, GELU, no dropout, no layer scale, no autocast)."""
    if torch.is_autocast_enabled(x.device.type) or x.dtype not in (torch.float32, torch.float64):
        return False
    if not isinstance(norm, nn.LayerNorm) or not norm.elementwise_affine or len(
            ffn.layers) != 3 or not ffn.add_identity or not isinstance(ffn.gamma2, nn.Identity):
        return False
    first, fc2, drop2 = ffn.layers
    if len(first) != 3 or not isinstance(first[0], nn.Linear) or not isinstance(
            first[1], nn.GELU) or not isinstance(fc2, nn.Linear):
        return False
    drops = [first[2], drop2, ffn.dropout_layer]
    return all(isinstance(d, nn.Identity) or getattr(d, 'p', getattr(d, 'drop_prob', 1.)) == 0
               or not d.training for d in drops)


class GuidedSwinBlock(BaseModule):
    """Swin block (pre-norm attention + MLP) whose attention takes image guidance.

    ``x = x + attn(LN(x), g)``, ``x = x + MLP(LN(x))``; the same layout as mmseg's
    ``SwinBlock``, built from mmcv's ``FFN`` and ``build_norm_layer``, with
    :class:`GuidedShiftWindowMSA` as the attention.

    Args:
        embed_dims (int): C.
        guidance_dims (int): G.
        num_heads (int): attention heads.
        window_size (int): window side length.
        shift (bool): shift the windows by ``window_size // 2``.
        mlp_ratio (float): MLP hidden width / C.
        drop_path_rate (float): stochastic depth.
        act_cfg (dict): MLP activation.
        norm_cfg (dict): normalisation.
        init_cfg (dict, optional): mmengine init config.
    """

    def __init__(self,
                 embed_dims: int,
                 guidance_dims: int,
                 num_heads: int,
                 window_size: int,
                 shift: bool = False,
                 mlp_ratio: float = 4.,
                 drop_path_rate: float = 0.,
                 act_cfg: ConfigType = dict(type='GELU'),
                 norm_cfg: ConfigType = dict(type='LN'),
                 init_cfg: OptConfigType = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.norm1 = build_norm_layer(norm_cfg, embed_dims)[1]
        self.attn = GuidedShiftWindowMSA(
            embed_dims=embed_dims,
            guidance_dims=guidance_dims,
            num_heads=num_heads,
            window_size=window_size,
            shift_size=window_size // 2 if shift else 0,
            dropout_layer=dict(type='DropPath', drop_prob=drop_path_rate))
        self.norm2 = build_norm_layer(norm_cfg, embed_dims)[1]
        self.ffn = FFN(
            embed_dims=embed_dims,
            feedforward_channels=int(embed_dims * mlp_ratio),
            num_fcs=2,
            ffn_drop=0.,
            dropout_layer=dict(type='DropPath', drop_prob=drop_path_rate),
            act_cfg=act_cfg,
            add_identity=True)

    def forward(self, x: Tensor, guidance: Optional[Tensor] = None) -> Tensor:
        """``x``: ``[B, T, H, W, C]``, ``guidance``: ``[B, H, W, G]``; returns ``x``'s shape."""
        x = x + self.attn(self.norm1(x), guidance)
        return self.ffn(self.norm2(x), identity=x)

    def forward_windows(self, x: Tensor, guidance: Optional[Tensor] = None,
                        mask: Optional[Tensor] = None) -> Tensor:
        """The same block on a map already in this block's window order.

        The norms, the MLP and the residuals act on each cell alone, so they run in any
        cell order; only the attention needs its windows, which this layout holds
        contiguously (no roll, partition or reverse copies).

        Args:
            x (Tensor): ``[B, T, nW, N, C]`` (cells in the order of :func:`window_order`
                for this block's shift).
            guidance (Tensor, optional): ``[B, nW, N, G]``, same order.
            mask (Tensor, optional): ``[B·T·nW, 1, N, N]`` shifted-window mask.

        Returns:
            Tensor: ``[B, T, nW, N, C]``.
        """
        x = x + self.attn.drop(self.attn.w_msa.forward_fast(self.norm1(x), guidance, mask))
        if _plain_gelu_mlp(self.norm2, self.ffn, x):
            fc1, act = self.ffn.layers[0][:2]
            fc2 = self.ffn.layers[1]
            return PreNormMlpResidual.apply(x, self.norm2.weight, self.norm2.bias,
                                            self.norm2.eps, fc1.weight, fc1.bias, fc2.weight,
                                            fc2.bias, act.approximate)
        return self.ffn(self.norm2(x), identity=x)


class SpatialAggregation(BaseModule):
    """Spatial aggregation: two guided Swin blocks (regular, then shifted windows).

    The projected image guidance is layer-normalised once here and shared by both blocks
    and by every class.

    Args:
        embed_dims (int): C.
        guidance_dims (int): G (0: no guidance).
        num_heads (int): attention heads.
        window_size (int): window side length.
        mlp_ratio (float): MLP hidden width / C.
        impl (str): ``'fast'`` (default) or ``'reference'``, see :meth:`forward`.
        init_cfg (dict, optional): mmengine init config.
    """

    def __init__(self,
                 embed_dims: int,
                 guidance_dims: int,
                 num_heads: int,
                 window_size: int,
                 mlp_ratio: float = 4.,
                 impl: str = 'fast',
                 init_cfg: OptConfigType = None) -> None:
        super().__init__(init_cfg=init_cfg)
        check_impl(impl)
        self.impl = impl
        self.window_size = window_size
        self.guidance_norm = (nn.LayerNorm(guidance_dims) if guidance_dims > 0 else None)
        self.blocks = nn.ModuleList([
            GuidedSwinBlock(embed_dims, guidance_dims, num_heads, window_size, shift=shift,
                            mlp_ratio=mlp_ratio) for shift in (False, True)
        ])

    def forward(self, x: Tensor, guidance: Optional[Tensor] = None) -> Tensor:
        """``x``: ``[B, T, H, W, C]``, ``guidance``: ``[B, H, W, G]``; returns ``x``'s shape.

        ``impl='reference'`` runs each block as mmseg's Swin does (roll, window partition,
        attention, window reverse, roll back; q, k, v copied into a heads-first layout).
        ``'fast'`` (maps whose sides are multiples of the window) gathers the cells once
        into the first block's window order, runs both blocks on window-ordered maps
        (:meth:`GuidedSwinBlock.forward_windows`), moving between the two orders with one
        gather and back to the natural order with another: 3 copies of the map instead of
        about 13 per layer, the same numbers.
        """
        if guidance is not None and self.guidance_norm is not None:
            guidance = self.guidance_norm(guidance)
        hgt, wid = x.shape[2:4]
        if self.impl == 'fast' and hgt % self.window_size == 0 and wid % self.window_size == 0:
            return self._forward_fast(x, guidance)
        for block in self.blocks:
            x = block(x, guidance)
        return x

    def _forward_fast(self, x: Tensor, guidance: Optional[Tensor]) -> Tensor:
        b, t, hgt, wid, c = x.shape
        ws = self.window_size
        nw, n = (hgt // ws) * (wid // ws), ws * ws
        x = x.reshape(b, t, hgt * wid, c)
        g = guidance.reshape(b, hgt * wid, -1) if guidance is not None else None
        current = None  # cell order of x (None: row-major)
        for block in self.blocks:
            attn = block.attn
            shift = attn.shift_size if min(hgt, wid) > ws else 0  # as the reference
            order = window_order(hgt, wid, ws, shift, device=x.device)
            if current is None:
                step = order
            else:  # from the current order straight to the new one
                position = torch.empty_like(current)
                position[current] = torch.arange(current.numel(), device=x.device)
                step = position[order]
            x = PermutePositions.apply(x, step)
            current = order
            g_win = g.index_select(1, order).view(b, nw, n, -1) if g is not None else None
            mask = attn.get_attn_mask((hgt, wid), ws, shift, device=x.device)
            if mask is not None:
                mask = batched_window_mask(mask, b * t)
            x = block.forward_windows(x.view(b, t, nw, n, c), g_win, mask).view(b, t, -1, c)
        position = torch.empty_like(current)
        position[current] = torch.arange(current.numel(), device=x.device)
        return PermutePositions.apply(x, position).view(b, t, hgt, wid, c)


def elu_feature_map(x: Tensor) -> Tensor:
    """Kernel feature map of linear attention, ``elu(x) + 1`` (positive)."""
    return F.elu(x) + 1


class LinearClassAttention(BaseModule):
    """Multi-head linear attention across classes, with text guidance in q and k.

    ``q = W_q [x ‖ g]``, ``k = W_k [x ‖ g]``, ``v = W_v x`` and, per head, with
    ``φ = elu + 1``: ``out_t = φ(q_t)ᵀ Σ_s φ(k_s) v_sᵀ / (φ(q_t)ᵀ Σ_s φ(k_s) + eps)``
    (Katharopoulos et al., 2020). Cost linear in the number of classes; no output
    projection (as in CAT-Seg). A custom module because q/k read the guidance and v does
    not, and the kernelised form has no counterpart in mmcv/mmseg.

    Args:
        embed_dims (int): C.
        guidance_dims (int): G (0: no guidance).
        num_heads (int): heads; must divide C.
        eps (float): denominator stabiliser.
        init_cfg (dict, optional): mmengine init config.
    """

    def __init__(self,
                 embed_dims: int,
                 guidance_dims: int,
                 num_heads: int,
                 eps: float = 1e-6,
                 init_cfg: OptConfigType = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if embed_dims % num_heads:
            raise ValueError(f'num_heads={num_heads} does not divide embed_dims={embed_dims}; '
                             f'choose a divisor of {embed_dims}')
        self.num_heads = num_heads
        self.guidance_dims = guidance_dims
        self.eps = eps
        self.q = nn.Linear(embed_dims + guidance_dims, embed_dims)
        self.k = nn.Linear(embed_dims + guidance_dims, embed_dims)
        self.v = nn.Linear(embed_dims, embed_dims)

    def forward(self,
                x: Tensor,
                guidance: Optional[Tensor] = None,
                pad_x: Optional[Tensor] = None,
                pad_guidance: Optional[Tensor] = None,
                num_pad: int = 0) -> Tensor:
        """
        Args:
            x (Tensor): ``[B, S, T, C]`` (S spatial positions, T class tokens).
            guidance (Tensor, optional): ``[B, T, G]``, shared by the S positions.
            pad_x (Tensor, optional): ``[C]``, one padding token, present ``num_pad`` times
                in every class sequence (as key and value only, see below).
            pad_guidance (Tensor, optional): ``[G]``, the padding token's guidance.
            num_pad (int): how many copies of the padding token the sequence has.

        Returns:
            Tensor: ``[B, S, T, C]``, the outputs of the T real tokens.

        Padding without copies: the ``num_pad`` padding tokens are identical (same token,
        same guidance, at every position), so their keys and values are identical and
        they enter the sums over keys ``num_pad`` times; their own outputs are discarded
        by the caller, so their queries are never needed. Adding ``num_pad ×`` one token's
        terms gives the same numbers as attending over ``T + num_pad`` tokens, at the
        cost of T.
        """
        b, s, t, c = x.shape
        h = self.num_heads
        total = t + num_pad
        g = guidance.unsqueeze(1) if guidance is not None else None  # broadcast over S
        shape = (b, s, t, h, c // h)
        q = elu_feature_map(guided_linear(self.q, x, g, self.guidance_dims)).view(shape)
        k = elu_feature_map(guided_linear(self.k, x, g, self.guidance_dims)).view(shape)
        # values are divided by the token count before the sum and the result multiplied
        # back: the same numbers, but the sums stay in range under fp16.
        v = self.v(x).view(shape) / total
        kv = torch.einsum('bsthd,bsthe->bshde', k, v)
        k_sum = k.sum(dim=2)
        if num_pad > 0:
            pg = pad_guidance if guidance is not None else None
            k_pad = elu_feature_map(guided_linear(self.k, pad_x, pg, self.guidance_dims))
            k_pad = k_pad.view(h, c // h)
            v_pad = self.v(pad_x).view(h, c // h) / total
            kv = kv + num_pad * torch.einsum('hd,he->hde', k_pad, v_pad).to(kv.dtype)
            k_sum = k_sum + num_pad * k_pad.to(k_sum.dtype)
        z = 1. / (torch.einsum('bsthd,bshd->bsth', q, k_sum) + self.eps)
        out = torch.einsum('bsthd,bshde->bsthe', q, kv) * (z.unsqueeze(-1) * total)
        return out.reshape(b, s, t, c)


class ClassAggregation(BaseModule):
    """Class aggregation: pooled linear attention across classes with learnable padding.

    Steps (CAT-Seg's class aggregation): average-pool the cost embedding spatially
    (``pool_size`` in training, ``test_pool_size`` in eval; 1 = no pooling); pad the class
    axis to ``pad_len`` tokens with a learnable token (and a learnable text guidance for
    it) when there are fewer classes; ``y = y + attn(LN(y), g)``, ``y = y + MLP(LN(y))``;
    drop the padding tokens; upsample back (bilinear, align_corners=True) and add to the
    input: ``x + y`` (as in CAT-Seg the attention branch carries its own residual, so
    without pooling this is ``2x + Δ``).

    The padding tokens only act as extra keys/values of the real classes: their outputs
    are dropped, so they can never appear in a prediction. Since they are identical, they
    are not materialised: :class:`LinearClassAttention` counts one token ``pad_len - T``
    times (same numbers as CAT-Seg's explicit padding; class aggregation then costs T
    tokens instead of ``pad_len``, e.g. 8× less for a 32-class vocabulary).

    Args:
        embed_dims (int): C.
        guidance_dims (int): G of the text guidance (0: none).
        num_heads (int): heads.
        mlp_ratio (float): MLP hidden width / C.
        pool_size (int): spatial average-pooling window in training.
        test_pool_size (int): pooling window in eval.
        pad_len (int): pad the class axis to this many tokens (0: never pad).
        norm_cfg (dict): normalisation.
        act_cfg (dict): MLP activation.
        init_cfg (dict, optional): mmengine init config.
    """

    def __init__(self,
                 embed_dims: int,
                 guidance_dims: int,
                 num_heads: int,
                 mlp_ratio: float = 4.,
                 pool_size: int = 2,
                 test_pool_size: int = 1,
                 pad_len: int = 256,
                 norm_cfg: ConfigType = dict(type='LN'),
                 act_cfg: ConfigType = dict(type='ReLU'),
                 init_cfg: OptConfigType = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.pool_size = pool_size
        self.test_pool_size = test_pool_size
        self.pad_len = pad_len
        self.norm1 = build_norm_layer(norm_cfg, embed_dims)[1]
        self.attn = LinearClassAttention(embed_dims, guidance_dims, num_heads)
        self.norm2 = build_norm_layer(norm_cfg, embed_dims)[1]
        self.ffn = FFN(
            embed_dims=embed_dims,
            feedforward_channels=int(embed_dims * mlp_ratio),
            num_fcs=2,
            ffn_drop=0.,
            act_cfg=act_cfg,
            add_identity=True)
        self.pad_token = nn.Parameter(torch.zeros(embed_dims)) if pad_len > 0 else None
        self.pad_guidance = (
            nn.Parameter(torch.zeros(guidance_dims)) if pad_len > 0 and guidance_dims > 0 else None)

    def forward(self, x: Tensor, guidance: Optional[Tensor] = None) -> Tensor:
        """
        Args:
            x (Tensor): ``[B, T, H, W, C]``.
            guidance (Tensor, optional): projected text guidance ``[B, T, G]``.

        Returns:
            Tensor: ``[B, T, H, W, C]``.
        """
        b, t, hgt, wid, c = x.shape
        pool = self.pool_size if self.training else self.test_pool_size
        if pool > 1:
            y = F.avg_pool2d(x.permute(0, 1, 4, 2, 3).reshape(b * t, c, hgt, wid), pool)
            hp, wp = y.shape[-2:]
            y = y.view(b, t, c, hp * wp).permute(0, 3, 1, 2)  # [B, S, T, C]
        else:
            hp, wp = hgt, wid
            y = x.permute(0, 2, 3, 1, 4).reshape(b, hgt * wid, t, c)
        n_pad = max(self.pad_len - t, 0) if self.pad_token is not None else 0
        pad_x = self.norm1(self.pad_token) if n_pad > 0 else None
        y = y + self.attn(self.norm1(y), guidance, pad_x, self.pad_guidance, n_pad)
        y = self.ffn(self.norm2(y), identity=y)
        if pool > 1:
            y = y.permute(0, 2, 3, 1).reshape(b * t, c, hp, wp)
            y = F.interpolate(y, size=(hgt, wid), mode='bilinear', align_corners=True)
            y = y.view(b, t, c, hgt, wid).permute(0, 1, 3, 4, 2)
        else:
            y = y.reshape(b, hgt, wid, t, c).permute(0, 3, 1, 2, 4)
        return x + y


class AggregationLayer(BaseModule):
    """One aggregation layer: spatial aggregation, then class aggregation.

    Args:
        embed_dims (int): C.
        appearance_guidance_dims (int): channels of the projected image guidance.
        text_guidance_dims (int): channels of the projected text guidance.
        num_heads (int): heads of both attentions.
        window_size (int): Swin window.
        mlp_ratio (float): MLP hidden width / C (both MLPs).
        pool_size (int): class-aggregation pooling in training.
        test_pool_size (int): class-aggregation pooling in eval.
        pad_len (int): class padding length (0: none).
        impl (str): ``'fast'`` (default) or ``'reference'`` computation.
        init_cfg (dict, optional): mmengine init config.
    """

    def __init__(self,
                 embed_dims: int,
                 appearance_guidance_dims: int,
                 text_guidance_dims: int,
                 num_heads: int,
                 window_size: int,
                 mlp_ratio: float = 4.,
                 pool_size: int = 2,
                 test_pool_size: int = 1,
                 pad_len: int = 256,
                 impl: str = 'fast',
                 init_cfg: OptConfigType = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.spatial = SpatialAggregation(embed_dims, appearance_guidance_dims, num_heads,
                                          window_size, mlp_ratio, impl=impl)
        self.cls = ClassAggregation(embed_dims, text_guidance_dims, num_heads, mlp_ratio,
                                    pool_size, test_pool_size, pad_len)

    def forward(self, x: Tensor, appearance_guidance: Optional[Tensor],
                text_guidance: Optional[Tensor]) -> Tensor:
        """``x``: ``[B, T, H, W, C]``; guidances ``[B, H, W, Ga]`` and ``[B, T, Gt]``."""
        return self.cls(self.spatial(x, appearance_guidance), text_guidance)


def _parity_taps(device: torch.device, dtype: torch.dtype) -> Tensor:
    """Selection tensor ``S[a, r, t, u]`` (all 0/1) of :func:`compose_up_conv`.

    Output row ``2i + a`` of a ×2 transposed conv (kernel 2, stride 2) followed by a 3×3
    conv (padding 1) reads, through the 3×3 tap ``t`` (offset ``t - 1``), the upsampled
    row ``2i + a + t - 1``, which the transposed conv made from input row
    ``i + (a + t - 1) // 2`` with its tap ``u = (a + t - 1) % 2``. On an input padded by
    one row that input row is row ``r = (a + t - 1) // 2 + 1 - a`` ∈ {0, 1} of a 2×2
    window anchored at ``i + a``. ``S[a, r, t, u] = 1`` for each such (a, t).
    """
    sel = torch.zeros(2, 2, 3, 2, device=device, dtype=dtype)
    for a in range(2):
        for t in range(3):
            d = a + t - 1
            sel[a, d // 2 + 1 - a, t, d % 2] = 1
    return sel


def compose_up_conv(up_weight: Tensor, conv_weight: Tensor) -> Tensor:
    """One 2×2 kernel per output parity for ``conv3x3(conv_transpose_2x2_s2(x))``.

    A transposed conv with kernel 2 and stride 2 followed by a 3×3 conv (padding 1) is
    linear in ``x``; every output pixel ``(2i + a, 2j + b)`` depends on a 2×2 window of
    ``x``. So the pair equals ``F.conv2d(x, K, padding=1)`` with ``K`` stacking four 2×2
    kernels (one per parity ``(a, b)``), followed by :class:`ParityInterleave`, plus the
    transposed conv's bias pushed through the 3×3 conv (done by the caller, once per
    image). Per output pixel this costs ``4·C_in`` multiply-adds per output channel
    instead of ``9·C_up`` (+ the transposed conv): 0.53× for CAT-Seg's decoder stages.

    Args:
        up_weight (Tensor): transposed-conv weight ``[C_in, C_up, 2, 2]``.
        conv_weight (Tensor): 3×3 conv weight restricted to the upsampled channels
            ``[C_out, C_up, 3, 3]``.

    Returns:
        Tensor: ``[4·C_out, C_in, 2, 2]``, output channel ``(2a + b)·C_out + o``.
    """
    sel = _parity_taps(up_weight.device, up_weight.dtype)
    device = up_weight.device.type
    # in the weights' own precision even under autocast (the conv that uses the kernel
    # is cast as usual): a bf16 product of bf16-rounded weights would add an error
    with (torch.autocast(device, enabled=False) if torch.amp.is_autocast_available(device)
          else contextlib.nullcontext()):
        k = torch.einsum('ardt,bseu,omde,cmtu->abocrs', sel, sel, conv_weight, up_weight)
    return k.reshape(4 * conv_weight.shape[0], up_weight.shape[0], 2, 2)


class ParityInterleave(torch.autograd.Function):
    """``y [N, 4·C, H+1, W+1]`` (channel blocks ordered by parity ``(a, b)``) →
    ``out [N, 2H, 2W, C]`` (channels last) with
    ``out[n, 2i+a, 2j+b, c] = y[n, (2a+b)·C + c, i+a, j+b] (+ extra[n // T, 2i+a, 2j+b, c])``.

    ``extra`` (optional, ``[N / T, 2H, 2W, C]``) is a per-image term shared by the ``T``
    consecutive maps of an image, added while interleaving (no separate pass). A custom
    backward because autograd's slice assignment would clone the full gradient per parity.
    """

    @staticmethod
    def forward(ctx, y: Tensor, height: int, width: int,  # type: ignore[override]
                extra: Optional[Tensor] = None) -> Tensor:
        n, c4 = y.shape[:2]
        c = c4 // 4
        src = y.permute(0, 2, 3, 1).reshape(n, height + 1, width + 1, 2, 2, c)
        out = y.new_empty(n, 2 * height, 2 * width, c)
        imgs = n if extra is None else extra.shape[0]
        dst = out.view(imgs, n // imgs, height, 2, width, 2, c)
        src = src.view(imgs, n // imgs, height + 1, width + 1, 2, 2, c)
        if extra is not None:
            extra = extra.to(y.dtype).reshape(imgs, 1, height, 2, width, 2, c)
        for a in range(2):
            for b in range(2):
                part = src[:, :, a:a + height, b:b + width, a, b]
                if extra is None:
                    dst[:, :, :, a, :, b] = part
                else:
                    torch.add(part, extra[:, :, :, a, :, b], out=dst[:, :, :, a, :, b])
        ctx.shape = (n, height, width, c, imgs, extra is not None)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        n, height, width, c, imgs, with_extra = ctx.shape
        g = grad.reshape(n, height, 2, width, 2, c)
        out = grad.new_empty(n, height + 1, width + 1, 2, 2, c)
        for a in range(2):
            for b in range(2):
                out[:, a:a + height, b:b + width, a, b] = g[:, :, a, :, b]
                # the row and the column of parity (a, b) that no output reads
                out[:, height if a == 0 else 0, :, a, b] = 0
                out[:, :, width if b == 0 else 0, a, b] = 0
        grad_y = out.view(n, height + 1, width + 1, 4 * c).permute(0, 3, 1, 2)
        grad_extra = None
        if with_extra and ctx.needs_input_grad[3]:
            grad_extra = grad.reshape(imgs, n // imgs, 2 * height, 2 * width, c).sum(1)
        return grad_y, None, None, grad_extra


IMPLS = ('fast', 'reference')


def check_impl(impl: str) -> None:
    """Refuse an unknown ``impl`` (the head's and its blocks' computation path)."""
    if impl not in IMPLS:
        raise ValueError(f'impl={impl!r}; use one of {IMPLS} (\'fast\': the same numbers '
                         "with less work, the default; 'reference': CAT-Seg's order of "
                         'operations, kept to check the fast path against)')


def group_norm_cfg(channels: int, channels_per_group: int = 16) -> dict:
    """GroupNorm config with ``channels // 16`` groups (CAT-Seg's decoder), at least 1."""
    groups = max(1, channels // channels_per_group)
    if channels % groups:
        raise ValueError(f'decoder channels {channels} are not divisible into {groups} '
                         f'GroupNorm groups; use a multiple of {channels_per_group}')
    return dict(type='GN', num_groups=groups)


class GroupNormReluConv(torch.autograd.Function):
    """``conv2d(relu(group_norm(x)), weight, bias, padding)`` that keeps only ``x`` and the
    norm's statistics for backward (autograd would also keep the activation, a map of
    ``x``'s size); the norm and the ReLU are recomputed in backward with the same kernels.
    Stride 1, no dilation, one group; no autocast (the caller checks)."""

    @staticmethod
    def forward(ctx, x: Tensor, gn_weight: Tensor, gn_bias: Tensor,  # type: ignore[override]
                groups: int, eps: float, weight: Tensor, bias: Optional[Tensor],
                padding: int) -> Tensor:
        n, c = x.shape[:2]
        normed, mean, rstd = torch.ops.aten.native_group_norm(
            x, gn_weight, gn_bias, n, c, x[0, 0].numel(), groups, eps)
        out = F.conv2d(normed.relu_(), weight, bias, padding=padding)
        ctx.save_for_backward(x, mean, rstd, gn_weight, gn_bias, weight)
        ctx.meta = (groups, eps, padding, None if bias is None else list(bias.shape))
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        x, mean, rstd, gn_weight, gn_bias, weight = ctx.saved_tensors
        groups, eps, padding, bias_sizes = ctx.meta
        n, c = x.shape[:2]
        hw = x[0, 0].numel()
        act = torch.ops.aten.native_group_norm(x, gn_weight, gn_bias, n, c, hw, groups,
                                               eps)[0].relu_()
        grad_act, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
            grad, act, weight, bias_sizes, [1, 1], [padding, padding], [1, 1], False, [0, 0],
            1, [True, True, bias_sizes is not None])
        grad_normed = torch.ops.aten.threshold_backward(grad_act, act, 0)
        del act, grad_act
        grad_x, grad_gn_w, grad_gn_b = torch.ops.aten.native_group_norm_backward(
            grad_normed, x, mean, rstd, gn_weight, n, c, hw, groups, [True, True, True])
        return (grad_x, grad_gn_w, grad_gn_b, None, None, grad_weight, grad_bias, None)


def _gn_relu(module: nn.Module) -> bool:
    """Whether a ``ConvModule`` ends with an affine ``nn.GroupNorm`` and a ReLU (in that
    order), i.e. its norm + activation can go into :class:`GroupNormReluConv`."""
    return (isinstance(module, ConvModule) and module.order == ('conv', 'norm', 'act')
            and isinstance(module.norm, nn.GroupNorm) and module.norm.affine
            and isinstance(getattr(module, 'activate', None), nn.ReLU))


def norm_act_conv(x: Tensor, pending: Optional[nn.Module], weight: Tensor,
                  bias: Optional[Tensor], padding: int) -> Tensor:
    """``conv2d(act(norm(x)))`` with ``pending``'s (a ``ConvModule``'s) norm and activation
    (``pending=None``: ``conv2d(x)``); GroupNorm + ReLU through :class:`GroupNormReluConv`
    when there is no autocast."""
    if pending is None:
        return F.conv2d(x, weight, bias, padding=padding)
    if _gn_relu(pending) and not torch.is_autocast_enabled(x.device.type):
        gn = pending.norm
        return GroupNormReluConv.apply(x, gn.weight, gn.bias, gn.num_groups, gn.eps, weight,
                                       bias, padding)
    return F.conv2d(pending.activate(pending.norm(x)), weight, bias, padding=padding)


class GuidedUpBlock(BaseModule):
    """Decoder stage: ×2 transposed conv, concat projected guidance, two 3×3 conv-norm-act.

    The transposed conv outputs ``in_channels - guidance_channels`` channels so that the
    concatenation with the guidance has ``in_channels`` again.

    Args:
        in_channels (int): input channels.
        out_channels (int): output channels.
        guidance_channels (int): channels of the guidance concatenated after upsampling.
        norm_cfg (dict, optional): normalisation of the convs (None: GroupNorm with
            ``out_channels // 16`` groups).
        act_cfg (dict): activation.
        impl (str): ``'fast'`` (default) or ``'reference'``, see :meth:`forward`.
        init_cfg (dict, optional): mmengine init config.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 guidance_channels: int,
                 norm_cfg: OptConfigType = None,
                 act_cfg: ConfigType = dict(type='ReLU'),
                 impl: str = 'fast',
                 init_cfg: OptConfigType = None) -> None:
        super().__init__(init_cfg=init_cfg)
        check_impl(impl)
        self.impl = impl
        if guidance_channels >= in_channels:
            raise ValueError(f'decoder guidance channels {guidance_channels} must be fewer '
                             f'than the stage input channels {in_channels}')
        self.guidance_channels = guidance_channels
        self.up = nn.ConvTranspose2d(in_channels, in_channels - guidance_channels, 2, stride=2)
        norm = norm_cfg if norm_cfg is not None else group_norm_cfg(out_channels)
        self.convs = nn.Sequential(
            ConvModule(in_channels, out_channels, 3, padding=1, norm_cfg=norm, act_cfg=act_cfg),
            ConvModule(out_channels, out_channels, 3, padding=1, norm_cfg=norm, act_cfg=act_cfg))

    def forward(self, x: Tensor, guidance: Optional[Tensor] = None) -> Tensor:
        """
        Args:
            x (Tensor): ``[B*T, C_in, H, W]`` (image-major, class-minor).
            guidance (Tensor, optional): ``[B, G, 2H, 2W]``, shared by the T classes.

        Returns:
            Tensor: ``[B*T, C_out, 2H, 2W]``.

        ``impl='reference'`` computes it as written above (CAT-Seg's order). ``'fast'``
        gives the same numbers with less work: the transposed conv and the class part of
        the first 3×3 conv are one composed 2×2-per-parity conv (:func:`compose_up_conv`,
        0.53× the multiply-adds); the guidance part of that conv, and the transposed
        conv's bias, are convolved once per image and added to every class (CAT-Seg
        concatenates a copy of the guidance to every class); all maps are channels-last.
        """
        if self.fast_path_applies(guidance):
            return self._forward_fast(x, guidance)
        return self._forward_reference(x, guidance)

    def fast_path_applies(self, guidance: Optional[Tensor]) -> bool:
        """Whether :meth:`forward` takes the fast path (else the reference one)."""
        first = self.convs[0]
        return (self.impl == 'fast' and guidance is not None
                and first.order == ('conv', 'norm', 'act') and type(first.conv) is nn.Conv2d
                and first.conv.padding == (1, 1) and not first.with_explicit_padding)

    def forward_deferred(self, x: Tensor, guidance: Tensor,
                         pending: Optional[nn.Module] = None) -> Tuple[Tensor, nn.Module]:
        """The fast path, with the norm and activation at both ends left to fused ops.

        Args:
            x (Tensor): ``[B*T, C_in, H, W]``, before ``pending``'s norm and activation.
            guidance (Tensor): ``[B, G, 2H, 2W]``.
            pending (nn.Module, optional): the ``ConvModule`` whose norm and activation
                ``x`` still needs (the previous stage's last one).

        Returns:
            tuple: the second conv's output ``[B*T, C_out, 2H, 2W]`` before its norm and
            activation, and the ``ConvModule`` that holds them (for the next conv).
        """
        first, second = self.convs
        y = self._first_conv(x, guidance, pending)
        if _gn_relu(first) and _gn_relu(second):
            return norm_act_conv(y, first, second.conv.weight, second.conv.bias,
                                 second.conv.padding[0]), second
        return second.conv(first.activate(first.norm(y))), second

    def _first_conv(self, x: Tensor, guidance: Tensor,
                    pending: Optional[nn.Module] = None) -> Tensor:
        """The first conv of the stage (before its norm) on ``act(norm(x))`` (``pending``)."""
        bt, _, hgt, wid = x.shape
        b = guidance.shape[0]
        first = self.convs[0]
        weight = first.conv.weight  # [C_out, C_up + G, 3, 3]
        c_up = self.up.out_channels
        x = x.contiguous(memory_format=torch.channels_last)
        y = norm_act_conv(x, pending, compose_up_conv(self.up.weight, weight[:, :c_up]),
                          None, 1)
        # per image: the transposed conv's bias (a constant map: its 3x3 conv differs
        # only at the border) and the guidance, through the full first conv
        bias_map = self.up.bias.view(1, c_up, 1, 1).expand(b, c_up, 2 * hgt, 2 * wid)
        per_image = F.conv2d(
            torch.cat([bias_map, guidance.to(bias_map.dtype)], dim=1), weight,
            first.conv.bias, padding=1)
        y = ParityInterleave.apply(y, hgt, wid, per_image.permute(0, 2, 3, 1))
        return y.permute(0, 3, 1, 2)  # [B*T, C_out, 2H, 2W], channels-last

    def _forward_fast(self, x: Tensor, guidance: Tensor) -> Tensor:
        first = self.convs[0]
        y = self._first_conv(x, guidance)
        if first.with_norm:
            y = first.norm(y)
        if first.with_activation:
            y = first.activate(y)
        return self.convs[1](y)

    def _forward_reference(self, x: Tensor, guidance: Optional[Tensor] = None) -> Tensor:
        x = self.up(x)
        if guidance is not None:
            b = guidance.shape[0]
            t = x.shape[0] // b
            guidance = guidance.unsqueeze(1).expand(b, t, *guidance.shape[1:])
            x = torch.cat([x, guidance.reshape(b * t, *guidance.shape[2:])], dim=1)
        return self.convs(x)

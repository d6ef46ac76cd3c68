"""Cost-aggregation decode head of H-CLIP (the CAT-Seg architecture, CVPR'24)."""
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmcv.cnn import ConvModule
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.registry import MODELS
from mmseg.utils import ConfigType, OptConfigType, OptMultiConfig
from torch import Tensor

from ..losses.one_hot_bce_loss import OneHotBCELoss
from .cost_aggregation_blocks import (AggregationLayer, GuidedUpBlock, check_impl,
                                      norm_act_conv)

#: Logit given to the classes that the top-``pad_len`` selection drops.
DROPPED_CLASS_LOGIT = -100.


@MODELS.register_module()
class HCLIPCostAggHead(BaseDecodeHead):
    """Cost-aggregation head: CLIP image-text cost volume → per-class segmentation logits.

    Pipeline (reference hyper-parameters for ViT-B/16 at 384², in brackets):

    1. Cost volume: cosine similarity of the dense image embeddings ``[B, C, h, w]``
       with every class's P text embeddings → ``[B, N, P, h, w]`` [C=512, h=w=24, P=1].
    2. Cost embedding: a ``k×k`` conv maps the P prompt channels of each class to
       ``channels`` [7×7, 128].
    3. ``num_layers`` aggregation layers [2], each:
       spatial aggregation — two Swin blocks (window ``window_size``, shifts 0 and
       ``window_size // 2``) [12, shift 6, 4 heads, MLP ×4] whose queries and keys also
       see the image guidance (the dense embeddings themselves, 3×3 conv + ReLU to
       ``appearance_guidance_channels`` [128], layer-normalised);
       class aggregation — linear attention across classes (elu + 1 kernel) whose queries
       and keys also see the text guidance (prompt-averaged text embeddings, linear + ReLU
       to ``text_guidance_channels`` [128]), on a ``pool_size`` average-pooled map in
       training [2×2] and ``test_pool_size`` in eval [1×1].
    4. Upsampling decoder, one stage per entry of ``decoder_channels`` [128 → 64 → 32,
       24 → 48 → 96]: ×2 transposed conv, concatenation with guidance from an intermediate
       CLIP block (transposed conv ×2^(i+1) from ``guidance_channels`` to
       ``decoder_guidance_channels[i]`` [768 → 256, 128], then 3×3 conv + ReLU to
       ``decoder_guidance_proj_channels[i]`` [32, 16]), two 3×3 conv + GroupNorm + ReLU.
    5. A 3×3 conv to one logit per class and pixel.

    Class count. The vocabulary may change at every call (train and test classes differ),
    so BaseDecodeHead's ``conv_seg`` is not used (it is removed) and ``num_classes`` is only
    the nominal training count that mmseg's segmentor reads. With ``pad_len`` [256]:
    fewer classes → the class aggregation pads the class axis with learnable tokens to
    ``pad_len`` (they never reach the output); more classes → per image, the ``pad_len``
    classes with the highest cosine similarity (max over prompts and positions) are
    aggregated and all others get logit ``-100`` in the returned ``[B, N, ...]`` tensor.
    ``pad_len=0`` disables both.

    Loss: :class:`OneHotBCELoss` (per-class BCE with logits against one-hot labels, at the
    label resolution). Prediction: sigmoid scores (the segmentor takes the argmax).

    Args:
        in_channels (int): C, the joint image-text embedding width of ``inputs['dense']``
            and ``inputs['text']``. Default: 512.
        guidance_channels (int): D, width of the intermediate image-block features in
            ``inputs['guidance']`` (CLIP visual width). Default: 768.
        feature_size (tuple[int, int]): nominal h, w of the dense map (384² / 16). The head
            accepts any h, w of at least ``window_size`` (not a multiple of it: padded as
            in mmseg's Swin); this value is only checked against ``window_size``.
            Default: (24, 24).
        prompt_channels (int): P, prompt templates per class. Default: 1.
        channels (int): width of the cost embedding in the aggregation layers.
            Default: 128.
        num_layers (int): aggregation layers. Default: 2.
        num_heads (int): attention heads (spatial and class). Default: 4.
        window_size (int): Swin window side. Default: 12.
        mlp_ratio (float): MLP hidden width / ``channels`` in both attentions. Default: 4.
        appearance_guidance_channels (int): width of the projected image guidance used by
            spatial aggregation (0: no image guidance). Default: 128.
        text_guidance_channels (int): width of the projected text guidance used by class
            aggregation (0: no text guidance). Default: 128.
        pool_size (int): class-aggregation average pooling in training. Default: 2.
        test_pool_size (int): class-aggregation average pooling in eval. Default: 1.
        cost_embed_kernel_size (int): kernel of the cost-embedding conv. Default: 7.
        decoder_channels (Sequence[int]): output channels of the decoder stages; each
            stage doubles the resolution. Default: (64, 32).
        decoder_guidance_channels (Sequence[int]): channels that each ``inputs['guidance']``
            entry is upsampled to (transposed conv, ×2 for the first stage, ×4 for the
            second, ...). Default: (256, 128).
        decoder_guidance_proj_channels (Sequence[int]): channels of the guidance
            concatenated in each decoder stage. Default: (32, 16).
        pad_len (int): fixed class-token count of class aggregation (pad below, top-k
            above; 0 disables). Default: 256.
        ignore_as_negative (bool): in the BCE loss, pixels labelled ``ignore_index``
            count as all-negative (True, the reference) or are excluded (False). Written
            into every :class:`OneHotBCELoss` of ``loss_decode``. Default: True.
        num_classes (int): nominal (training) class count, for mmseg's segmentor; the
            output follows the classes of ``inputs['text']``. Default: 171.
        ignore_index (int): label value ignored by the loss. Must not be a valid class
            index (255 is a valid class in ADE-847). Default: 255.
        loss_decode (dict | list[dict]): loss config(s). Default:
            ``dict(type='OneHotBCELoss', loss_weight=1.0)``.
        norm_cfg (dict, optional): normalisation of the decoder convs; None → GroupNorm
            with ``channels // 16`` groups (the reference). Default: None.
        act_cfg (dict): activation of projections and decoder. Default: ReLU.
        align_corners (bool): of the resizes to the label / image size. Default: False.
        with_cp (bool): gradient checkpointing of the aggregation layers. Default: False.
        impl (str): how the head computes: ``'fast'`` or ``'reference'`` (CAT-Seg's order
            of operations: guidance concatenated to every class, channels-first maps, a
            transposed conv then a 3×3 conv in each decoder stage). Both give the same
            numbers up to float rounding (tested); ``'fast'`` does less work and moves less
            memory (docs/profile_train_step.md). Can be changed after building
            (``head.impl = 'reference'``). Default: 'fast'.
        conv_init (str): initialisation of the convolutions built as mmcv ``ConvModule``
            (image-guidance projection, decoder-guidance projections, decoder convs):
            ``'pytorch'`` keeps PyTorch's default ``reset_parameters`` as CAT-Seg does (its
            plain ``nn.Conv2d``); ``'kaiming'`` is ``ConvModule``'s own (Kaiming normal,
            fan-out, zero bias). All other layers use PyTorch's defaults either way.
            Default: 'pytorch'.
        init_cfg (dict | list[dict], optional): mmengine init config. Default: None.
        **kwargs: other :class:`BaseDecodeHead` arguments (e.g. ``sampler``).
    """

    def __init__(self,
                 in_channels: int = 512,
                 guidance_channels: int = 768,
                 feature_size: Tuple[int, int] = (24, 24),
                 prompt_channels: int = 1,
                 channels: int = 128,
                 num_layers: int = 2,
                 num_heads: int = 4,
                 window_size: int = 12,
                 mlp_ratio: float = 4.,
                 appearance_guidance_channels: int = 128,
                 text_guidance_channels: int = 128,
                 pool_size: int = 2,
                 test_pool_size: int = 1,
                 cost_embed_kernel_size: int = 7,
                 decoder_channels: Sequence[int] = (64, 32),
                 decoder_guidance_channels: Sequence[int] = (256, 128),
                 decoder_guidance_proj_channels: Sequence[int] = (32, 16),
                 pad_len: int = 256,
                 ignore_as_negative: bool = True,
                 num_classes: int = 171,
                 ignore_index: int = 255,
                 loss_decode: ConfigType = dict(type='OneHotBCELoss', loss_weight=1.0),
                 norm_cfg: OptConfigType = None,
                 act_cfg: ConfigType = dict(type='ReLU'),
                 align_corners: bool = False,
                 with_cp: bool = False,
                 impl: str = 'fast',
                 conv_init: str = 'pytorch',
                 init_cfg: OptMultiConfig = None,
                 **kwargs) -> None:
        check_impl(impl)
        if conv_init not in ('pytorch', 'kaiming'):
            raise ValueError(f"conv_init={conv_init!r}; use 'pytorch' (PyTorch's default "
                             "initialisation, as CAT-Seg) or 'kaiming' (mmcv ConvModule's)")
        self._check_config(feature_size, window_size, channels, num_heads, decoder_channels,
                           decoder_guidance_channels, decoder_guidance_proj_channels, pad_len,
                           pool_size, test_pool_size)
        _check_loss_switch(loss_decode, ignore_as_negative)
        super().__init__(
            in_channels,
            channels,
            num_classes=num_classes,
            dropout_ratio=0.,
            norm_cfg=norm_cfg,
            act_cfg=act_cfg,
            loss_decode=loss_decode,
            ignore_index=ignore_index,
            align_corners=align_corners,
            init_cfg=init_cfg,
            **kwargs)
        # The class axis follows the vocabulary at run time: no fixed classifier.
        del self.conv_seg
        losses = self.loss_decode if isinstance(self.loss_decode, nn.ModuleList) else [
            self.loss_decode]
        for loss in losses:
            if isinstance(loss, OneHotBCELoss):
                loss.ignore_as_negative = ignore_as_negative

        self.guidance_channels = guidance_channels
        self.feature_size = tuple(feature_size)
        self.prompt_channels = prompt_channels
        self.window_size = window_size
        self.pad_len = pad_len
        self.ignore_as_negative = ignore_as_negative
        self.with_cp = with_cp
        self.conv_init = conv_init

        self.cost_embed = nn.Conv2d(prompt_channels, channels, cost_embed_kernel_size,
                                    padding=cost_embed_kernel_size // 2)
        self.appearance_guidance_proj = ConvModule(
            in_channels, appearance_guidance_channels, 3, padding=1,
            act_cfg=act_cfg) if appearance_guidance_channels > 0 else None
        self.text_guidance_proj = nn.Sequential(
            nn.Linear(in_channels, text_guidance_channels),
            nn.ReLU()) if text_guidance_channels > 0 else None
        self.layers = nn.ModuleList([
            AggregationLayer(channels, appearance_guidance_channels, text_guidance_channels,
                             num_heads, window_size, mlp_ratio, pool_size, test_pool_size,
                             pad_len) for _ in range(num_layers)
        ])
        # decoder guidance i: intermediate block i, upsampled ×2^(i+1) to the resolution
        # of decoder stage i, then projected.
        self.decoder_guidance_up = nn.ModuleList([
            nn.ConvTranspose2d(guidance_channels, c, 2**(i + 1), stride=2**(i + 1))
            for i, c in enumerate(decoder_guidance_channels)
        ])
        self.decoder_guidance_proj = nn.ModuleList([
            ConvModule(c, p, 3, padding=1, act_cfg=act_cfg)
            for c, p in zip(decoder_guidance_channels, decoder_guidance_proj_channels)
        ])
        stage_in = [channels] + list(decoder_channels[:-1])
        self.decoder = nn.ModuleList([
            GuidedUpBlock(i, o, g, norm_cfg=norm_cfg, act_cfg=act_cfg)
            for i, o, g in zip(stage_in, decoder_channels, decoder_guidance_proj_channels)
        ])
        self.cls_head = nn.Conv2d(decoder_channels[-1], 1, 3, padding=1)
        self.impl = impl
        self._reset_conv_modules()

    @property
    def impl(self) -> str:
        """``'fast'`` or ``'reference'``; setting it switches every block of the head."""
        return self._impl

    @impl.setter
    def impl(self, value: str) -> None:
        check_impl(value)
        self._impl = value
        for module in self.modules():
            if module is not self and hasattr(module, 'impl'):
                module.impl = value

    def _reset_conv_modules(self) -> None:
        """With ``conv_init='pytorch'``, give every ``ConvModule`` conv PyTorch's default
        initialisation (``ConvModule`` re-initialises its conv with Kaiming normal)."""
        if self.conv_init != 'pytorch':
            return
        for module in self.modules():
            if isinstance(module, ConvModule):
                module.conv.reset_parameters()

    def init_weights(self) -> None:
        """mmengine's initialisation (``init_cfg``; it also calls every ``ConvModule``'s
        own ``init_weights``), then ``conv_init`` again, unless ``init_cfg`` (a
        pretrained head) decides alone."""
        first_call = not self.is_init
        super().init_weights()
        if first_call and not self.init_cfg:
            self._reset_conv_modules()

    @staticmethod
    def _check_config(feature_size, window_size, channels, num_heads, decoder_channels,
                      decoder_guidance_channels, decoder_guidance_proj_channels, pad_len,
                      pool_size, test_pool_size) -> None:
        if not isinstance(window_size, int) or isinstance(window_size, bool) or window_size < 1:
            raise ValueError(f'decode_head.window_size={window_size!r} must be a positive '
                             'integer (the side of the Swin attention window in feature-map '
                             'cells; 12 in the reference ViT-B/16 config)')
        if min(feature_size) < window_size:
            raise ValueError(f'window_size={window_size} is larger than the feature map '
                             f'{tuple(feature_size)}; choose a window of at most '
                             f'{min(feature_size)}')
        if channels % num_heads:
            raise ValueError(f'num_heads={num_heads} does not divide channels={channels}; '
                             f'choose a divisor of {channels}')
        n = len(decoder_channels)
        if n == 0 or len(decoder_guidance_channels) != n or len(
                decoder_guidance_proj_channels) != n:
            raise ValueError(
                'decoder_channels, decoder_guidance_channels and decoder_guidance_proj_channels '
                f'must have the same non-zero length (one entry per decoder stage); got '
                f'{tuple(decoder_channels)}, {tuple(decoder_guidance_channels)}, '
                f'{tuple(decoder_guidance_proj_channels)}')
        if min(decoder_channels) < 1 or min(decoder_guidance_channels) < 1 or min(
                decoder_guidance_proj_channels) < 1:
            raise ValueError('decoder channel counts must be positive; got '
                             f'{tuple(decoder_channels)}, {tuple(decoder_guidance_channels)}, '
                             f'{tuple(decoder_guidance_proj_channels)}')
        if pad_len < 0 or pool_size < 1 or test_pool_size < 1:
            raise ValueError(f'pad_len must be >= 0 and pool sizes >= 1; got pad_len={pad_len}, '
                             f'pool_size={pool_size}, test_pool_size={test_pool_size}')

    # ------------------------------------------------------------------ inputs
    def _parse_inputs(self, inputs: Dict) -> Tuple[Tensor, List[Tensor], Tensor]:
        """Check ``inputs`` and return ``(dense, guidance, text)``; raise on bad shapes."""
        if not isinstance(inputs, dict) or not {'dense', 'guidance', 'text'} <= set(inputs):
            got = sorted(inputs) if isinstance(inputs, dict) else type(inputs).__name__
            raise TypeError('HCLIPCostAggHead expects inputs=dict(dense=[B, C, h, w], '
                            f'guidance=[[B, D, h, w], ...], text=[N, P, C] or [B, N, P, C]); '
                            f'got {got}')
        dense, guidance, text = inputs['dense'], inputs['guidance'], inputs['text']
        if dense.dim() != 4 or dense.shape[1] != self.in_channels:
            raise ValueError(f"inputs['dense'] must be [B, {self.in_channels}, h, w]; got "
                             f'{tuple(dense.shape)}')
        b, c, h, w = dense.shape
        if text.dim() not in (3, 4):
            raise ValueError(f"inputs['text'] must be [N, P, C] or [B, N, P, C]; got "
                             f'{tuple(text.shape)}')
        if text.shape[-1] != c:
            raise ValueError(f"text embedding width {text.shape[-1]} differs from the dense "
                             f'embedding width {c}; both must be in the joint space '
                             f'(in_channels={self.in_channels})')
        if text.dim() == 4 and text.shape[0] != b:
            raise ValueError(f"inputs['text'] has batch {text.shape[0]} but the images {b}; "
                             'pass [N, P, C] to share the text over the batch')
        if text.shape[-3] == 0:
            raise ValueError('the class set is empty (N=0): give at least one class name')
        if text.shape[-2] != self.prompt_channels:
            raise ValueError(f'text has {text.shape[-2]} prompt templates, the head was '
                             f'built for prompt_channels={self.prompt_channels}')
        if min(h, w) < self.window_size:
            raise ValueError(f'the dense feature map {h}x{w} is smaller than the window '
                             f'size {self.window_size}; use larger images (at least '
                             f'window_size × patch size pixels) or a smaller window_size')
        if not isinstance(guidance, (list, tuple)) or len(guidance) != len(self.decoder):
            n = len(guidance) if isinstance(guidance, (list, tuple)) else type(guidance).__name__
            raise ValueError(f"inputs['guidance'] must be a list of {len(self.decoder)} "
                             f'feature maps (one per decoder stage, shallow block first); '
                             f'got {n}')
        for i, g in enumerate(guidance):
            if tuple(g.shape) != (b, self.guidance_channels, h, w):
                raise ValueError(f"inputs['guidance'][{i}] must be "
                                 f'[{b}, {self.guidance_channels}, {h}, {w}]; got '
                                 f'{tuple(g.shape)}')
        return dense, list(guidance), text

    # ---------------------------------------------------------------- pieces
    @staticmethod
    def cost_volume(dense: Tensor, text: Tensor) -> Tensor:
        """Cosine similarity of every position with every class prompt.

        Args:
            dense (Tensor): ``[B, C, h, w]`` image embeddings (any norm).
            text (Tensor): ``[N, P, C]`` or ``[B, N, P, C]`` text embeddings (any norm).

        Returns:
            Tensor: ``[B, N, P, h, w]``.
        """
        dense = F.normalize(dense, dim=1)
        text = F.normalize(text, dim=-1)
        if text.dim() == 3:
            return torch.einsum('bchw,npc->bnphw', dense, text)
        return torch.einsum('bchw,bnpc->bnphw', dense, text)

    def select_classes(self, cost: Tensor) -> Tensor:
        """Indices ``[B, pad_len]`` (ascending) of each image's ``pad_len`` classes with the
        highest cosine similarity (max over prompts and positions) in ``cost``
        ``[B, N, P, h, w]``."""
        score = cost.flatten(2).amax(dim=2)
        return score.topk(self.pad_len, dim=1).indices.sort(dim=1).values

    def _decode(self, x: Tensor, guidance: List[Tensor]) -> Tensor:
        """Decoder: ``x`` ``[B, T, h, w, C]`` → logits ``[B, T, h·2^S, w·2^S]``."""
        b, t, h, w, c = x.shape
        y = x.permute(0, 1, 4, 2, 3).reshape(b * t, c, h, w)
        guidance = [proj(up(g)) for up, proj, g in zip(self.decoder_guidance_up,
                                                        self.decoder_guidance_proj, guidance)]
        if all(stage.fast_path_applies(g) for stage, g in zip(self.decoder, guidance)):
            # each norm + activation is applied inside the next conv (fused: its output is
            # recomputed in backward instead of kept)
            pending = None
            for stage, g in zip(self.decoder, guidance):
                y, pending = stage.forward_deferred(y, g, pending)
            y = norm_act_conv(y, pending, self.cls_head.weight, self.cls_head.bias,
                              self.cls_head.padding[0])
        else:
            for stage, g in zip(self.decoder, guidance):
                y = stage(y, g)
            y = self.cls_head(y)
        return y.reshape(b, t, *y.shape[-2:])

    # ---------------------------------------------------------------- forward
    def forward(self, inputs: Dict) -> Tensor:
        """
        Args:
            inputs (dict): ``dense`` ``[B, C, h, w]`` (joint space, not normalised);
                ``guidance`` list of ``[B, D, h, w]`` (intermediate blocks, shallow first);
                ``text`` ``[N, P, C]`` or ``[B, N, P, C]``.

        Returns:
            Tensor: logits ``[B, N, h·2^S, w·2^S]`` (S decoder stages; 96×96 for the
            reference); classes dropped by the top-``pad_len`` selection hold -100.
        """
        dense, guidance, text = self._parse_inputs(inputs)
        b, _, h, w = dense.shape
        n = text.shape[-3]
        text = F.normalize(text, dim=-1)
        cost = self.cost_volume(dense, text)  # [B, N, P, h, w]

        keep = None
        if 0 < self.pad_len < n:
            keep = self.select_classes(cost)  # [B, K]
            k = keep.shape[1]
            cost = cost.gather(1, keep.view(b, k, 1, 1, 1).expand(-1, -1, *cost.shape[2:]))
            text = text.expand(b, *text.shape[-3:]).gather(
                1, keep.view(b, k, 1, 1).expand(-1, -1, *text.shape[-2:]))
        t = cost.shape[1]

        cost = cost.flatten(0, 1)  # [B*T, P, h, w]
        if self.impl == 'fast':  # channels-last output: the permute below is then free
            cost = cost.contiguous(memory_format=torch.channels_last)
        x = self.cost_embed(cost)  # [B*T, C, h, w]
        x = x.view(b, t, -1, h, w).permute(0, 1, 3, 4, 2)  # [B, T, h, w, C]

        app_g = None
        if self.appearance_guidance_proj is not None:
            app_g = self.appearance_guidance_proj(dense).permute(0, 2, 3, 1)  # [B, h, w, G]
        text_g = None
        if self.text_guidance_proj is not None:
            text_g = self.text_guidance_proj(F.normalize(text.mean(dim=-2), dim=-1))
            text_g = text_g.expand(b, t, -1)  # [B, T, G]

        for layer in self.layers:
            if self.with_cp and self.training and x.requires_grad:
                x = cp.checkpoint(layer, x, app_g, text_g, use_reentrant=False)
            else:
                x = layer(x, app_g, text_g)

        logits = self._decode(x, guidance)  # [B, T, H, W]
        if keep is None:
            return logits
        out = logits.new_full((b, n, *logits.shape[-2:]), DROPPED_CLASS_LOGIT)
        return out.scatter(1, keep.view(b, -1, 1, 1).expand(-1, -1, *logits.shape[-2:]),
                           logits)

    def predict_by_feat(self, seg_logits: Tensor, batch_img_metas: List[dict]) -> Tensor:
        """Resize the logits to the input size (mmseg's rule) and return sigmoid scores
        ``[B, N, H, W]``."""
        return super().predict_by_feat(seg_logits, batch_img_metas).sigmoid()


def _check_loss_switch(loss_decode, ignore_as_negative: bool) -> None:
    """Refuse a loss config whose ``ignore_as_negative`` contradicts the head's switch."""
    cfgs = loss_decode if isinstance(loss_decode, (list, tuple)) else [loss_decode]
    for cfg in cfgs:
        if hasattr(cfg, 'get') and 'ignore_as_negative' in cfg and bool(
                cfg['ignore_as_negative']) != bool(ignore_as_negative):
            raise ValueError(
                f"loss_decode sets ignore_as_negative={cfg['ignore_as_negative']} but the head "
                f'has ignore_as_negative={ignore_as_negative}; set it once, on the head')

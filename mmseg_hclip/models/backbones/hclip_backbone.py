# Copyright (c) mmseg_hclip contributors. Licensed under the Apache License 2.0.
"""The whole open_clip CLIP (both towers) with the H-CLIP adapter, as an MMSeg backbone."""
import copy
import os
import os.path as osp
import re
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from torch.func import functional_call
from torch.utils.checkpoint import checkpoint

__all__ = ['HCLIPBackbone', 'POS_EMBED_RESIZE']

#: how the stored positional embedding is resized to the input grid (``pos_embed_resize``)
POS_EMBED_RESIZE = ('bicubic', 'bicubic_antialias')

_VISION_BLOCK = re.compile(r'^visual\.transformer\.resblocks\.(\d+)\.(.+)$')
_TEXT_BLOCK = re.compile(r'^transformer\.resblocks\.(\d+)\.(.+)$')
# Parameters of the final image block that the dense (value-path) forward reads; an adapter
# may transform any of them.
_DENSE_BLOCK_PARAMS = ('attn.in_proj_weight', 'attn.in_proj_bias', 'attn.out_proj.weight',
                       'attn.out_proj.bias')

Weights = Dict[str, torch.Tensor]


def _looks_like_path(value: str) -> bool:
    return (os.sep in value or value.startswith('.') or value.startswith('~')
            or value.endswith(('.pt', '.pth', '.bin', '.safetensors', '.npz')))


@MODELS.register_module()
class HCLIPBackbone(BaseModule):
    """Both towers of an open_clip CLIP, tuned by the H-CLIP adapter (POF + DCRC).

    The image tower returns dense embeddings in the joint image-text space and
    the guidance features of intermediate blocks; the text tower is exposed as
    :meth:`encode_text`. Every CLIP weight is frozen; the adapter (if any)
    holds the only trainable parameters.

    Dense embeddings take all patch tokens through the final block's value
    path (CAT-Seg's dense CLIP forward): the last block skips the attention
    map, i.e. ``ln_1`` -> value projection -> ``out_proj`` for each token, the
    block input's class token is added at every position, then
    ``+ mlp(ln_2(.))``; the result goes through ``ln_post`` and ``proj``.

    Adapted weights enter the forward through :func:`torch.func.functional_call`
    on each transformer block, so open_clip's classes are never edited. The
    segmentor computes them once per forward with :meth:`adapted_weights` and
    hands the same dict to the image forward and to :meth:`encode_text` (DCRC
    couples the two towers). In eval mode the adapter is merged into the CLIP
    weights once (plain-CLIP cost); ``train(True)``, ``state_dict()`` and
    ``load_state_dict()`` unmerge it first, so checkpoints always hold the
    pretrained CLIP weights plus the adapter parameters.

    Input images are expected normalised with CLIP's RGB mean
    (122.77, 116.75, 104.09) and std (68.50, 66.63, 70.32) by the data
    preprocessor (see ``configs/_base_/models/hclip_vitb16.py``).

    Args:
        arch (str | dict): An open_clip architecture name (``'ViT-B-16'``,
            ``'ViT-L-14'``, ...) or an inline architecture dict with keys
            ``embed_dim``, ``vision_cfg``, ``text_cfg`` (and optionally
            ``quick_gelu``), as in open_clip's ``model_configs/*.json``.
            Only ViT image towers with the standard open_clip text tower are
            supported. Defaults to ``'ViT-B-16'``.
        pretrained (str, optional): Weight source: an open_clip pretrained
            tag (e.g. ``'openai'``; needs a named ``arch`` and internet or a
            filled open_clip cache; offline without a cached file it fails
            within seconds), a local weights file, or None for random
            initialisation (tests). Local files, read safely by
            :func:`mmseg_hclip.utils.checkpoint.read_clip_state_dict`:
            OpenAI's TorchScript archives (``ViT-B-16.pt``,
            ``ViT-L-14-336px.pt``), OpenAI/open_clip state dicts and
            open_clip training checkpoints (``.pt``/``.pth``), the Hugging
            Face hub files of open_clip (``open_clip_pytorch_model.bin``,
            ``open_clip_model.safetensors``). Defaults to None.
        img_size (int | tuple[int, int]): The input size the model is trained
            and tested at (ViT-B/16: 384, ViT-L/14: 336); other input sizes
            are accepted. The positional embedding keeps the grid it was
            loaded with (the CLIP's native grid, e.g. 14x14 for ViT-B/16)
            and is resized to each input's patch grid in every forward (see
            ``pos_embed_resize``); the merged open_clip export is written at
            this size. Defaults to 384.
        pos_embed_resize (str): How the stored positional embedding is
            resized to the input grid, at every forward: ``'bicubic'``
            (default, the H-CLIP / CAT-Seg reference code: bicubic,
            ``align_corners=False``, no antialias) or
            ``'bicubic_antialias'`` (bicubic with ``antialias=True``,
            open_clip's load-time rule, the behaviour of earlier versions of
            this backbone; at ``img_size`` it equals their outputs). The two
            differ even when upsampling (PyTorch's antialiased bicubic uses
            another kernel). Defaults to 'bicubic'.
        guidance_layers (Sequence[int]): 0-based image blocks whose outputs
            are returned as guidance, shallow first (ViT-B: (3, 7), ViT-L:
            (7, 15)). Defaults to (3, 7).
        quick_gelu (bool, optional): Use QuickGELU activations, as the OpenAI
            weights need. None: True when ``pretrained`` is a tag whose
            open_clip entry says so (e.g. ``'openai'``), else the arch's own
            setting; for a local OpenAI TorchScript archive True (its code
            defines QuickGELU). Set it explicitly when loading OpenAI weights
            from a state-dict file (.pth/.bin/.safetensors). Defaults to None.
        adapter (dict, optional): Keyword arguments of
            :class:`mmseg_hclip.peft.HCLIPAdapter` (``block_size``,
            ``orthogonal``, ``sides``, ``dcrc``, ``train``, ``targets``), or
            ``type=`` another adapter registered in MMSeg's MODELS with the
            same interface (built with ``clip=`` the CLIP model); None keeps
            CLIP frozen without adapter. Defaults to None.
        merge_in_eval (bool): Merge the adapter into the CLIP weights in eval
            mode. Defaults to True.
        with_cp (bool): Gradient checkpointing of every transformer block of
            both towers (recomputation uses the same adapted weights).
            Defaults to False.
        cache_dir (str, optional): open_clip download cache directory.
        init_cfg (dict, optional): mmengine initialisation config; CLIP
            weights come from ``pretrained``, not from here.
    """

    def __init__(self,
                 arch: Union[str, dict] = 'ViT-B-16',
                 pretrained: Optional[str] = None,
                 img_size: Union[int, Tuple[int, int]] = 384,
                 pos_embed_resize: str = 'bicubic',
                 guidance_layers: Sequence[int] = (3, 7),
                 quick_gelu: Optional[bool] = None,
                 adapter: Optional[dict] = None,
                 merge_in_eval: bool = True,
                 with_cp: bool = False,
                 cache_dir: Optional[str] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        self.arch = arch
        self.pretrained = pretrained
        self.img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        if pos_embed_resize not in POS_EMBED_RESIZE:
            raise ValueError(f'pos_embed_resize={pos_embed_resize!r} is not one of '
                             f"{POS_EMBED_RESIZE}: 'bicubic' resizes the positional embedding "
                             "like the reference code, 'bicubic_antialias' like open_clip.")
        self.pos_embed_resize = pos_embed_resize
        self.merge_in_eval = merge_in_eval
        self.with_cp = with_cp
        self.clip = self._build_clip(arch, pretrained, self.img_size, quick_gelu, cache_dir)
        self.clip.requires_grad_(False)

        visual = self.clip.visual
        self.num_layers = len(visual.transformer.resblocks)
        self.num_text_layers = len(self.clip.transformer.resblocks)
        guidance_layers = tuple(int(i) for i in guidance_layers)
        for i in guidance_layers:
            if not 0 <= i < self.num_layers - 1:
                raise ValueError(
                    f'guidance_layers={guidance_layers}: index {i} is not an intermediate block '
                    f'of this {self.num_layers}-block image tower; use 0-based indices in '
                    f'[0, {self.num_layers - 2}] (ViT-B/16: (3, 7), ViT-L/14: (7, 15)).')
        if list(guidance_layers) != sorted(set(guidance_layers)):
            raise ValueError(f'guidance_layers={guidance_layers} must be increasing (shallow '
                             'first) without repeats.')
        self.guidance_layers = guidance_layers
        self.patch_size = tuple(visual.patch_size)
        self.width = visual.transformer.width
        self.text_width = self.clip.transformer.width
        self.embed_dim = visual.proj.shape[1]

        self.adapter = None if adapter is None else self._build_adapter(self.clip, adapter)
        self._tokenizer = None
        self._weights_version = 0
        # Checkpoints always hold the pretrained CLIP weights: unmerge before saving (the
        # post hook covers savers that skip pre hooks, e.g. mmengine's get_state_dict: the
        # saved tensors share storage with the parameters that unmerge restores in place).
        self.register_state_dict_pre_hook(_unmerge_before_state_dict)
        self.register_state_dict_post_hook(_unmerge_after_state_dict)
        self.register_load_state_dict_pre_hook(_unmerge_before_load)
        self.register_load_state_dict_pre_hook(_adopt_pos_embed_grid)
        self.register_load_state_dict_post_hook(_bump_after_load)

    # ------------------------------------------------------------------ building
    @staticmethod
    def _build_adapter(clip: nn.Module, cfg: dict) -> nn.Module:
        """Build the adapter: HCLIPAdapter by default, or ``type`` from MODELS.

        Any adapter with HCLIPAdapter's interface works (``adapter(clip)`` ->
        transformed weights by parameter name, ``merge(clip)``, ``unmerge(clip)``,
        ``merged``), e.g. the baselines of ``projects/peft_baselines``.
        """
        cfg = dict(cfg)
        adapter_type = cfg.pop('type', 'HCLIPAdapter')
        if adapter_type == 'HCLIPAdapter':
            from mmseg_hclip.peft import HCLIPAdapter
            return HCLIPAdapter(clip, **cfg)
        from mmseg.registry import MODELS
        if MODELS.get(adapter_type) is None:
            raise KeyError(
                f'adapter type {adapter_type!r} is not registered in MMSeg\'s MODELS; import the '
                'package that registers it via custom_imports (e.g. '
                "'projects.peft_baselines.peft_baselines') or use type='HCLIPAdapter'.")
        return MODELS.build(dict(type=adapter_type, **cfg), default_args=dict(clip=clip))

    @staticmethod
    def _build_clip(arch, pretrained, img_size, quick_gelu, cache_dir) -> nn.Module:
        import open_clip
        from open_clip.pretrained import get_pretrained_cfg, list_pretrained_tags_by_model

        tag_cfg = {}
        if isinstance(arch, str):
            model_cfg = open_clip.get_model_config(arch)
            if model_cfg is None:
                raise ValueError(f"Unknown open_clip architecture arch='{arch}'. Use a name from "
                                 'open_clip.list_models() (e.g. ViT-B-16, ViT-L-14) or an inline '
                                 'dict(embed_dim=..., vision_cfg=..., text_cfg=...).')
            model_cfg = copy.deepcopy(model_cfg)
            arch_name = arch
        elif isinstance(arch, dict):
            missing = {'embed_dim', 'vision_cfg', 'text_cfg'} - set(arch)
            if missing:
                raise ValueError(f'The inline arch dict lacks {sorted(missing)}; it needs '
                                 'embed_dim, vision_cfg and text_cfg as in open_clip model '
                                 'configs.')
            model_cfg = copy.deepcopy(dict(arch))
            arch_name = 'inline arch'
        else:
            raise TypeError(f'arch must be an open_clip model name or a dict, got {type(arch)}')
        model_cfg['vision_cfg'] = dict(model_cfg['vision_cfg'])
        model_cfg['text_cfg'] = dict(model_cfg['text_cfg'])
        vcfg, tcfg = model_cfg['vision_cfg'], model_cfg['text_cfg']
        unsupported = [k for k in ('timm_model_name', 'hf_model_name') if vcfg.get(k) or
                       tcfg.get(k)]
        if (unsupported or model_cfg.get('custom_text') or 'multimodal_cfg' in model_cfg
                or isinstance(vcfg.get('layers', 12), (list, tuple))):
            raise ValueError(f'{arch_name}: HCLIPBackbone supports open_clip CLIPs with a ViT '
                             'image tower and the standard text transformer (ViT-B-16, ViT-L-14, '
                             '...), not timm/HF/ResNet towers or CoCa.')

        checkpoint_path = None
        if pretrained is not None:
            if not isinstance(pretrained, str) or not pretrained:
                raise TypeError(f'pretrained must be an open_clip tag, a file path or None, '
                                f'got {pretrained!r}')
            if isinstance(arch, str):
                tag_cfg = get_pretrained_cfg(arch, pretrained)
            if tag_cfg:
                checkpoint_path = _download_tag(arch, pretrained, tag_cfg, cache_dir)
            elif osp.isfile(osp.expanduser(pretrained)):
                checkpoint_path = osp.expanduser(pretrained)
            elif _looks_like_path(pretrained) or not isinstance(arch, str):
                raise FileNotFoundError(
                    f"CLIP weights file pretrained='{pretrained}' does not exist. Pass an "
                    'existing local weights file (OpenAI .pt, open_clip .pt/.bin/.safetensors), '
                    'an '
                    "open_clip tag with a named arch (e.g. arch='ViT-B-16', "
                    "pretrained='openai'), or pretrained=None for random weights.")
            else:
                tags = list_pretrained_tags_by_model(arch)
                raise ValueError(f"pretrained='{pretrained}' is neither a known open_clip tag of "
                                 f"'{arch}' (known: {tags}) nor an existing file.")

        if quick_gelu is None and checkpoint_path is not None and not tag_cfg:
            from mmseg_hclip.utils.checkpoint import torchscript_uses_quick_gelu
            quick_gelu = torchscript_uses_quick_gelu(checkpoint_path) or None
        if quick_gelu is None:
            quick_gelu = bool(tag_cfg.get('quick_gelu', model_cfg.get('quick_gelu', False)))
        model_cfg['quick_gelu'] = bool(quick_gelu)
        # the CLIP keeps the architecture's own image size: the positional embedding stays on
        # the grid it is loaded with and forward() resizes it to every input (_pos_embed)
        model_cfg.pop('custom_text', None)
        clip = open_clip.CLIP(**model_cfg)
        blocks = list(clip.visual.transformer.resblocks) + list(clip.transformer.resblocks)
        if not all(isinstance(getattr(b, 'attn', None), nn.MultiheadAttention) for b in blocks):
            raise ValueError(f'{arch_name}: HCLIPBackbone needs the default open_clip blocks '
                             '(nn.MultiheadAttention); custom attention options (qk_norm, '
                             'scaled_cosine_attn, ...) are not supported.')
        if checkpoint_path is not None:
            # a checkpoint on the architecture's native grid loads as it is (open_clip would
            # resize any other grid to the native one)
            _load_clip_weights(clip, checkpoint_path, arch_name)
        return clip

    @property
    def tokenizer(self):
        """The open_clip tokenizer of this architecture (callable: list[str] -> LongTensor)."""
        if self._tokenizer is None:
            import open_clip
            ctx = self.clip.context_length
            if isinstance(self.arch, str):
                self._tokenizer = open_clip.get_tokenizer(self.arch, context_length=ctx)
            else:
                self._tokenizer = open_clip.SimpleTokenizer(context_length=ctx)
        return self._tokenizer

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """Tokenise prompts.

        Args:
            texts (Sequence[str]): Prompts.

        Returns:
            Tensor: Token ids [len(texts), context_length] on the model's device.
        """
        return self.tokenizer(list(texts)).to(self.clip.positional_embedding.device)

    # ------------------------------------------------------- adapter bookkeeping
    @property
    def weights_version(self) -> int:
        """A counter that changes whenever the effective CLIP weights may have changed
        (every adapted training forward, merge, unmerge, checkpoint load). The text neck
        keys its eval cache on it."""
        return self._weights_version

    def _bump(self):
        self._weights_version += 1

    @property
    def merged(self) -> bool:
        return self.adapter is not None and bool(self.adapter.merged)

    def merge(self):
        """Fold the adapter into the CLIP weights (no-op without adapter or if merged)."""
        if self.adapter is not None and not self.adapter.merged:
            with torch.no_grad():
                self.adapter.merge(self.clip)
            self._bump()

    def unmerge(self):
        """Restore the pretrained CLIP weights (no-op without adapter or if unmerged)."""
        if self.adapter is not None and self.adapter.merged:
            with torch.no_grad():
                self.adapter.unmerge(self.clip)
            self._bump()

    def train(self, mode: bool = True):
        super().train(mode)
        if mode:
            self.unmerge()
        return self

    def adapted_weights(self) -> Optional[Weights]:
        """The adapted CLIP weights for this forward, for both towers.

        Call it once per segmentor forward and pass the result to
        :meth:`forward` and :meth:`encode_text`.

        Returns:
            dict[str, Tensor] | None: ``clip.named_parameters()`` names of the
            adapter's targets -> transformed weights; None when there is no
            adapter or it is merged (eval mode with ``merge_in_eval``), i.e.
            when the CLIP parameters themselves are the effective weights.
        """
        if self.adapter is None:
            return None
        if not self.training and self.merge_in_eval:
            self.merge()
            return None
        self.unmerge()
        if self.training:
            self._bump()
        return self.adapter(self.clip)

    def _split_weights(self, weights: Optional[Weights]):
        vision = [dict() for _ in range(self.num_layers)]
        text = [dict() for _ in range(self.num_text_layers)]
        if not weights:
            return vision, text
        for name, value in weights.items():
            m = _VISION_BLOCK.match(name)
            if m:
                vision[int(m.group(1))][m.group(2)] = value
                continue
            m = _TEXT_BLOCK.match(name)
            if m:
                text[int(m.group(1))][m.group(2)] = value
                continue
            raise KeyError(f"Adapted weight '{name}' is outside the transformer blocks; "
                           'HCLIPBackbone substitutes weights of attention/MLP blocks only.')
        extra = set(vision[-1]) - set(_DENSE_BLOCK_PARAMS)
        if extra:
            raise KeyError(f'Adapted weights {sorted(extra)} of the final image block are not '
                           'used by the dense value-path forward (it reads '
                           f'{_DENSE_BLOCK_PARAMS}).')
        return vision, text

    def _run_block(self, block: nn.Module, x: torch.Tensor, weights: Weights,
                   attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """One open_clip residual block with (optionally) substituted weights."""
        if not weights:
            if self.with_cp and torch.is_grad_enabled():
                return checkpoint(block, x, None, None, attn_mask, use_reentrant=False)
            return block(x, attn_mask=attn_mask)
        names = tuple(weights)

        def run(x, *tensors):
            return functional_call(block, dict(zip(names, tensors)), (x, ),
                                   dict(attn_mask=attn_mask), strict=False)

        tensors = tuple(weights[n] for n in names)
        if self.with_cp and torch.is_grad_enabled():
            # weights are explicit inputs, so the recomputation in backward sees them too
            return checkpoint(run, x, *tensors, use_reentrant=False)
        return run(x, *tensors)

    # -------------------------------------------------------------- image tower
    @property
    def pos_embed_grid(self) -> Tuple[int, int]:
        """The patch grid (rows, columns) of the stored positional embedding."""
        visual = self.clip.visual
        grid = tuple(visual.grid_size)
        shape = tuple(visual.positional_embedding.shape)
        if grid[0] * grid[1] + 1 != shape[0]:
            raise RuntimeError(f'the positional embedding {shape} does not fit its grid {grid}')
        return grid

    def _infer_pos_grid(self, num_patches: int) -> Tuple[int, int]:
        """The grid of a stored embedding with ``num_patches`` patch positions: ``img_size``'s
        grid if it has that many (checkpoints of earlier versions stored the embedding resized
        to it), else a square grid."""
        own = (self.img_size[0] // self.patch_size[0], self.img_size[1] // self.patch_size[1])
        if own[0] * own[1] == num_patches:
            return own
        side = int(round(num_patches**0.5))
        if side * side == num_patches:
            return (side, side)
        raise ValueError(
            f'a positional embedding with {num_patches} patch positions (+1 class token) fits '
            f'neither the grid of img_size={self.img_size} (patch {self.patch_size}: {own}) nor a '
            'square grid; load it with the img_size the checkpoint was trained at.')

    def _pos_embed(self, grid: Tuple[int, int]) -> torch.Tensor:
        """The positional embedding for an input of ``grid`` patches, class token first.

        The stored embedding is resized to ``grid`` at every call (bicubic,
        ``align_corners=False``, antialiased only with ``pos_embed_resize='bicubic_antialias'``).

        Args:
            grid (tuple[int, int]): patch rows and columns of the input.

        Returns:
            Tensor: [1 + grid[0] * grid[1], D].
        """
        pos = self.clip.visual.positional_embedding
        base = self.pos_embed_grid
        if tuple(grid) == base:
            return pos
        cls_pos, patch_pos = pos[:1], pos[1:]
        patch_pos = patch_pos.reshape(1, base[0], base[1], -1).permute(0, 3, 1, 2)
        patch_pos = F.interpolate(patch_pos, size=tuple(grid), mode='bicubic',
                                  align_corners=False,
                                  antialias=self.pos_embed_resize == 'bicubic_antialias')
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1)
        return torch.cat([cls_pos, patch_pos], dim=0)

    def pos_embed_for(self, img_size: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        """The positional embedding the forward uses for inputs of ``img_size`` pixels.

        Args:
            img_size (tuple[int, int], optional): input (height, width); default
                ``self.img_size``.

        Returns:
            Tensor: [1 + h * w, D], h, w the patch grid of ``img_size``.
        """
        h, w = self.img_size if img_size is None else img_size
        return self._pos_embed((h // self.patch_size[0], w // self.patch_size[1]))

    def _dense_last_block(self, block: nn.Module, x: torch.Tensor,
                          weights: Weights) -> torch.Tensor:
        """The final block through its value path (no attention map)."""

        attn = block.attn
        defaults = {
            'attn.in_proj_weight': attn.in_proj_weight,
            'attn.in_proj_bias': attn.in_proj_bias,
            'attn.out_proj.weight': attn.out_proj.weight,
            'attn.out_proj.bias': attn.out_proj.bias,
        }

        def w(name):
            return weights.get(name, defaults[name])

        width = x.shape[-1]
        in_w, in_b = w('attn.in_proj_weight'), w('attn.in_proj_bias')
        y = block.ln_1(x)
        v = F.linear(y, in_w[2 * width:], None if in_b is None else in_b[2 * width:])
        v = F.linear(v, w('attn.out_proj.weight'), w('attn.out_proj.bias'))
        x = block.ls_1(v) + x[:, :1]
        return x + block.ls_2(block.mlp(block.ln_2(x)))

    def forward(self, inputs: torch.Tensor,
                weights: Optional[Weights] = None) -> Dict[str, Union[torch.Tensor, List]]:
        """Dense joint-space embeddings and guidance features of the image tower.

        Args:
            inputs (Tensor): Normalised RGB images [B, 3, H, W].
            weights (dict[str, Tensor], optional): Output of
                :meth:`adapted_weights`; None uses the CLIP parameters.

        Returns:
            dict: ``dense``: [B, C, h, w] embeddings after ``ln_post`` and
            ``proj`` (not normalised), h = H // patch, w = W // patch, C the
            joint width (512 for ViT-B/16); ``guidance``: list of [B, D, h, w]
            outputs of ``guidance_layers`` (no class token, image width D).
        """
        if inputs.dim() != 4 or inputs.shape[1] != 3:
            raise ValueError(f'HCLIPBackbone expects images [B, 3, H, W], got '
                             f'{tuple(inputs.shape)}')
        if inputs.shape[2] < self.patch_size[0] or inputs.shape[3] < self.patch_size[1]:
            raise ValueError(f'Image {tuple(inputs.shape[2:])} is smaller than one patch '
                             f'{self.patch_size}.')
        vision_w, _ = self._split_weights(weights)
        visual = self.clip.visual
        x = visual.conv1(inputs)
        b, d, gh, gw = x.shape
        x = x.flatten(2).transpose(1, 2)
        cls = visual.class_embedding.to(x.dtype).view(1, 1, -1).expand(b, -1, -1)
        x = torch.cat([cls, x], dim=1)
        x = x + self._pos_embed((gh, gw)).to(x.dtype)
        x = visual.ln_pre(x)

        guidance = []
        blocks = visual.transformer.resblocks
        for i in range(self.num_layers - 1):
            x = self._run_block(blocks[i], x, vision_w[i])
            if i in self.guidance_layers:
                guidance.append(x[:, 1:].transpose(1, 2).reshape(b, d, gh, gw))
        if self.with_cp and torch.is_grad_enabled():
            names = tuple(vision_w[-1])
            tensors = tuple(vision_w[-1][n] for n in names)
            x = checkpoint(lambda x, *t: self._dense_last_block(blocks[-1], x, dict(zip(
                names, t))), x, *tensors, use_reentrant=False)
        else:
            x = self._dense_last_block(blocks[-1], x, vision_w[-1])
        x = visual.ln_post(x[:, 1:])
        x = x @ visual.proj.to(x.dtype)
        dense = x.transpose(1, 2).reshape(b, -1, gh, gw)
        return dict(dense=dense, guidance=guidance)

    # --------------------------------------------------------------- text tower
    def encode_text(self, tokens: torch.Tensor, weights: Optional[Weights] = None,
                    normalize: bool = False) -> torch.Tensor:
        """Text features through the tuned text tower.

        Equals open_clip's ``CLIP.encode_text`` for the same weights. With a
        causal mask and EOT (argmax) pooling, positions after the last EOT
        token of the batch cannot influence the result, so the sequence is
        cut there (exact, and several times cheaper for short prompts).

        Args:
            tokens (Tensor): Token ids [n, context_length].
            weights (dict[str, Tensor], optional): Output of
                :meth:`adapted_weights`; None uses the CLIP parameters.
            normalize (bool): L2-normalise the output. Defaults to False.

        Returns:
            Tensor: [n, C] text features in the joint space.
        """
        from open_clip.transformer import text_global_pool
        clip = self.clip
        _, text_w = self._split_weights(weights)
        attn_mask = clip.attn_mask
        length = tokens.shape[1]
        if attn_mask is not None and clip.text_pool_type == 'argmax' and tokens.numel():
            length = int(tokens.argmax(dim=-1).max()) + 1
            tokens_in = tokens[:, :length]
            attn_mask = attn_mask[:length, :length]
        else:
            tokens_in = tokens
        x = clip.token_embedding(tokens_in)
        x = x + clip.positional_embedding[:length].to(x.dtype)
        for block, block_w in zip(clip.transformer.resblocks, text_w):
            x = self._run_block(block, x, block_w, attn_mask=attn_mask)
        x = clip.ln_final(x)
        x = text_global_pool(x, tokens_in, clip.text_pool_type,
                             eos_token_id=getattr(clip, 'text_eos_id', None))
        proj = clip.text_projection
        if proj is not None:
            x = proj(x) if isinstance(proj, nn.Linear) else x @ proj.to(x.dtype)
        return F.normalize(x, dim=-1) if normalize else x


def _no_weights_error(arch: str, tag: str, reason: str) -> RuntimeError:
    return RuntimeError(
        f"Could not obtain the open_clip weights '{tag}' of {arch} ({reason}). Without "
        'internet, download the checkpoint on another machine and pass '
        f"the local file instead: backbone=dict(pretrained='/path/to/{arch}.pt', "
        "quick_gelu=True)  (for OpenAI weights), e.g. with --cfg-options "
        f'model.backbone.pretrained=/path/to/{arch}.pt')


def _download_tag(arch: str, tag: str, tag_cfg: dict, cache_dir: Optional[str]) -> str:
    """The local file of an open_clip pretrained tag: cached, else downloaded.

    A file already in the Hugging Face cache is used without touching the network. Before a
    download, the host is probed with one short TCP connection (:func:`_offline_reason`):
    offline (or ``HF_HUB_OFFLINE=1``) the error comes within seconds instead of after the
    hub client's retries (about a minute), with the same advice.
    """
    from open_clip import pretrained as oc_pretrained
    cached = _cached_tag_file(tag_cfg, cache_dir)
    if cached:
        return cached
    reason = _offline_reason(tag_cfg)
    if reason:
        url_cached = _url_cached_file(tag_cfg, cache_dir)
        if url_cached:
            return url_cached
        raise _no_weights_error(arch, tag, reason)
    try:
        path = oc_pretrained.download_pretrained(tag_cfg, cache_dir=cache_dir)
    except Exception as err:  # network, hub or disk errors: all mean "no weights"
        raise _no_weights_error(arch, tag, f'{type(err).__name__}: {err}') from err
    if not path or not osp.isfile(path):
        raise RuntimeError(f"open_clip returned no file for the weights '{tag}' of {arch}. Pass a "
                           "local checkpoint file as pretrained='/path/to/file.pt'.")
    return path


# ------------------------------------------------------------------- weight files and tags
def _load_clip_weights(clip: nn.Module, path: str, arch_name: str) -> None:
    """Load CLIP weights from any file the safe reader accepts into ``clip``, strictly.

    :func:`mmseg_hclip.utils.checkpoint.read_clip_state_dict` reads the file (OpenAI
    TorchScript archive, state dict, open_clip checkpoint, safetensors; never
    ``weights_only=False``); then the massaging of open_clip's ``load_checkpoint``:
    third-party layouts through open_clip's ``convert_state_dict``, ``logit_scale`` shape,
    and a positional embedding on another grid than the model's resized by open_clip's
    ``resize_pos_embed`` (a file on the architecture's native grid loads as it is).

    Raises:
        ValueError: The weights do not fit the architecture (missing / unexpected keys,
            shapes), naming the file, what it holds and the configured architecture.
    """
    from open_clip.convert import convert_state_dict
    from open_clip.model import resize_pos_embed, resize_text_pos_embed

    from mmseg_hclip.utils.checkpoint import describe_clip_state_dict, read_clip_state_dict

    state_dict = read_clip_state_dict(path)
    state_dict = convert_state_dict(clip, state_dict)
    scale = state_dict.get('logit_scale')
    if isinstance(scale, torch.Tensor) and scale.ndim != clip.logit_scale.ndim:
        state_dict['logit_scale'] = scale.reshape(clip.logit_scale.shape)
    own = clip.state_dict()
    file_arch = describe_clip_state_dict(state_dict)
    pos = state_dict.get('visual.positional_embedding')
    if isinstance(pos, torch.Tensor) and pos.shape[-1] == own['visual.positional_embedding'].shape[
            -1]:
        resize_pos_embed(state_dict, clip)
    text_pos = state_dict.get('positional_embedding')
    if isinstance(text_pos, torch.Tensor) and text_pos.shape[-1] == own[
            'positional_embedding'].shape[-1]:
        resize_text_pos_embed(state_dict, clip)
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f'{k}: {tuple(state_dict[k].shape)} in the file, {tuple(v.shape)} in the model'
              for k, v in own.items() if k in state_dict and state_dict[k].shape != v.shape]
    if missing or unexpected or shapes:
        raise ValueError(
            f"CLIP weights pretrained='{path}' do not fit the configured {arch_name} "
            f'({describe_clip_state_dict(own)}): the file holds a {file_arch}. Missing keys '
            f'{missing[:5]}{" ..." if len(missing) > 5 else ""}, unexpected keys '
            f'{unexpected[:5]}{" ..." if len(unexpected) > 5 else ""}, shape mismatches '
            f'{shapes[:3]}. Set backbone.arch to the architecture of the file (e.g. '
            "'ViT-B-16' for ViT-B-16.pt, 'ViT-L-14-336' for ViT-L-14-336px.pt).")
    clip.load_state_dict(state_dict, strict=True)


def _hf_endpoint_host() -> Tuple[str, int]:
    from urllib.parse import urlparse
    url = urlparse(os.environ.get('HF_ENDPOINT') or 'https://huggingface.co')
    return url.hostname or 'huggingface.co', url.port or (80 if url.scheme == 'http' else 443)


def _tag_source(tag_cfg: dict) -> Tuple[str, str]:
    """('hf', 'org/model/filename') or ('url', url): where open_clip would fetch the tag."""
    from open_clip import pretrained as oc_pretrained
    if tag_cfg.get('hf_hub') and oc_pretrained.has_hf_hub():
        return 'hf', tag_cfg['hf_hub']
    return 'url', tag_cfg.get('url', '')


def _cached_tag_file(tag_cfg: dict, cache_dir: Optional[str]) -> Optional[str]:
    """The tag's file if the Hugging Face cache already holds it (no network)."""
    if tag_cfg.get('file'):
        return tag_cfg['file']
    kind, source = _tag_source(tag_cfg)
    if kind != 'hf':
        return None
    from huggingface_hub import try_to_load_from_cache
    from open_clip import pretrained as oc_pretrained
    model_id, filename = os.path.split(source)  # as open_clip's download_pretrained
    filename = filename or oc_pretrained.HF_WEIGHTS_NAME
    names = list(oc_pretrained._get_safe_alternatives(filename)) + [filename]
    for name in names:
        try:
            found = try_to_load_from_cache(model_id, name, cache_dir=cache_dir)
        except Exception:  # a malformed cache is the same as no cache here
            found = None
        if isinstance(found, str) and osp.isfile(found):
            return found
    return None


def _url_cached_file(tag_cfg: dict, cache_dir: Optional[str]) -> Optional[str]:
    """open_clip's URL download cache (``~/.cache/clip/<file>``) for a tag, if present."""
    url = tag_cfg.get('url', '')
    if not url:
        return None
    path = osp.join(cache_dir or osp.expanduser('~/.cache/clip'), osp.basename(url))
    return path if osp.isfile(path) and osp.getsize(path) > 0 else None


def _offline_reason(tag_cfg: dict, timeout: float = 3.0) -> Optional[str]:
    """Why the tag's download host cannot be reached now, or None if it answers.

    ``HF_HUB_OFFLINE`` set -> offline. Otherwise one TCP connection to the host (or to the
    HTTPS proxy when one is configured) in a helper thread, so that a hanging DNS lookup
    is bounded too: no answer within ``timeout`` seconds -> offline.
    """
    import socket
    import threading
    from urllib.parse import urlparse

    kind, source = _tag_source(tag_cfg)
    if kind == 'hf' and os.environ.get('HF_HUB_OFFLINE', '').strip().lower() in (
            '1', 'true', 'yes', 'on'):
        return 'HF_HUB_OFFLINE is set and the file is not in the Hugging Face cache'
    if kind == 'hf':
        host, port = _hf_endpoint_host()
    else:
        url = urlparse(source)
        host, port = url.hostname or '', url.port or 443
    if not host:
        return None
    proxy = (os.environ.get('HTTPS_PROXY') or os.environ.get('https_proxy')
             or os.environ.get('ALL_PROXY') or os.environ.get('all_proxy'))
    if proxy:
        parsed = urlparse(proxy if '://' in proxy else f'http://{proxy}')
        if parsed.hostname:
            host, port = parsed.hostname, parsed.port or 80
    result = {}

    def attempt():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result['ok'] = True
        except OSError as err:
            result['error'] = err

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout)
    if result.get('ok'):
        return None
    error = result.get('error')
    detail = f'{type(error).__name__}: {error}' if error else f'no answer in {timeout:g} s'
    return f'no connection to {host}:{port}, {detail}'


def _unmerge_before_state_dict(module: HCLIPBackbone, prefix, keep_vars):
    module.unmerge()


def _unmerge_after_state_dict(module: HCLIPBackbone, state_dict, prefix, local_metadata):
    module.unmerge()  # in place: the collected tensors share storage with the parameters


def _unmerge_before_load(module: HCLIPBackbone, state_dict, prefix, local_metadata, strict,
                         missing_keys, unexpected_keys, error_msgs):
    module.unmerge()
    module._bump()  # the weights are about to change (some loaders skip post hooks)


def _bump_after_load(module: HCLIPBackbone, incompatible_keys):
    module._bump()


def _adopt_pos_embed_grid(module: HCLIPBackbone, state_dict, prefix, local_metadata, strict,
                          missing_keys, unexpected_keys, error_msgs):
    """Take the positional-embedding grid of the state dict being loaded.

    Checkpoints of earlier versions hold the embedding already resized to ``img_size``'s grid
    (e.g. [24*24+1, D] for ViT-B/16 at 384), new ones the CLIP's native grid ([14*14+1, D]):
    the stored grid is inferred from the shape (:meth:`HCLIPBackbone._infer_pos_grid`) and
    the parameter resized in place before it is loaded; the forward resizes it to the input.
    A different width is left to ``load_state_dict``'s shape check.
    """
    new = state_dict.get(prefix + 'clip.visual.positional_embedding', None)
    visual = module.clip.visual
    own = visual.positional_embedding
    if (not isinstance(new, torch.Tensor) or new.dim() != 2 or new.shape[1] != own.shape[1]
            or new.shape[0] == own.shape[0]):
        return
    grid = module._infer_pos_grid(new.shape[0] - 1)
    own.data = own.data.new_empty(tuple(new.shape))
    visual.grid_size = grid
    visual.image_size = (grid[0] * module.patch_size[0], grid[1] * module.patch_size[1])

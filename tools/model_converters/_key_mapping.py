"""Shared parts of the model converters: exact key bookkeeping, CLIP and CAT-Seg head maps.

Source layout (the detectron2 ``model_final.pth`` of CAT-Seg and of the H-CLIP authors'
CAT-Seg fork; read from their model code):

* ``sem_seg_head.predictor.clip_model.*``: OpenAI's CLIP. CAT-Seg splits every attention's
  ``in_proj_weight`` into ``attn.q_proj_weight`` / ``k_proj_weight`` / ``v_proj_weight``
  (it fine-tunes q and v); the H-CLIP fork keeps ``attn.in_proj_weight``.
* ``sem_seg_head.predictor.transformer.*``: the cost aggregator (``conv1``,
  ``guidance_projection.0``, ``text_guidance_projection.0``,
  ``decoder_guidance_projection.{i}.0``, ``layers.{l}.swin_block.{block_1,block_2,
  guidance_norm}``, ``layers.{l}.attention.{attention,MLP,norm1,norm2,padding_tokens,
  padding_guidance}``, ``decoder{1,2}.{up,conv.double_conv}``, ``head``).
* ``upsample1`` / ``upsample2`` at the top: the transposed convs that lift the guidance of
  the intermediate CLIP blocks for the two decoder stages.

:class:`KeyMapper` consumes every source key exactly once; whatever is left (unknown) or
was asked for and absent (missing) is an error listing them, and the converted state dict
must then load strictly into the model built from the target config.
"""
import os.path as osp
import re
from collections import OrderedDict
from typing import Dict, Iterable, List, Optional, Tuple

import torch
from torch import Tensor

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

CLIP_PREFIX = 'sem_seg_head.predictor.clip_model.'
HEAD_PREFIX = 'sem_seg_head.predictor.transformer.'

# CLIP keys copied as they are (OpenAI's names are open_clip's), relative to CLIP_PREFIX.
_CLIP_COPY = [
    re.compile(p) for p in (
        r'^visual\.(class_embedding|positional_embedding|proj|conv1\.weight)$',
        r'^visual\.(ln_pre|ln_post)\.(weight|bias)$',
        r'^(visual\.)?transformer\.resblocks\.\d+\.(ln_1|ln_2)\.(weight|bias)$',
        r'^(visual\.)?transformer\.resblocks\.\d+\.mlp\.(c_fc|c_proj)\.(weight|bias)$',
        r'^(visual\.)?transformer\.resblocks\.\d+\.attn\.(in_proj_weight|in_proj_bias)$',
        r'^(visual\.)?transformer\.resblocks\.\d+\.attn\.out_proj\.(weight|bias)$',
        r'^(token_embedding\.weight|positional_embedding|text_projection|logit_scale)$',
        r'^ln_final\.(weight|bias)$',
    )
]
_SPLIT_QKV = re.compile(r'^((?:visual\.)?transformer\.resblocks\.\d+\.attn\.)(q|k|v)_proj_weight$')


class ConversionError(ValueError):
    """The source state dict does not have the expected layout."""


class KeyMapper:
    """Moves tensors from a source state dict to a target one, each source key once.

    Args:
        source (dict[str, Tensor]): The source state dict.
        name (str): How to call the source in messages (its path).
    """

    def __init__(self, source: Dict[str, Tensor], name: str):
        self.source = source
        self.name = name
        self.used: set = set()
        self.missing: List[str] = []
        self.target: Dict[str, Tensor] = OrderedDict()
        self.notes: List[str] = []

    def has(self, key: str) -> bool:
        return key in self.source

    def keys(self, prefix: str = '') -> List[str]:
        return [k for k in self.source if k.startswith(prefix)]

    def take(self, key: str, optional: bool = False) -> Optional[Tensor]:
        """Consume ``key``; a key consumed twice is an error (a mapping bug)."""
        if key in self.used:
            raise ConversionError(f'converter bug: source key {key!r} mapped twice')
        if key not in self.source:
            if not optional:
                self.missing.append(key)
            return None
        self.used.add(key)
        return self.source[key]

    def put(self, key: str, value: Optional[Tensor]) -> None:
        if value is None:
            return
        if key in self.target:
            raise ConversionError(f'converter bug: target key {key!r} written twice')
        self.target[key] = value

    def move(self, src: str, dst: str, optional: bool = False) -> None:
        self.put(dst, self.take(src, optional))

    def take_shared(self, keys: Iterable[str], what: str) -> Optional[Tensor]:
        """Consume copies of one shared parameter (saved once per module that holds it);
        all copies must be equal."""
        keys = list(keys)
        values = [self.take(k) for k in keys]
        present = [(k, v) for k, v in zip(keys, values) if v is not None]
        if not present:
            return None
        first_key, first = present[0]
        for key, value in present[1:]:
            if value.shape != first.shape or not torch.equal(value, first):
                raise ConversionError(
                    f'{self.name}: {what} is one shared parameter in the source model, but '
                    f'{key!r} differs from {first_key!r}')
        return first

    def finish(self) -> Dict[str, Tensor]:
        """Raise if a source key was left over or an expected one was absent."""
        unknown = [k for k in self.source if k not in self.used]
        if unknown or self.missing:
            lines = [f'{self.name} does not have the expected layout:']
            if self.missing:
                lines.append(f'  {len(self.missing)} missing key(s): {_listing(self.missing)}')
            if unknown:
                lines.append(f'  {len(unknown)} unknown key(s) (not mapped): '
                             f'{_listing(unknown)}')
            raise ConversionError('\n'.join(lines))
        return self.target


def _listing(items: List[str], limit: int = 8) -> str:
    more = len(items) - limit
    return ', '.join(items[:limit]) + (f', ... ({more} more)' if more > 0 else '')


# ----------------------------------------------------------------------------- reading
def read_source(path: str) -> Dict[str, Tensor]:
    """The model state dict of a detectron2 checkpoint (``{'model': sd, ...}``), read safely.

    Also accepts ``{'state_dict': sd}`` and a bare state dict; a DDP ``module.`` prefix is
    removed. Other entries of the checkpoint (optimizer, scheduler, iteration) are ignored.
    """
    from mmseg_hclip.utils.checkpoint import load_checkpoint_safely
    if not osp.isfile(path):
        raise FileNotFoundError(f'source checkpoint {path!r} does not exist')
    ckpt = load_checkpoint_safely(path, map_location='cpu')
    sd = ckpt
    if isinstance(ckpt, dict):
        for key in ('model', 'state_dict'):
            if isinstance(ckpt.get(key), dict):
                sd = ckpt[key]
                break
    if not isinstance(sd, dict) or not sd or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()):
        top = sorted(map(str, ckpt))[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ConversionError(f'{path!r} holds no model state dict (name -> tensor) under '
                              f"'model' or 'state_dict' (top level: {top}).")
    if all(k.startswith('module.') for k in sd):
        sd = {k[len('module.'):]: v for k, v in sd.items()}
    return dict(sd)


# --------------------------------------------------------------------------------- CLIP
def map_clip(m: KeyMapper, src: str = CLIP_PREFIX, dst: str = 'backbone.clip.') -> None:
    """OpenAI CLIP keys -> open_clip keys (``attn.q/k/v_proj_weight`` are concatenated into
    ``attn.in_proj_weight`` in q, k, v order, the order ``nn.MultiheadAttention`` splits it
    in). Keys under ``src`` that are not CLIP keys are left for other maps (or ``finish``)."""
    split: Dict[str, Dict[str, str]] = {}
    for key in m.keys(src):
        rel = key[len(src):]
        match = _SPLIT_QKV.match(rel)
        if match:
            split.setdefault(match.group(1), {})[match.group(2)] = key
        elif any(p.match(rel) for p in _CLIP_COPY):
            m.move(key, dst + rel)
    for attn, parts in split.items():
        if src + attn + 'in_proj_weight' in m.used:
            raise ConversionError(f'{m.name}: {src}{attn} has both in_proj_weight and split '
                                  'q/k/v_proj_weight')
        tensors = [m.take(src + attn + f'{p}_proj_weight') for p in 'qkv']
        if all(t is not None for t in tensors):
            m.put(dst + attn + 'in_proj_weight', torch.cat(tensors, dim=0))


def clip_width(m: KeyMapper, src: str = CLIP_PREFIX) -> int:
    conv = m.source.get(src + 'visual.conv1.weight')
    if conv is None:
        raise ConversionError(f'{m.name}: no {src}visual.conv1.weight: not a CAT-Seg / H-CLIP '
                              'checkpoint with a ViT CLIP')
    return int(conv.shape[0])


# ------------------------------------------------------------------------- CAT-Seg head
def _indices(m: KeyMapper, pattern: str) -> List[int]:
    regex = re.compile(pattern)
    return sorted({int(mt.group(1)) for k in m.source for mt in [regex.match(k)] if mt})


def map_catseg_head(m: KeyMapper, src: str = HEAD_PREFIX, dst: str = 'decode_head.',
                    top: str = '') -> List[Tuple[str, Tensor]]:
    """CAT-Seg's ``Aggregator`` (+ the top-level ``upsample1/2``) -> ``HCLIPCostAggHead``.

    Returns:
        list[tuple[str, Tensor]]: The Swin attention masks found in the source (buffers
        of CAT-Seg's shifted blocks, ``[nW, N, N]``), for the caller to compare with the
        masks our head computes; they are consumed here.
    """

    def lin(s, d):
        m.move(f'{s}.weight', f'{d}.weight')
        m.move(f'{s}.bias', f'{d}.bias')

    layers = _indices(m, re.escape(src) + r'layers\.(\d+)\.')
    if not layers:
        m.missing.append(f'{src}layers.0.*')
    masks = []
    for l in layers:
        s, d = f'{src}layers.{l}.', f'{dst}layers.{l}.'
        for b, block in enumerate(('block_1', 'block_2')):
            sb, db = f'{s}swin_block.{block}.', f'{d}spatial.blocks.{b}.'
            lin(sb + 'norm1', db + 'norm1')
            for name in ('q', 'k', 'v', 'proj'):
                lin(f'{sb}attn.{name}', f'{db}attn.w_msa.{name}')
            lin(sb + 'norm2', db + 'norm2')
            lin(sb + 'mlp.fc1', db + 'ffn.layers.0.0')
            lin(sb + 'mlp.fc2', db + 'ffn.layers.1')
            mask = m.take(sb + 'attn_mask', optional=True)
            if mask is not None:
                masks.append((sb + 'attn_mask', mask))
        lin(f'{s}swin_block.guidance_norm', f'{d}spatial.guidance_norm')
        sa, da = f'{s}attention.', f'{d}cls.'
        for name in ('q', 'k', 'v'):
            lin(f'{sa}attention.{name}', f'{da}attn.{name}')
        lin(sa + 'MLP.0', da + 'ffn.layers.0.0')
        lin(sa + 'MLP.2', da + 'ffn.layers.1')
        lin(sa + 'norm1', da + 'norm1')
        lin(sa + 'norm2', da + 'norm2')
        # [1, 1, C] tokens -> our [C] (absent when CAT-Seg's pad_len is 0)
        for s_name, d_name in (('padding_tokens', 'pad_token'),
                               ('padding_guidance', 'pad_guidance')):
            token = m.take(sa + s_name, optional=True)
            m.put(da + d_name, None if token is None else token.reshape(-1))
    lin(src + 'conv1', dst + 'cost_embed')
    lin(src + 'guidance_projection.0', dst + 'appearance_guidance_proj.conv')
    lin(src + 'text_guidance_projection.0', dst + 'text_guidance_proj.0')
    stages = _indices(m, re.escape(src) + r'decoder(\d+)\.')
    if not stages:
        m.missing.append(f'{src}decoder1.*')
    for i, n in enumerate(stages):
        if n != i + 1:
            m.missing.append(f'{src}decoder{i + 1}.*')
            break
        lin(f'{src}decoder_guidance_projection.{i}.0', f'{dst}decoder_guidance_proj.{i}.conv')
        lin(f'{top}upsample{n}', f'{dst}decoder_guidance_up.{i}')
        s, d = f'{src}decoder{n}.', f'{dst}decoder.{i}.'
        lin(s + 'up', d + 'up')
        for j, (conv, norm) in enumerate(((0, 1), (3, 4))):
            m.move(f'{s}conv.double_conv.{conv}.weight', f'{d}convs.{j}.conv.weight')
            lin(f'{s}conv.double_conv.{norm}', f'{d}convs.{j}.gn')
    lin(src + 'head', dst + 'cls_head')
    return masks


def consume_pixel_stats(m: KeyMapper, cfg) -> None:
    """CAT-Seg's normalisation buffers, if a checkpoint holds them (current CAT-Seg code does
    not save them): the CLIP statistics must equal the config's data preprocessor."""
    pre = cfg.model.get('data_preprocessor', {}) or {}
    for name, ours in (('clip_pixel_mean', pre.get('mean')), ('clip_pixel_std', pre.get('std'))):
        value = m.take(name, optional=True)
        if value is not None and ours is not None and not torch.allclose(
                value.flatten().double(), torch.tensor(ours, dtype=torch.float64), atol=1e-3):
            raise ConversionError(f'{m.name}: {name} = {value.flatten().tolist()} differs from '
                                  f'the config\'s data_preprocessor ({ours})')
    for name in ('pixel_mean', 'pixel_std'):  # ImageNet statistics of an unused backbone
        m.take(name, optional=True)


def check_attn_masks(masks: List[Tuple[str, Tensor]], model) -> None:
    """CAT-Seg stores its shifted-window masks; ours are computed. They must agree."""
    if not masks:
        return
    head = model.decode_head
    h, w = head.feature_size
    attn = head.layers[0].spatial.blocks[1].attn
    ours = attn.get_attn_mask((h, w), attn.window_size, attn.shift_size, device='cpu')
    for key, mask in masks:
        if ours is None or mask.shape != ours.shape or not torch.equal(mask.float(),
                                                                       ours.float()):
            raise ConversionError(
                f'{key}: the source\'s shifted-window mask {tuple(mask.shape)} differs from the '
                f'one the head computes for a {h}x{w} map, window {attn.window_size}, shift '
                f'{attn.shift_size} ({None if ours is None else tuple(ours.shape)}): window '
                'settings differ from the config.')


# ------------------------------------------------------------------------------ writing
def build_and_check(config: str, state_dict: Dict[str, Tensor], source: str):
    """Build ``config``'s model (no CLIP download) and load ``state_dict`` strictly.

    Returns:
        tuple: ``(model, meta)``, ``meta`` holding the model settings record
        (:func:`mmseg_hclip.engine.model_settings.model_settings`) that the tools check a
        config against when they load the converted checkpoint.
    """
    from mmseg_hclip.apis.inference import (_load_config, build_model_from_state,
                                            check_state_dict)
    from mmseg_hclip.engine.model_settings import SETTINGS_META_KEY, model_settings
    cfg = _load_config(config, None)
    if cfg.model.get('backbone') is not None:
        cfg.model.backbone.pretrained = None  # the converted state holds every CLIP weight
    model = build_model_from_state(cfg, None, None)
    check_state_dict(model, state_dict, source=source, target=f'the model of {config}')
    model.load_state_dict(state_dict, strict=True)
    return model, {SETTINGS_META_KEY: model_settings(model)}


def save(out: str, state_dict: Dict[str, Tensor], meta: dict) -> None:
    """Write an mmengine-style checkpoint atomically (temporary file + rename)."""
    import os
    import tempfile
    folder = osp.dirname(osp.abspath(out))
    os.makedirs(folder, exist_ok=True)
    state_dict = OrderedDict((k, v.detach().float().contiguous() if v.is_floating_point() else
                              v.detach().contiguous()) for k, v in state_dict.items())
    fd, tmp = tempfile.mkstemp(dir=folder, prefix='.converting_', suffix='.pth')
    os.close(fd)
    try:
        torch.save({'meta': meta, 'state_dict': state_dict}, tmp)
        os.replace(tmp, out)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise


def _shown(path: str) -> str:
    """``path`` relative to the repository when it lies inside it."""
    return osp.relpath(path, ROOT) if osp.abspath(path).startswith(ROOT) else path


def finish_and_save(mapper: KeyMapper, masks: List[Tuple[str, Tensor]], config: str, src: str,
                    out: str, converted_from: str, converter: str) -> dict:
    """The converters' last steps: require every source key used, load the result strictly
    into ``config``'s model, compare the attention masks, write ``out`` with the model
    settings and the conversion's origin in ``meta``.

    Returns:
        dict: ``config``, ``num_keys`` (written) and ``num_source_keys``.
    """
    num_source_keys = len(mapper.source)
    state_dict = mapper.finish()
    model, meta = build_and_check(config, state_dict, source=f'the conversion of {src}')
    check_attn_masks(masks, model)
    meta.update(converted_from=converted_from, source=osp.basename(src), converter=converter,
                config=_shown(config))
    save(out, state_dict, meta)
    return dict(config=config, num_keys=len(state_dict), num_source_keys=num_source_keys)


def run_cli(convert, args) -> None:
    """The converters' ``main``: ``convert(args.src, args.out, args.config)``; errors
    (conversion, mismatch, missing file) end the program with one line; prints a summary."""
    if osp.abspath(args.src) == osp.abspath(args.out):
        raise SystemExit('the output would overwrite the source checkpoint; choose another path')
    try:
        info = convert(args.src, args.out, args.config)
    except (ValueError, FileNotFoundError) as err:  # ConversionError, CheckpointMismatchError
        raise SystemExit(f'error: {err}')
    print(f'converted {info["num_source_keys"]} source keys into {info["num_keys"]} keys')
    print(f'checked against: {_shown(osp.abspath(info["config"]))}')
    print(f'written: {args.out}')

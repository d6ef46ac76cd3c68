# Copyright (c) mmseg_hclip contributors. Licensed under the Apache License 2.0.
"""Build a model from a config + checkpoint and segment one image with any vocabulary.

MMSeg's :func:`mmseg.apis.init_model` / :func:`mmseg.apis.inference_model` assume a fixed
class list and load checkpoints non-strictly (a checkpoint of another architecture only
warns). Here the classes are a run-time vocabulary, checkpoints are checked key by key, and
merged checkpoints (``tools/merge_weights.py``) are recognised from their ``meta`` so the
same config serves both::

    from mmseg_hclip.apis import init_model, inference_model
    model = init_model('configs/hclip_vitb16_ade150.py', 'iter_80000.pth', device='cpu')
    result = inference_model(model, 'demo.jpg', ['cat', 'sofa', 'wall'])
    result.pred_sem_seg.data  # [1, H, W] indices into the vocabulary
"""
import colorsys
import copy
import json
import os.path as osp
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from mmengine.config import Config

from ..engine.model_settings import check_model_settings
from ..models.necks.text_embedding_neck import check_vocabulary
from ..utils.checkpoint import load_checkpoint_safely

__all__ = [
    'MERGED_META_KEY', 'CheckpointMismatchError', 'resolve_device', 'read_checkpoint',
    'is_merged_checkpoint', 'check_state_dict', 'init_model', 'parse_vocabulary',
    'load_image', 'inference_model', 'generate_palette', 'draw_legend', 'show_result'
]

#: ``meta`` flag written by ``tools/merge_weights.py``: the CLIP weights hold the folded
#: adapter transforms and the checkpoint has no adapter parameters.
MERGED_META_KEY = 'hclip_merged'
_ADAPTER_PREFIX = 'backbone.adapter.'
_LIST_LIMIT = 5


class CheckpointMismatchError(ValueError):
    """A checkpoint's keys or shapes do not match the model built from the config."""


# ------------------------------------------------------------------------- device
def resolve_device(device: Union[str, torch.device, None]) -> str:
    """Check a device string (``'cpu'``, ``'cuda'``, ``'cuda:1'``).

    Raises:
        ValueError: Unknown device, or CUDA requested where there is no such GPU.
    """
    device = 'cpu' if device is None else str(device)
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"Unknown device {device!r}; use 'cpu', 'cuda' or 'cuda:N'.") from err
    if dev.type == 'cuda':
        if not torch.cuda.is_available():
            raise ValueError(f'--device {device} was requested, but no CUDA GPU is available '
                             '(torch.cuda.is_available() is False); use --device cpu.')
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ValueError(f'--device {device}: there are only {count} CUDA device(s) '
                             f'(cuda:0 .. cuda:{count - 1}).')
    elif dev.type != 'cpu':
        raise ValueError(f"Unsupported device {device!r}; use 'cpu', 'cuda' or 'cuda:N'.")
    return device


# --------------------------------------------------------------------- checkpoints
def read_checkpoint(checkpoint: str,
                    mmap: bool = False) -> Tuple[Dict[str, torch.Tensor], dict]:
    """Load a checkpoint safely (``weights_only``) on the CPU (memory-mapped if ``mmap``).

    Accepts an mmengine checkpoint (``{'state_dict': ..., 'meta': ...}``) or a bare state
    dict, in any format of :func:`mmseg_hclip.utils.checkpoint.load_checkpoint_safely` (zip,
    legacy, safetensors; ``mmap`` applies to zip files); a DDP ``module.`` prefix is removed.
    A CLIP-only weights file and a detectron2 CAT-Seg / H-CLIP checkpoint are refused with
    what to do instead.

    Returns:
        tuple: ``(state_dict, meta)``.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: The file is not a checkpoint of this project (no state dict in it, a
            CLIP-only or detectron2 file; ``CheckpointFormatError`` for an unreadable file).
    """
    path = osp.expanduser(str(checkpoint))
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint {checkpoint!r} does not exist; pass the .pth file '
                                'written by tools/train.py (or tools/merge_weights.py).')
    ckpt = load_checkpoint_safely(path, map_location='cpu', mmap=mmap)
    if not isinstance(ckpt, dict):
        raise ValueError(f'checkpoint {checkpoint!r} holds a {type(ckpt).__name__}, not a '
                         'state dict or an mmengine checkpoint dict.')
    _refuse_foreign_layouts(checkpoint, ckpt)
    meta = ckpt.get('meta', None) or {}
    state_dict = ckpt.get('state_dict', ckpt)
    if not isinstance(state_dict, dict) or not state_dict or not all(
            isinstance(k, str) for k in state_dict):
        raise ValueError(f'checkpoint {checkpoint!r} has no state dict (keys: '
                         f'{sorted(map(str, ckpt))[:_LIST_LIMIT]}).')
    state_dict = {re.sub(r'^module\.', '', k): v for k, v in state_dict.items()}
    if not isinstance(meta, dict):
        meta = {}
    return state_dict, meta


def _refuse_foreign_layouts(checkpoint: str, ckpt: dict) -> None:
    """Name the two kinds of weight files that are not checkpoints of this project."""
    model = ckpt.get('model')
    if isinstance(model, dict) and any(str(k).startswith('sem_seg_head.') for k in model):
        raise ValueError(
            f'{checkpoint!r} is a detectron2 checkpoint of CAT-Seg or of the H-CLIP authors\' '
            'code, not of this project: convert it first with '
            'tools/model_converters/catseg2mmseg.py (CAT-Seg) or '
            'tools/model_converters/hclip_official2mmseg.py (H-CLIP), see docs/tools.md.')
    keys = ckpt.get('state_dict', ckpt)
    if isinstance(keys, dict) and 'visual.conv1.weight' in keys and not any(
            str(k).startswith('backbone.') for k in keys):
        raise ValueError(
            f'{checkpoint!r} holds CLIP weights only (an OpenAI / open_clip file), not a '
            'checkpoint of this project: give it to the backbone instead, e.g. '
            f'--cfg-options model.backbone.pretrained={checkpoint}')


def is_merged_checkpoint(meta: Optional[dict]) -> bool:
    """Whether ``meta`` marks a checkpoint written by ``tools/merge_weights.py``."""
    return bool((meta or {}).get(MERGED_META_KEY, False))


def _listing(items: List[str]) -> str:
    shown = ', '.join(items[:_LIST_LIMIT])
    more = len(items) - _LIST_LIMIT
    return shown + (f', ... ({more} more)' if more > 0 else '')


def _other_pos_embed_grid(key: str, saved: torch.Tensor, own: torch.Tensor) -> bool:
    """An HCLIPBackbone image positional embedding stored on another grid, same width: the
    backbone adopts the stored grid when loading (checkpoints of earlier versions hold it
    resized to ``img_size``)."""
    return (key.endswith('clip.visual.positional_embedding') and saved.dim() == own.dim() == 2
            and saved.shape[1] == own.shape[1])


def check_state_dict(model: torch.nn.Module, state_dict: Dict[str, torch.Tensor],
                     source: str = 'the checkpoint', target: str = 'the model') -> None:
    """Require the same keys and shapes as ``model.state_dict()`` (except the grid of the
    image positional embedding, which the backbone takes from the checkpoint).

    Keys of earlier versions that a module renames when loading (its
    ``upgrade_state_dict(state_dict, prefix)``, e.g. the adapter's Cayley generators, once
    stored as ``blocks.<tower>``) are compared under their new names.

    Raises:
        CheckpointMismatchError: Listing the first missing keys (in the model, not in the
            checkpoint), unexpected keys (the other way round) and shape mismatches.
    """
    state_dict = dict(state_dict)
    for name, module in model.named_modules():
        if callable(getattr(module, 'upgrade_state_dict', None)):
            module.upgrade_state_dict(state_dict, f'{name}.' if name else '')
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [
        f'{k}: {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}' for k in own
        if k in state_dict and isinstance(state_dict[k], torch.Tensor)
        and isinstance(own[k], torch.Tensor) and state_dict[k].shape != own[k].shape
        and not _other_pos_embed_grid(k, state_dict[k], own[k])
    ]
    if not (missing or unexpected or shapes):
        return
    lines = [f'{source} does not fit {target} (a checkpoint of another architecture or '
             'config?):']
    if missing:
        lines.append(f'  {len(missing)} missing key(s) (in the model, not in the checkpoint): '
                     f'{_listing(missing)}')
    if unexpected:
        lines.append(f'  {len(unexpected)} unexpected key(s) (in the checkpoint, not in the '
                     f'model): {_listing(unexpected)}')
    if shapes:
        lines.append(f'  {len(shapes)} shape mismatch(es) (checkpoint vs model): '
                     f'{_listing(shapes)}')
    if missing and not unexpected and not shapes and all(
            k.startswith(_ADAPTER_PREFIX) for k in missing):
        lines.append('  Only adapter parameters are missing: this is a checkpoint without '
                     'adapter (a merged checkpoint that lost its meta flag, or a frozen-CLIP '
                     'model); load it with --cfg-options model.backbone.adapter=None.')
    elif unexpected and not missing and not shapes and all(
            k.startswith(_ADAPTER_PREFIX) for k in unexpected):
        lines.append('  Only adapter parameters are unexpected: the config has no adapter; use '
                     'the config the checkpoint was trained with.')
    else:
        lines.append('  Use the config the checkpoint was trained with.')
    raise CheckpointMismatchError('\n'.join(lines))


def _load_config(config: Union[str, Path, Config], cfg_options: Optional[dict]) -> Config:
    if isinstance(config, (str, Path)):
        if not osp.isfile(str(config)):
            raise FileNotFoundError(f'config {str(config)!r} does not exist.')
        config = Config.fromfile(str(config))
    elif isinstance(config, Config):
        config = copy.deepcopy(config)
    else:
        raise TypeError(f'config must be a file name or an mmengine Config, got {type(config)}')
    if cfg_options:
        config.merge_from_dict(cfg_options)
    return config


def build_model_from_state(config: Config, state_dict: Optional[Dict[str, torch.Tensor]],
                           meta: Optional[dict], source: str = 'the checkpoint'):
    """Build ``config.model`` and load ``state_dict`` strictly (shared by the tools).

    A merged checkpoint (``meta[MERGED_META_KEY]``) is loaded into the model built without
    adapter (``model.backbone.adapter=None``); the backbone's ``pretrained`` weights are not
    fetched when a state dict is given (it holds every CLIP weight).
    """
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    import mmseg_hclip  # noqa: F401  (registers the modules)

    cfg = config
    backbone = cfg.model.get('backbone', None)
    if state_dict is not None and backbone is not None:
        backbone['pretrained'] = None
        backbone['init_cfg'] = None
        if is_merged_checkpoint(meta):
            backbone['adapter'] = None
    cfg.model.train_cfg = None
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    model = MODELS.build(cfg.model)
    if state_dict is not None:
        target = 'the model of this config' + (' (built without adapter: merged checkpoint)'
                                               if is_merged_checkpoint(meta) else '')
        # the settings that give the weights their meaning first: the message names the fix
        check_model_settings(model, meta, source=source, target='the config')
        check_state_dict(model, state_dict, source=source, target=target)
        model.load_state_dict(state_dict, strict=True)
        dataset_meta = (meta or {}).get('dataset_meta', None)
        if dataset_meta:
            model.dataset_meta = dataset_meta
    model.cfg = cfg
    return model


def init_model(config: Union[str, Path, Config],
               checkpoint: Optional[str] = None,
               device: str = 'cpu',
               cfg_options: Optional[dict] = None):
    """Build a segmentor from a config and load a (merged or unmerged) checkpoint.

    Like :func:`mmseg.apis.init_model`, but the checkpoint must fit the model exactly
    (missing / unexpected keys and shape mismatches raise), and a checkpoint written by
    ``tools/merge_weights.py`` is recognised from its ``meta`` and loaded into the same
    config's model built without adapter - no config edit needed.

    Args:
        config (str | Path | Config): Config file or object (not modified).
        checkpoint (str, optional): Checkpoint file; None keeps the built weights.
        device (str): ``'cpu'``, ``'cuda'`` or ``'cuda:N'``. Defaults to ``'cpu'``.
        cfg_options (dict, optional): Overrides merged into the config.

    Returns:
        nn.Module: The segmentor in eval mode on ``device``, with ``model.cfg``.

    Raises:
        FileNotFoundError: Missing config or checkpoint.
        ModelSettingsMismatchError: The checkpoint was trained with other model settings
            (adapter, prompts, head) than the config builds; lists them and the
            ``--cfg-options`` that match it. A checkpoint without a record only warns.
        CheckpointMismatchError: The checkpoint does not fit the config's model.
        ValueError: Bad device.
    """
    device = resolve_device(device)
    cfg = _load_config(config, cfg_options)
    state_dict, meta = (None, None)
    if checkpoint is not None:
        state_dict, meta = read_checkpoint(checkpoint)
    model = build_model_from_state(cfg, state_dict, meta, source=f'checkpoint {checkpoint!r}')
    model.to(device)
    model.eval()
    return model


# ---------------------------------------------------------------------- vocabulary
def parse_vocabulary(text: Optional[str] = None, file: Optional[str] = None) -> Tuple[str, ...]:
    """A vocabulary from a comma-separated string or a file.

    Args:
        text (str, optional): ``"cat,sofa,wall"``: commas separate classes (no synonyms).
        file (str, optional): A JSON list of names (synonyms of one class joined by
            ``", "``, as in ``mmseg_hclip/data/classnames/*.json``) or a text file with one
            class per line (``", "`` inside a line joins synonyms; blank lines and lines
            starting with ``#`` are skipped).

    Returns:
        tuple[str]: The class names, checked (non-empty, no duplicates).

    Raises:
        ValueError: Both or neither given, an empty vocabulary or name, duplicates, a file
            that cannot be parsed.
        FileNotFoundError: ``file`` does not exist.
    """
    if (text is None) == (file is None):
        raise ValueError('Give the classes either as --vocabulary "cat,sofa,wall" or as '
                         '--vocabulary-file FILE, not both and not neither.')
    if text is not None:
        names = [n.strip() for n in text.split(',')]
        if not any(names):
            raise ValueError(f'The vocabulary {text!r} is empty; give at least one class name, '
                             'e.g. --vocabulary "cat,sofa,wall".')
        where = '--vocabulary'
    else:
        if not osp.isfile(file):
            raise FileNotFoundError(f'vocabulary file {file!r} does not exist.')
        with open(file, encoding='utf-8') as f:
            content = f.read()
        if content.lstrip().startswith('['):
            try:
                names = json.loads(content)
            except json.JSONDecodeError as err:
                raise ValueError(f'vocabulary file {file!r} starts with "[" but is not valid '
                                 f'JSON: {err}') from err
            if not isinstance(names, list):
                raise ValueError(f'vocabulary file {file!r}: expected a JSON list of names.')
            names = [n.strip() if isinstance(n, str) else n for n in names]
        else:
            names = [line.strip() for line in content.splitlines()]
            names = [n for n in names if n and not n.startswith('#')]
        if not names:
            raise ValueError(f'vocabulary file {file!r} holds no class names.')
        where = f'vocabulary file {file!r}'
    try:
        return check_vocabulary(names)
    except (ValueError, TypeError) as err:
        raise ValueError(f'{where}: {err}') from None


# -------------------------------------------------------------------------- images
def load_image(path: str) -> np.ndarray:
    """Read an image file as a BGR uint8 array [H, W, 3] (MMCV's convention).

    Raises:
        FileNotFoundError: No such file.
        ValueError: The file cannot be read or decoded as an image.
    """
    import mmcv
    if not osp.isfile(path):
        raise FileNotFoundError(f'image {path!r} does not exist.')
    try:
        with open(path, 'rb') as f:
            content = f.read()
    except OSError as err:
        raise ValueError(f'cannot read image {path!r}: {err}') from err
    image = None
    if content:
        try:
            image = mmcv.imfrombytes(content, flag='color', backend='cv2')
        except Exception:  # cv2 raises cv2.error for some malformed inputs
            image = None
    if image is None or image.ndim != 3 or image.size == 0:
        raise ValueError(f'cannot decode image {path!r}: the file is empty, corrupt or not an '
                         'image format OpenCV reads (PNG, JPEG, BMP, TIFF, WebP, ...).')
    return image


def _inference_pipeline(cfg: Config) -> list:
    """The config's test pipeline for an in-memory image, without annotation loading."""
    pipeline = copy.deepcopy(cfg.get('test_pipeline', None))
    if not pipeline:
        pipeline = [dict(type='LoadImageFromNDArray'), dict(type='PackSegInputs')]
    pipeline = [t for t in pipeline if 'LoadAnnotations' not in str(t.get('type', ''))]
    if pipeline[0].get('type') in ('LoadImageFromFile', 'mmseg.LoadImageFromFile'):
        pipeline[0] = dict(pipeline[0], type='LoadImageFromNDArray')
    elif 'LoadImageFromNDArray' not in str(pipeline[0].get('type')):
        pipeline.insert(0, dict(type='LoadImageFromNDArray'))
    return pipeline


def inference_model(model, image: Union[str, np.ndarray], vocabulary: Sequence[str]):
    """Segment one image with a vocabulary.

    Args:
        model (HCLIPSegmentor): From :func:`init_model` (has ``model.cfg``).
        image (str | np.ndarray): An image file or a BGR uint8 array [H, W, 3].
        vocabulary (Sequence[str]): Class names (label ``i`` is ``vocabulary[i]``).

    Returns:
        SegDataSample: ``pred_sem_seg`` [1, H, W] and ``seg_logits`` (sigmoid scores
        [N, H, W]) at the image's size.
    """
    from mmengine.dataset import Compose

    if isinstance(image, (str, Path)):
        image = load_image(str(image))
    model.set_vocabulary(vocabulary)
    pipeline = Compose(_inference_pipeline(model.cfg))
    data = pipeline(dict(img=image))
    batch = dict(inputs=[data['inputs']], data_samples=[data['data_samples']])
    with torch.no_grad():
        return model.test_step(batch)[0]


# -------------------------------------------------------------------- visualisation
def generate_palette(num_classes: int) -> List[List[int]]:
    """Distinct, deterministic RGB colours for any number of classes.

    Hues advance by the golden ratio (neighbouring labels get far-apart hues); saturation
    and value cycle through three levels each, so large vocabularies (A-847) stay
    distinguishable. Colours are unique (a rare rounding collision is nudged).

    Returns:
        list[list[int]]: ``num_classes`` colours ``[r, g, b]`` in 0..255.
    """
    palette, seen = [], set()
    for i in range(num_classes):
        hue = (i * 0.6180339887498949) % 1.0
        sat = (0.85, 0.55, 1.0)[i % 3]
        val = (0.95, 0.75, 0.55)[(i // 3) % 3]
        color = [int(round(c * 255)) for c in colorsys.hsv_to_rgb(hue, sat, val)]
        step = 0
        while tuple(color) in seen:
            step += 1
            color = [(c + step * (k + 1)) % 256 for k, c in enumerate(color)]
        seen.add(tuple(color))
        palette.append(color)
    return palette


def _display_name(name: str) -> str:
    """The first synonym of a class name (``"building, edifice"`` -> ``"building"``)."""
    return name.split(', ')[0].strip() or name


def draw_legend(image: np.ndarray, names: Sequence[str], colors: Sequence[Sequence[int]],
                max_rows: int = 20) -> np.ndarray:
    """Draw a legend box (colour swatch + name per row) into the top-left corner.

    Args:
        image (np.ndarray): RGB uint8 [H, W, 3]; not modified.
        names (Sequence[str]): Names to list, in order.
        colors (Sequence): RGB colour of each name.
        max_rows (int): Rows shown at most; the rest are summarised as ``+k more``.

    Returns:
        np.ndarray: A copy of ``image`` with the legend.
    """
    import cv2
    out = image.copy()
    if not names:
        return out
    h, w = out.shape[:2]
    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = max(0.3, min(h, w) / 900)
    thick = 1 if min(h, w) < 600 else 2
    (_, text_h), base = cv2.getTextSize('Ag', font, scale, thick)
    row_h = text_h + base + 4
    pad = 3
    rows = min(len(names), max_rows, max((h - 2 * pad) // row_h, 1))
    labels = [_display_name(n) for n in names[:rows]]
    if rows < len(names):
        labels[-1] = f'+{len(names) - rows + 1} more'
    swatch = text_h + base
    text_w = max(cv2.getTextSize(t, font, scale, thick)[0][0] for t in labels)
    box_w = min(w, 2 * pad + swatch + pad + text_w)
    box_h = min(h, 2 * pad + rows * row_h)
    region = out[:box_h, :box_w].astype(np.float32)
    out[:box_h, :box_w] = (region * 0.35).astype(np.uint8)  # darkened background
    for r, text in enumerate(labels):
        y0 = pad + r * row_h
        last_more = r == rows - 1 and rows < len(names)
        if not last_more:
            color = tuple(int(c) for c in colors[r])
            cv2.rectangle(out, (pad, y0 + 1), (pad + swatch, y0 + 1 + swatch), color, -1)
        cv2.putText(out, text, (2 * pad + swatch, y0 + text_h + 2), font, scale,
                    (255, 255, 255), thick, cv2.LINE_AA)
    return out


def show_result(image: np.ndarray,
                result,
                vocabulary: Sequence[str],
                palette: Optional[Sequence[Sequence[int]]] = None,
                opacity: float = 0.5,
                with_labels: bool = True,
                legend: bool = True,
                out_file: Optional[str] = None) -> Tuple[np.ndarray, List[Tuple[int, float]]]:
    """Overlay a prediction with MMSeg's ``SegLocalVisualizer`` (+ a legend).

    The visualiser paints the classes present with ``palette`` and, with
    ``with_labels``, writes each class name on its region; ``legend`` adds a box listing
    the classes present (largest first) with their colours.

    Args:
        image (np.ndarray): BGR uint8 [H, W, 3] (as read by :func:`load_image`).
        result (SegDataSample): From :func:`inference_model`.
        vocabulary (Sequence[str]): The class names of the prediction.
        palette (Sequence, optional): RGB colour per class; default
            :func:`generate_palette`.
        opacity (float): Opacity of the painted map in (0, 1]. Defaults to 0.5.
        with_labels (bool): Class names on the regions. Defaults to True.
        legend (bool): Legend box in the top-left corner. Defaults to True.
        out_file (str, optional): Write the drawing (e.g. a PNG) here.

    Returns:
        tuple: The drawing (RGB uint8 [H, W, 3]) and ``[(label, fraction of pixels)]`` of
        the classes present, largest first.
    """
    import mmcv
    from mmseg.visualization import SegLocalVisualizer

    if not 0 < opacity <= 1:
        raise ValueError(f'opacity={opacity} must be in (0, 1].')
    vocabulary = list(vocabulary)
    palette = [list(map(int, c)) for c in (palette or generate_palette(len(vocabulary)))]
    if len(palette) < len(vocabulary):
        raise ValueError(f'the palette has {len(palette)} colours for {len(vocabulary)} classes')
    rgb = mmcv.bgr2rgb(image)
    labels = result.pred_sem_seg.data.cpu()
    visualizer = SegLocalVisualizer(
        name=f'hclip_demo_{id(result)}_{np.random.randint(1 << 30)}', alpha=opacity)
    visualizer.set_dataset_meta(
        classes=[_display_name(n) for n in vocabulary], palette=palette[:len(vocabulary)])
    visualizer.add_datasample(
        'prediction', rgb, result, draw_gt=False, draw_pred=True, with_labels=with_labels)
    drawn = visualizer.get_image()
    ids, counts = torch.unique(labels, return_counts=True)
    order = torch.argsort(counts, descending=True, stable=True)
    present = [(int(ids[i]), float(counts[i]) / labels.numel()) for i in order
               if 0 <= int(ids[i]) < len(vocabulary)]
    if legend:
        drawn = draw_legend(drawn, [vocabulary[i] for i, _ in present],
                            [palette[i] for i, _ in present])
    if out_file is not None:
        if not mmcv.imwrite(mmcv.rgb2bgr(drawn), out_file):
            raise ValueError(f'could not write {out_file!r} (unsupported extension or '
                             'unwritable directory).')
    return drawn, present

# Copyright (c) mmseg_hclip contributors. Licensed under the Apache License 2.0.
"""The web demo's logic, without the web framework (tested on its own).

Everything model-related goes through :mod:`mmseg_hclip.apis` (``init_model``,
``inference_model``, ``show_result``, ...); this module adds what a page needs on top:
a vocabulary box with a synonym syntax, presets, an image reader with a size limit, the
inference-mode switch, per-class score maps and timing.
"""
import copy
import csv
import io
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from mmseg_hclip.apis import (generate_palette, inference_model, init_model, load_image,
                              parse_vocabulary, show_result)
from mmseg_hclip.datasets.classnames import load_classnames
from mmseg_hclip.models.necks.text_embedding_neck import check_vocabulary

__all__ = [
    'PRESETS', 'MODES', 'DEFAULT_MAX_PIXELS', 'parse_vocabulary_box', 'format_vocabulary',
    'preset_vocabulary', 'read_image', 'Segmentation', 'Segmenter', 'score_map_image'
]

#: Presets of the vocabulary box: label -> key of ``mmseg_hclip/data/classnames``.
PRESETS: Dict[str, str] = {
    'COCO-Stuff-171': 'coco',
    'ADE20K-150': 'ade150',
    'PASCAL Context-59': 'pc59',
    'PASCAL VOC-20': 'voc20',
    'ADE20K-847': 'ade847',
    'PASCAL Context-459': 'pc459',
}

#: Inference modes offered by the page (see :class:`HCLIPSegmentor`).
MODES = ('whole', 'reference')

#: Largest image (pixels) the demo accepts by default: 4096 x 4096.
DEFAULT_MAX_PIXELS = 4096 * 4096

SYNTAX_HELP = ('Separate classes with commas; put a class with synonyms in double quotes, '
               'e.g.  cat, "sofa, couch", wall')


# ---------------------------------------------------------------------- vocabulary
def parse_vocabulary_box(text: Optional[str]) -> Tuple[str, ...]:
    """The vocabulary typed into the page.

    Commas (or new lines) separate classes. A class with synonyms is written in double
    quotes, its synonyms separated by commas inside: ``cat, "sofa, couch", wall`` gives
    ``('cat', 'sofa, couch', 'wall')`` - the package's convention for synonyms (the text
    neck uses the first synonym, or averages all with ``synonyms='average'``). It is CSV
    quoting: a literal ``"`` inside quotes is written ``""``.

    Without quotes or new lines this is :func:`mmseg_hclip.apis.parse_vocabulary`.

    Raises:
        ValueError: Empty vocabulary or class name, duplicates, an unclosed quote.
    """
    if text is None or not text.strip(' ,\n\r\t'):
        raise ValueError('The vocabulary is empty: type class names separated by commas, or '
                         f'pick a preset. {SYNTAX_HELP}.')
    if '"' not in text and '\n' not in text and '\r' not in text:
        return parse_vocabulary(text)
    if text.count('"') % 2:  # an escaped quote ("") inside quotes keeps the count even
        raise ValueError(f'The vocabulary has an unclosed double quote: {text.strip()!r}. '
                         f'{SYNTAX_HELP}.')
    try:
        rows = list(csv.reader(io.StringIO(text.strip()), skipinitialspace=True))
    except csv.Error as err:
        raise ValueError(f'Cannot read the vocabulary ({err}). {SYNTAX_HELP}.') from None
    # synonyms inside quotes are re-joined with ", " (the package's separator)
    names = [', '.join(s.strip() for s in f.split(',') if s.strip()) for row in rows
             for f in row]
    try:
        return check_vocabulary(names)
    except (TypeError, ValueError) as err:
        raise ValueError(f'{err} ({SYNTAX_HELP}.)') from None


def format_vocabulary(names: Sequence[str]) -> str:
    """Write a vocabulary in the box's syntax (inverse of :func:`parse_vocabulary_box` up to
    spaces around names): synonyms in double quotes."""
    out = []
    for name in names:
        name = name.strip()
        if ',' in name or '"' in name:
            name = '"' + name.replace('"', '""') + '"'
        out.append(name)
    return ', '.join(out)


def preset_vocabulary(preset: str) -> str:
    """The vocabulary-box text of a preset (a key of :data:`PRESETS`)."""
    if preset not in PRESETS:
        raise ValueError(f'Unknown preset {preset!r}; choose one of {list(PRESETS)}.')
    return format_vocabulary(load_classnames(PRESETS[preset]))


# --------------------------------------------------------------------------- images
def _header_size(path: str) -> Optional[Tuple[int, int]]:
    """(width, height) from the image header without decoding it; None if PIL cannot tell."""
    from PIL import Image
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # DecompressionBombWarning: we check ourselves
            with Image.open(path) as im:
                return im.size
    except Image.DecompressionBombError as err:
        # more than 2x PIL's limit: the size is in the message, the decision is ours
        raise ValueError(f'The image is too large to open safely ({err}).') from None
    except Exception:  # not a format PIL knows: OpenCV decides below
        return None


def read_image(path: Optional[str], max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an uploaded image as BGR uint8 [H, W, 3], refusing unreadable or huge files.

    The pixel count is checked from the header before the image is decoded.

    Raises:
        ValueError: No image, an unreadable file, or more than ``max_pixels`` pixels.
    """
    if not path:
        raise ValueError('No image: upload an image (PNG, JPEG, BMP, TIFF, WebP, ...) first.')
    path = str(path)

    def check(width: int, height: int):
        if width * height > max_pixels:
            raise ValueError(
                f'The image is {width}x{height} = {width * height / 1e6:.1f} megapixels; this '
                f'demo accepts up to {max_pixels / 1e6:.1f} megapixels (--max-pixels). Downscale '
                'the image first.')

    size = _header_size(path)
    if size is not None:
        check(*size)
    name = path.replace('\\', '/').rsplit('/', 1)[-1]
    try:
        image = load_image(path)
    except (OSError, ValueError) as err:
        raise ValueError(f'Cannot read the uploaded file {name!r} as an image: '
                         f'{str(err).replace(path, name)}') from None
    check(image.shape[1], image.shape[0])
    return image


# ------------------------------------------------------------------------ inference
@dataclass
class Segmentation:
    """One prediction of the demo.

    Attributes:
        image (np.ndarray): The input, BGR uint8 [H, W, 3].
        vocabulary (tuple[str]): Label ``i`` is ``vocabulary[i]``.
        labels (np.ndarray): Predicted labels int64 [H, W].
        scores (np.ndarray): Sigmoid scores float32 [N, H, W].
        seconds (float): Wall time of the model call (text + image + head).
        text_cached (bool): The text embeddings came from the cache (same vocabulary as an
            earlier call).
        mode (str): Inference mode used.
        view (str): What the model saw, for the page (e.g. ``'96x96'``).
        device (str): Where the model ran.
        result: The ``SegDataSample`` of :func:`inference_model`.
    """
    image: np.ndarray
    vocabulary: Tuple[str, ...]
    labels: np.ndarray
    scores: np.ndarray
    seconds: float
    text_cached: bool
    mode: str
    view: str
    device: str
    result: object = field(repr=False)

    def overlay(self, opacity: float = 0.5) -> Tuple[np.ndarray, List[Tuple[int, float]]]:
        """MMSeg's overlay with class names and a legend (:func:`show_result`).

        Returns:
            tuple: RGB uint8 [H, W, 3] and ``[(label, fraction)]`` of the classes present,
            largest first.
        """
        return show_result(self.image, self.result, self.vocabulary,
                           palette=generate_palette(len(self.vocabulary)), opacity=opacity)


def _pair(value) -> Tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    return tuple(int(v) for v in value)


class Segmenter:
    """A segmentor from :func:`init_model` with the page's controls.

    Calls are serialised with a lock (the inference mode and pipeline are set per call).
    Text embeddings are cached per vocabulary by the model's text neck (eval mode, keyed
    by the vocabulary itself); :attr:`Segmentation.text_cached` tells whether a call hit
    that cache.

    Args:
        model (HCLIPSegmentor): From :func:`mmseg_hclip.apis.init_model`.
        max_pixels (int): Largest image accepted by :meth:`read`.
    """

    def __init__(self, model, max_pixels: int = DEFAULT_MAX_PIXELS):
        self.model = model
        self.max_pixels = int(max_pixels)
        self._lock = threading.Lock()
        self._base_test_cfg = copy.deepcopy(dict(model.test_cfg))
        mode = self._base_test_cfg.get('mode', 'whole')
        self.default_mode = mode if mode in MODES else 'whole'
        self.view_size = _pair(model.backbone.img_size)  # (h, w) the CLIP is built for
        self.device = str(next(model.parameters()).device)

    @classmethod
    def from_files(cls, config: str, checkpoint: Optional[str], device: str = 'cpu',
                   cfg_options: Optional[dict] = None, **kwargs) -> 'Segmenter':
        """Build from a config and a (merged or training) checkpoint."""
        return cls(init_model(config, checkpoint, device=device, cfg_options=cfg_options),
                   **kwargs)

    @property
    def merged_checkpoint(self) -> bool:
        """No adapter in the model: a merged checkpoint (or a frozen CLIP)."""
        return self.model.backbone.adapter is None

    def read(self, path: Optional[str]) -> np.ndarray:
        """:func:`read_image` with this demo's size limit."""
        return read_image(path, self.max_pixels)

    def test_cfg(self, mode: str) -> dict:
        """The segmentor's ``test_cfg`` for a mode.

        ``'whole'``: one view, the image resized to the backbone's input size.
        ``'reference'``: the config's ``resize_to`` / ``crop_size`` / ``stride`` where it
        sets them, otherwise the authors' ratios scaled to the backbone's input size
        (640 / 384 / 256 for a 384 model).
        """
        if mode not in MODES:
            raise ValueError(f'Unknown inference mode {mode!r}; choose one of {MODES}.')
        if mode == 'whole':
            return dict(mode='whole')
        base = self._base_test_cfg if self._base_test_cfg.get('mode') == 'reference' else {}
        h, w = self.view_size
        cfg = dict(mode='reference',
                   resize_to=base.get('resize_to', (round(h * 5 / 3), round(w * 5 / 3))),
                   crop_size=base.get('crop_size', (h, w)),
                   stride=base.get('stride', (round(h * 2 / 3), round(w * 2 / 3))))
        if 'batch_views' in base:
            cfg['batch_views'] = base['batch_views']
        return cfg

    def _pipeline(self, mode: str) -> list:
        """The test pipeline of the config; for 'whole', resized to the backbone input."""
        from mmseg_hclip.apis.inference import _inference_pipeline
        pipeline = _inference_pipeline(self.model.cfg)
        if mode == 'whole':
            h, w = self.view_size
            pipeline.insert(1, dict(type='Resize', scale=(w, h), keep_ratio=False))
        return pipeline

    def segment(self, image: np.ndarray, vocabulary: Sequence[str],
                mode: Optional[str] = None) -> Segmentation:
        """Segment a BGR image [H, W, 3] with a vocabulary.

        Raises:
            ValueError: Bad vocabulary or mode.
        """
        from mmengine.config import ConfigDict
        vocabulary = check_vocabulary(vocabulary)
        mode = mode or self.default_mode
        test_cfg = self.test_cfg(mode)
        model, neck = self.model, self.model.neck
        with self._lock:
            saved_cfg, saved_test_cfg = model.cfg, model.test_cfg
            cfg = copy.deepcopy(saved_cfg)
            cfg.test_pipeline = self._pipeline(mode)
            model.cfg, model.test_cfg = cfg, ConfigDict(test_cfg)
            encodes = neck.num_encodes
            try:
                start = time.perf_counter()
                result = inference_model(model, image, vocabulary)
                seconds = time.perf_counter() - start
            finally:
                model.cfg, model.test_cfg = saved_cfg, saved_test_cfg
            text_cached = neck.num_encodes == encodes
        if mode == 'whole':
            view = f'{self.view_size[1]}x{self.view_size[0]}, one view'
        else:
            rh, rw = _pair(test_cfg['resize_to'])
            ch, cw = _pair(test_cfg['crop_size'])
            n = len(model.window_boxes((rh, rw), (ch, cw), _pair(test_cfg['stride'])))
            view = f'{rw}x{rh}: {n} crops of {cw}x{ch} + one global view'
        return Segmentation(
            image=image,
            vocabulary=vocabulary,
            labels=result.pred_sem_seg.data[0].cpu().numpy(),
            scores=result.seg_logits.data.float().cpu().numpy(),
            seconds=seconds,
            text_cached=text_cached,
            mode=mode,
            view=view,
            device=self.device,
            result=result)


# ---------------------------------------------------------------------- score maps
def score_map_image(scores: np.ndarray, image: Optional[np.ndarray] = None,
                    image_weight: float = 0.25) -> np.ndarray:
    """A per-class score map [h, w] in [0, 1] as an RGB picture (viridis colours: 0 dark
    blue, 1 yellow), optionally over a faint grey copy of the image (BGR, any size).

    Returns:
        np.ndarray: RGB uint8 [h, w, 3] (the image's size when given).
    """
    import cv2
    scores = np.asarray(scores, dtype=np.float32)
    if image is not None and scores.shape != image.shape[:2]:
        scores = cv2.resize(scores, (image.shape[1], image.shape[0]),
                            interpolation=cv2.INTER_LINEAR)
    levels = np.clip(np.round(scores * 255), 0, 255).astype(np.uint8)
    heat = cv2.cvtColor(cv2.applyColorMap(levels, cv2.COLORMAP_VIRIDIS), cv2.COLOR_BGR2RGB)
    if image is None or image_weight <= 0:
        return heat
    grey = cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2RGB)
    out = heat.astype(np.float32) * (1 - image_weight) + grey.astype(np.float32) * image_weight
    return np.clip(np.round(out), 0, 255).astype(np.uint8)

# Copyright (c) mmseg_hclip contributors. Licensed under the Apache License 2.0.
"""Open-vocabulary segmentor: HCLIPBackbone -> text neck -> cost-aggregation head."""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmengine.structures import PixelData
from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmseg.utils import ConfigType, OptConfigType, OptMultiConfig, OptSampleList
from torch import Tensor

from ...utils.memory import warn_if_over_memory_budget
from ..necks.text_embedding_neck import check_vocabulary

__all__ = ['HCLIPSegmentor']

_MODES = ('whole', 'slide', 'reference')


@MODELS.register_module()
class HCLIPSegmentor(EncoderDecoder):
    """H-CLIP open-vocabulary segmentor (CAT-Seg-style cost aggregation on CLIP).

    ``backbone`` (:class:`HCLIPBackbone`) gives dense image embeddings and
    guidance features, ``neck`` (:class:`HCLIPTextNeck`) the text embeddings
    of the current vocabulary, and ``decode_head``
    (:class:`HCLIPCostAggHead`) per-class sigmoid scores. The adapted CLIP
    weights are computed once per forward and shared by both towers.

    Vocabulary. The classes are not fixed by the head: they are the current
    vocabulary, set with :meth:`set_vocabulary` (or ``class_names``). In
    training and testing through the runner, ``VocabularyHook`` sets it from
    the dataloader's ``dataset.metainfo['classes']`` (train classes before
    training, the benchmark's classes before val/test). Label ``i`` of a
    dataset is the ``i``-th name of its ``metainfo['classes']``.

    Input size. CLIP sees its own input size (``backbone.img_size``: 384 for
    ViT-B/16, 336 for ViT-L/14@336px): with ``resize_to_backbone=True``
    (default, the reference) a training crop or test view of another size
    (the ViT-L/14 reference trains on 384 crops and tests on 384 views) is
    resized bilinearly to it before CLIP; the head's output is then resized to
    the label (loss) or view (inference) size, as CAT-Seg does.

    Inference (``test_cfg.mode``):

    - ``'whole'``: the (padded) input as given; the test pipeline should
      resize it to the training size. The sigmoid is taken on the head's
      output before it is resized to the image, as the reference's
      non-sliding path does (``test_cfg.sigmoid_before_resize=True``,
      default); ``False`` resizes the logits first (MMSeg's order).
    - ``'slide'``: MMSeg's sliding window (``crop_size``, ``stride``),
      scores averaged where windows overlap. Inputs smaller than
      ``crop_size`` raise a ``ValueError`` (use ``'reference'``, which
      resizes, or pad/resize in the pipeline).
    - ``'reference'`` (the authors' protocol, default in our configs): each
      image is resized to ``resize_to`` (640x640), cut into ``crop_size``
      (384) windows with ``stride`` (256) - 2x2 crops -, plus one global view
      (the image resized to ``crop_size``); the crop scores are averaged where
      they overlap, averaged with the global view's scores (resized to
      ``resize_to``), and resized back to the input size. Any input size
      works. ``batch_views`` (default True) runs the views of an image as one
      batch.

    In 'slide' and 'reference' each view's logits are resized to the view and
    then passed through the sigmoid (the reference's order); the prediction is
    the argmax of the averaged scores. :meth:`predict` resizes the scores of
    'reference' (from ``resize_to``) and 'whole' (from the head's output, when
    the batch holds no padding) to the original image size in one step, as the
    reference does; :meth:`inference` returns them at the input size.

    Args:
        backbone (dict): :class:`HCLIPBackbone` config.
        decode_head (dict): :class:`HCLIPCostAggHead` config.
        neck (dict): :class:`HCLIPTextNeck` config.
            Defaults to ``dict(type='HCLIPTextNeck')``.
        class_names (Sequence[str], optional): Initial vocabulary.
        resize_to_backbone (bool): Resize inputs whose size differs from the
            backbone's ``img_size`` to it before CLIP (bilinear,
            ``align_corners=False``). False gives CLIP the input as it is
            (the backbone then interpolates its positional embedding).
            Defaults to True.
        train_cfg (dict, optional): Passed to the head's loss.
        test_cfg (dict, optional): ``mode`` and its keys (see above).
            Defaults to ``dict(mode='whole')``.
        data_preprocessor (dict, optional): ``SegDataPreProcessor`` config with
            CLIP's mean/std (see the base configs).
        init_cfg (dict, optional): mmengine initialisation config.
    """

    def __init__(self,
                 backbone: ConfigType,
                 decode_head: ConfigType,
                 neck: ConfigType = dict(type='HCLIPTextNeck'),
                 class_names: Optional[Sequence[str]] = None,
                 resize_to_backbone: bool = True,
                 train_cfg: OptConfigType = None,
                 test_cfg: OptConfigType = None,
                 data_preprocessor: OptConfigType = None,
                 init_cfg: OptMultiConfig = None):
        if neck is None:
            raise ValueError('HCLIPSegmentor needs a text neck, e.g. '
                             "neck=dict(type='HCLIPTextNeck', templates='single').")
        test_cfg = dict(mode='whole') if test_cfg is None else test_cfg
        super().__init__(
            backbone=backbone,
            decode_head=decode_head,
            neck=neck,
            train_cfg=train_cfg,
            test_cfg=test_cfg,
            data_preprocessor=data_preprocessor,
            init_cfg=init_cfg)
        self._check_test_cfg(self.test_cfg)
        self.resize_to_backbone = bool(resize_to_backbone)
        self._vocabulary: Optional[Tuple[str, ...]] = None
        if class_names is not None:
            self.set_vocabulary(class_names)

    # -------------------------------------------------------------- vocabulary
    @property
    def vocabulary(self) -> Tuple[str, ...]:
        """The current class names (label ``i`` <-> ``vocabulary[i]``)."""
        if self._vocabulary is None:
            raise RuntimeError(
                'HCLIPSegmentor has no vocabulary. Add custom_hooks=[dict(type='
                "'VocabularyHook')] to the config (it reads the dataloader's "
                "dataset.metainfo['classes']), set model.class_names, or call "
                'model.set_vocabulary([...]).')
        return self._vocabulary

    def set_vocabulary(self, class_names: Sequence[str]) -> None:
        """Set the classes to segment.

        Args:
            class_names (Sequence[str]): Class names; synonyms of one class
                joined by ``", "``.

        Raises:
            ValueError: Empty vocabulary or duplicate names.
        """
        self._vocabulary = check_vocabulary(class_names)

    # ---------------------------------------------------------------- features
    @property
    def backbone_input_size(self) -> Optional[Tuple[int, int]]:
        """``(h, w)`` that CLIP takes (``backbone.img_size``), if the backbone has one."""
        size = getattr(self.backbone, 'img_size', None)
        return None if size is None else _pair(size)

    def to_backbone_size(self, inputs: Tensor) -> Tensor:
        """Resize ``inputs`` [B, 3, H, W] bilinearly to :attr:`backbone_input_size`
        (when ``resize_to_backbone`` and the sizes differ; else unchanged)."""
        size = self.backbone_input_size if self.resize_to_backbone else None
        if size is None or tuple(inputs.shape[2:]) == size:
            return inputs
        return F.interpolate(inputs, size=size, mode='bilinear', align_corners=False)

    def extract_feat(self, inputs: Tensor) -> Dict:
        """Image and text features of one forward.

        Args:
            inputs (Tensor): Normalised images [B, 3, H, W]; resized to the
                backbone's input size first (see ``resize_to_backbone``).

        Returns:
            dict: ``dense`` [B, C, h, w], ``guidance`` list of [B, D, h, w],
            ``text`` [N, P, C] (L2-normalised), N = len(vocabulary).
        """
        inputs = self.to_backbone_size(inputs)
        vocabulary = self.vocabulary
        weights = self.backbone.adapted_weights()  # once per forward, for both towers
        feats = self.backbone(inputs, weights)
        feats['text'] = self.neck(self.backbone, vocabulary, weights)
        return feats

    # --------------------------------------------------------------- inference
    @staticmethod
    def _check_test_cfg(test_cfg) -> None:
        mode = test_cfg.get('mode', 'whole')
        if mode not in _MODES:
            raise ValueError(f"test_cfg.mode={mode!r}; use one of {_MODES} ('reference' = "
                             'resize 640x640, 384 windows stride 256 + a global view).')
        if mode == 'slide':
            for key in ('crop_size', 'stride'):
                if key not in test_cfg:
                    raise ValueError(f"test_cfg.mode='slide' needs test_cfg.{key}")

    def inference(self, inputs: Tensor, batch_img_metas: List[dict]) -> Tensor:
        """Scores of every class at every input pixel.

        Args:
            inputs (Tensor): Normalised images [B, 3, H, W] (maybe padded).
            batch_img_metas (list[dict]): Per-image meta information.

        Returns:
            Tensor: Sigmoid scores [B, N, H, W].
        """
        mode = self.test_cfg.get('mode', 'whole')
        warn_if_over_memory_budget(self, inputs, mode)
        if mode == 'slide':
            return self.slide_inference(inputs, batch_img_metas)
        if mode == 'reference':
            return self.reference_inference(inputs, batch_img_metas)
        return self.whole_inference(inputs, batch_img_metas)

    @staticmethod
    def window_boxes(size: Tuple[int, int], crop: Tuple[int, int],
                     stride: Tuple[int, int]) -> List[Tuple[int, int, int, int]]:
        """Sliding windows ``(y1, y2, x1, x2)`` covering ``size`` (MMSeg's grid).

        The last window in each direction is shifted back to end at the
        border, so every window has the full ``crop`` size.
        """
        (h, w), (ch, cw), (sh, sw) = size, crop, stride
        if h < ch or w < cw:
            raise ValueError(f'The image ({h}x{w}) is smaller than the sliding window '
                             f'crop_size=({ch}, {cw}). Use test_cfg.mode=\'reference\' (resizes '
                             "every image first) or 'whole', or resize/pad the image to at "
                             'least the window size in the test pipeline.')
        if sh <= 0 or sw <= 0:
            raise ValueError(f'stride must be positive, got {stride}')
        boxes = []
        for i in range((max(h - ch, 0) + sh - 1) // sh + 1):
            for j in range((max(w - cw, 0) + sw - 1) // sw + 1):
                y2, x2 = min(i * sh + ch, h), min(j * sw + cw, w)
                boxes.append((y2 - ch, y2, x2 - cw, x2))
        return boxes

    def _views_scores(self, views: Tensor, meta: dict) -> Tensor:
        """Scores of same-size views [V, 3, h, w] -> [V, N, h, w]."""
        view_meta = dict(meta, img_shape=torch.Size(views.shape[2:]))
        if self.test_cfg.get('batch_views', True):
            return self.encode_decode(views, [view_meta] * len(views))
        return torch.cat([self.encode_decode(v[None], [view_meta]) for v in views])

    @staticmethod
    def _assemble(scores: Tensor, boxes, size) -> Tensor:
        """Average window scores [V, N, ch, cw] into one map [1, N, *size]."""
        out = scores.new_zeros(1, scores.shape[1], *size)
        count = scores.new_zeros(1, 1, *size)
        for s, (y1, y2, x1, x2) in zip(scores, boxes):
            out[0, :, y1:y2, x1:x2] += s
            count[0, :, y1:y2, x1:x2] += 1
        return out / count

    def slide_inference(self, inputs: Tensor, batch_img_metas: List[dict]) -> Tensor:
        """MMSeg's sliding-window inference with a run-time class count.

        Args:
            inputs (Tensor): [B, 3, H, W].
            batch_img_metas (list[dict]): Meta information.

        Returns:
            Tensor: [B, N, H, W] scores averaged over overlapping windows.
        """
        crop = _pair(self.test_cfg['crop_size'])
        stride = _pair(self.test_cfg['stride'])
        boxes = self.window_boxes(tuple(inputs.shape[2:]), crop, stride)
        outs = []
        for i in range(inputs.shape[0]):
            views = torch.cat([inputs[i:i + 1, :, y1:y2, x1:x2] for y1, y2, x1, x2 in boxes])
            scores = self._views_scores(views, batch_img_metas[i])
            outs.append(self._assemble(scores, boxes, tuple(inputs.shape[2:])))
        return torch.cat(outs)

    def _reference_scores(self, image: Tensor, meta: dict) -> Tensor:
        """The reference protocol on one unpadded image [1, 3, h, w] -> scores
        [1, N, *resize_to]."""
        size = _pair(self.test_cfg.get('resize_to', (640, 640)))
        crop = _pair(self.test_cfg.get('crop_size', (384, 384)))
        stride = _pair(self.test_cfg.get('stride', (256, 256)))
        boxes = self.window_boxes(size, crop, stride)
        big = F.interpolate(image, size=size, mode='bilinear', align_corners=False)
        views = [big[:, :, y1:y2, x1:x2] for y1, y2, x1, x2 in boxes]
        views.append(F.interpolate(image, size=crop, mode='bilinear', align_corners=False))
        scores = self._views_scores(torch.cat(views), meta)
        local = self._assemble(scores[:-1], boxes, size)
        glob = F.interpolate(scores[-1:], size=size, mode='bilinear', align_corners=False)
        return (local + glob) / 2

    def reference_inference(self, inputs: Tensor, batch_img_metas: List[dict]) -> Tensor:
        """The authors' protocol: 640x640 resize, 384 windows stride 256, plus a global view.

        Keys of ``test_cfg``: ``resize_to`` (default (640, 640)), ``crop_size``
        (default (384, 384)), ``stride`` (default (256, 256)).

        Args:
            inputs (Tensor): [B, 3, H, W], possibly padded (``padding_size``
                in the metas); padding is excluded from the views.
            batch_img_metas (list[dict]): Meta information.

        Returns:
            Tensor: [B, N, H, W] scores (zero in the padding).
        """
        _, _, height, width = inputs.shape
        out = None
        for i in range(inputs.shape[0]):
            left, _, top, _ = _padding(batch_img_metas[i])
            image = _unpad(inputs[i:i + 1], batch_img_metas[i])
            h, w = image.shape[2:]
            merged = F.interpolate(self._reference_scores(image, batch_img_metas[i]),
                                   size=(h, w), mode='bilinear', align_corners=False)
            if out is None:
                out = merged.new_zeros(inputs.shape[0], merged.shape[1], height, width)
            out[i:i + 1, :, top:top + h, left:left + w] = merged
        return out

    def _sigmoid_before_resize(self) -> bool:
        return bool(self.test_cfg.get('sigmoid_before_resize', True))

    def _head_scores(self, inputs: Tensor) -> Tensor:
        """Sigmoid of the head's logits at the head's resolution [B, N, h', w']."""
        return self.decode_head.forward(self.extract_feat(inputs)).sigmoid()

    def whole_inference(self, inputs: Tensor, batch_img_metas: List[dict]) -> Tensor:
        """The whole (padded) input in one forward -> scores [B, N, H, W].

        With ``test_cfg.sigmoid_before_resize`` (default True, the reference's
        non-sliding path) the sigmoid is taken at the head's resolution and the
        scores are resized; otherwise MMSeg's order (resize logits, then sigmoid).
        """
        if not self._sigmoid_before_resize():
            return super().whole_inference(inputs, batch_img_metas)
        return F.interpolate(self._head_scores(inputs), size=tuple(inputs.shape[2:]),
                             mode='bilinear', align_corners=self.align_corners)

    def predict(self, inputs: Tensor, data_samples: OptSampleList = None) -> List[SegDataSample]:
        """Predict label maps at the original image size.

        'reference' and 'whole' (sigmoid before resize, no padding in the batch)
        resize their score maps (``resize_to``, resp. the head's output) to the
        original size in one step, as the reference does; other cases go
        through :meth:`inference` and :meth:`postprocess_result` (MMSeg's path:
        scores at the input size, padding cropped, resized to the original).

        Args:
            inputs (Tensor): Normalised images [B, 3, H, W].
            data_samples (list[SegDataSample], optional): Samples with metas
                (``ori_shape``, padding, flip).

        Returns:
            list[SegDataSample]: ``seg_logits`` (scores [N, H0, W0]) and
            ``pred_sem_seg`` ([1, H0, W0]) at the original size.
        """
        mode = self.test_cfg.get('mode', 'whole')
        warn_if_over_memory_budget(self, inputs, mode)
        if data_samples is None:
            metas = [dict(ori_shape=inputs.shape[2:], img_shape=inputs.shape[2:],
                          pad_shape=inputs.shape[2:], padding_size=[0, 0, 0, 0])
                     for _ in range(inputs.shape[0])]
        else:
            metas = [sample.metainfo for sample in data_samples]
        if mode == 'reference':
            maps = [self._reference_scores(_unpad(inputs[i:i + 1], meta), meta)
                    for i, meta in enumerate(metas)]
        elif mode == 'whole' and self._sigmoid_before_resize() and \
                not any(any(_padding(meta)) for meta in metas):
            maps = list(self._head_scores(inputs).split(1))
        else:
            return super().predict(inputs, data_samples)
        if data_samples is None:
            data_samples = [SegDataSample() for _ in metas]
        for sample, meta, scores, image in zip(data_samples, metas, maps, inputs):
            size = tuple(meta['ori_shape'][:2]) if 'ori_shape' in meta else \
                tuple(_unpad(image[None], meta).shape[2:])
            if tuple(scores.shape[2:]) != size:
                scores = F.interpolate(scores, size=size, mode='bilinear',
                                       align_corners=self.align_corners)
            scores = _flip_back(scores, meta)[0]
            sample.set_data({
                'seg_logits': PixelData(data=scores),
                'pred_sem_seg': PixelData(data=scores.argmax(dim=0, keepdim=True))
            })
        return data_samples

    def postprocess_result(self, seg_logits: Tensor,
                           data_samples: OptSampleList = None) -> List[SegDataSample]:
        """Scores -> ``SegDataSample`` with ``seg_logits`` (scores at the original
        size) and ``pred_sem_seg`` (argmax over the vocabulary, for any N >= 1).

        Args:
            seg_logits (Tensor): [B, N, H, W] scores.
            data_samples (list[SegDataSample], optional): Samples to fill.

        Returns:
            list[SegDataSample]: The samples with predictions.
        """
        batch_size = seg_logits.shape[0]
        if data_samples is None:
            data_samples = [SegDataSample() for _ in range(batch_size)]
            metas = [dict() for _ in range(batch_size)]
        else:
            metas = [s.metainfo for s in data_samples]
        for i, (sample, meta) in enumerate(zip(data_samples, metas)):
            logits = _flip_back(_unpad(seg_logits[i:i + 1], meta), meta)
            if 'ori_shape' in meta and tuple(meta['ori_shape'][:2]) != tuple(logits.shape[2:]):
                logits = F.interpolate(logits, size=tuple(meta['ori_shape'][:2]),
                                       mode='bilinear', align_corners=self.align_corners)
            logits = logits[0]
            sample.set_data({
                'seg_logits': PixelData(data=logits),
                'pred_sem_seg': PixelData(data=logits.argmax(dim=0, keepdim=True))
            })
        return data_samples


def _padding(meta: dict) -> List[int]:
    """``[left, right, top, bottom]`` padding of an image in the batch."""
    padding = meta.get('img_padding_size', None) or meta.get('padding_size', None)
    return list(padding) if padding else [0, 0, 0, 0]


def _unpad(batch: Tensor, meta: dict) -> Tensor:
    """The unpadded part of a [1, C, H, W] tensor."""
    left, right, top, bottom = _padding(meta)
    height, width = batch.shape[2:]
    return batch[:, :, top:height - bottom, left:width - right]


def _flip_back(scores: Tensor, meta: dict) -> Tensor:
    """Undo the test-time flip of ``meta`` on [1, N, H, W] scores."""
    if not meta.get('flip', None):
        return scores
    direction = meta.get('flip_direction', 'horizontal')
    return scores.flip(dims=(3, ) if direction == 'horizontal' else (2, ))


def _pair(value) -> Tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 2:
        raise ValueError(f'Expected an int or a pair, got {value}')
    return value

"""Shortest-edge resize with detectron2's semantics (Pillow image, torch-nearest labels)."""
from typing import Dict, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from mmseg.datasets.transforms import ResizeShortestEdge
from mmseg.registry import TRANSFORMS
from PIL import Image

__all__ = ['PillowResizeShortestEdge']

_PIL_FILTERS = {'bilinear': Image.BILINEAR, 'bicubic': Image.BICUBIC, 'nearest': Image.NEAREST}


@TRANSFORMS.register_module()
class PillowResizeShortestEdge(ResizeShortestEdge):
    """Resize the short side to ``scale`` (long side at most ``max_size``), as the
    reference data pipeline does.

    The H-CLIP / CAT-Seg reference resizes with detectron2's
    ``ResizeShortestEdge``: the output size follows MMSeg's
    :class:`ResizeShortestEdge` (the same rule: short side to ``scale``; when
    the long side would exceed ``max_size``, both sides scaled down so that it
    equals ``max_size``; each side rounded half up), but the pixels differ
    from MMSeg's (OpenCV) resize:

    - a uint8 image is resized by Pillow (``Image.resize``, bilinear by
      default), which low-pass filters when it shrinks (antialiasing), and
      rounds back to uint8; other dtypes use ``torch.nn.functional.interpolate``
      (``align_corners=False``), as detectron2 does;
    - label maps (every key of ``seg_fields``) are resized as detectron2's
      semantic-segmentation training mapper does: as float64 through
      ``torch.nn.functional.interpolate(mode='nearest')`` (source index
      ``floor(i * in / out)``), keeping their dtype (uint8 or uint16).

    At test time put it before the annotation loader (MMSeg convention): the
    label stays at the original size, where the metric scores it.

    Required Keys:

    - img
    - gt_seg_map (optional, any key of ``seg_fields``)

    Modified Keys:

    - img
    - img_shape
    - gt_seg_map (optional)

    Added Keys:

    - scale (tuple[int, int]): (w, h) after resizing
    - scale_factor (tuple[float, float]): (w_new / w, h_new / h)
    - keep_ratio (bool): True

    Args:
        scale (int | tuple[int, int]): Target short-side length (a tuple:
            its minimum).
        max_size (int): Longest allowed long side.
        interpolation (str): Pillow filter of the image: ``'bilinear'``
            (the reference), ``'bicubic'`` or ``'nearest'``. Defaults to
            ``'bilinear'``.
    """

    def __init__(self,
                 scale: Union[int, Tuple[int, int]],
                 max_size: int,
                 interpolation: str = 'bilinear') -> None:
        if interpolation not in _PIL_FILTERS:
            raise ValueError(f'interpolation={interpolation!r}; use one of '
                             f'{sorted(_PIL_FILTERS)}')
        short = min(scale) if isinstance(scale, (tuple, list)) else scale
        if int(short) < 1 or int(max_size) < 1:
            raise ValueError(f'scale={scale}, max_size={max_size}: both must be positive '
                             'numbers of pixels')
        super().__init__(scale=int(short), max_size=int(max_size))
        self.interpolation = interpolation

    def output_size(self, height: int, width: int) -> Tuple[int, int]:
        """``(h, w)`` after resizing an image of ``height`` x ``width``."""
        new_w, new_h = self._get_output_shape(np.empty((height, width, 0)), self.scale)
        return new_h, new_w

    def _resize_image(self, img: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
        h, w = size
        if img.dtype == np.uint8:
            squeeze = img.ndim == 3 and img.shape[2] == 1
            pil = Image.fromarray(np.ascontiguousarray(img[..., 0] if squeeze else img))
            out = np.asarray(pil.resize((w, h), _PIL_FILTERS[self.interpolation]))
            return out[..., None] if squeeze else out
        tensor = torch.from_numpy(np.ascontiguousarray(img))
        shape = tensor.shape
        tensor = tensor.reshape(shape[0], shape[1], -1).permute(2, 0, 1)[None]
        mode = 'nearest' if self.interpolation == 'nearest' else self.interpolation
        kwargs = {} if mode == 'nearest' else dict(align_corners=False)
        out = F.interpolate(tensor, size=(h, w), mode=mode, **kwargs)
        return out[0].permute(1, 2, 0).reshape(h, w, *shape[2:]).numpy()

    @staticmethod
    def _resize_label(seg: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
        tensor = torch.from_numpy(np.ascontiguousarray(seg).astype(np.float64))[None, None]
        out = F.interpolate(tensor, size=size, mode='nearest')[0, 0].numpy()
        return out.astype(seg.dtype)

    def transform(self, results: Dict) -> Dict:
        """Resize ``img`` and the label maps of ``seg_fields``.

        Args:
            results (dict): Result dict from loading.

        Returns:
            dict: The resized results, with ``img_shape``, ``scale``,
            ``scale_factor`` and ``keep_ratio`` set.
        """
        img = results['img']
        height, width = img.shape[:2]
        size = self.output_size(height, width)
        if size != (height, width):
            results['img'] = self._resize_image(img, size)
            for key in results.get('seg_fields', []):
                if results.get(key, None) is not None:
                    results[key] = self._resize_label(results[key], size)
        results['img_shape'] = size
        results['scale'] = (size[1], size[0])
        results['scale_factor'] = (size[1] / width, size[0] / height)
        results['keep_ratio'] = True
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(scale={self.scale}, max_size={self.max_size}, '
                f'interpolation={self.interpolation!r})')

"""Validation of loaded label maps (values, channels, size), shared by training and testing."""
from typing import Optional, Sequence

import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS

#: Offending values listed in an error message at most.
_LIST_LIMIT = 10


def check_label_map(seg: np.ndarray,
                    path: str,
                    num_classes: Optional[int] = None,
                    ignore_index: Optional[int] = None,
                    image_shape: Optional[Sequence[int]] = None,
                    image_path: Optional[str] = None,
                    reduce_zero_label: bool = False) -> None:
    """Raise a ``ValueError`` naming ``path`` when a loaded label map is unusable.

    The rule is the training loss's (``OneHotBCELoss``): every pixel holds a class id in
    ``[0, num_classes)`` or ``ignore_index``. Evaluation drops other values without a
    word (``IoUMetric`` counts only ids below the class count), which inflates the scores.

    Args:
        seg (np.ndarray): The label map as loaded (after ``reduce_zero_label`` and the
            class-subset ``label_map``), expected ``(H, W)``.
        path (str): The label file, named in the message.
        num_classes (int, optional): Class count; None skips the value check.
        ignore_index (int, optional): The ignored label value.
        image_shape (Sequence[int], optional): ``(H, W)`` of the image as read from disk;
            None skips the size check.
        image_path (str, optional): The image file, named in the size message.
        reduce_zero_label (bool): Whether the loader subtracted 1 from the file's values
            (the message then reports the file's values too).

    Raises:
        ValueError: Not one channel, a size other than the image's, or values that are
            neither class ids nor the ignore index.
    """
    seg = np.asarray(seg)
    if seg.ndim != 2:
        raise ValueError(
            f'{path}: a label map must have one channel (H, W) of class ids, got shape '
            f'{tuple(seg.shape)}; a colour-coded or RGB mask must be converted to class-id '
            'PNGs first (see tools/dataset_converters)')
    if image_shape is not None and tuple(seg.shape) != tuple(image_shape[:2]):
        image = f' {image_path}' if image_path else ''
        raise ValueError(
            f'{path}: label size {seg.shape[0]}x{seg.shape[1]} (HxW) differs from its '
            f'image{image} ({image_shape[0]}x{image_shape[1]}); a label must have exactly '
            'the size of its image: check that the two files belong together, or resize '
            'the label with nearest-neighbour interpolation')
    if num_classes is None or seg.size == 0:
        return
    bad = (seg >= num_classes) | (seg < 0)
    if ignore_index is not None:
        bad &= seg != ignore_index
    if not bad.any():
        return
    values, counts = np.unique(seg[bad], return_counts=True)
    shown = ', '.join(f'{int(v)} ({int(c)} px)' for v, c in
                      list(zip(values, counts))[:_LIST_LIMIT])
    more = f' and {len(values) - _LIST_LIMIT} more' if len(values) > _LIST_LIMIT else ''
    reduced = (' (after reduce_zero_label, i.e. file values '
               f'{", ".join(str(int(v) + 1) for v in values[:_LIST_LIMIT])})'
               if reduce_zero_label else '')
    ignore = f' or the ignore index {ignore_index}' if ignore_index is not None else ''
    raise ValueError(
        f'{path}: label values {shown}{more}{reduced} are neither a class id '
        f'(0..{num_classes - 1}, {num_classes} classes){ignore}; training refuses them '
        f'and evaluation would silently drop those pixels. Fix the label file, map these '
        f'values to the ignore index, or give the dataset the classes they stand for '
        f'(metainfo=dict(classes=...))')


@TRANSFORMS.register_module()
class CheckSegLabels(BaseTransform):
    """Check ``gt_seg_map`` right after the annotation loader (see :func:`check_label_map`).

    The H-CLIP datasets (``BenchmarkDatasetMixin``) insert it after the
    ``LoadAnnotations``/``LoadAnnotations16`` of their pipeline with their class count and
    ignore index, so training and evaluation refuse the same bad labels. For another
    dataset class, put it in the pipeline yourself::

        dict(type='LoadAnnotations'), dict(type='CheckSegLabels', num_classes=2),

    Required Keys:

    - gt_seg_map (np.ndarray)
    - seg_map_path (str)

    Optional Keys (read when present):

    - ori_shape (tuple): the image's size before any resize (``LoadImageFromFile``).
    - img_path (str)
    - ignore_index (int): used when the transform has none.
    - reduce_zero_label (bool)

    Args:
        num_classes (int): Number of classes; label ``i`` is class ``i``.
        ignore_index (int, optional): The ignored label value; None reads the data
            info's ``ignore_index``, else 255. Defaults to None.
        check_size (bool): Compare the label's size with the image's. Defaults to True.
    """

    def __init__(self, num_classes: int, ignore_index: Optional[int] = None,
                 check_size: bool = True) -> None:
        if int(num_classes) < 1:
            raise ValueError(f'CheckSegLabels: num_classes={num_classes} must be >= 1')
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.check_size = check_size

    def transform(self, results: dict) -> dict:
        """Raise ``ValueError`` on a bad label map; return ``results`` unchanged."""
        if 'gt_seg_map' not in results:
            return results
        ignore = self.ignore_index
        if ignore is None:
            ignore = results.get('ignore_index', 255)
        shape = results.get('ori_shape') if self.check_size else None
        check_label_map(results['gt_seg_map'], results.get('seg_map_path', '<label>'),
                        num_classes=self.num_classes, ignore_index=int(ignore),
                        image_shape=shape, image_path=results.get('img_path'),
                        reduce_zero_label=bool(results.get('reduce_zero_label', False)))
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(num_classes={self.num_classes}, '
                f'ignore_index={self.ignore_index}, check_size={self.check_size})')

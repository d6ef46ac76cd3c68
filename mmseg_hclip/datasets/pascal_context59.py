"""PASCAL Context with 59 classes (PC-59)."""
from mmseg.datasets import BaseSegDataset, PascalContextDataset59
from mmseg.registry import DATASETS

from .benchmark_base import BenchmarkDatasetMixin
from .classnames import load_classnames


@DATASETS.register_module()
class PascalContext59Dataset(BenchmarkDatasetMixin, BaseSegDataset):
    """PASCAL Context 59 (VOC2010 images + ``trainval_merged.json``), 5,104 val images.

    Labels are already train ids: 0-58 (alphabetical, ``aeroplane`` ...
    ``wood``) in uint8 PNGs, 255 = background / every other class, and
    ``reduce_zero_label=False``. MMSeg's ``PascalContextDataset59`` expects
    the other convention (0 = background, 1-59, reduced at load time) and
    names class 49 ``'table'`` where the benchmark list has ``'diningtable'``,
    so it is not reused; its palette is.

    Layout written by ``tools/dataset_converters/pc59.py``::

        data/pc59/images/val/<id>.jpg
        data/pc59/annotations/val/<id>.png
    """

    METAINFO = dict(
        classes=load_classnames('pc59'),
        palette=PascalContextDataset59.METAINFO['palette'],
        ignore_index=255)

    def __init__(self,
                 img_suffix: str = '.jpg',
                 seg_map_suffix: str = '.png',
                 reduce_zero_label: bool = False,
                 **kwargs) -> None:
        super().__init__(
            img_suffix=img_suffix,
            seg_map_suffix=seg_map_suffix,
            reduce_zero_label=reduce_zero_label,
            **kwargs)

"""PASCAL VOC 2012 without background (PAS-20)."""
from mmseg.datasets import BaseSegDataset, PascalVOCDataset
from mmseg.registry import DATASETS

from .benchmark_base import BenchmarkDatasetMixin
from .classnames import load_classnames


@DATASETS.register_module()
class PascalVOC20Dataset(BenchmarkDatasetMixin, BaseSegDataset):
    """PASCAL VOC 2012, 20 object classes, no background class.

    Labels are train ids 0-19 (raw VOC index minus one) in uint8 PNGs; the raw
    background (0) and boundary (255) are both 255 = ignored. Images whose
    mask would be entirely ignored are not written by the converter, so the
    set holds fewer than the 1,449 ``val.txt`` ids (the converter prints the
    count). MMSeg's ``PascalVOCDataset`` has 21 classes with background and is
    not reused; its palette (without the background colour) is.

    Layout written by ``tools/dataset_converters/voc20.py``::

        data/voc20/images/val/<id>.jpg
        data/voc20/annotations/val/<id>.png
    """

    METAINFO = dict(
        classes=load_classnames('voc20'),
        palette=PascalVOCDataset.METAINFO['palette'][1:],
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

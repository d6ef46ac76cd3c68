"""PASCAL Context with 459 classes (PC-459)."""
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

from .benchmark_base import BenchmarkDatasetMixin, voc_style_palette
from .classnames import load_classnames


@DATASETS.register_module()
class PascalContext459Dataset(BenchmarkDatasetMixin, BaseSegDataset):
    """PASCAL Context 459 (VOC2010 images + ``trainval/<id>.mat``), 5,104 val images.

    Labels are train ids 0-458 (the raw ``LabelMap`` value minus one,
    alphabetical, including ``'unknown'``) stored as single-channel
    **uint16** PNGs; 65535 is the ignore index (a raw 0). Load with
    ``LoadAnnotations16``. MMSeg has no equivalent dataset.

    Layout written by ``tools/dataset_converters/pc459.py``::

        data/pc459/images/val/<id>.jpg
        data/pc459/annotations/val/<id>.png   (uint16)
    """

    METAINFO = dict(
        classes=load_classnames('pc459'),
        palette=voc_style_palette(459),
        ignore_index=65535)

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

"""ADE20K-full with 847 classes (A-847)."""
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

from .benchmark_base import BenchmarkDatasetMixin, voc_style_palette
from .classnames import load_classnames


@DATASETS.register_module()
class ADE20K847Dataset(BenchmarkDatasetMixin, BaseSegDataset):
    """ADE20K-full (``ADE20K_2021_17_01``) with 847 classes, 2,000 val images.

    Labels are train ids 0-846 stored as single-channel **uint16** PNGs;
    65535 is the ignore index (255 is a valid class here: never use an 8-bit
    loader or ignore value). Load with ``LoadAnnotations16``. Images were
    resized by the converter to short side 512 when larger. MMSeg has no
    equivalent dataset.

    Layout written by ``tools/dataset_converters/ade847.py``::

        data/ade847/images/validation/ADE_val_XXXXXXXX.jpg
        data/ade847/annotations/validation/ADE_val_XXXXXXXX.png   (uint16)

    Labels prepared as 16-bit TIFFs elsewhere work with
    ``seg_map_suffix='.tif'``.
    """

    METAINFO = dict(
        classes=load_classnames('ade847'),
        palette=voc_style_palette(847),
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

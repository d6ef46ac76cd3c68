"""PASCAL VOC 2012 with background proxies (PAS-20b)."""
from mmseg.datasets import BaseSegDataset, PascalVOCDataset
from mmseg.registry import DATASETS

from .benchmark_base import BenchmarkDatasetMixin
from .classnames import load_classnames

#: label value of background in the PAS-20b annotations and in the metric.
VOC20B_BACKGROUND_INDEX = 20


@DATASETS.register_module()
class PascalVOC20bDataset(BenchmarkDatasetMixin, BaseSegDataset):
    """PASCAL VOC 2012, 20 object classes + background, queried with 59 names.

    Vocabulary (``METAINFO['classes']``, from ``voc20b.json``): the 20 VOC
    classes (ids 0-19) followed by 39 PASCAL Context classes that act as
    *background proxies* (ids 20-58). The model is queried with all 59 names.

    Labels (uint8 PNG): 0-19 the VOC classes (raw index minus one),
    ``20`` = background (raw 0), 255 = ignored (raw boundary). Scoring uses 21
    classes: ``BackgroundMappedIoUMetric`` maps every predicted index >= 20 to
    20 before computing IoU; it reads ``METAINFO['background_index']``.
    All 1,449 ``val.txt`` images are kept.

    Layout written by ``tools/dataset_converters/voc20b.py``::

        data/voc20b/images/val/<id>.jpg
        data/voc20b/annotations/val/<id>.png
    """

    METAINFO = dict(
        classes=load_classnames('voc20b'),
        # the 20 VOC colours, then black for every background proxy, so a
        # background prediction looks like the background label
        palette=PascalVOCDataset.METAINFO['palette'][1:] + [[0, 0, 0]] * 39,
        ignore_index=255,
        background_index=VOC20B_BACKGROUND_INDEX,
        background_name='background')

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

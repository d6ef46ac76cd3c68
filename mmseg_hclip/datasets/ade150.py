"""ADE20K-150 (A-150), reusing MMSeg's ``ADE20KDataset``."""
from mmseg.datasets import ADE20KDataset
from mmseg.registry import DATASETS

from .benchmark_base import BenchmarkDatasetMixin
from .classnames import load_classnames


@DATASETS.register_module()
class ADE20K150Dataset(BenchmarkDatasetMixin, ADE20KDataset):
    """ADE20K-150 (``ADEChallengeData2016``), 2,000 validation images.

    Label convention of MMSeg's ``ADE20KDataset``: the annotation PNGs are the
    raw ones (0 = unlabeled, 1-150 = classes) and ``reduce_zero_label=True``
    turns them into 0-149 with 255 ignored at load time. The converter
    (``tools/dataset_converters/ade150.py``) therefore copies the raw PNGs
    unchanged; never feed it already-reduced labels (reduction must happen
    exactly once). Class names come from the package's ``ade150.json``
    (identical to MMSeg's list, including ``'bed '``).

    Layout (the same as ``ADEChallengeData2016``)::

        data/ade150/images/validation/ADE_val_XXXXXXXX.jpg
        data/ade150/annotations/validation/ADE_val_XXXXXXXX.png
    """

    METAINFO = dict(
        classes=load_classnames('ade150'),
        palette=ADE20KDataset.METAINFO['palette'],
        ignore_index=255)

    def __init__(self,
                 img_suffix: str = '.jpg',
                 seg_map_suffix: str = '.png',
                 reduce_zero_label: bool = True,
                 **kwargs) -> None:
        super().__init__(
            img_suffix=img_suffix,
            seg_map_suffix=seg_map_suffix,
            reduce_zero_label=reduce_zero_label,
            **kwargs)

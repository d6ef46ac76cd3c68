"""COCO-Stuff-171, the training set (reuses MMSeg's ``COCOStuffDataset``)."""
from mmseg.datasets import COCOStuffDataset
from mmseg.registry import DATASETS

from .benchmark_base import BenchmarkDatasetMixin
from .classnames import load_classnames


@DATASETS.register_module()
class HCLIPCOCOStuffDataset(BenchmarkDatasetMixin, COCOStuffDataset):
    """COCO-Stuff-171 (COCO 2017 images + ``stuffthingmaps_trainval2017``).

    Same label convention and files as MMSeg's ``COCOStuffDataset`` (its
    ``coco_stuff164k.py`` converter output works unchanged): labels 0-170 in
    uint8 ``<id>_labelTrainIds.png`` (80 things then 91 stuff classes),
    255 = unlabeled, ``reduce_zero_label=False``. This subclass only takes its
    class names from the package's ``coco.json`` (identical to MMSeg's list) and
    carries ``ignore_index`` in its ``METAINFO``.

    Layout written by ``tools/dataset_converters/coco_stuff171.py``::

        data/coco_stuff171/images/{train2017,val2017}/<id>.jpg
        data/coco_stuff171/annotations/{train2017,val2017}/<id>_labelTrainIds.png
    """

    METAINFO = dict(
        classes=load_classnames('coco'),
        palette=COCOStuffDataset.METAINFO['palette'],
        ignore_index=255)

    def __init__(self,
                 img_suffix: str = '.jpg',
                 seg_map_suffix: str = '_labelTrainIds.png',
                 **kwargs) -> None:
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix, **kwargs)

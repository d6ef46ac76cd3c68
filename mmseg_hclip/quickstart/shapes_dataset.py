import os.path as osp

from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

from ..datasets.benchmark_base import BenchmarkDatasetMixin
from .shapes import EVAL_CLASSES, generate_shapes_dataset

_PALETTE = [[128, 128, 128], [220, 40, 40], [170, 30, 30], [40, 190, 60], [30, 140, 45],
            [40, 80, 230], [30, 60, 170], [235, 215, 40], [175, 160, 30], [90, 120, 255],
            [255, 240, 120], [120, 240, 140], [255, 120, 120]]


@DATASETS.register_module()
class ShapesDataset(BenchmarkDatasetMixin, BaseSegDataset):
    """The embedded quickstart dataset of coloured shapes (see :mod:`.shapes`).

    Labels are indices into :data:`~mmseg_hclip.quickstart.shapes.EVAL_CLASSES`
    (0 = background); there are no ignored pixels. Labels are checked as in the
    benchmark datasets (:class:`BenchmarkDatasetMixin`). Pass
    ``metainfo=dict(classes=TRAIN_CLASSES)`` to train on the seen vocabulary
    only: MMSeg's label mapping then keeps the seen ids, which are a prefix of
    the evaluation ids.

    Args:
        generate (bool): Write the data under ``data_root`` first if it is not
            there (deterministic; a no-op when it already is). Defaults to True.
        generate_cfg (dict, optional): Arguments of
            :func:`~mmseg_hclip.quickstart.shapes.generate_shapes_dataset`.
        **kwargs: Passed to :class:`BaseSegDataset`.
    """
    METAINFO = dict(classes=EVAL_CLASSES, palette=_PALETTE)

    def __init__(self, generate: bool = True, generate_cfg: dict = None, **kwargs) -> None:
        if generate:
            root = kwargs.get('data_root')
            if not root:
                raise ValueError('ShapesDataset(generate=True) needs data_root, the folder '
                                 'to write the shapes dataset into')
            generate_shapes_dataset(osp.expanduser(root), **(generate_cfg or {}))
        kwargs.setdefault('img_suffix', '.png')
        kwargs.setdefault('seg_map_suffix', '.png')
        kwargs.setdefault('reduce_zero_label', False)
        super().__init__(**kwargs)

"""Benchmark datasets and transforms (registered into MMSeg's registries).

=======================  ===========  =======  ======  ==========================
registered name          benchmark    classes  ignore  label file
=======================  ===========  =======  ======  ==========================
HCLIPCOCOStuffDataset    COCO-Stuff   171      255     uint8 ``_labelTrainIds.png``
ADE20K150Dataset         A-150        150      255     raw uint8 PNG (reduced)
ADE20K847Dataset         A-847        847      65535   uint16 PNG
PascalContext59Dataset   PC-59        59       255     uint8 PNG
PascalContext459Dataset  PC-459       459      65535   uint16 PNG
PascalVOC20Dataset       PAS-20       20       255     uint8 PNG
PascalVOC20bDataset      PAS-20b      59 (21)  255     uint8 PNG, 20 = background
=======================  ===========  =======  ======  ==========================
"""
from .ade150 import ADE20K150Dataset
from .ade847 import ADE20K847Dataset
from .benchmark_base import BenchmarkDatasetMixin, voc_style_palette
from .classnames import (load_ade847_id_table, load_classnames,
                         load_pascal_context_val_ids)
from .coco_stuff import HCLIPCOCOStuffDataset
from .pascal_context59 import PascalContext59Dataset
from .pascal_context459 import PascalContext459Dataset
from .transforms import *  # noqa: F401,F403
from .transforms import CheckSegLabels, LoadAnnotations16, check_label_map
from .voc20 import PascalVOC20Dataset
from .voc20b import VOC20B_BACKGROUND_INDEX, PascalVOC20bDataset

__all__ = [
    'HCLIPCOCOStuffDataset', 'ADE20K150Dataset', 'ADE20K847Dataset',
    'PascalContext59Dataset', 'PascalContext459Dataset', 'PascalVOC20Dataset',
    'PascalVOC20bDataset', 'VOC20B_BACKGROUND_INDEX', 'BenchmarkDatasetMixin',
    'voc_style_palette', 'LoadAnnotations16', 'CheckSegLabels', 'check_label_map',
    'load_classnames',
    'load_ade847_id_table', 'load_pascal_context_val_ids'
]

# PAS-20 (PASCAL VOC 2012 validation without background), 20 classes.
# Prepare with: python tools/dataset_converters/voc20.py RAW_DIR --out-dir data/voc20
# Labels: train ids 0-19 in uint8 PNGs, 255 = background / boundary; background-only images
# are not written (the converter prints how many images the set holds).
#
# Open-vocabulary protocol: train on COCO-Stuff-171 (train_dataloader, train_pipeline
# inherited from coco_stuff171.py), validate/test on this benchmark. Change the folder with
#   --cfg-options val_dataloader.dataset.data_root=... test_dataloader.dataset.data_root=...
# (a child config's bare `data_root = ...` does not reach dicts built in this file).
_base_ = ['./coco_stuff171.py']

dataset_type = 'PascalVOC20Dataset'
data_root = 'data/voc20'
ignore_index = 255

# Test: the reference's test-time resize (short side 640, long side at most 2560, Pillow
# bilinear) before the labels are loaded (they stay at the original size, where the metric
# scores them); the segmentor then resizes (640x640, 384 windows + global view) and returns
# predictions at the original size.
test_pipeline = [
    dict(type='LoadImageFromFile', imdecode_backend='pillow'),
    dict(type='PillowResizeShortestEdge', scale=640, max_size=2560),
    dict(type='LoadAnnotations16'),
    dict(type='PackSegInputs'),
]
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        _delete_=True,
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='images/val', seg_map_path='annotations/val'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader

val_evaluator = dict(type='ReferenceIoUMetric', iou_metrics=['mIoU'], ignore_index=ignore_index)
test_evaluator = val_evaluator

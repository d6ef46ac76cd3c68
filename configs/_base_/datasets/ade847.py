# A-847 (ADE20K-full), 2,000 validation images, 847 classes.
# Prepare with: python tools/dataset_converters/ade847.py RAW_DIR --out-dir data/ade847
# Labels: train ids 0-846 in uint16 PNGs, 65535 = ignore (255 is a valid class).
#
# Open-vocabulary protocol: train on COCO-Stuff-171 (train_dataloader, train_pipeline
# inherited from coco_stuff171.py), validate/test on this benchmark. Change the folder with
#   --cfg-options val_dataloader.dataset.data_root=... test_dataloader.dataset.data_root=...
# (a child config's bare `data_root = ...` does not reach dicts built in this file).
_base_ = ['./coco_stuff171.py']

dataset_type = 'ADE20K847Dataset'
data_root = 'data/ade847'
ignore_index = 65535

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
        data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader

val_evaluator = dict(type='IoUMetric16', iou_metrics=['mIoU'], ignore_index=ignore_index)
test_evaluator = val_evaluator

# COCO-Stuff-171: the training set of every H-CLIP config.
# Prepare with:
#   python tools/dataset_converters/coco_stuff171.py RAW_DIR --out-dir data/coco_stuff171
# Labels 0-170 (uint8 *_labelTrainIds.png), 255 = ignore.
# Registration of the dataset/transform types comes from `custom_imports` in
# configs/_base_/default_runtime.py (not repeated here: duplicate keys among
# `_base_` files are an error in mmengine).
dataset_type = 'HCLIPCOCOStuffDataset'
data_root = 'data/coco_stuff171'
ignore_index = 255
crop_size = (384, 384)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations16'),
    # short side to 384 (the long-side bound 4 * 384 only bites on extreme aspect ratios)
    dict(type='Resize', scale=(1536, 384), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75, ignore_index=ignore_index),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
# No Resize at test time: the segmentor resizes (640x640, 384 windows + global view)
# and returns predictions at the original image size, scored against the original labels.
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations16'),
    dict(type='PackSegInputs'),
]

train_dataloader = dict(
    batch_size=1,  # per GPU; the reference recipe is 4 GPUs x 1 image
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='images/train2017', seg_map_path='annotations/train2017'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='images/val2017', seg_map_path='annotations/val2017'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader

val_evaluator = dict(type='ReferenceIoUMetric', iou_metrics=['mIoU'], ignore_index=ignore_index)
test_evaluator = val_evaluator

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

# The reference's augmentation (detectron2 mapper of H-CLIP / CAT-Seg), see docs/parity.md:
train_pipeline = [
    dict(type='LoadImageFromFile', imdecode_backend='pillow'),  # decoded as detectron2 does
    dict(type='LoadAnnotations16'),
    # short side 384, long side at most 1333 (detectron2's default MAX_SIZE_TRAIN), Pillow's
    # antialiased bilinear resize; labels: nearest as detectron2 resizes them
    dict(type='PillowResizeShortestEdge', scale=crop_size[0], max_size=1333),
    # no single-category cap (the reference's SINGLE_CATEGORY_MAX_AREA is 1.0)
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=1.0),
    dict(type='PhotoMetricDistortion'),  # = detectron2's ColorAugSSDTransform
    dict(type='RandomFlip', prob=0.5),
    # a crop smaller than 384 (long, thin images) is padded as the reference pads it:
    # image 128, label ignore
    dict(type='Pad', size=crop_size, pad_val=dict(img=128, seg=ignore_index)),
    dict(type='PackSegInputs'),
]
# Test: the reference's test-time resize (detectron2: short side 640, long side at most 2560,
# Pillow bilinear) before the labels are loaded, so they stay at the original size, where the
# metric scores them; the segmentor then does its own resizing (640x640, 384 windows + global
# view) and returns predictions at the original image size.
test_pipeline = [
    dict(type='LoadImageFromFile', imdecode_backend='pillow'),
    dict(type='PillowResizeShortestEdge', scale=640, max_size=2560),
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

# H-CLIP, CLIP ViT-B/16, trained on COCO-Stuff-171: the paper's recipe (H-CLIP §5).
#   POF (q = 128, text tower orthogonal, input side for q/k/v/out) + DCRC (2-layer MLPs, Eq. 17)
#   Adam, CLIP lr 5e-6 (the base lr: the adapter's parameters), decode head lr 2e-4
#   (lr_mult 40 from schedule_80k_adam.py; the paper gives no head lr: this is the authors'
#   released value), weight decay 1e-4, PolyLR, 80k iterations, 1 image/GPU x 4 GPUs,
#   384x384 crops, CAT-Seg reference head, reference inference (640x640, 384 windows + global).
#   Validates on COCO-Stuff-171 val; the open-vocabulary benchmarks are
#   configs/hclip_vitb16_{ade847,pc459,ade150,pc59,voc20,voc20b}.py.
#
#   bash tools/dist_train.sh configs/hclip_vitb16_coco-stuff.py 4
#   (offline: --cfg-options model.backbone.pretrained=/path/to/ViT-B-16.pt)
#
# The dataset settings below are those of configs/_base_/datasets/coco_stuff171.py (checked
# equal by tests/configs/test_configs.py). They are written out because that file and the model
# base both define `crop_size`, and mmengine refuses a key defined by two `_base_` files.
_base_ = [
    './_base_/models/hclip_vitb16.py', './_base_/schedules/schedule_80k_adam.py',
    './_base_/default_runtime.py'
]
crop_size = _base_.crop_size  # the backbone's input size (ViT-B/16: 384)

# ---------------------------------------------------------------- COCO-Stuff-171 (train)
dataset_type = 'HCLIPCOCOStuffDataset'
data_root = 'data/coco_stuff171'
ignore_index = 255
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations16'),
    # short side to the crop size (the long-side bound 4x only bites on extreme aspect ratios)
    dict(type='Resize', scale=(4 * crop_size[0], crop_size[0]), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75, ignore_index=ignore_index),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
# no Resize: the segmentor resizes (reference protocol) and scores at the original size
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations16'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=1,  # per GPU: the reference recipe is 4 GPUs x 1 image
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
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'], ignore_index=ignore_index)
test_evaluator = val_evaluator

# the learning rates above are for 4 GPUs x 1 image; `tools/train.py` does not rescale them
auto_scale_lr = dict(enable=False, base_batch_size=4)

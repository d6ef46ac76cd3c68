# H-CLIP, CLIP ViT-L/14, trained on COCO-Stuff-171: the paper's recipe (see
# hclip_vitb16_coco-stuff.py) on the ViT-L/14 model of configs/_base_/models/hclip_vitl14.py:
# input 336x336 (24x24 patches), guidance from image blocks 7 and 15, joint width 768, image
# width 1024; training crops of 336x336 (short side resized to 336).
#
#   bash tools/dist_train.sh configs/hclip_vitl14_coco-stuff.py 4
#   (offline: --cfg-options model.backbone.pretrained=/path/to/ViT-L-14.pt)
#
# The model below equals configs/_base_/models/hclip_vitl14.py (checked by
# tests/configs/test_configs.py); it is written as the difference to the ViT-B/16 config
# because a config cannot take the data settings and a second model base at once.
_base_ = ['./hclip_vitb16_coco-stuff.py']
crop_size = (336, 336)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(arch='ViT-L-14', img_size=336, guidance_layers=(7, 15)),
    decode_head=dict(in_channels=768, guidance_channels=1024, feature_size=(24, 24)),
    test_cfg=dict(mode='reference', resize_to=(640, 640), crop_size=crop_size,
                  stride=(256, 256)))
data_preprocessor = dict(size=crop_size)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations16'),
    dict(type='Resize', scale=(4 * crop_size[0], crop_size[0]), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75,
         ignore_index=_base_.ignore_index),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

# H-CLIP, CLIP ViT-L/14@336px, trained on COCO-Stuff-171: the paper's recipe (see
# hclip_vitb16_coco-stuff.py) on the ViT-L/14 model of configs/_base_/models/hclip_vitl14.py:
# OpenAI's ViT-L/14@336px (open_clip 'ViT-L-14-336', 24x24 grid), guidance from image blocks
# 7 and 15, joint width 768, image width 1024. As in the reference, training crops are 384x384
# (the data of the ViT-B/16 config) and test views 384x384; the segmentor resizes each to 336
# before CLIP, and the loss is computed at 384.
#
#   bash tools/dist_train.sh configs/hclip_vitl14_coco-stuff.py 4
#   (offline: --cfg-options model.backbone.pretrained=/path/to/ViT-L-14-336px.pt)
#
# The model below equals configs/_base_/models/hclip_vitl14.py (checked by
# tests/configs/test_configs.py); it is written as the difference to the ViT-B/16 config
# because a config cannot take the data settings and a second model base at once.
_base_ = ['./hclip_vitb16_coco-stuff.py']
model = dict(
    backbone=dict(arch='ViT-L-14-336', img_size=336, guidance_layers=(7, 15)),
    decode_head=dict(in_channels=768, guidance_channels=1024, feature_size=(24, 24)))

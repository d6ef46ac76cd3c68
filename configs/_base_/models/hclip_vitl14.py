# H-CLIP on CLIP ViT-L/14: reference hyper-parameters.
# Input 336x336 (24x24 patches), guidance from image blocks 7 and 15 (0-based), joint width
# 768, image width 1024. Everything else as in hclip_vitb16.py.
#
# Offline: --cfg-options model.backbone.pretrained=/path/to/ViT-L-14.pt (keep quick_gelu=True).
_base_ = ['./hclip_vitb16.py']
crop_size = (336, 336)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(arch='ViT-L-14', img_size=336, guidance_layers=(7, 15)),
    decode_head=dict(in_channels=768, guidance_channels=1024, feature_size=(24, 24)),
    test_cfg=dict(mode='reference', resize_to=(640, 640), crop_size=(336, 336),
                  stride=(256, 256)))

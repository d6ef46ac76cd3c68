# H-CLIP on CLIP ViT-L/14@336px (OpenAI's 336-pixel ViT-L/14, open_clip 'ViT-L-14-336'): the
# model of CAT-Seg / H-CLIP. CLIP input 336x336 (native 24x24 grid), guidance from image
# blocks 7 and 15 (0-based), joint width 768, image width 1024. Training crops and test views
# stay 384x384, as in the reference: the segmentor resizes each to 336 before CLIP and the
# head's output back to 384 (loss at 384, see HCLIPSegmentor ``resize_to_backbone``).
# Everything else as in hclip_vitb16.py.
#
# Offline: --cfg-options model.backbone.pretrained=/path/to/ViT-L-14-336px.pt
# (keep quick_gelu=True).
_base_ = ['./hclip_vitb16.py']
model = dict(
    backbone=dict(arch='ViT-L-14-336', img_size=336, guidance_layers=(7, 15)),
    decode_head=dict(in_channels=768, guidance_channels=1024, feature_size=(24, 24)))

# CAT-Seg ViT-L/14@336px (Cho et al., CVPR 2024), the authors' released weights, evaluated on PAS-20
# with this project's data pipeline, inference protocol and metric: the baseline H-CLIP is
# compared with, and an end-to-end check of the evaluation on real weights. The model is
# configs/hclip_vitl14_voc20.py without adapter: CAT-Seg's fine-tuned CLIP attention
# (q and v projections) is in the converted CLIP weights.
#
#   python tools/model_converters/catseg2mmseg.py model_large.pth work_dirs/catseg_vitl14.pth
#   bash tools/dist_test.sh configs/catseg/catseg_vitl14_voc20.py work_dirs/catseg_vitl14.pth 4
#
# CAT-Seg's README reports 97.0 mIoU on PAS-20 for these weights.
_base_ = ['../hclip_vitl14_voc20.py']

# The converted CLIP is OpenAI's ViT-L/14@336px: its positional embedding (24x24 grid) is
# taken from the checkpoint.
model = dict(backbone=dict(adapter=None))

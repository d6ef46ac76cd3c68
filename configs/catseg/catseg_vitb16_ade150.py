# CAT-Seg ViT-B/16 (Cho et al., CVPR 2024), the authors' released weights, evaluated on A-150
# with this project's data pipeline, inference protocol and metric: the baseline H-CLIP is
# compared with, and an end-to-end check of the evaluation on real weights. The model is
# configs/hclip_vitb16_ade150.py without adapter: CAT-Seg's fine-tuned CLIP attention
# (q and v projections) is in the converted CLIP weights.
#
#   python tools/model_converters/catseg2mmseg.py model_base.pth work_dirs/catseg_vitb16.pth
#   bash tools/dist_test.sh configs/catseg/catseg_vitb16_ade150.py work_dirs/catseg_vitb16.pth 4
#
# CAT-Seg's README reports 31.8 mIoU on A-150 for these weights.
_base_ = ['../hclip_vitb16_ade150.py']

model = dict(backbone=dict(adapter=None))

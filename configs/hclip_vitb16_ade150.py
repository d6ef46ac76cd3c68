# H-CLIP ViT-B/16 (hclip_vitb16_coco-stuff.py) evaluated on A-150.
# ADE20K: 2,000 validation images, 150 classes; 255 = ignore.
# Open-vocabulary protocol: trained on COCO-Stuff-171, tested here with the benchmark's own
# class names (VocabularyHook) and the reference inference (640x640, windows + global view).
# Paper, Table 1: 32.4 mIoU.
#
#   bash tools/dist_test.sh configs/hclip_vitb16_ade150.py CKPT 4
#   (CKPT: a checkpoint of hclip_vitb16_coco-stuff.py, e.g. work_dirs/.../iter_80000.pth)
#   (data elsewhere: --cfg-options test_dataloader.dataset.data_root=/path/to/ade150)
#
# Only val/test data and metric change (they equal configs/_base_/datasets/ade150.py, checked by
# tests/configs/test_configs.py); training with this config trains on COCO-Stuff-171 and
# validates on this benchmark.
_base_ = ['./hclip_vitb16_coco-stuff.py']

val_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='ADE20K150Dataset',
        data_root='data/ade150',
        data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'),
        pipeline=_base_.test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='ReferenceIoUMetric', iou_metrics=['mIoU'], ignore_index=255)
test_evaluator = val_evaluator

# H-CLIP ViT-L/14 (hclip_vitl14_coco-stuff.py) evaluated on PC-59.
# PASCAL Context: 5,104 validation images, 59 classes; 255 = background / ignore.
# Open-vocabulary protocol: trained on COCO-Stuff-171, tested here with the benchmark's own
# class names (VocabularyHook) and the reference inference (640x640, windows + global view).
# Paper, Table 1: 64.1 mIoU.
#
#   bash tools/dist_test.sh configs/hclip_vitl14_pc59.py CKPT 4
#   (CKPT: a checkpoint of hclip_vitl14_coco-stuff.py, e.g. work_dirs/.../iter_80000.pth)
#   (data elsewhere: --cfg-options test_dataloader.dataset.data_root=/path/to/pc59)
#
# Only val/test data and metric change (they equal configs/_base_/datasets/pc59.py, checked by
# tests/configs/test_configs.py); training with this config trains on COCO-Stuff-171 and
# validates on this benchmark.
_base_ = ['./hclip_vitl14_coco-stuff.py']

val_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='PascalContext59Dataset',
        data_root='data/pc59',
        data_prefix=dict(img_path='images/val', seg_map_path='annotations/val'),
        pipeline=_base_.test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='ReferenceIoUMetric', iou_metrics=['mIoU'], ignore_index=255)
test_evaluator = val_evaluator

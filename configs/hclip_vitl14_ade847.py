# H-CLIP ViT-L/14 (hclip_vitl14_coco-stuff.py) evaluated on A-847.
# ADE20K-full: 2,000 validation images, 847 classes; uint16 labels, 65535 = ignore.
# Open-vocabulary protocol: trained on COCO-Stuff-171, tested here with the benchmark's own
# class names (VocabularyHook) and the reference inference (640x640, windows + global view).
# Paper, Table 1: 16.5 mIoU.
#
#   bash tools/dist_test.sh configs/hclip_vitl14_ade847.py CKPT 4
#   (CKPT: a checkpoint of hclip_vitl14_coco-stuff.py, e.g. work_dirs/.../iter_80000.pth)
#   (data elsewhere: --cfg-options test_dataloader.dataset.data_root=/path/to/ade847)
#
# Only val/test data and metric change (they equal configs/_base_/datasets/ade847.py, checked by
# tests/configs/test_configs.py); training with this config trains on COCO-Stuff-171 and
# validates on this benchmark.
_base_ = ['./hclip_vitl14_coco-stuff.py']

val_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='ADE20K847Dataset',
        data_root='data/ade847',
        data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'),
        pipeline=_base_.test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric16', iou_metrics=['mIoU'], ignore_index=65535)
test_evaluator = val_evaluator

# attn-qv_vitb16_coco-stuff.py (PEFT baseline) evaluated on pc459: the benchmark config
# configs/hclip_vitb16_pc459.py with this baseline's adapter (the same as in the training config,
# checked by tests/configs/test_configs.py).
#   bash tools/dist_test.sh projects/peft_baselines/configs/attn-qv_vitb16_pc459.py CKPT 4
_base_ = ['../../../configs/hclip_vitb16_pc459.py']
custom_imports = dict(
    imports=['mmseg_hclip', 'projects.peft_baselines.peft_baselines'],
    allow_failed_imports=False)
model = dict(
    backbone=dict(
        adapter=dict(
            _delete_=True,
            type='AttentionFinetuneAdapter',
            targets=('q', 'v'),
            train_bias=True)))

# PEFT baseline: CAT-Seg-style attention fine-tuning: the q and v projections (weights and biases)
# of every attention block of both towers trained directly,
# in place of H-CLIP's POF + DCRC; everything else (data, head, recipe: Adam, lr 5e-6 for the
# tuned CLIP parameters, 80k iterations, 4 GPUs x 1 image) as configs/hclip_vitb16_coco-stuff.py.
# Paper: no row of the paper's ablation tables (CAT-Seg's own full recipe, Table 1,
# reaches 12.0 | 19.0 | 31.8 | 57.5 | 94.6 | 77.3 with ViT-B/16).
# Ours: 20,477,952 trainable CLIP parameters (20,447,232 weights + 30,720 biases).
#
# From the repository root (the project package is imported from there):
#   bash tools/dist_train.sh projects/peft_baselines/configs/attn-qv_vitb16_coco-stuff.py 4
#   PYTHONPATH=. python tools/train.py \
#       projects/peft_baselines/configs/attn-qv_vitb16_coco-stuff.py
# Evaluate with projects/peft_baselines/configs/attn-qv_vitb16_{ade847,pc459,...}.py.
_base_ = ['../../../configs/hclip_vitb16_coco-stuff.py']
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

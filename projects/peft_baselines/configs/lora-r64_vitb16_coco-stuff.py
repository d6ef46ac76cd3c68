# PEFT baseline: LoRA, rank 64, on the q, k, v and out projections of both towers,
# in place of H-CLIP's POF + DCRC; everything else (data, head, recipe: Adam, lr 5e-6 for the
# tuned CLIP parameters, 80k iterations, 4 GPUs x 1 image) as configs/hclip_vitb16_coco-stuff.py.
# Paper: Table 3, row 2 ("LoRA", 7.5M parameters), mIoU on
#   A-847 | PC-459 | A-150 | PC-59 | PAS-20 | PAS-20b
#    11.4 |   17.6 |  28.6 |  55.1 |   94.2 |    76.7.
# Ours: 7,864,320 trainable CLIP parameters (= H-CLIP's POF blocks at q = 128; the paper's
# "7.5M" is this count in units of 2^20).
#
# From the repository root (the project package is imported from there):
#   bash tools/dist_train.sh projects/peft_baselines/configs/lora-r64_vitb16_coco-stuff.py 4
#   PYTHONPATH=. python tools/train.py \
#       projects/peft_baselines/configs/lora-r64_vitb16_coco-stuff.py
# Evaluate with projects/peft_baselines/configs/lora-r64_vitb16_{ade847,pc459,...}.py.
_base_ = ['../../../configs/hclip_vitb16_coco-stuff.py']
custom_imports = dict(
    imports=['mmseg_hclip', 'projects.peft_baselines.peft_baselines'],
    allow_failed_imports=False)
model = dict(
    backbone=dict(
        adapter=dict(
            _delete_=True,
            type='LoRAAdapter',
            rank=64,
            alpha=64,  # scale alpha / rank = 1
            targets=('q', 'k', 'v', 'out'))))

# Quickstart baseline: full fine-tuning of the CLIP attention weights + head. The q, k, v and
# out projections (weights and biases) of every block of both towers -- H-CLIP's targets --
# trained directly (projects/peft_baselines' AttentionFinetuneAdapter), with the same
# optimiser, learning rates and schedule as hclip_tiny_shapes.py.
#   python tools/train.py configs/quickstart/attn-ft_tiny_shapes.py   (from the repo root)
_base_ = ['./hclip_tiny_shapes.py']
custom_imports = dict(
    imports=['mmseg_hclip', 'projects.peft_baselines.peft_baselines'],
    allow_failed_imports=False)
model = dict(
    backbone=dict(
        adapter=dict(
            _delete_=True,
            type='AttentionFinetuneAdapter',
            targets=('q', 'k', 'v', 'out'),
            train_bias=True)))

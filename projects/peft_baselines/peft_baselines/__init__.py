"""PEFT baselines for H-CLIP's ablations (paper Table 3): LoRA and CAT-Seg-style attention
fine-tuning, as adapters with the interface of :class:`mmseg_hclip.peft.HCLIPAdapter`.

Importing this package registers the adapters in MMSeg's ``MODELS`` registry, so a config
selects one with ``model.backbone.adapter=dict(type='LoRAAdapter', rank=64)`` and
``custom_imports=dict(imports=['mmseg_hclip', 'projects.peft_baselines.peft_baselines'])``
(run from the repository root, with it on ``PYTHONPATH``).
"""
from mmseg.registry import MODELS

from .attention_finetune import AttentionFinetuneAdapter
from .base import AttentionWeightAdapter
from .lora import LoRAAdapter

MODELS.register_module(module=LoRAAdapter)
MODELS.register_module(module=AttentionFinetuneAdapter)

__all__ = ['AttentionWeightAdapter', 'LoRAAdapter', 'AttentionFinetuneAdapter']

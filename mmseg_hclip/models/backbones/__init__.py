from mmseg.registry import MODELS

from mmseg_hclip.peft import HCLIPAdapter
from .hclip_backbone import HCLIPBackbone

# The method class itself stays free of mm* imports; registering it here lets configs name it
# (`adapter=dict(type='HCLIPAdapter', ...)`) and lets tools check its arguments.
MODELS.register_module(name='HCLIPAdapter', module=HCLIPAdapter)

__all__ = ['HCLIPBackbone']

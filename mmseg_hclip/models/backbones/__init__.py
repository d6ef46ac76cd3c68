from .hclip_backbone import HCLIPBackbone

__all__ = ['HCLIPBackbone']

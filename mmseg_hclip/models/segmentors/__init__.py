from .hclip_segmentor import HCLIPSegmentor

__all__ = ['HCLIPSegmentor']

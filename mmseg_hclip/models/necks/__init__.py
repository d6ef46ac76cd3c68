from .text_embedding_neck import TEMPLATE_SETS, HCLIPTextNeck, check_vocabulary

__all__ = ['HCLIPTextNeck', 'TEMPLATE_SETS', 'check_vocabulary']

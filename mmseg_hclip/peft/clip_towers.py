"""Locate the attention weights of an open_clip ViT CLIP, by name.

The adapter never edits open_clip classes: it only needs, per tower, the names of every
block's ``attn.in_proj_weight`` (``[3d, d]``, rows = q, k, v) and ``attn.out_proj.weight``
(``[d, d]``) as they appear in ``clip.named_parameters()``. Both ``nn.MultiheadAttention`` (the
default open_clip block) and open_clip's custom ``Attention`` use these names.
"""
from dataclasses import dataclass, field
from typing import List, Tuple

from torch import nn

__all__ = ['TowerSpec', 'find_vit_towers', 'TOWERS']

TOWERS = ('image', 'text')


@dataclass
class TowerSpec:
    """Where one tower's targets live and how they are blocked.

    Attributes:
        name (str): 'image' or 'text'.
        prefix (str): module path of the block list, e.g. ``'visual.transformer.resblocks'``.
        num_layers (int): ``L`` of this tower.
        width (int): ``d``, the model width (all targets are ``d x d``).
        in_proj_names (list[str]): ``'{prefix}.{l}.attn.in_proj_weight'`` for every layer.
        out_proj_names (list[str]): ``'{prefix}.{l}.attn.out_proj.weight'`` for every layer.
    """
    name: str
    prefix: str
    num_layers: int
    width: int
    in_proj_names: List[str] = field(default_factory=list)
    out_proj_names: List[str] = field(default_factory=list)


def _not_vit(clip: nn.Module, what: str) -> ValueError:
    return ValueError(
        f'HCLIPAdapter needs an open_clip CLIP whose towers are transformers (a ViT image tower '
        f'at clip.visual.transformer.resblocks and a text transformer at '
        f'clip.transformer.resblocks or clip.text.transformer.resblocks); {what} in the given '
        f'{type(clip).__name__}. ResNet (ModifiedResNet), timm and HuggingFace towers are not '
        f'supported: build a ViT CLIP, e.g. open_clip.create_model("ViT-B-16").')


def find_vit_towers(clip: nn.Module) -> Tuple[TowerSpec, TowerSpec]:
    """Find the image and text transformer blocks of an open_clip ViT CLIP.

    Args:
        clip (nn.Module): ``open_clip.CLIP`` (text tower at ``clip.transformer``) or
            ``open_clip.CustomTextCLIP`` with a ``TextTransformer`` (at ``clip.text``).

    Returns:
        tuple[TowerSpec, TowerSpec]: the image and the text tower.

    Raises:
        ValueError: the model is not a ViT CLIP, or a block's attention weights are not the
            packed ``in_proj_weight [3d, d]`` / ``out_proj.weight [d, d]`` of a self-attention.
    """
    visual = getattr(clip, 'visual', None)
    if visual is None:
        raise _not_vit(clip, 'there is no .visual image tower')
    image_blocks = getattr(getattr(visual, 'transformer', None), 'resblocks', None)
    if not isinstance(image_blocks, nn.ModuleList):
        raise _not_vit(clip, f'the image tower is a {type(visual).__name__}')
    text_blocks = getattr(getattr(clip, 'transformer', None), 'resblocks', None)
    if not isinstance(text_blocks, nn.ModuleList):
        text = getattr(clip, 'text', None)
        text_blocks = getattr(getattr(text, 'transformer', None), 'resblocks', None)
        if not isinstance(text_blocks, nn.ModuleList):
            kind = type(text).__name__ if text is not None else 'missing'
            raise _not_vit(clip, f'the text tower is {kind}')
    module_names = {id(module): name for name, module in clip.named_modules()}
    params = dict(clip.named_parameters())
    specs = []
    for tower, blocks in zip(('image', 'text'), (image_blocks, text_blocks)):
        prefix = module_names[id(blocks)]
        if len(blocks) == 0:
            raise _not_vit(clip, f'the {tower} transformer has no blocks')
        spec = TowerSpec(tower, prefix, len(blocks), width=-1)
        for layer in range(len(blocks)):
            in_name = f'{prefix}.{layer}.attn.in_proj_weight'
            out_name = f'{prefix}.{layer}.attn.out_proj.weight'
            if in_name not in params or out_name not in params:
                raise _not_vit(clip, f'block {prefix}.{layer} has no attn.in_proj_weight / '
                               'attn.out_proj.weight')
            w_in, w_out = params[in_name], params[out_name]
            d = w_in.shape[1]
            if tuple(w_in.shape) != (3 * d, d) or tuple(w_out.shape) != (d, d):
                raise ValueError(
                    f'{in_name} {tuple(w_in.shape)} / {out_name} {tuple(w_out.shape)} are not '
                    'the packed self-attention weights [3d, d] / [d, d] that HCLIPAdapter '
                    'transforms')
            if spec.width not in (-1, d):
                raise ValueError(f'{tower} tower blocks have different widths '
                                 f'({spec.width} and {d}); HCLIPAdapter needs one width per tower')
            spec.width = d
            spec.in_proj_names.append(in_name)
            spec.out_proj_names.append(out_name)
        specs.append(spec)
    return specs[0], specs[1]

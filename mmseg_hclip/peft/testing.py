"""Tiny open_clip ViT CLIPs with random weights, for tests (no download, CPU-friendly).

Used by the tests of every package in this project: ``tiny_clip()`` builds in well under a
second and runs a forward in milliseconds.
"""
from typing import Tuple

import torch
from torch import Tensor, nn

__all__ = ['tiny_clip', 'random_inputs', 'perturb_adapter']


def tiny_clip(vision_width: int = 128,
              vision_layers: int = 2,
              text_width: int = 64,
              text_layers: int = 2,
              embed_dim: int = 32,
              image_size: int = 32,
              patch_size: int = 16,
              context_length: int = 16,
              vocab_size: int = 49408,
              head_width: int = 32,
              text_heads: int = 2,
              seed: int = 0,
              quick_gelu: bool = False) -> nn.Module:
    """Build a small ``open_clip.model.CLIP`` with random weights, in eval mode.

    The global RNG state is left untouched (weights come from ``seed``).

    Args:
        vision_width (int): image tower width ``d_v``.
        vision_layers (int): image tower depth.
        text_width (int): text tower width ``d_e``.
        text_layers (int): text tower depth.
        embed_dim (int): joint embedding size.
        image_size (int): input resolution (square).
        patch_size (int): ViT patch size.
        context_length (int): text context length (tokens per prompt).
        vocab_size (int): text vocabulary size (49408 matches open_clip's tokenizer).
        head_width (int): image attention head width (heads = vision_width // head_width).
        text_heads (int): text attention heads.
        seed (int): seed of the random weights.
        quick_gelu (bool): use QuickGELU as the OpenAI weights do.

    Returns:
        nn.Module: an ``open_clip.model.CLIP``.
    """
    from open_clip.model import CLIP  # lazy: the peft package itself needs only torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIP(
            embed_dim,
            vision_cfg=dict(
                layers=vision_layers,
                width=vision_width,
                head_width=head_width,
                patch_size=patch_size,
                image_size=image_size),
            text_cfg=dict(
                context_length=context_length,
                vocab_size=vocab_size,
                width=text_width,
                heads=text_heads,
                layers=text_layers),
            quick_gelu=quick_gelu)
    return model.eval()


def random_inputs(clip: nn.Module,
                  batch_size: int = 2,
                  num_texts: int = 3,
                  seed: int = 0) -> Tuple[Tensor, Tensor]:
    """Random images and token ids that fit ``clip``.

    Args:
        clip (nn.Module): an open_clip CLIP.
        batch_size (int): number of images.
        num_texts (int): number of token sequences.
        seed (int): RNG seed (the global RNG state is left untouched).

    Returns:
        tuple[Tensor, Tensor]: images ``[batch_size, 3, H, W]`` and tokens
        ``[num_texts, context_length]`` (int64, the last position holds the largest id, as
        an end-of-text token does).
    """
    size = clip.visual.image_size
    size = size if isinstance(size, (tuple, list)) else (size, size)
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch_size, 3, *size, generator=generator)
    tokens = torch.randint(1, clip.vocab_size - 1, (num_texts, clip.context_length),
                           generator=generator)
    tokens[:, -1] = clip.vocab_size - 1
    return images, tokens


def perturb_adapter(adapter: nn.Module, seed: int = 0, scale: float = 1.0) -> nn.Module:
    """Move every parameter of an :class:`HCLIPAdapter` away from its init, deterministically.

    Free blocks get ``I + 0.1·scale·N(0, 1)``, orthogonal generators ``0.3·scale·N(0, 1)``,
    α ``0.5·scale·N(0, 1)``, linear relation maps ``I + 0.1·scale·N(0, 1)``; the MLP relation
    maps keep their random init. Stands in for a trained adapter in tests.

    Args:
        adapter (nn.Module): an ``HCLIPAdapter``.
        seed (int): RNG seed (the global RNG state is left untouched).
        scale (float): size of the perturbation.

    Returns:
        nn.Module: ``adapter`` itself, modified in place.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in adapter.named_parameters():
            noise = torch.randn(param.shape, generator=generator).to(param.device)
            if name.startswith('generators.'):
                param.copy_(0.3 * scale * noise)
            elif name.startswith('blocks.'):
                param.add_(0.1 * scale * noise)
            elif name.endswith('alpha'):
                param.copy_(0.5 * scale * noise)
            elif name.endswith(('s3', 's4')):
                param.add_(0.1 * scale * noise)
    return adapter

"""A tiny CLIP pretrained contrastively on captioned shape scenes (CPU, minutes).

The quickstart's segmentation experiments need a CLIP that *knows its words*:
after this pretraining, the text "blue circle" lands near images of blue
circles although the segmentation training never labels that name. The model is
a plain ``open_clip.CLIP`` (inline architecture :data:`TINY_CLIP_ARCH`) trained
with open_clip's own contrastive loss (``open_clip.loss.ClipLoss``) on the
captions of :mod:`.captions`; the result is saved as an ordinary open_clip state
dict (``torch.save(model.state_dict())``, fp16 tensors like OpenAI's release), so
``HCLIPBackbone(arch=TINY_CLIP_ARCH, pretrained=path)`` loads it exactly as it
loads real CLIP weights.

Deterministic: the data come from a seeded numpy generator, the initialisation
from a seeded torch generator, and the number of intra-op threads is fixed
(float summation order, and so the last bits of the weights, can depend on it
and on the CPU's vector instructions).

Pure torch + open_clip; no mm* imports.
"""
import math
import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .captions import (ALL_NAMES, caption_scene, mentioned, render_captioned_batch,
                       single_shape_batch)
from .shapes import render_scene
from .shapes import SEEN_CLASSES, UNSEEN_CLASSES

__all__ = ['TINY_CLIP_ARCH', 'CLIP_MEAN', 'CLIP_STD', 'build_tiny_clip', 'pretrain_tiny_clip',
           'evaluate_tiny_clip', 'images_to_tensor']

#: open_clip architecture of the quickstart CLIP: 96x96 images, 16-px patches (6x6 tokens),
#: 3 image blocks of width 64, 2 text blocks of width 32, joint width 32, 24 text tokens (the
#: longest caption has 19).
TINY_CLIP_ARCH = dict(
    embed_dim=32,
    vision_cfg=dict(image_size=96, layers=3, width=64, head_width=32, patch_size=16),
    text_cfg=dict(context_length=24, vocab_size=49408, width=32, heads=2, layers=2))
#: CLIP's RGB normalisation (as the segmentation data preprocessor uses it).
CLIP_MEAN = (122.7709383, 116.7460125, 104.09373615)
CLIP_STD = (68.5005327, 66.6321579, 70.32316305)


def build_tiny_clip(arch: Optional[dict] = None, seed: int = 0):
    """A randomly initialised ``open_clip.CLIP`` (seeded, independent of the global RNG)."""
    import open_clip
    arch = dict(TINY_CLIP_ARCH if arch is None else arch)
    fork = torch.random.fork_rng(devices=[])
    with fork:
        torch.manual_seed(seed)
        model = open_clip.CLIP(**arch)
    return model


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 RGB [N, H, W, 3] -> normalised float [N, 3, H, W]."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


class _Tokens:
    """open_clip's tokenizer with a cache (captions repeat a lot)."""

    def __init__(self, context_length: int):
        import open_clip
        self.tokenizer = open_clip.SimpleTokenizer(context_length=context_length)
        self.cache: Dict[str, torch.Tensor] = {}

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        new = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if new:
            for t, tok in zip(new, self.tokenizer(new)):
                if tok[-1] != 0:  # the tokenizer truncates silently
                    raise ValueError(f'caption {t!r} does not fit the context length '
                                     f'{len(tok)}; shorten it or raise context_length')
                self.cache[t] = tok
        return torch.stack([self.cache[t] for t in texts])


def pretrain_tiny_clip(steps: int = 3000,
                       batch_size: int = 128,
                       pool_size: int = 10000,
                       lr: float = 1e-3,
                       weight_decay: float = 0.1,
                       warmup: int = 100,
                       seed: int = 0,
                       threads: int = 1,
                       arch: Optional[dict] = None,
                       log: Optional[Callable[[str], None]] = print,
                       log_every: int = 100) -> torch.nn.Module:
    """Contrastive pretraining of the tiny CLIP on captioned shape scenes.

    AdamW (no weight decay on gains, biases, embeddings and the logit scale),
    linear warmup then cosine decay to 0, open_clip's ``ClipLoss`` with its
    learnable temperature. ``pool_size`` scenes (1 to 3 shapes of all 12 names) are
    rendered first; every step samples ``batch_size`` of them without replacement and
    draws a new caption for each (other words, order and template each time).

    Args:
        steps: Optimiser steps.
        batch_size: Scene-caption pairs per step (the contrastive batch).
        pool_size: Scenes rendered before training.
        lr: Peak learning rate.
        weight_decay: AdamW weight decay of the matrices.
        warmup: Linear warmup steps.
        seed: Seeds the initialisation and the data.
        threads: ``torch.set_num_threads`` for the run (restored afterwards).
        arch: open_clip architecture dict; :data:`TINY_CLIP_ARCH` by default.
        log: Called with one progress line every ``log_every`` steps (None: silent).
        log_every: Logging interval in steps.

    Returns:
        open_clip.CLIP: The trained model (fp32, eval mode).
    """
    from open_clip.loss import ClipLoss
    for name, value in (('steps', steps), ('batch_size', batch_size), ('threads', threads)):
        if int(value) < 1:
            raise ValueError(f'{name}={value} must be a positive integer')
    if batch_size < 2:
        raise ValueError(f'batch_size={batch_size}: a contrastive batch needs at least 2 pairs')
    if pool_size < batch_size:
        raise ValueError(f'pool_size={pool_size} is smaller than batch_size={batch_size}; '
                         'render at least one batch of scenes')
    old_threads = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        model = build_tiny_clip(arch, seed=seed)
        model.train()
        tokens = _Tokens(model.context_length)
        decay, no_decay = [], []
        for n, p in model.named_parameters():
            (decay if p.dim() >= 2 and 'embedding' not in n else no_decay).append(p)
        opt = torch.optim.AdamW([dict(params=decay, weight_decay=weight_decay),
                                 dict(params=no_decay, weight_decay=0.0)],
                                lr=lr, betas=(0.9, 0.98), eps=1e-6)

        def factor(step):
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        loss_fn = ClipLoss()
        rng = np.random.default_rng(seed)
        t0, running = time.time(), []
        pool, pool_objects = _render_pool(rng, pool_size)
        if log is not None:
            log(f'rendered {pool_size} scenes in {time.time() - t0:.0f} s')
        for step in range(int(steps)):
            idx = rng.choice(pool_size, batch_size, replace=False)
            images = pool[idx]
            captions = [caption_scene(pool_objects[i], rng) for i in idx]
            img_f = model.encode_image(images_to_tensor(images), normalize=True)
            txt_f = model.encode_text(tokens(captions), normalize=True)
            loss = loss_fn(img_f, txt_f, model.logit_scale.exp())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():  # as open_clip's trainer: temperature at most 100
                model.logit_scale.clamp_(0, math.log(100))
            running.append(loss.item())
            if log is not None and ((step + 1) % log_every == 0 or step + 1 == steps):
                log(f'step {step + 1}/{steps}  loss {np.mean(running):.4f}  '
                    f'logit scale {float(model.logit_scale.exp()):.1f}  '
                    f'lr {sched.get_last_lr()[0]:.2e}  {time.time() - t0:.0f} s')
                running = []
        model.eval()
        return model
    finally:
        torch.set_num_threads(old_threads)


def _render_pool(rng: np.random.Generator, n: int, size: int = 96, max_shapes: int = 3):
    images = np.empty((n, size, size, 3), np.uint8)
    objects = []
    for i in range(n):
        images[i], _, objs = render_scene(rng, ALL_NAMES, size, max_shapes=max_shapes,
                                          return_objects=True)
        objects.append(objs)
    return images, objects


def _shape_multiset(objects) -> tuple:
    """The names a caption mentions, with multiplicity."""
    return tuple(sorted(o['name'] for o in mentioned(objects)))


@torch.no_grad()
def evaluate_tiny_clip(model: torch.nn.Module, seed: int = 12345, num_pairs: int = 256,
                       per_name: int = 20,
                       template: str = 'a photo of a {}') -> Dict[str, float]:
    """Zero-shot evaluation on held-out scenes (a generator stream the training never used).

    * Retrieval: ``num_pairs`` held-out scene-caption pairs; image->text and
      text->image top-1 among all of them. A retrieved caption (image) counts
      as correct when it names the same shapes (with multiplicity; relations
      and wording aside) as the query's own caption: held-out captions repeat,
      e.g. "a red circle", so the exact pair cannot be singled out. ``chance_*``: the accuracy of a random pick.
    * Classification: ``per_name`` single-shape images of each of the 12
      names, classified among the 12 prompts ``template.format(name)``;
      accuracy overall and on the seen / unseen names of the segmentation split.

    Returns:
        dict: percentages ``i2t_top1``, ``t2i_top1``, ``chance_i2t``,
        ``cls_all``, ``cls_seen``, ``cls_unseen``; ``num_pairs``, ``per_name``.
    """
    model.eval()
    tokens = _Tokens(model.context_length)
    rng = np.random.default_rng(seed)
    images, captions, objects = render_captioned_batch(rng, num_pairs)
    img_f = model.encode_image(images_to_tensor(images), normalize=True)
    txt_f = model.encode_text(tokens(captions), normalize=True)
    sim = img_f @ txt_f.T
    keys = [_shape_multiset(o) for o in objects]
    same = torch.tensor([[a == b for b in keys] for a in keys])
    i2t = same[torch.arange(num_pairs), sim.argmax(1)].float().mean()
    t2i = same[sim.argmax(0), torch.arange(num_pairs)].float().mean()
    chance = same.float().mean()

    images, targets = single_shape_batch(rng, per_name)
    img_f = model.encode_image(images_to_tensor(images), normalize=True)
    txt_f = model.encode_text(tokens([template.format(n) for n in ALL_NAMES]), normalize=True)
    pred = (img_f @ txt_f.T).argmax(1)
    targets = torch.tensor(targets)
    correct = pred == targets
    seen = torch.tensor([ALL_NAMES[t] in SEEN_CLASSES for t in targets.tolist()])
    unseen = torch.tensor([ALL_NAMES[t] in UNSEEN_CLASSES for t in targets.tolist()])
    return dict(i2t_top1=100 * float(i2t), t2i_top1=100 * float(t2i),
                chance_i2t=100 * float(chance), cls_all=100 * float(correct.float().mean()),
                cls_seen=100 * float(correct[seen].float().mean()),
                cls_unseen=100 * float(correct[unseen].float().mean()),
                num_pairs=num_pairs, per_name=per_name)


def fp16_state_dict(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """The model's state dict with floating tensors in fp16 (half the file size)."""
    return {k: (v.half() if v.is_floating_point() else v).clone()
            for k, v in model.state_dict().items()}


def class_names_in(text: str) -> List[str]:
    """The shape names a text mentions (helper for tests and reports)."""
    return [n for n in ALL_NAMES if n in text]

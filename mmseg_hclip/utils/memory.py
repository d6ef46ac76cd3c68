"""Peak-memory estimate of H-CLIP inference, to warn (or pick another mode) before an image
is too large for the memory at hand.

The estimate adds up the tensors that are alive at the worst moment of one
``HCLIPSegmentor.inference`` call, from the architecture's sizes (read off the model) and
the image size and class count. In ``whole`` mode the cost grows with the *image area times
the number of classes*: the decode head keeps one feature map per class, and its decoder
upsamples these to a quarter of the input resolution (for ViT-B/16 about 8 KiB per class
and 16x16-pixel patch), then one fp32 score map per class at the input size is formed twice
(resize and sigmoid). Without a fused attention kernel the image tower also forms
``heads x tokens²`` attention weights. ``reference`` mode resizes every image to a fixed
size first, so only the final score maps grow with the image.

The numbers are an estimate (no allocator is modelled); ``docs/memory.md`` compares them
with measured peaks of the real-size ViT-B/16.
"""
import math
import warnings
from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn

GIB = 1024**3
#: ``test_cfg.memory_budget_gb`` when the config gives none (whole and slide modes).
DEFAULT_BUDGET_GB = 8.0

__all__ = [
    'GIB', 'DEFAULT_BUDGET_GB', 'MemoryEstimate', 'estimate_inference_memory',
    'warn_if_over_memory_budget', 'plan_inference'
]


@dataclass
class MemoryEstimate:
    """Estimated peak bytes of one inference call (beyond the model's weights).

    ``total = input + features + max(stages)``.

    Attributes:
        total (int): Estimated peak in bytes.
        parts (dict[str, int]): ``input`` (the image tensors) and ``features`` (the image
            tower's outputs, kept through the head).
        stages (dict[str, int]): Transient peak of each stage: ``preprocess``,
            ``image_tower``, ``aggregation``, ``decoder``, ``scores``.
        mode (str): The inference mode estimated.
    """
    total: int
    parts: Dict[str, int] = field(default_factory=dict)
    stages: Dict[str, int] = field(default_factory=dict)
    mode: str = 'whole'

    @property
    def largest_stage(self) -> str:
        return max(self.stages, key=self.stages.get) if self.stages else ''

    @property
    def gib(self) -> float:
        return self.total / GIB

    def __str__(self) -> str:
        return f'{self.gib:.1f} GiB'


# ---------------------------------------------------------------------- architecture
def _first(module: nn.Module, kind) -> Optional[nn.Module]:
    return next((m for m in module.modules() if isinstance(m, kind)), None)


def _arch(model) -> dict:
    """Sizes of the image tower and the decode head, read off the built modules."""
    backbone, head = model.backbone, model.decode_head
    visual = backbone.clip.visual
    patch = tuple(visual.conv1.kernel_size)
    width = visual.conv1.out_channels
    mha = _first(visual.transformer, nn.MultiheadAttention)
    vit_heads = mha.num_heads if mha is not None else max(1, width // 64)
    guidance = len(getattr(backbone, 'guidance_layers', (0, 0)))

    channels = getattr(head, 'channels', 128)
    pad_len = int(getattr(head, 'pad_len', 0) or 0)
    window = int(getattr(head, 'window_size', 12))
    head_heads = 4
    ffn_ratio = 4.0
    for m in head.modules():
        if hasattr(m, 'num_heads') and isinstance(getattr(m, 'num_heads'), int):
            head_heads = m.num_heads
            break
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    hidden = [m.out_features for m in linears if m.in_features == channels
              and m.out_features > channels]
    if hidden:
        ffn_ratio = max(hidden) / channels
    app = getattr(getattr(head, 'appearance_guidance_proj', None), 'conv', None)
    app_channels = app.out_channels if isinstance(app, nn.Conv2d) else 0
    # decoder stages: (input channels, channels after the upsampling conv, output channels)
    stages = []
    for stage in getattr(head, 'decoder', []):
        up = _first(stage, nn.ConvTranspose2d)
        convs = [m for m in stage.modules() if isinstance(m, nn.Conv2d)
                 and not isinstance(m, nn.ConvTranspose2d)]
        if up is None or not convs:
            continue
        stages.append((up.in_channels, convs[0].in_channels, convs[-1].out_channels,
                       up.stride[0] if isinstance(up.stride, tuple) else up.stride))
    if not stages:  # the reference decoder
        stages = [(128, 128, 64, 2), (64, 64, 32, 2)]
    prompts = getattr(head, 'prompt_channels', 1)
    return dict(patch=patch, width=width, vit_heads=vit_heads, guidance=guidance,
                channels=channels, pad_len=pad_len, window=window, head_heads=head_heads,
                ffn_ratio=ffn_ratio, app_channels=app_channels, stages=stages,
                prompts=prompts, dense=int(getattr(head, 'in_channels', 512)))


def fused_attention(device: Optional[torch.device] = None) -> bool:
    """Whether the image tower's attention avoids the ``heads x tokens²`` weights.

    On CUDA, ``nn.MultiheadAttention`` without weights runs the flash / memory-efficient
    kernels. On the CPU the inference fast path forms the full weights (measured, see
    ``docs/memory.md``), so they are counted there.
    """
    return device is not None and torch.device(device).type == 'cuda'


# ------------------------------------------------------------------------ estimate
def _forward_floats(arch: dict, views: int, height: int, width: int, classes: int,
                    fused: bool) -> Dict[str, float]:
    """Floats alive at the worst moment of the backbone + head on ``views`` same-size
    images of ``height x width`` (one batch), by stage; ``features`` (the image tower's
    outputs) stay alive through the head, ``logits`` is the head's output."""
    ph, pw = arch['patch']
    gh, gw = height // ph, width // pw
    tokens = gh * gw + 1
    dim = arch['width']
    t = min(classes, arch['pad_len']) if arch['pad_len'] > 0 else classes
    cells = views * t * gh * gw  # one feature vector per class and patch
    c = arch['channels']
    ws = max(1, arch['window'])
    padded = views * t * math.ceil(gh / ws) * ws * math.ceil(gw / ws) * ws

    features = views * gh * gw * (dim * arch['guidance'] + arch['dense'] + arch['app_channels'])
    # a block: x, norm, q/k/v, attention output, MLP hidden + activation (~14 x width per
    # token); without a fused kernel, the heads x tokens² attention weights
    attention = 0 if fused else arch['vit_heads'] * tokens**2
    image_tower = views * (14 * tokens * dim + attention)
    # head: cost volume + embedding kept; window attention: x, norm, q, k, v, output and the
    # scores over ws² keys per head (with the shift mask SDPA is not fused on the CPU);
    # MLP: hidden and activation; linear class attention over the T class tokens of each
    # patch (the pad_len padding tokens enter as one shared term, not as copies)
    window_attention = padded * (6 * c + 2 * arch['head_heads'] * ws * ws)
    mlp = cells * (2 * c + 2 * arch['ffn_ratio'] * c)
    class_attention = cells * 6 * c
    aggregation = cells * (arch['prompts'] + c) + max(window_attention, mlp, class_attention)
    # decoder stage: input, upsampled, concatenation; then concatenation, conv, norm
    decoder, scale = 0.0, 1
    for cin, ccat, cout, stride in arch['stages']:
        before = cells * scale**2 * cin
        scale *= stride
        after = cells * scale**2
        decoder = max(decoder, before + after * 2 * ccat, after * (ccat + 2 * cout))
    # the head's logits for all N classes (dropped ones filled) and their sigmoid
    logits = 2 * views * classes * gh * gw * scale**2
    return dict(features=features, image_tower=image_tower, aggregation=aggregation,
                decoder=decoder, logits=logits)


def _clip_size(model, size: Tuple[int, int]) -> Tuple[int, int]:
    """The size CLIP runs at for an input (view) of ``size``: the backbone's ``img_size``
    when the segmentor resizes to it (``resize_to_backbone``), else ``size``."""
    if getattr(model, 'resize_to_backbone', False):
        img_size = getattr(model.backbone, 'img_size', None)
        if img_size is not None:
            return _pair(img_size)
    return tuple(size)


def estimate_inference_memory(model,
                              size: Tuple[int, int],
                              num_classes: int,
                              mode: Optional[str] = None,
                              test_cfg: Optional[dict] = None,
                              device=None,
                              bytes_per_float: int = 4) -> MemoryEstimate:
    """Estimated peak memory of segmenting one ``size`` image (``model.predict``).

    Args:
        model (HCLIPSegmentor): The built segmentor (sizes are read off its modules).
        size (tuple[int, int]): ``(H, W)`` of the (padded) input.
        num_classes (int): Vocabulary size.
        mode (str, optional): ``'whole'``, ``'slide'`` or ``'reference'``; default: the
            model's ``test_cfg.mode``.
        test_cfg (dict, optional): Default: the model's ``test_cfg``.
        device: Where inference runs (decides whether the image tower's attention is
            fused); default: the model's device.
        bytes_per_float (int): 4 for fp32.

    Returns:
        MemoryEstimate: Bytes beyond the model's weights.
    """
    test_cfg = dict(model.test_cfg if test_cfg is None else test_cfg)
    mode = mode or test_cfg.get('mode', 'whole')
    if device is None:
        device = next(model.parameters()).device
    fused = fused_attention(device)
    arch = _arch(model)
    height, width = (int(v) for v in size)
    n = int(num_classes)
    pixels = height * width
    inputs = 3 * pixels  # the normalised image, alive through inference
    if mode in ('reference', 'slide'):
        view = _pair(test_cfg.get('crop_size', (384, 384)))
        stride = _pair(test_cfg.get('stride', (256, 256)))
        if mode == 'reference':
            grid = _pair(test_cfg.get('resize_to', (640, 640)))
            views = _count_windows(grid, view, stride) + 1
            inputs += 3 * grid[0] * grid[1]
        else:
            grid = (height, width)
            views = _count_windows(grid, view, stride)
        # batch_views=False: one view through the model at a time
        batch = views if test_cfg.get('batch_views', True) else 1
        forward = _forward_floats(arch, batch, *_clip_size(model, view), n, fused)
        # per-view scores at the view size (resize + sigmoid), the assembled map and its
        # average at the grid size, and the score maps at the image size (resize, output)
        forward['logits'] += 2 * views * n * view[0] * view[1] + 3 * n * grid[0] * grid[1]
        full = 2 * n * pixels
    else:
        forward = _forward_floats(arch, 1, *_clip_size(model, (height, width)), n, fused)
        full = 2 * n * pixels  # scores resized to the image, and the output copy
    parts = dict(input=inputs, features=forward.pop('features'))
    forward['scores'] = forward.pop('logits') + full
    # preprocessing: the float image, its RGB copy and the normalised and padded results
    forward['preprocess'] = 3 * 3 * pixels
    total = int((sum(parts.values()) + max(forward.values())) * bytes_per_float)
    return MemoryEstimate(total=total, mode=mode,
                          parts={k: int(v * bytes_per_float) for k, v in parts.items()},
                          stages={k: int(v * bytes_per_float) for k, v in forward.items()})


# ------------------------------------------------------------------------ warn / plan
_warned = set()


def warn_if_over_memory_budget(model, inputs: torch.Tensor, mode: str) -> None:
    """Warn (once per model, size and class count) when ``whole``/``slide`` inference on
    ``inputs`` is estimated to exceed ``test_cfg.memory_budget_gb`` (default
    :data:`DEFAULT_BUDGET_GB`; None turns the check off).

    Args:
        model (HCLIPSegmentor): The segmentor (its vocabulary gives the class count).
        inputs (Tensor): ``[B, 3, H, W]`` batch about to be segmented.
        mode (str): The inference mode.
    """
    if mode not in ('whole', 'slide'):
        return
    budget = model.test_cfg.get('memory_budget_gb', DEFAULT_BUDGET_GB)
    if budget is None:
        return
    try:
        num_classes = len(model.vocabulary)
    except RuntimeError:
        return
    size = tuple(inputs.shape[2:])
    key = (id(model), mode, size, num_classes, budget)
    if key in _warned:
        return
    estimate = estimate_inference_memory(model, size, num_classes, mode=mode,
                                         device=inputs.device)
    estimate.total *= inputs.shape[0]
    if estimate.gib <= float(budget):
        return
    _warned.add(key)
    warnings.warn(
        f"test_cfg.mode='{mode}' on a {size[0]}x{size[1]} input with {num_classes} classes "
        f'needs about {estimate} (estimate; budget test_cfg.memory_budget_gb={budget}). Use '
        "test_cfg.mode='reference' (resizes every image to 640x640 first), resize the image "
        'in the test pipeline, or raise test_cfg.memory_budget_gb (None turns this warning '
        'off).', ResourceWarning, stacklevel=3)


def plan_inference(model, size: Tuple[int, int], num_classes: int, budget_gb: float,
                   device=None, after_gb: float = 0.0,
                   kept_scores: bool = False) -> Tuple[dict, float, MemoryEstimate]:
    """Pick the ``test_cfg`` settings and input scale that keep the estimate within a budget.

    In this order, the first that fits: the config's ``test_cfg``; ``mode='reference'``
    (fixed-size views); reference with ``batch_views=False`` (one view at a time: the head's
    per-class maps of one view instead of all five); the latter on the largest copy of the
    image that fits (the per-class score maps at the image size shrink with it; the caller
    resizes the image and the predicted labels).

    Args:
        model (HCLIPSegmentor): The segmentor.
        size (tuple[int, int]): ``(H, W)`` of the image.
        num_classes (int): Vocabulary size.
        budget_gb (float): GiB available to inference.
        device: Where inference runs; default the model's device.
        after_gb (float): GiB needed after inference (e.g. drawing the result).
        kept_scores (bool): At the full size the per-class scores stay alive after
            inference (in the result): ``4 * N * H * W`` bytes beside ``after_gb``.
            A resized image's scores are dropped.

    Returns:
        tuple: ``(test_cfg_changes, scale, estimate)``; ``test_cfg_changes`` is a dict
        (empty when the config's settings fit), ``scale`` is 1.0 or less.

    Raises:
        ValueError: Not even a 16-pixel copy of the image fits.
    """
    height, width = size
    after = after_gb + (4 * num_classes * height * width / GIB if kept_scores else 0.0)
    candidates = [{}, dict(mode='reference'), dict(mode='reference', batch_views=False)]

    def estimate(changes, scale=1.0):
        scaled = (max(1, int(height * scale)), max(1, int(width * scale)))
        return estimate_inference_memory(model, scaled, num_classes,
                                         test_cfg=dict(model.test_cfg, **changes),
                                         device=device)

    for changes in candidates:
        try:
            est = estimate(changes)
        except (KeyError, ValueError):
            continue
        if max(est.gib, after) <= budget_gb:
            return changes, 1.0, est
    changes = candidates[-1]
    smallest = 16 / min(height, width)
    est = estimate(changes, smallest)
    if est.gib > budget_gb:
        raise ValueError(f'{num_classes} classes need about {est} even on a '
                         f'{int(height * smallest)}x{int(width * smallest)} copy of the '
                         f'image with one view at a time, more than the {budget_gb:.2f} GiB '
                         'available; raise the budget or use fewer classes')
    lo, hi = smallest, 1.0 - 1.0 / min(height, width)  # at least one pixel smaller
    for _ in range(20):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if estimate(changes, mid).gib <= budget_gb else (lo, mid)
    return changes, lo, estimate(changes, lo)


def _pair(value) -> Tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    return tuple(int(v) for v in value)


def _count_windows(size: Sequence[int], crop: Sequence[int], stride: Sequence[int]) -> int:
    """Number of MMSeg sliding windows (the segmentor's ``window_boxes`` grid)."""
    (h, w), (ch, cw), (sh, sw) = size, crop, stride
    rows = (max(h - ch, 0) + sh - 1) // sh + 1
    cols = (max(w - cw, 0) + sw - 1) // sw + 1
    return rows * cols


# ----------------------------------------------------------------------------- demo
def resident_bytes() -> int:
    """The process's current resident memory (Linux ``/proc``; 0 elsewhere)."""
    try:
        with open('/proc/self/statm') as f:
            import os
            return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
    except (OSError, ValueError, IndexError):
        return 0


#: Bytes per image pixel that drawing the overlay (MMSeg's visualiser, the legend) and
#: saving it take at their peak, without region labels (measured on 4000x3000 images: 128-130
#: for 3 to 150 classes present, see docs/memory.md).
DRAWING_BYTES_PER_PIXEL = 130
#: Extra bytes per pixel and class present when the class names are written on the regions
#: (measured: 313 bytes/pixel in all with 150 classes present, 133 with 30).
LABEL_BYTES_PER_PIXEL_PER_CLASS = 1.25


def fit_inference_to_memory(model, image, num_classes: int, budget_gb: float):
    """Choose mode and input scale so that a demo run stays within ``budget_gb`` GiB.

    The budget covers the whole process: what is resident now (libraries, weights), the
    estimated inference peak, and afterwards the drawing of the overlay (with the scores
    kept in the result). The model's ``test_cfg.mode`` is changed when another mode is
    needed; the returned image is resized when even ``reference`` mode's per-class score
    maps at the image size do not fit.

    Args:
        model (HCLIPSegmentor): The segmentor (``test_cfg`` may be changed).
        image (np.ndarray): BGR image ``[H, W, 3]``.
        num_classes (int): Vocabulary size.
        budget_gb (float): GiB for the whole process.

    Returns:
        tuple: ``(image_for_inference, note)``; ``note`` is '' when nothing changed.
    """
    import mmcv
    if not budget_gb > 0:
        raise ValueError(f'--memory-budget {budget_gb} must be a positive number of GiB')
    height, width = image.shape[:2]
    resident = resident_bytes() / GIB
    drawing = DRAWING_BYTES_PER_PIXEL * height * width / GIB
    available = budget_gb - resident
    if available - drawing <= 0:
        raise ValueError(
            f'--memory-budget {budget_gb} GiB is below what the process already holds '
            f'({resident:.1f} GiB) plus drawing a {width}x{height} image '
            f'({drawing:.1f} GiB); raise it')
    configured = model.test_cfg.get('mode', 'whole')
    changes, scale, estimate = plan_inference(model, (height, width), num_classes, available,
                                              after_gb=drawing, kept_scores=True)
    if not changes and scale == 1.0:
        return image, ''
    before = estimate_inference_memory(model, (height, width), num_classes)
    model.test_cfg.update(changes)
    settings = ', '.join(f'test_cfg.{k}={v!r}' for k, v in changes.items())
    note = (f"test_cfg.mode='{configured}' would need about {before} for this "
            f'{width}x{height} image and {num_classes} classes (estimate); using '
            f"{settings or 'the configured test_cfg'}")
    if scale < 1.0:
        size = (max(1, int(width * scale)), max(1, int(height * scale)))
        image = mmcv.imresize(image, size, interpolation='area')
        note += (f' on the image resized to {size[0]}x{size[1]} (labels scaled back with '
                 'nearest neighbour)')
    return image, note + f', about {estimate} (--memory-budget {budget_gb} GiB)'


def fit_drawing_to_memory(result, num_classes: int, with_labels: bool,
                          budget_gb: float) -> Tuple[bool, str]:
    """Whether the overlay can be drawn with region labels within ``budget_gb`` GiB.

    MMSeg's visualiser needs about :data:`LABEL_BYTES_PER_PIXEL_PER_CLASS` more per pixel
    and class present when it writes the names on the regions; when that does not fit
    beside what is resident, the names are left out (the legend still lists the classes).

    Returns:
        tuple: ``(with_labels, note)``; ``note`` is '' when nothing changed.
    """
    if not with_labels:
        return False, ''
    labels = result.pred_sem_seg.data
    pixels = labels.numel()
    present = int((torch.bincount(labels.flatten().long(), minlength=num_classes) > 0).sum())
    need = (DRAWING_BYTES_PER_PIXEL + LABEL_BYTES_PER_PIXEL_PER_CLASS * present) * pixels
    if (resident_bytes() + need) / GIB <= budget_gb:
        return True, ''
    return False, (f'{present} classes present: writing their names on the regions would need '
                   f'about {need / GIB:.1f} GiB more; drawn without region labels (the legend '
                   f'lists them) to stay within --memory-budget {budget_gb} GiB')


def restore_prediction_size(result, size: Tuple[int, int]):
    """Scale a ``SegDataSample``'s ``pred_sem_seg`` to ``size`` (nearest neighbour) and drop
    its ``seg_logits`` (per-class scores at full size are what did not fit); unchanged when
    the size already matches."""
    import torch.nn.functional as F
    labels = result.pred_sem_seg.data
    if tuple(labels.shape[-2:]) == tuple(size):
        return result
    scaled = F.interpolate(labels[None].float(), size=tuple(size), mode='nearest')
    from mmengine.structures import PixelData
    result.pred_sem_seg = PixelData(data=scaled[0].to(labels.dtype))
    if 'seg_logits' in result:
        del result.seg_logits
    return result

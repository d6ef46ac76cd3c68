"""Binary cross-entropy with logits against one-hot targets, for per-class sigmoid heads."""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmseg.models.losses.utils import weight_reduce_loss
from mmseg.registry import MODELS
from torch import Tensor


@MODELS.register_module()
class OneHotBCELoss(nn.Module):
    """Per-class binary cross-entropy with logits against one-hot labels.

    Every pixel contributes one binary term per class: target 1 for its labelled class and
    0 for all others. The class count is read from the logits at every call, so the
    vocabulary may change between calls (open-vocabulary training and testing).

    Pixels labelled ``ignore_index`` are handled by ``ignore_as_negative``:

    - ``True`` (CAT-Seg's reference): they count as all-negative pixels (target 0 for every
      class) and stay in the mean: ``loss = Σ_{pixels, classes} bce / (B·N·H·W)``.
    - ``False``: they are excluded: ``loss = Σ_{valid pixels, classes} bce / (N·#valid)``.

    Args:
        loss_weight (float): multiplier of the loss. Default: 1.0.
        ignore_as_negative (bool): how ignored pixels count (see above). When this loss is
            used by :class:`HCLIPCostAggHead`, the head's ``ignore_as_negative`` is the one
            switch and is written here at build time. Default: True.
        reduction (str): ``'mean'``, ``'sum'`` or ``'none'`` (per-element ``[B, N, H, W]``
            loss, zero at excluded pixels). Default: ``'mean'``.
        loss_name (str): key of this loss in the loss dict; mmseg only back-propagates
            keys that start with ``loss_``. Default: ``'loss_bce'``.
    """

    def __init__(self,
                 loss_weight: float = 1.0,
                 ignore_as_negative: bool = True,
                 reduction: str = 'mean',
                 loss_name: str = 'loss_bce') -> None:
        super().__init__()
        if reduction not in ('mean', 'sum', 'none'):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        self.loss_weight = loss_weight
        self.ignore_as_negative = ignore_as_negative
        self.reduction = reduction
        self._loss_name = loss_name

    def forward(self,
                cls_score: Tensor,
                label: Tensor,
                weight: Optional[Tensor] = None,
                ignore_index: int = 255,
                **kwargs) -> Tensor:
        """
        Args:
            cls_score (Tensor): logits ``[B, N, H, W]``.
            label (Tensor): class indices ``[B, H, W]`` in ``[0, N)`` or ``ignore_index``.
            weight (Tensor, optional): per-pixel weights broadcastable to ``[B, H, W]``
                (e.g. from an mmseg pixel sampler).
            ignore_index (int): label value of ignored pixels.

        Returns:
            Tensor: the loss (a scalar unless ``reduction='none'``).
        """
        if cls_score.dim() != 4 or label.shape != (cls_score.shape[0], *cls_score.shape[2:]):
            raise ValueError(f'expected logits [B, N, H, W] and labels [B, H, W] of the same '
                             f'B, H, W; got {tuple(cls_score.shape)} and {tuple(label.shape)}')
        num_classes = cls_score.shape[1]
        valid = label != ignore_index
        if valid.any():
            lo, hi = int(label[valid].min()), int(label[valid].max())
            if lo < 0 or hi >= num_classes:
                raise ValueError(
                    f'labels must lie in [0, {num_classes}) or equal ignore_index='
                    f'{ignore_index}; found values in [{lo}, {hi}]. Check that the vocabulary '
                    f'matches the dataset and that ignore_index is set correctly')
        target = torch.zeros_like(cls_score)
        target.scatter_(1, torch.where(valid, label, 0).long().unsqueeze(1),
                        valid.unsqueeze(1).to(cls_score.dtype))
        loss = F.binary_cross_entropy_with_logits(cls_score, target, reduction='none')

        pixel_weight = None if weight is None else weight.to(loss.dtype).reshape(label.shape)
        avg_factor = None
        if not self.ignore_as_negative:
            keep = valid.to(loss.dtype)
            pixel_weight = keep if pixel_weight is None else pixel_weight * keep
            if self.reduction == 'mean':
                avg_factor = keep.sum() * num_classes
        if pixel_weight is not None:
            pixel_weight = pixel_weight.unsqueeze(1)
        loss = weight_reduce_loss(loss, pixel_weight, self.reduction, avg_factor)
        return self.loss_weight * loss

    @property
    def loss_name(self) -> str:
        """Key of this loss in the loss dict."""
        return self._loss_name

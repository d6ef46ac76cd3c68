"""OneHotBCELoss against hand computations."""
import math

import pytest
import torch

from mmseg_hclip.models.losses import OneHotBCELoss


def bce(x: float, y: float) -> float:
    """-[y log σ(x) + (1-y) log(1-σ(x))], written out."""
    s = 1. / (1. + math.exp(-x))
    return -(y * math.log(s) + (1 - y) * math.log(1 - s))


# one image, 2 classes, 1x3 pixels; pixel 2 is ignored
LOGITS = torch.tensor([[[[0.5, -1.0, 2.0]], [[-0.3, 1.5, 0.7]]]])
LABELS = torch.tensor([[[0, 1, 255]]])
TERMS = {  # (class, pixel) -> bce
    (0, 0): bce(0.5, 1), (1, 0): bce(-0.3, 0),
    (0, 1): bce(-1.0, 0), (1, 1): bce(1.5, 1),
    (0, 2): bce(2.0, 0), (1, 2): bce(0.7, 0),  # ignored pixel as all-negative
}


def test_ignored_pixels_as_all_negative():
    loss = OneHotBCELoss()(LOGITS, LABELS, ignore_index=255)
    assert loss.item() == pytest.approx(sum(TERMS.values()) / 6, rel=1e-6)


def test_ignored_pixels_excluded():
    loss = OneHotBCELoss(ignore_as_negative=False)(LOGITS, LABELS, ignore_index=255)
    kept = [v for (c, p), v in TERMS.items() if p != 2]
    assert loss.item() == pytest.approx(sum(kept) / 4, rel=1e-6)


def test_without_ignored_pixels_both_modes_agree():
    labels = torch.tensor([[[0, 1, 1]]])
    ref = (TERMS[0, 0] + TERMS[1, 0] + TERMS[0, 1] + TERMS[1, 1] + bce(2.0, 0) +
           bce(0.7, 1)) / 6
    for flag in (True, False):
        loss = OneHotBCELoss(ignore_as_negative=flag)(LOGITS, labels, ignore_index=255)
        assert loss.item() == pytest.approx(ref, rel=1e-6)


def test_all_pixels_ignored_excluded_is_zero_not_nan():
    loss = OneHotBCELoss(ignore_as_negative=False)(LOGITS, torch.full((1, 1, 3), 255))
    assert loss.item() == 0.0


def test_loss_weight_sum_and_pixel_weight():
    w = torch.tensor([[[1.0, 2.0, 3.0]]])
    loss = OneHotBCELoss(loss_weight=0.5, reduction='sum')(LOGITS, LABELS, weight=w)
    ref = sum(v * w[0, 0, p].item() for (c, p), v in TERMS.items())
    assert loss.item() == pytest.approx(0.5 * ref, rel=1e-6)
    per_elem = OneHotBCELoss(reduction='none', ignore_as_negative=False)(LOGITS, LABELS)
    assert per_elem.shape == LOGITS.shape and (per_elem[..., 2] == 0).all()


def test_class_count_follows_the_logits():
    # the same module serves 2 and 5 classes
    loss_fn = OneHotBCELoss()
    for n in (2, 5):
        logits = torch.zeros(1, n, 1, 3)
        loss = loss_fn(logits, torch.tensor([[[0, 1, 255]]]))
        # every term is bce(0, y) = log 2
        assert loss.item() == pytest.approx(math.log(2), rel=1e-6)


def test_gradient_matches_sigmoid_minus_target():
    logits = LOGITS.clone().requires_grad_(True)
    OneHotBCELoss(reduction='sum')(logits, LABELS).backward()
    target = torch.tensor([[[[1., 0., 0.]], [[0., 1., 0.]]]])
    torch.testing.assert_close(logits.grad, torch.sigmoid(LOGITS) - target)


def test_label_out_of_range_is_a_clear_error():
    with pytest.raises(ValueError, match=r'labels must lie in \[0, 2\)'):
        OneHotBCELoss()(LOGITS, torch.tensor([[[0, 2, 255]]]))


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match='expected logits'):
        OneHotBCELoss()(LOGITS, torch.zeros(1, 2, 3, dtype=torch.long))


def test_registered_and_named():
    from mmseg.registry import MODELS
    import mmseg_hclip  # noqa: F401
    loss = MODELS.build(dict(type='OneHotBCELoss', loss_name='loss_x'))
    assert isinstance(loss, OneHotBCELoss) and loss.loss_name == 'loss_x'
    with pytest.raises(ValueError, match='reduction'):
        OneHotBCELoss(reduction='avg')

from .one_hot_bce_loss import OneHotBCELoss

__all__ = ['OneHotBCELoss']

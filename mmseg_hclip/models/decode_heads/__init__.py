from .cost_aggregation_head import HCLIPCostAggHead

__all__ = ['HCLIPCostAggHead']

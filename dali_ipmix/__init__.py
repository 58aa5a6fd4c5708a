"""dali-ipmix: IPMix (NeurIPS 2023) as an NVIDIA DALI pipeline for PyTorch.

Core (arrays in, arrays out; NumPy or CuPy):
    IPMixConfig, ipmix_batch, IPMixPlan, draw_plan, execute_plan
"""

__version__ = "0.1.0"

from .config import IPMixConfig
from .plan import IPMixPlan, draw_plan
from .execute import execute_plan
from .augment import ipmix_batch

__all__ = ["IPMixConfig", "IPMixPlan", "draw_plan", "execute_plan", "ipmix_batch", "__version__"]

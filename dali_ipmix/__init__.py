"""dali-ipmix: IPMix (NeurIPS 2023) as an NVIDIA DALI pipeline for PyTorch."""

__version__ = "0.1.0"

from .config import IPMixConfig
from .augment import ipmix_batch

__all__ = ["IPMixConfig", "ipmix_batch", "__version__"]

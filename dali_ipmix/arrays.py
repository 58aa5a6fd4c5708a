"""Which array library owns an array (NumPy, or CuPy on a GPU), and NVTX ranges around the phases of
a CuPy batch: the two helpers every module that takes either kind of array shares."""

from __future__ import annotations

import contextlib
import os

import numpy as np

__all__ = ["array_module", "nvtx_range", "USE_NVTX"]


def array_module(array):
    """``numpy`` or ``cupy``, whichever owns ``array`` (CuPy is optional)."""
    if isinstance(array, np.ndarray):
        return np
    try:
        import cupy
    except ImportError:  # pragma: no cover - only reachable with foreign array types
        cupy = None
    if cupy is not None and isinstance(array, cupy.ndarray):
        return cupy
    raise TypeError(f"expected a numpy.ndarray or cupy.ndarray, got {type(array).__module__}."
                    f"{type(array).__name__}")


#: Mark the phases of a CuPy batch as NVTX ranges for Nsight Systems (DALI_IPMIX_NVTX=1).
USE_NVTX = os.environ.get("DALI_IPMIX_NVTX", "0") == "1"


def nvtx_range(name, xp):
    """An NVTX range named ``ipmix.<name>`` around a phase of a CuPy batch when profiling is on."""
    if USE_NVTX and getattr(xp, "__name__", None) == "cupy":
        from cupyx.profiler import time_range
        return time_range(f"ipmix.{name}")
    return contextlib.nullcontext()

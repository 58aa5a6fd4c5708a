"""Where the compiled core's C/CUDA source lives, and how CUDA compilers are told to build it.

``csrc/ipx_core.cuh`` (per-element and per-chain bodies), ``csrc/ipx_kernels.cu`` (the CUDA kernels),
``csrc/ipx_host.h`` (the same as host loops). No CuPy needed to import this module.
"""

from __future__ import annotations

import os

CSRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc")
#: NVRTC / nvcc options: no FMA contraction, so results match the NumPy executor's rounding.
COMPILE_OPTIONS = ("--std=c++14", "--fmad=false")


def read_source(name: str) -> str:
    with open(os.path.join(CSRC, name)) as f:
        return f.read()


def kernel_source() -> str:
    """``ipx_kernels.cu`` with its one local include expanded (NVRTC compiles a single string)."""
    return read_source("ipx_kernels.cu").replace('#include "ipx_core.cuh"', read_source("ipx_core.cuh"))

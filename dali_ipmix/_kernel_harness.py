"""The CUDA kernels' core compiled for the CPU: the same C source, host loops instead of a grid.

``HostKernels`` runs ``kernels.KERNEL_CORE`` through g++ (a temporary shared library loaded with
ctypes) behind the same :class:`~dali_ipmix.kernels.KernelBackend` argument handling as the CuPy
launcher, on NumPy arrays. Tests use it to check the kernel logic, and the kernel path of
``execute.py``, bit for bit against the NumPy code without a GPU. Needs a C++ compiler (``CXX``,
default ``g++``); not used at run time.
"""

from __future__ import annotations

import atexit
import ctypes
import functools
import os
import re
import shutil
import subprocess
import tempfile

import numpy as np

from .kernels import KERNEL_CORE, KERNEL_NAMES, KERNEL_SOURCE, KernelBackend

# Host loops with the kernels' signatures; element i is computed by the very body a CUDA thread runs.
HARNESS_SOURCE = r"""
#include <math.h>
""" + KERNEL_CORE + r"""
#define IPX_HOST_LOOP(total) for (long long i = 0; i < (total); ++i)

extern "C" void ipx_warp(const unsigned char* images, const float* mats, unsigned char* out,
                         int h, int w, long long total) {
    IPX_HOST_LOOP(total) ipx_warp_at(i, images, mats, out, h, w);
}

extern "C" void ipx_lut(const unsigned char* images, const unsigned char* luts, unsigned char* out,
                        long long hw3, long long total) {
    IPX_HOST_LOOP(total) ipx_lut_at(i, images, luts, out, hw3);
}

extern "C" void ipx_patch(unsigned char* chains, const unsigned char* mixing,
                          const unsigned char* augmented, int n_mix, int h, int w, const int* ints,
                          const float* floats, const long long* offsets, int n_entries,
                          long long total) {
    IPX_HOST_LOOP(total) ipx_patch_at(i, chains, mixing, augmented, n_mix, h, w, ints, floats,
                                      offsets, n_entries);
}

extern "C" void ipx_mix(const unsigned char* images, const unsigned char* chains, const float* m,
                        const float* weights, float* out, int k, long long hw3, long long total) {
    IPX_HOST_LOOP(total) ipx_mix_at(i, images, chains, m, weights, out, k, hw3);
}
"""

# -ffp-contract=off: like the kernels' --fmad=false, no a * b + c fused into an FMA.
CXX_FLAGS = ("-O2", "-std=c++14", "-shared", "-fPIC", "-ffp-contract=off", "-Wall")


def compiler():
    """The host C++ compiler (``CXX`` or g++), or None."""
    return shutil.which(os.environ.get("CXX", "g++"))


@functools.lru_cache(maxsize=None)
def library():
    """Compiles :data:`HARNESS_SOURCE` once per process; returns the loaded ``ctypes.CDLL``."""
    cxx = compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler (set CXX or install g++)")
    folder = tempfile.mkdtemp(prefix="ipmix-kernels-")
    atexit.register(shutil.rmtree, folder, True)
    src, lib = os.path.join(folder, "harness.cpp"), os.path.join(folder, "harness.so")
    with open(src, "w") as f:
        f.write(HARNESS_SOURCE)
    done = subprocess.run([cxx, *CXX_FLAGS, src, "-o", lib], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{cxx} failed:\n{done.stderr}")
    dll = ctypes.CDLL(lib)
    for name in KERNEL_NAMES:
        getattr(dll, name).restype = None
    return dll


_C_SCALARS = {"int": (np.int32, ctypes.c_int), "long long": (np.int64, ctypes.c_longlong),
              "float": (np.float32, ctypes.c_float)}
_C_POINTERS = {"unsigned char": np.uint8, "int": np.int32, "long long": np.int64, "float": np.float32}


@functools.lru_cache(maxsize=None)
def cuda_signatures():
    """{kernel name: [(C base type, is pointer), ...]} parsed from the CUDA source (KERNEL_SOURCE)."""
    found = {}
    for name, params in re.findall(r'extern "C" __global__ void (\w+)\(([^)]*)\)', KERNEL_SOURCE):
        types = []
        for param in params.split(","):
            words = param.replace("*", " * ").split()[:-1]          # drop the parameter name
            words = [w for w in words if w not in ("const", "__restrict__")]
            pointer = words[-1] == "*"
            types.append((" ".join(words[:-1] if pointer else words), pointer))
        found[name] = types
    return found


class HostKernels(KernelBackend):
    """The kernels on the CPU (NumPy arrays), one host loop per launch. ``launches`` counts them."""

    xp = np

    def __init__(self):
        self.dll = library()
        self.launches = []

    def _launch(self, name, total, *args):
        """Runs host loop ``name`` after checking ``args`` against the CUDA kernel's C signature
        (count, array dtypes, scalar widths): what CuPy would pass to the device kernel as is."""
        args = args + (np.int64(total),)
        signature = cuda_signatures()[name]
        if len(args) != len(signature):
            raise TypeError(f"{name}: {len(args)} arguments for {len(signature)} parameters")
        c_args = []
        for i, (a, (ctype, pointer)) in enumerate(zip(args, signature)):
            if pointer:
                if not (isinstance(a, np.ndarray) and a.dtype == _C_POINTERS[ctype] and a.flags.c_contiguous):
                    raise TypeError(f"{name} argument {i}: want a contiguous {ctype} array, got "
                                    f"{type(a).__name__} {getattr(a, 'dtype', '')}")
                c_args.append(ctypes.c_void_p(a.ctypes.data))
            else:
                dtype, c_type = _C_SCALARS[ctype]
                if isinstance(a, np.ndarray) or getattr(a, "dtype", None) != dtype:
                    raise TypeError(f"{name} argument {i}: want a NumPy {np.dtype(dtype)} scalar for "
                                    f"{ctype}, got {type(a).__name__}")
                c_args.append(c_type(a))
        self.launches.append(name)
        getattr(self.dll, name)(*c_args)

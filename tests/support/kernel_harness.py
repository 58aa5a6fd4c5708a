"""The compiled core on the CPU: ``csrc/ipx_host.h`` built with g++ and run through ctypes.

:class:`HostDevice` is a :class:`dali_ipmix.table.Device` whose ``launch`` runs the host loop named
like the kernel (``ipx_prepare``, ``ipx_step``, ``ipx_mix``) with the kernel's own arguments, after
checking them against the kernel's C signature in ``ipx_kernels.cu`` (count, pointer dtypes, scalar
widths): what CuPy would pass to the device as is. So the table executor's launch sequence and the
per-element bodies are checked without a GPU. Test code only; needs ``g++`` (or ``CXX``).
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

from dali_ipmix.cuda_source import CSRC

WRAPPERS = r"""
#include "ipx_sample.h"
extern "C" {
void ipx_prepare(const IpxStep* steps, int j, int t, int k, const unsigned char* in, int in_is_x,
                 const unsigned char* x, int h, int w, unsigned char* luts, long long n_chains) {
    ipx_prepare_host(steps, j, t, k, in, in_is_x, x, h, w, luts, n_chains);
}
void ipx_step(const IpxStep* steps, int j, int t, int k, const unsigned char* in, int in_is_x,
              const unsigned char* x, const unsigned char* z, const unsigned char* luts,
              unsigned char* out, int h, int w, long long total) {
    ipx_step_host(steps, j, t, k, in, in_is_x, x, z, luts, out, h, w, total);
}
void ipx_mix(const unsigned char* x, const unsigned char* chains, const float* mixw, float* out,
             int k, long long hw3, long long total) {
    ipx_mix_host(x, chains, mixw, out, k, hw3, total);
}
void ipx_run_sample_c(const IpxStep* steps, const float* mixw, int k, int t, const unsigned char* x,
                      const unsigned char* z, int h, int w, unsigned char* scratch, float* out) {
    ipx_run_sample(steps, mixw, k, t, x, z, h, w, scratch, out);
}
void ipx_mix_norm_c(const unsigned char* x, const unsigned char* chains, const float* mixw,
                    const float* mean, const float* std, int chw, float* out, int k, long long hw,
                    long long total) {
    ipx_mix_norm_host(x, chains, mixw, ipx_norm(mean, std, chw != 0), out, k, hw, total);
}
long long ipx_sample_scratch_bytes_c(int k, int h, int w) { return ipx_sample_scratch_bytes(k, h, w); }
int ipx_op_code_c(int i) {
    static const int codes[] = {IPX_OP_INVERT, IPX_OP_POSTERIZE, IPX_OP_SOLARIZE, IPX_OP_EQUALIZE,
        IPX_OP_AUTOCONTRAST, IPX_OP_BRIGHTNESS, IPX_OP_CONTRAST, IPX_OP_COLOR, IPX_OP_SHARPNESS,
        IPX_OP_ROTATE, IPX_OP_SHEAR_X, IPX_OP_SHEAR_Y, IPX_OP_TRANSLATE_X, IPX_OP_TRANSLATE_Y,
        IPX_OP_MIRROR};
    return codes[i];
}
int ipx_step_bytes_c(void) { return (int)sizeof(IpxStep); }
}
"""
# The order of ipx_op_code_c's list: the op names as ipx_core.cuh spells them.
OP_ORDER = ("invert", "posterize", "solarize", "equalize", "autocontrast", "brightness", "contrast",
            "color", "sharpness", "rotate", "shear_x", "shear_y", "translate_x", "translate_y", "mirror")
# -ffp-contract=off: like the kernels' --fmad=false, no a * b + c fused into an FMA.
CXX_FLAGS = ("-O2", "-std=c++14", "-shared", "-fPIC", "-ffp-contract=off", "-Wall", "-Wextra")


def compiler():
    """The host C++ compiler (``CXX`` or g++), or None."""
    return shutil.which(os.environ.get("CXX", "g++"))


def build_library(source: str, flags=CXX_FLAGS) -> ctypes.CDLL:
    """Compiles ``source`` (C++ that may include the headers of ``csrc/``) into a shared library in a
    temporary folder and loads it; a compiler error or warning raises RuntimeError with its output."""
    cxx = compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler (set CXX or install g++)")
    folder = tempfile.mkdtemp(prefix="ipmix-host-")
    atexit.register(shutil.rmtree, folder, True)
    src, lib = os.path.join(folder, "shim.cpp"), os.path.join(folder, "shim.so")
    with open(src, "w") as f:
        f.write(source)
    done = subprocess.run([cxx, *flags, "-I", CSRC, src, "-o", lib], capture_output=True, text=True)
    if done.returncode or done.stderr.strip():
        raise RuntimeError(f"{cxx} failed or warned:\n{done.stderr}")
    return ctypes.CDLL(lib)


@functools.lru_cache(maxsize=None)
def library():
    """The host loops, compiled once per process."""
    dll = build_library(WRAPPERS)
    dll.ipx_sample_scratch_bytes_c.restype = ctypes.c_longlong
    return dll


_C_SCALARS = {"int": (np.int32, ctypes.c_int), "long long": (np.int64, ctypes.c_longlong),
              "float": (np.float32, ctypes.c_float)}
_C_POINTERS = {"unsigned char": (np.uint8,), "int": (np.int32,), "long long": (np.int64,),
               "float": (np.float32,), "IpxStep": (np.uint32,)}


@functools.lru_cache(maxsize=None)
def kernel_signatures():
    """{kernel name: [(C base type, is pointer), ...]} parsed from ``ipx_kernels.cu``."""
    with open(os.path.join(CSRC, "ipx_kernels.cu")) as f:
        source = f.read()
    found = {}
    for name, params in re.findall(r'extern "C" __global__ void (\w+)\(([^)]*)\)', source):
        types = []
        for param in params.split(","):
            words = param.replace("*", " * ").split()[:-1]          # drop the parameter name
            words = [w for w in words if w not in ("const", "__restrict__")]
            pointer = words[-1] == "*"
            types.append((" ".join(words[:-1] if pointer else words), pointer))
        found[name] = types
    return found


class HostDevice:
    """The table executor's device on the CPU: NumPy buffers, kernels as host loops. ``launches``
    lists the kernel names run, in order."""

    def __init__(self):
        self.dll = library()
        self.launches = []

    def upload(self, host):
        return np.array(host, copy=True)

    def empty(self, shape, dtype):
        return np.empty(shape, dtype)

    def contiguous(self, array):
        return np.ascontiguousarray(array)

    def launch(self, name, blocks, args):
        signature = kernel_signatures()[name]
        if len(args) != len(signature):
            raise TypeError(f"{name}: {len(args)} arguments for {len(signature)} parameters")
        c_args = []
        for i, (a, (ctype, pointer)) in enumerate(zip(args, signature)):
            if pointer:
                if not (isinstance(a, np.ndarray) and a.dtype in _C_POINTERS[ctype] and a.flags.c_contiguous):
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


def mix_norm(x, chains, mixw, mean, std, chw):
    """The native GPU operator's normalised image output (``ipx_mix_norm``, float32) on the host:
    x (N, H, W, 3) uint8; chains (N * k, H, W, 3) uint8 and mixw (N, 1 + k) float32, or
    ``chains=None`` for the images themselves (the clean output); mean and std 3 floats each.
    Returns (N, 3, H, W) when ``chw`` else (N, H, W, 3) float32."""
    n, h, w, _ = x.shape
    k = 0 if chains is None else len(chains) // n
    chains = x if chains is None else chains
    mixw = np.zeros((n, 1), np.float32) if mixw is None else mixw
    arrays = [np.ascontiguousarray(a, dtype) for a, dtype in
              ((x, np.uint8), (chains, np.uint8), (mixw, np.float32), (mean, np.float32), (std, np.float32))]
    out = np.empty((n, 3, h, w) if chw else (n, h, w, 3), np.float32)
    ptr = lambda a: ctypes.c_void_p(a.ctypes.data)  # noqa: E731
    library().ipx_mix_norm_c(*map(ptr, arrays), int(bool(chw)), ptr(out), k, ctypes.c_longlong(h * w),
                             ctypes.c_longlong(out.size))
    return out


def run_sample(steps, mixw, k, t, x, z):
    """``ipx_run_sample`` (the native CPU operator's per-sample path) on one (H, W, 3) sample."""
    dll = library()
    h, w, _ = x.shape
    scratch = np.empty(dll.ipx_sample_scratch_bytes_c(k, h, w), np.uint8)
    out = np.empty(x.shape, np.float32)
    ptr = lambda a: ctypes.c_void_p(np.ascontiguousarray(a).ctypes.data)  # noqa: E731
    steps, mixw = np.ascontiguousarray(steps), np.ascontiguousarray(mixw)
    x, z = np.ascontiguousarray(x), np.ascontiguousarray(z)
    dll.ipx_run_sample_c(ptr(steps), ptr(mixw), k, t, ptr(x), ptr(z), h, w, ptr(scratch), ptr(out))
    return out


class BatchedWarpExecutor:
    """The array executor with the compiled core's bilinear warp arithmetic (``warp_affine_batched``)
    instead of PIL's on NumPy: affine results may differ from PIL's by one grey level. Test-only."""

    name = "arrays-batched-warp"

    def execute(self, plan, images, mixing):
        from dali_ipmix.execute import execute_arrays, warp_affine_batched
        return execute_arrays(plan, images, mixing, warp=warp_affine_batched)

"""``csrc/ipx_plan.h`` (the native operator's plan drawer and magnitude laws) built with g++, via ctypes.

Test code only: lets the tests compare the C++ magnitude laws with ``dali_ipmix.table.op_parameters``
and the C++ drawer with ``draw_plan``'s distributions without DALI. Needs ``g++`` (or ``CXX``).
"""

from __future__ import annotations

import ctypes
import functools

import numpy as np

from kernel_harness import build_library

SOURCE = r"""
#include "ipx_plan.h"
#include "ipx_sample.h"
extern "C" {
// One sample through ipx_run_sample (dense: the kernels' grid) or ipx_run_sample_sparse.
void run_sample_c(int sparse, const IpxStep* steps, const float* mixw, int k, int t,
                  const unsigned char* x, const unsigned char* z, int h, int w, float* out) {
    long long bytes = sparse ? ipx_sparse_scratch_bytes(k, h, w) : ipx_sample_scratch_bytes(k, h, w);
    std::vector<unsigned char> scratch(bytes);
    if (sparse) ipx_run_sample_sparse(steps, mixw, k, t, x, z, h, w, scratch.data(), out);
    else ipx_run_sample(steps, mixw, k, t, x, z, h, w, scratch.data(), out);
}
void op_parameters_c(int code, double level, int sign, int h, int w, float* p, int* cut) {
    ipx_op_parameters(code, level, sign, h, w, p, cut);
}
// Draws and packs one sample: plan record (ipx_plan_doubles), rows (k * steps IpxStep), mixw (1 + k).
int draw_sample_c(int k, int t, double beta, double severity, const int* sizes, int n_sizes,
                  int whole, const int* codes, int n_codes, int from_image, const int* knobs, int h, int w,
                  unsigned long long a, unsigned long long b, unsigned long long c,
                  unsigned long long view, double* plan, IpxStep* rows, float* mixw) {
    IpxConfig cfg;
    cfg.k = k; cfg.t = t; cfg.beta = beta; cfg.severity = severity;
    cfg.patch_sizes.assign(sizes, sizes + n_sizes);
    cfg.whole_image_patch = whole != 0;
    cfg.op_codes.assign(codes, codes + n_codes);
    cfg.source_from_image = from_image != 0;
    cfg.min_ops = knobs[0]; cfg.chain_kinds = knobs[1]; cfg.pixel_ops = knobs[2];
    cfg.whole_image_only = knobs[3] != 0; cfg.final_blend = knobs[4] != 0; cfg.chain_start = knobs[5] != 0;
    std::vector<int> usable = ipx_patch_sizes_for(cfg, h, w);
    if (usable.empty()) return 0;
    IpxDraw d;
    ipx_draw_sample(cfg, usable, h, w, ipx_stream(a, b, c, view), &d);
    ipx_write_plan(cfg, d, plan);
    ipx_pack_sample(cfg, d, h, w, rows, mixw);
    return 1;
}
long long plan_doubles_c(int k, int t, int chain_start) {
    IpxConfig cfg; cfg.k = k; cfg.t = t; cfg.chain_start = chain_start != 0; return ipx_plan_doubles(cfg);
}
}
"""
CXX_FLAGS = ("-O2", "-std=c++17", "-shared", "-fPIC", "-ffp-contract=off", "-Wall", "-Wextra")


@functools.lru_cache(maxsize=None)
def library():
    dll = build_library(SOURCE, CXX_FLAGS)
    dll.plan_doubles_c.restype = ctypes.c_longlong
    return dll


def _ptr(a):
    return ctypes.c_void_p(a.ctypes.data)


def op_parameters(code, level, sign, height, width):
    """``(p, cut)``: float32 (6,) and int of one image op, from the C++ magnitude laws."""
    p, cut = np.zeros(6, np.float32), ctypes.c_int(0)
    library().op_parameters_c(int(code), ctypes.c_double(level), int(sign), int(height), int(width),
                              _ptr(p), ctypes.byref(cut))
    return p, cut.value


def run_sample(rows, mixw, k, t, x, z, sparse):
    """One (H, W, 3) sample through the dense or the sparse host path; (H, W, 3) float32."""
    rows, mixw = np.ascontiguousarray(rows, np.uint32), np.ascontiguousarray(mixw, np.float32)
    x, z = np.ascontiguousarray(x), np.ascontiguousarray(z)
    out = np.empty(x.shape, np.float32)
    library().run_sample_c(int(sparse), _ptr(rows), _ptr(mixw), k, t, _ptr(x), _ptr(z), x.shape[0],
                           x.shape[1], _ptr(out))
    return out


def draw_samples(config, n, height, width, seed, keys=None, view=0):
    """n samples drawn by the C++ drawer from ``config.engine``: (plan records (n, D) float64, rows (n,
    k*T, 26) uint32, mixw (n, 1 + k) float32), T the table steps (max(t, 1), plus a chain's start
    row). Sample i's stream: ``ipx_stream(seed, 0, i, view)``, or with ``keys`` (n integers) the
    native operator's keyed ``ipx_stream(seed, keys[i], ~0, view)``."""
    from dali_ipmix.native import CHAIN_KIND_CODES
    from dali_ipmix.table import OP_CODES
    dll = library()
    config = config.engine   # the knobs the operator receives (native.operator_args)
    k, t = config.k, config.t
    steps = max(t, 1) + int(config.chain_start)
    plans = np.zeros((n, dll.plan_doubles_c(k, t, int(config.chain_start))), np.float64)
    rows = np.zeros((n, k * steps, 26), np.uint32)
    mixw = np.zeros((n, 1 + k), np.float32)
    sizes = np.asarray(config.patch_sizes, np.int32)
    codes = np.asarray([OP_CODES[o] for o in config.op_names], np.int32)
    knobs = np.asarray([config.min_ops, CHAIN_KIND_CODES[config.chain_kinds], config.pixel_ops,
                        config.whole_image_only, config.final_blend, config.chain_start], np.int32)
    # The operator's schema takes beta and severity as float32 (the plan's draws use those values).
    beta, severity = float(np.float32(config.beta)), float(np.float32(config.severity))
    key_bits = None if keys is None else np.asarray(keys).astype(np.int64).view(np.uint64)

    def words(i):
        if key_bits is None:
            return ctypes.c_ulonglong(0), ctypes.c_ulonglong(i)
        return ctypes.c_ulonglong(int(key_bits[i])), ctypes.c_ulonglong(2 ** 64 - 1)

    for i in range(n):
        ok = dll.draw_sample_c(k, t, ctypes.c_double(beta), ctypes.c_double(severity),
                               _ptr(sizes), sizes.size, int(config.whole_image_patch), _ptr(codes),
                               codes.size, int(config.source_from_image), _ptr(knobs), height, width,
                               ctypes.c_ulonglong(seed), *words(i), ctypes.c_ulonglong(view), _ptr(plans[i]),
                               _ptr(rows[i]), _ptr(mixw[i]))
        if not ok:
            raise ValueError("no patch size fits")
    return plans, rows, mixw

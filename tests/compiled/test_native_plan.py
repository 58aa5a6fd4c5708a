"""The native operator's C++ plan drawer (``csrc/ipx_plan.h``) through a g++ shim, without DALI:
magnitude laws equal ``table.op_parameters`` bit for bit, packed rows equal ``table.pack_plan`` of the
same draws, and the draws follow ``draw_plan``'s distributions (IPMix, AugMix and PixMix alike)."""

import functools

import numpy as np
import pytest

from dali_ipmix import AugMixConfig, IPMixConfig, PixMixConfig
from dali_ipmix.native import plan_from_records
from dali_ipmix.table import OP_CODES, op_parameters, pack_plan
from kernel_harness import compiler
from plan_checks import check_augmix_plan, check_pixmix_plan, check_plan_distribution

pytestmark = pytest.mark.skipif(compiler() is None, reason="needs g++")

ALL_OPS = tuple(OP_CODES)
#: AugMix and PixMix configs, at the papers' sizes and at odd ones.
MIX_CONFIGS = [
    (AugMixConfig.imagenet(), 224, 224), (AugMixConfig.cifar(all_ops=True, depth=2, width=5), 32, 32),
    (PixMixConfig.imagenet(), 224, 224), (PixMixConfig.cifar(all_ops=True), 32, 32),
    (PixMixConfig(k=0, beta=0.7, severity=3.3), 37, 53), (AugMixConfig(width=1, depth=1), 2, 2),
]


@pytest.mark.parametrize("h, w", [(224, 224), (32, 32), (37, 53), (2, 2), (480, 301)])
def test_magnitude_laws_match_op_parameters_bit_for_bit(h, w):
    import plan_shim
    rng = np.random.default_rng(h * 1000 + w)
    # Every integer rotation angle (the law floors to whole degrees), plus random levels up to 10.
    levels = np.concatenate([np.arange(0, 31) / 3.0 + 1e-9, rng.uniform(0.1, 10, 300),
                             [0.1, 1.0, 5.0, 9.999999]])
    for name in ALL_OPS:
        for sign in (-1, 1):
            codes, params, cuts = op_parameters(ALL_OPS, np.full(levels.size, ALL_OPS.index(name)),
                                                levels, np.full(levels.size, sign), h, w)
            for i, level in enumerate(levels):
                p, cut = plan_shim.op_parameters(OP_CODES[name], level, sign, h, w)
                assert p.view(np.uint32).tolist() == params[i].view(np.uint32).tolist(), \
                    (name, level, sign, p, params[i])
                assert cut == cuts[i], (name, level, cut, cuts[i])


@pytest.mark.parametrize("config, h, w", [
    (IPMixConfig.imagenet(all_ops=True), 224, 224),
    (IPMixConfig.cifar(), 32, 32),
    (IPMixConfig.imagenet(t=0), 20, 24),
    (IPMixConfig.imagenet(k=1, t=5, ops=("rotate", "autocontrast")), 17, 40),
])
def test_packed_rows_equal_pack_plan_of_the_returned_draws(config, h, w):
    import plan_shim
    records, rows, mixw = plan_shim.draw_samples(config, 40, h, w, seed=7)
    plan = plan_from_records(records, config, h, w)
    steps, mix = pack_plan(plan)
    np.testing.assert_array_equal(rows.reshape(steps.shape), steps)
    np.testing.assert_array_equal(mixw.view(np.uint32), mix.view(np.uint32))


@pytest.mark.parametrize("config, h, w", [
    (IPMixConfig.imagenet(all_ops=True), 48, 40),
    (IPMixConfig.imagenet(all_ops=True, k=2, t=6), 9, 13),
    (IPMixConfig.cifar(), 32, 32),
    (IPMixConfig.imagenet(t=0), 5, 7),
    (IPMixConfig.imagenet(ops=("translate_x", "translate_y", "mirror", "rotate"), severity=10), 31, 26),
    (IPMixConfig.imagenet(ops=("translate_x", "mirror", "rotate"), k=1, t=4), 2, 2),
] + [(config, min(h, 48), min(w, 48)) for config, h, w in MIX_CONFIGS])
def test_sparse_sample_path_equals_the_dense_one_byte_for_byte(config, h, w):
    """ipx_sample.h (the CPU operator's path) against ipx_host.h's ipx_run_sample (the kernels' grid)."""
    import plan_shim
    n = 30
    records, rows, mixw = plan_shim.draw_samples(config, n, h, w, seed=99)
    rng = np.random.default_rng(1)
    k, t = config.engine.k, plan_from_records(records, config, h, w).table_steps
    for i in range(n):
        x = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        z = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        dense = plan_shim.run_sample(rows[i], mixw[i], k, t, x, z, sparse=False)
        sparse = plan_shim.run_sample(rows[i], mixw[i], k, t, x, z, sparse=True)
        np.testing.assert_array_equal(dense.view(np.uint32), sparse.view(np.uint32), err_msg=str(i))


N = 3000


@pytest.fixture(scope="module")
def plan():
    import plan_shim
    config = IPMixConfig.imagenet(all_ops=True)
    records, _, _ = plan_shim.draw_samples(config, N, 224, 224, seed=2024)
    return plan_from_records(records, config, 224, 224)


def test_cpp_draws_follow_the_plan_distributions(plan):
    check_plan_distribution(plan)


def test_draws_depend_on_the_key_only():
    import plan_shim
    config = IPMixConfig.cifar()
    a, _, _ = plan_shim.draw_samples(config, 5, 32, 32, seed=3)
    b, _, _ = plan_shim.draw_samples(config, 5, 32, 32, seed=3)
    c, _, _ = plan_shim.draw_samples(config, 5, 32, 32, seed=4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a[0], a[1])


MIX_SHIM = r"""
#include "ipx_sample.h"
extern "C" void mix_c(int fast, const unsigned char* x, const unsigned char* finals, const float* mixw,
                      int k, int h, int w, const float* mean, const float* std, int chw, float* out) {
    IpxNorm n = ipx_norm(mean, std, chw != 0);
    if (fast) ipx_mix_normalized_f32(x, finals, mixw, k, h, w, n, out);
    else ipx_mix_normalized(x, finals, mixw, k, h, w, n, [](float v) { return v; }, out);
}
"""


@functools.lru_cache(maxsize=None)
def _mix_library():
    from kernel_harness import build_library
    return build_library(MIX_SHIM, ("-O2", "-std=c++17", "-shared", "-fPIC", "-ffp-contract=off"))


@pytest.mark.parametrize("h, w", [(1, 1), (1, 5), (2, 3), (5, 7), (20, 26), (31, 33)])
@pytest.mark.parametrize("k", [0, 1, 3, 5])
def test_simd_normalised_mix_equals_the_generic_one_bit_for_bit(h, w, k):
    """ipx_mix_normalized_f32 (the CPU operator's float32 path) against the generic template, CHW and
    HWC, on sizes where the vector loop runs not at all, partly and over almost everything."""
    import ctypes
    dll = _mix_library()
    rng = np.random.default_rng(h * 100 + w + k)
    x = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    finals = rng.integers(0, 256, (max(k, 1), h, w, 3), dtype=np.uint8)
    weights = rng.dirichlet(np.ones(k)) if k else np.zeros(0)
    mixw = np.concatenate([[0.0 if k == 0 else rng.uniform()], weights]).astype(np.float32)
    mean = np.array([123.675, 116.28, 103.53], np.float32)
    std = np.array([58.395, 57.12, 57.375], np.float32)
    ptr = lambda a: ctypes.c_void_p(a.ctypes.data)
    for chw in (1, 0):
        fast, slow = (np.full(h * w * 3, np.nan, np.float32) for _ in range(2))
        for flag, out in ((1, fast), (0, slow)):
            dll.mix_c(flag, ptr(x), ptr(finals), ptr(mixw), k, h, w, ptr(mean), ptr(std), chw, ptr(out))
        np.testing.assert_array_equal(fast.view(np.uint32), slow.view(np.uint32), err_msg=f"chw={chw}")


@pytest.mark.parametrize("config, h, w", [
    (IPMixConfig.imagenet(all_ops=True), 224, 224),
    (IPMixConfig.cifar(), 32, 32),
    (IPMixConfig.imagenet(k=5, t=4, beta=0.7, severity=3.3), 37, 53),
    (IPMixConfig.imagenet(k=1, t=0), 9, 9),
] + MIX_CONFIGS)
def test_cpp_drawer_is_the_python_drawer_bit_for_bit(config, h, w):
    """One drawer: the C++ plan of key (seed, key, view) is draw_plan's with
    KeyedGenerator(keys.plan_keys(seed, keys)), call view + 1; field by field, and the packed rows
    (IPMix, AugMix and PixMix: the same drawer, other knobs)."""
    import dataclasses
    import plan_shim
    from dali_ipmix import draw_plan
    from dali_ipmix.keys import KeyedGenerator, plan_keys
    keys = np.array([5, -1, 2 ** 40, 7, 0, -2 ** 63] * 50, np.int64)
    draws = KeyedGenerator(plan_keys(11, keys))
    for view in (0, 1):
        py = draw_plan(len(keys), h, w, config, draws)
        records, rows, mixw = plan_shim.draw_samples(config, len(keys), h, w, 11, keys=keys, view=view)
        cpp = plan_from_records(records, config, h, w)
        for field in dataclasses.fields(py):
            a, b = getattr(py, field.name), getattr(cpp, field.name)
            if isinstance(a, np.ndarray):
                np.testing.assert_array_equal(a, b, err_msg=field.name)
            else:
                assert a == b, field.name
        steps, mix = pack_plan(py)
        np.testing.assert_array_equal(rows.reshape(steps.shape), steps)
        np.testing.assert_array_equal(mixw.view(np.uint32), mix.view(np.uint32))


def test_cpp_draws_follow_the_augmix_and_pixmix_distributions():
    import plan_shim
    for config, check in ((AugMixConfig.imagenet(all_ops=True), lambda p: check_augmix_plan(p)),
                          (PixMixConfig.cifar(), lambda p: check_pixmix_plan(p, k=4, beta=3.0, severity=3.0))):
        records, _, _ = plan_shim.draw_samples(config, N, 32, 32, seed=2025)
        check(plan_from_records(records, config, 32, 32))

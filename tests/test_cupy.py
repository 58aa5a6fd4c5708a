"""CuPy backend against the NumPy backend on the same plan. Needs CuPy and a CUDA GPU; skipped otherwise."""

import numpy as np
import pytest

import dali_ipmix.execute as execute
from dali_ipmix import IPMixConfig, _kernel_harness, ipmix_batch
from dali_ipmix.execute import apply_image_ops, apply_luts, execute_plan, mask_noise, warp_affine_batched
from dali_ipmix.kernels import cupy_backend
from dali_ipmix.ops import IMAGE_OPS
from dali_ipmix.plan import PIXEL_OPS, draw_plan

from photos import extremes, photos
from test_kernels_cpu import images, patch_plan, patch_steps

cupy = pytest.importorskip("cupy")
try:
    cupy.cuda.runtime.getDeviceCount()
except Exception as err:  # noqa: BLE001 - any CUDA failure means "no usable GPU"
    pytest.skip(f"no usable CUDA device: {err}", allow_module_level=True)

pytestmark = pytest.mark.cupy
NAMES = tuple(IMAGE_OPS)


def test_mask_noise_same_bits():
    keys = np.array([0, 1, 2 ** 32 - 1], np.uint32)
    np.testing.assert_array_equal(mask_noise(keys, 17, 9, 3, np),
                                  cupy.asnumpy(mask_noise(cupy.asarray(keys), 17, 9, 3, cupy)))


@pytest.mark.parametrize("name", NAMES)
def test_image_ops_within_one_grey_level(name):
    x = np.concatenate([photos(48, 64), extremes(48, 64)])
    rng = np.random.default_rng(0)
    args = (NAMES, np.full(len(x), NAMES.index(name)), rng.uniform(0.1, 10, len(x)), rng.choice([-1, 1], len(x)))
    a = apply_image_ops(x, *args)
    b = cupy.asnumpy(apply_image_ops(cupy.asarray(x), *args))
    assert np.abs(a.astype(int) - b).max() <= 1


def test_batched_warp_same_on_both():
    x = photos(48, 64, count=8)
    mats = IMAGE_OPS["rotate"].fn(np.linspace(-30, 30, 8), 48, 64)
    a = warp_affine_batched(x, mats)
    b = cupy.asnumpy(warp_affine_batched(cupy.asarray(x), mats))
    assert np.abs(a.astype(int) - b).max() <= 1


@pytest.mark.parametrize("cfg", [IPMixConfig.imagenet(), IPMixConfig.cifar(), IPMixConfig.imagenet(all_ops=True)])
def test_whole_batch_same_plan(cfg):
    x, z = photos(64, 64, count=32), photos(64, 64, count=33)[1:]
    plan = draw_plan(32, 64, 64, cfg, 3)
    a = execute_plan(plan, x, z)
    b = execute_plan(plan, cupy.asarray(x), cupy.asarray(z))
    assert isinstance(b, cupy.ndarray) and b.dtype == cupy.float32
    b = cupy.asnumpy(b)
    # uint8 chain stages may differ by one grey level (float32 rounding), which the mix then weights.
    assert np.abs(a - b).max() <= 1.0
    assert np.abs(a - b).mean() < 1e-2


def test_ipmix_batch_returns_cupy_and_rejects_mixed_backends():
    x = cupy.asarray(photos(32, 32, count=4))
    out = ipmix_batch(x, x, IPMixConfig.cifar(), 0)
    assert isinstance(out, cupy.ndarray) and out.shape == x.shape
    with pytest.raises(TypeError, match="must both be NumPy or both CuPy"):
        ipmix_batch(x, cupy.asnumpy(x), IPMixConfig.cifar(), 0)


# ---------------------------------------------------------------- the fused kernels (kernels.py)

def kernels_off(fn, *args):
    """``fn(*args)`` on CuPy through the xp-generic code (the kernels disabled)."""
    saved = execute.USE_KERNELS
    execute.USE_KERNELS = False
    try:
        return fn(*args)
    finally:
        execute.USE_KERNELS = saved


def affine_mats(count, h, w, seed=0):
    rng = np.random.default_rng(seed)
    names = [n for n, op in IMAGE_OPS.items() if op.family == "affine"]
    op = [IMAGE_OPS[names[i % len(names)]] for i in range(count)]
    return np.concatenate([o.fn(o.params(rng.uniform(0.1, 10, 1), rng.choice([-1, 1], 1), h, w), h, w)
                           for o in op])


def test_kernels_are_used_by_default(monkeypatch):
    launches = []
    cls = type(cupy_backend())
    launch = cls._launch
    monkeypatch.setattr(cls, "_launch", lambda self, name, total, *a: (launches.append(name),
                                                                      launch(self, name, total, *a)))
    x = photos(64, 64, count=16)
    execute_plan(draw_plan(16, 64, 64, IPMixConfig.imagenet(), 0), cupy.asarray(x), cupy.asarray(x[::-1].copy()))
    assert {"ipx_warp", "ipx_lut", "ipx_patch", "ipx_mix"} <= set(launches), launches


def test_kernel_warp_matches_generic_and_numpy():
    x = images(48, 64, count=24)
    mats = affine_mats(24, 48, 64)
    got = cupy.asnumpy(execute.warp_affine(cupy.asarray(x), mats))
    generic = cupy.asnumpy(warp_affine_batched(cupy.asarray(x), mats))
    for want in (generic, warp_affine_batched(x, mats)):
        diff = np.abs(got.astype(int) - want)
        assert diff.max() <= 1 and (diff > 0).mean() <= 1e-3   # expected: bit-exact (no FMA contraction)


def test_kernel_luts_exact():
    x = images(33, 47, count=16)
    luts = np.random.default_rng(1).integers(0, 256, (16, 3, 256), dtype=np.uint8)
    np.testing.assert_array_equal(cupy.asnumpy(apply_luts(cupy.asarray(x), cupy.asarray(luts))),
                                  apply_luts(x, luts))


@pytest.mark.parametrize("pixel_op", PIXEL_OPS)
def test_kernel_patch_steps_match_generic_and_numpy(pixel_op):
    cfg = IPMixConfig.imagenet()
    x, z = images(48, 40, count=16), images(48, 40, count=16, seed=5)[::-1].copy()
    plan = patch_plan(16, 48, 40, cfg, 6, pixel_op)
    start = np.repeat(x, cfg.k, axis=0)
    dx, dz = cupy.asarray(x), cupy.asarray(z)
    got = cupy.asnumpy(patch_steps(plan, dx, dz, cupy.asarray(start)))
    generic = cupy.asnumpy(kernels_off(patch_steps, plan, dx, dz, cupy.asarray(start)))
    saved = execute.warp_affine
    execute.warp_affine = warp_affine_batched     # A(x) sources warped as on CuPy
    try:
        numpy_out = patch_steps(plan, x, z, start.copy())
    finally:
        execute.warp_affine = saved
    for want in (generic, numpy_out):
        diff = np.abs(got.astype(int) - want)
        assert diff.max() <= 1 and (diff > 0).mean() <= 1e-3, (diff.max(), (diff > 0).mean())


def test_kernels_match_their_cpu_harness():
    """The same C source on the device and on the host: equal, but for multiply's powf (1 grey level)."""
    if _kernel_harness.compiler() is None:
        pytest.skip("no C++ compiler for the kernel harness")
    host, dev = _kernel_harness.HostKernels(), cupy_backend()
    x, z = images(40, 52, count=16), images(40, 52, count=16, seed=2)
    mats = affine_mats(16, 40, 52, seed=3)
    np.testing.assert_array_equal(cupy.asnumpy(dev.warp_affine(cupy.asarray(x), mats)), host.warp_affine(x, mats))
    luts = np.random.default_rng(4).integers(0, 256, (16, 3, 256), dtype=np.uint8)
    np.testing.assert_array_equal(cupy.asnumpy(dev.apply_luts(cupy.asarray(x), cupy.asarray(luts))),
                                  host.apply_luts(x, luts))
    plan = draw_plan(16, 40, 52, IPMixConfig.imagenet(), 5)
    chains = np.random.default_rng(6).integers(0, 256, (48, 40, 52, 3), dtype=np.uint8)
    np.testing.assert_array_equal(
        cupy.asnumpy(dev.final_mix(cupy.asarray(x), cupy.asarray(chains), plan.m, plan.weights)),
        host.final_mix(x, chains, plan.m, plan.weights))
    plan = patch_plan(16, 40, 52, IPMixConfig.imagenet(), 7)
    rows, j = np.arange(48), 0
    fields = [f.reshape(48, -1)[rows, j] for f in (plan.top, plan.left, plan.height, plan.width,
                                                  plan.pixel_op, plan.wa, plan.wb, plan.p, plan.mask_key)]
    entries = execute.pack_patch_entries(rows, np.repeat(np.arange(16), 3), *fields)
    a, b = chains.copy(), cupy.asarray(chains)
    host.patch_step(a, z, None, entries)
    dev.patch_step(b, cupy.asarray(z), None, entries)
    diff = np.abs(cupy.asnumpy(b).astype(int) - a)
    assert diff.max() <= 1 and (diff > 0).mean() <= 1e-3


@pytest.mark.parametrize("cfg", [IPMixConfig.imagenet(), IPMixConfig.cifar(), IPMixConfig.imagenet(all_ops=True)])
def test_whole_batch_kernels_match_generic_cupy(cfg):
    x, z = photos(64, 64, count=32), photos(64, 64, count=33)[1:]
    plan = draw_plan(32, 64, 64, cfg, 4)
    dx, dz = cupy.asarray(x), cupy.asarray(z)
    diff = np.abs(cupy.asnumpy(execute_plan(plan, dx, dz)) - cupy.asnumpy(kernels_off(execute_plan, plan, dx, dz)))
    assert diff.max() <= 1.0 and (diff > 0).mean() <= 1e-3


def test_nvtx_ranges_do_not_change_the_output(monkeypatch):
    import dali_ipmix.execute as execute
    x = cupy.asarray(photos(32, 32, count=8))
    plain = ipmix_batch(x, x, IPMixConfig.cifar(), 0)
    monkeypatch.setattr(execute, "USE_NVTX", True)
    cupy.testing.assert_array_equal(ipmix_batch(x, x, IPMixConfig.cifar(), 0), plain)

"""The GPU backends (the compiled core on CUDA, the array executor on CuPy) against the NumPy executor and\nthe host-compiled core on the same plan. Needs CuPy and a CUDA GPU; skipped otherwise."""

import numpy as np
import pytest

import dataclasses

from dali_ipmix import IPMixConfig, ipmix_batch
from dali_ipmix.execute import apply_image_ops, execute_plan, mask_noise, warp_affine_batched
from dali_ipmix.ops import IMAGE_OPS
from dali_ipmix.plan import draw_plan
from dali_ipmix.table import TableExecutor

import kernel_harness
from image_sets import extremes, photos

cupy = pytest.importorskip("cupy")
try:
    cupy.cuda.runtime.getDeviceCount()
except Exception as err:  # noqa: BLE001 - any CUDA failure means "no usable GPU"
    pytest.skip(f"no usable CUDA device: {err}", allow_module_level=True)

from dali_ipmix.cuda import CudaDevice  # noqa: E402 - needs CuPy, checked above

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


# ---------------------------------------------------------------- the compiled core on CUDA

# The array executor with the compiled core's warp arithmetic: equal to the core but for multiply.
BATCHED = kernel_harness.BatchedWarpExecutor().execute


def host_core():
    """The same C source compiled for the host (g++), or the batched array executor without g++."""
    if kernel_harness.compiler() is None:
        return BATCHED
    return TableExecutor(kernel_harness.HostDevice())


def on_device(plan, x, z):
    return cupy.asnumpy(execute_plan(plan, cupy.asarray(x), cupy.asarray(z)))


def test_cuda_backend_is_the_default_with_fixed_launches(monkeypatch):
    launches = []
    launch = CudaDevice.launch
    monkeypatch.setattr(CudaDevice, "launch", lambda self, name, blocks, args: (
        launches.append(name), launch(self, name, blocks, args)))
    x = photos(64, 64, count=16)
    for n, cfg in ((16, IPMixConfig.imagenet()), (3, IPMixConfig.imagenet(all_ops=True))):
        launches.clear()
        execute_plan(draw_plan(n, 64, 64, cfg, 0), cupy.asarray(x[:n]), cupy.asarray(x[:n][::-1].copy()))
        assert launches == ["ipx_prepare", "ipx_step"] * cfg.t + ["ipx_mix"], launches


@pytest.mark.parametrize("name", NAMES)
def test_each_op_same_on_device_and_host(name):
    """The same C source on the device and on the host: equal (device atomics and shared memory
    build the histograms, the host loops count serially)."""
    cfg = IPMixConfig.imagenet(all_ops=True, severity=10)
    x = np.concatenate([photos(40, 52), extremes(40, 52)])
    n = len(x)
    plan = dataclasses.replace(draw_plan(n, 40, 52, cfg, 1), kind=np.zeros((n, 3), np.int64),
                               n_ops=np.ones((n, 3), np.int64), op=np.full((n, 3, 3), cfg.op_names.index(name)),
                               m=np.ones(n))
    got = on_device(plan, x, x[::-1].copy())
    np.testing.assert_array_equal(got, host_core()(plan, x, x[::-1].copy()))
    np.testing.assert_array_equal(got, BATCHED(plan, x, x[::-1].copy()))


@pytest.mark.parametrize("cfg", [IPMixConfig.imagenet(), IPMixConfig.cifar(), IPMixConfig.imagenet(all_ops=True),
                                 IPMixConfig.imagenet(k=5, t=4, severity=10, all_ops=True)])
def test_whole_batch_matches_host_and_numpy(cfg):
    x, z = photos(64, 64, count=32), photos(64, 64, count=33)[1:]
    plan = draw_plan(32, 64, 64, cfg, 4)
    got = on_device(plan, x, z)
    for want in (host_core()(plan, x, z), BATCHED(plan, x, z), execute_plan(plan, x, z)):
        diff = np.abs(got - want)
        assert diff.max() <= 1.0 and (diff > 0).mean() <= 1e-3, (diff.max(), (diff > 0).mean())


def test_back_to_back_batches_keep_their_tables():
    """Uploads are asynchronous from reused page-locked buffers: many batches queued without a sync
    must each run with their own plan."""
    cfg = IPMixConfig.imagenet(all_ops=True)
    x, z = photos(32, 32, count=8), photos(32, 32, count=9)[1:]
    dx, dz = cupy.asarray(x), cupy.asarray(z)
    plans = [draw_plan(8, 32, 32, cfg, seed) for seed in range(40)]
    outs = [execute_plan(p, dx, dz) for p in plans]      # queued, nothing read back in between
    host = host_core()
    for p, out in zip(plans, outs):
        assert np.abs(cupy.asnumpy(out) - host(p, x, z)).max() <= 1.0


def test_arrays_backend_on_cupy_matches_numpy():
    x, z = photos(48, 48, count=16), photos(48, 48, count=17)[1:]
    plan = draw_plan(16, 48, 48, IPMixConfig.imagenet(all_ops=True), 2)
    got = cupy.asnumpy(execute_plan(plan, cupy.asarray(x), cupy.asarray(z), executor="arrays"))
    assert np.abs(got - execute_plan(plan, x, z)).max() <= 1.0


def test_cuda_backend_refuses_numpy_inputs():
    x = photos(16, 16, count=2)
    with pytest.raises(TypeError, match="executor 'cuda' runs on CuPy arrays"):
        execute_plan(draw_plan(2, 16, 16, IPMixConfig.cifar(), 0), x, x, executor="cuda")


def test_nvtx_ranges_do_not_change_the_output(monkeypatch):
    import dali_ipmix.arrays as arrays
    x = cupy.asarray(photos(32, 32, count=8))
    plain = ipmix_batch(x, x, IPMixConfig.cifar(), 0)
    monkeypatch.setattr(arrays, "USE_NVTX", True)
    cupy.testing.assert_array_equal(ipmix_batch(x, x, IPMixConfig.cifar(), 0), plain)

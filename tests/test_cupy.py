"""CuPy backend against the NumPy backend on the same plan. Needs CuPy and a CUDA GPU; skipped otherwise."""

import numpy as np
import pytest

from dali_ipmix import IPMixConfig, ipmix_batch
from dali_ipmix.execute import apply_image_ops, execute_plan, mask_noise, warp_affine_batched
from dali_ipmix.ops import IMAGE_OPS
from dali_ipmix.plan import draw_plan

from photos import extremes, photos

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
    with pytest.raises(TypeError, match="both NumPy or both CuPy"):
        ipmix_batch(x, cupy.asnumpy(x), IPMixConfig.cifar(), 0)

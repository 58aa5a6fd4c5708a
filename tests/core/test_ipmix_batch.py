"""ipmix_batch as a whole: input checks, reproducibility, parity with the per-image PIL reference
on the same plan, and the same output distribution as the reference's own independent draws."""

import numpy as np
import pytest
from scipy import stats

from dali_ipmix import IPMixConfig, ipmix_batch
from dali_ipmix.reference import execute_plan_reference, ipmix_reference

from image_sets import photos


def pair(n, h, w):
    x = photos(h, w, count=n)
    return x, np.roll(photos(h, w, count=n + 1)[1:], 1, axis=2).copy()


@pytest.mark.parametrize("images,mixing,error,needle", [
    (np.zeros((2, 8, 8, 3), np.float32), np.zeros((2, 8, 8, 3), np.uint8), TypeError, "images must be uint8"),
    (np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8), ValueError, "(N, H, W, 3)"),
    (np.zeros((2, 8, 8, 4), np.uint8), np.zeros((2, 8, 8, 4), np.uint8), ValueError, "4 channels"),
    (np.zeros((2, 8, 8, 3), np.uint8), np.zeros((3, 8, 8, 3), np.uint8), ValueError, "same shape"),
    (np.zeros((2, 1, 8, 3), np.uint8), np.zeros((2, 1, 8, 3), np.uint8), ValueError, "at least 2x2"),
    ([[1]], np.zeros((2, 8, 8, 3), np.uint8), TypeError, "images: expected a numpy.ndarray"),
])
def test_bad_inputs_raise_clear_errors(images, mixing, error, needle):
    with pytest.raises(error) as err:
        ipmix_batch(images, mixing, IPMixConfig.cifar(), 0)
    assert needle in str(err.value)


def test_bad_config_and_rng():
    x, z = pair(2, 8, 8)
    with pytest.raises(TypeError, match="IPMixConfig"):
        ipmix_batch(x, z, {"k": 3}, 0)
    with pytest.raises(TypeError, match="Generator or an int seed"):
        ipmix_batch(x, z, IPMixConfig.cifar(), 0.5)


def test_output_contract_and_reproducibility():
    x, z = pair(6, 40, 48)
    cfg = IPMixConfig.imagenet()
    a, b = ipmix_batch(x, z, cfg, 9), ipmix_batch(x, z, cfg, 9)
    assert a.shape == x.shape and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, ipmix_batch(x, z, cfg, 10))
    rng = np.random.default_rng(9)
    assert not np.array_equal(ipmix_batch(x, z, cfg, rng), ipmix_batch(x, z, cfg, rng))


def test_t_zero_returns_the_clean_images_and_empty_batch_works():
    x, z = pair(3, 16, 16)
    np.testing.assert_allclose(ipmix_batch(x, z, IPMixConfig.cifar(t=0), 1), x, atol=1e-3)
    empty = np.zeros((0, 16, 16, 3), np.uint8)
    assert ipmix_batch(empty, empty, IPMixConfig.cifar(), 1).shape == (0, 16, 16, 3)


@pytest.mark.parametrize("cfg", [IPMixConfig.imagenet(), IPMixConfig.cifar(),
                                 IPMixConfig.imagenet(all_ops=True, severity=10, beta=0.5, k=4, t=5)],
                         ids=["imagenet", "cifar", "all_ops_severe"])
def test_batched_matches_per_image_pil_on_the_same_plan(cfg):
    x, z = pair(24, 48, 56)
    out, plan = ipmix_batch(x, z, cfg, 4, return_plan=True)
    want = execute_plan_reference(plan, x, z)
    diff = np.abs(out - want)
    assert diff.max() <= 1.0, diff.max()
    assert diff.mean() < 0.01


def mean_abs_change(views, x):
    return np.abs(views - x.astype(np.float32)).mean(axis=(1, 2, 3))


def reference_views(x, z, cfg, seed):
    rng = np.random.default_rng(seed)
    return np.stack([ipmix_reference(x[i], z[i], cfg, rng) for i in range(len(x))])


@pytest.mark.parametrize("preset,size", [("imagenet", 64), ("cifar", 32)])
def test_output_distribution_matches_reference_draws(preset, size):
    cfg = getattr(IPMixConfig, preset)()
    x, z = pair(400, size, size)
    ours = mean_abs_change(ipmix_batch(x, z, cfg, 1), x)
    ref = mean_abs_change(reference_views(x, z, cfg, 2), x)
    assert stats.ks_2samp(ours, ref).pvalue > 1e-3
    # The test has power: a visibly different augmentation (one op per chain at most) is rejected.
    weaker = mean_abs_change(ipmix_batch(x, z, cfg.replace(t=1), 1), x)
    assert stats.ks_2samp(weaker, ref).pvalue < 1e-3


def test_thread_count_does_not_change_the_output(monkeypatch):
    import dali_ipmix.augment as augment
    monkeypatch.setattr(augment, "MIN_PIXELS_PER_THREAD", 1)   # split even this tiny batch
    x, z = pair(7, 40, 40)
    cfg = IPMixConfig.imagenet(all_ops=True)
    one = ipmix_batch(x, z, cfg, 3)
    for threads in (2, 3, 0, 16):
        np.testing.assert_array_equal(ipmix_batch(x, z, cfg, 3, num_threads=threads), one)
    with pytest.raises(ValueError, match="num_threads=-1"):
        ipmix_batch(x, z, cfg, 3, num_threads=-1)


def test_executor_argument_and_its_deprecated_backend_name():
    from dali_ipmix import execute_plan
    x, z = pair(2, 16, 16)
    config = IPMixConfig.cifar(jsd=False)
    out, plan = ipmix_batch(x, z, config, rng=3, executor="arrays", return_plan=True)
    with pytest.warns(DeprecationWarning, match="now called executor="):
        old = ipmix_batch(x, z, config, rng=3, backend="arrays")
    np.testing.assert_array_equal(old, out)
    with pytest.warns(DeprecationWarning, match="execute_plan"):
        np.testing.assert_array_equal(execute_plan(plan, x, z, backend="arrays"), out)
    with pytest.raises(TypeError, match="executor= only"):
        ipmix_batch(x, z, config, rng=3, executor="arrays", backend="arrays")
    with pytest.raises(ValueError, match="executor='numpy' is unknown"):
        execute_plan(plan, x, z, "numpy")
    with pytest.raises(TypeError, match="executor 'cuda' runs on CuPy arrays"):
        execute_plan(plan, x, z, executor="cuda")

"""Pixel-level (patch) mixing ops against the spec's formulas, and their behaviour at the extremes."""

import numpy as np
import pytest
from scipy import stats

from dali_ipmix import IPMixConfig, ipmix_batch, reference
from dali_ipmix.execute import execute_plan, mask_noise, pixel_mix
from dali_ipmix.plan import PATCH_CHAIN, draw_plan

from image_sets import extremes, photos


def spec_formula(op, a, b, wa, wb):
    a, b = a / 255.0, b / 255.0
    if op == "add":
        return (wa * (2 * a - 1) + wb * (2 * b - 1) + 1) / 2
    return ((2 * a) ** wa) * (np.maximum(2 * b, 1e-37) ** wb) / 2


@pytest.mark.parametrize("op", ["add", "multiply"])
@pytest.mark.parametrize("beta", [0.05, 1.0, 3.0, 4.0, 50.0])
def test_add_multiply_follow_formula_and_stay_in_range(op, beta):
    rng = np.random.default_rng(int(beta * 100))
    a = np.concatenate([photos(16, 16), extremes(16, 16)])
    b = np.concatenate([extremes(16, 16, seed=1), photos(16, 16)])
    plan = draw_plan(len(a), 16, 16, IPMixConfig.imagenet(beta=beta), rng)
    wa, wb = plan.wa[:, 0, 0], plan.wb[:, 0, 0]
    with np.errstate(all="raise"):
        got = pixel_mix(op, a, b, wa, wb, wa * 0, plan.mask_key[:, 0, 0])
    want = spec_formula(op, a.astype(np.float64), b.astype(np.float64),
                        wa.reshape(-1, 1, 1, 1), wb.reshape(-1, 1, 1, 1))
    want = np.floor(np.clip(want, 0, 1) * 255 + 0.5)
    assert got.dtype == np.uint8
    assert np.abs(got - want).max() <= 1


def test_multiply_with_black_source_and_negative_weight_saturates_without_nan():
    a = np.full((1, 4, 4, 3), 200, np.uint8)
    black = np.zeros_like(a)
    with np.errstate(all="raise"):
        out = pixel_mix("multiply", a, black, np.array([1.5]), np.array([-0.9]), np.array([0.0]),
                        np.array([1], np.uint32))
    assert (out == 255).all()
    zero_a = pixel_mix("multiply", black, a, np.array([0.3]), np.array([-0.5]), np.array([0.0]),
                       np.array([1], np.uint32))
    assert (zero_a == 0).all()


@pytest.mark.parametrize("op,channels", [("random_pixels", 1), ("random_elems", 3)])
def test_random_masks_pick_a_with_probability_p(op, channels):
    a = np.full((4, 64, 64, 3), 255, np.uint8)
    b = np.zeros_like(a)
    p = np.array([0.0, 0.25, 0.5, 0.9])
    out = pixel_mix(op, a, b, p * 0, p * 0, p, np.arange(4, dtype=np.uint32) * 977)
    frac = (out == 255).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(frac, p, atol=0.02)
    same_over_channels = (out == out[..., :1]).all()
    assert same_over_channels == (channels == 1)


def test_mask_noise_is_uniform_and_keyed():
    noise = mask_noise(np.array([3, 4], np.uint32), 64, 64, 3, np)
    assert noise.dtype == np.float32 and noise.shape == (2, 64, 64, 3)
    assert 0 <= noise.min() and noise.max() < 1
    assert stats.kstest(noise[0].ravel(), "uniform").pvalue > 1e-3
    assert np.abs(noise[0] - noise[1]).mean() > 0.2
    # Windows of different sizes agree where they overlap: the noise depends on (key, y, x, c) only.
    np.testing.assert_array_equal(mask_noise(np.array([3], np.uint32), 8, 5, 3, np)[0], noise[0, :8, :5])


def test_patch_step_changes_only_its_rectangle():
    x, z = photos(32, 40, count=6), extremes(32, 40)[[0, 1, 2, 3, 4, 0]]
    cfg = IPMixConfig.imagenet(k=1, t=1)
    plan = draw_plan(6, 32, 40, cfg, 11)
    fields = dict(kind=np.full((6, 1), PATCH_CHAIN), n_ops=np.ones((6, 1), int),
                  weights=np.ones((6, 1)), m=np.ones(6), from_image=np.zeros((6, 1, 1), bool))
    plan = type(plan)(**{**plan.__dict__, **fields})
    out = execute_plan(plan, x, z)
    want = reference.execute_plan_reference(plan, x, z)
    for n in range(6):
        top, left = plan.top[n, 0, 0], plan.left[n, 0, 0]
        h, w = plan.rect_h[n, 0, 0], plan.rect_w[n, 0, 0]
        outside = np.ones((32, 40), bool)
        outside[top:top + h, left:left + w] = False
        np.testing.assert_array_equal(out[n][outside], x[n][outside].astype(np.float32))
        assert np.abs(out[n] - want[n]).max() <= 1


@pytest.mark.parametrize("beta", [0.01, 4.0, 1000.0])
def test_whole_ipmix_finite_and_in_range_for_extreme_inputs(beta):
    x = np.concatenate([extremes(24, 24), photos(24, 24)])
    for z in (np.zeros_like(x), np.full_like(x, 255), x[::-1].copy()):
        cfg = IPMixConfig.imagenet(beta=beta, severity=10, all_ops=True)
        out = ipmix_batch(x, z, cfg, 3)
        assert out.dtype == np.float32 and np.isfinite(out).all()
        assert out.min() >= 0 and out.max() <= 255

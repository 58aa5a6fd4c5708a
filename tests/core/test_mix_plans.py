"""AugMix and PixMix on the engine: their plans' distributions (the knobs), IPMix's draws unchanged
by the appended slots, and the NumPy executor against the per-image PIL executor on the same plans."""

import numpy as np
import pytest

from dali_ipmix import AugMixConfig, IPMixConfig, PixMixConfig, augment_batch, draw_plan, ipmix_batch
from dali_ipmix.keys import KeyedGenerator, plan_keys
from dali_ipmix.laws import plan_draws
from dali_ipmix.plan import plan_from_uniforms
from dali_ipmix.reference import execute_plan_reference
from plan_checks import check_augmix_plan, check_pixmix_plan

N = 6000


@pytest.mark.parametrize("config, depth", [(AugMixConfig.imagenet(all_ops=True), None),
                                           (AugMixConfig.cifar(width=4, depth=2), 2)])
def test_augmix_plan_distributions(config, depth):
    plan = draw_plan(N, 32, 40, config, 11)
    check_augmix_plan(plan, depth=depth, severity=config.severity)
    assert plan.k == config.width and plan.op_names == config.op_names


@pytest.mark.parametrize("config", [PixMixConfig.imagenet(), PixMixConfig.cifar(all_ops=True, k=3)])
def test_pixmix_plan_distributions(config):
    plan = draw_plan(N, 24, 40, config, 12)
    check_pixmix_plan(plan, k=config.k, beta=config.beta, severity=config.severity)


def test_augmix_op_list_frequencies():
    config = AugMixConfig.imagenet()
    plan = draw_plan(N, 16, 16, config, 3)
    ops = np.asarray(plan.op_names)[plan.op[plan.active(0)]]
    counts = {name: int((ops == name).sum()) for name in config.op_names}
    assert set(counts) == {"autocontrast_plain", "equalize", "posterize", "rotate", "solarize", "shear_x",
                           "shear_y", "translate_x", "translate_y"}
    assert min(counts.values()) > 0.8 * ops.size / 9


def test_chain_start_draws_come_after_the_others():
    """PixMix's start draws are appended: the other slots read the same uniforms as an engine without
    a start, and IPMix keeps its draw count (so its plans are unchanged)."""
    k, t = 1, 4
    assert plan_draws(k, t, True) == plan_draws(k, t) + 4
    assert plan_draws(3, 3) == 10 + 9 * 19
    u = np.random.default_rng(0).random((50, plan_draws(k, t, True)))
    with_start = plan_from_uniforms(u, 16, 16, PixMixConfig(k=t))
    assert (with_start.start == (u[:, -4:-3] < 0.5)).all()


def test_the_plan_shape_depends_on_the_config_only():
    for config in (AugMixConfig(), PixMixConfig(), AugMixConfig(depth=5)):
        a, b = draw_plan(7, 20, 20, config, 1), draw_plan(7, 20, 20, config, 2)
        assert a.op.shape == b.op.shape and a.start.shape == b.start.shape == (7, config.engine.k)


def test_keyed_plans_are_per_sample():
    keys = np.arange(8)
    for config in (AugMixConfig(), PixMixConfig()):
        a = draw_plan(8, 20, 20, config, KeyedGenerator(plan_keys(5, keys)))
        b = draw_plan(3, 20, 20, config, KeyedGenerator(plan_keys(5, keys[5:])))
        np.testing.assert_array_equal(a.start[5:], b.start)
        np.testing.assert_array_equal(a.n_ops[5:], b.n_ops)


def images(n, h, w, seed):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (n, 1, 1, 3))
    grad = np.linspace(0, 1, w)[None, None, :, None] * rng.integers(-120, 120, (n, 1, 1, 3))
    noise = rng.integers(-30, 30, (n, h, w, 3))
    return np.clip(base + grad + noise, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("config", [AugMixConfig.imagenet(), AugMixConfig.cifar(all_ops=True, depth=3),
                                    PixMixConfig.imagenet(), PixMixConfig.cifar(all_ops=True),
                                    PixMixConfig(k=0)],
                         ids=["augmix-inet", "augmix-cifar-all", "pixmix-inet", "pixmix-cifar-all", "pixmix-k0"])
@pytest.mark.parametrize("shape", [(48, 56), (32, 32)])
def test_batched_matches_per_image_pil_on_the_same_plan(config, shape):
    x, z = images(24, *shape, 1), images(24, *shape, 2)
    mixing = None if not config.needs_mixing else z
    out, plan = augment_batch(x, mixing, config, 4, return_plan=True)
    want = execute_plan_reference(plan, x, x if mixing is None else z)
    diff = np.abs(out - want)
    # float32 (arrays) vs float64 (PIL executor) pixel mixing: one grey level at a rounding edge, which
    # PixMix's later rounds (weights up to 2, no averaging over chains) may carry and double.
    assert diff.max() <= (1.0 if config.method == "augmix" else 4.0), diff.max()
    assert (diff <= 1).mean() >= 0.999, (diff <= 1).mean()
    assert diff.mean() < 0.01
    assert np.abs(out - x).mean() > 1   # the views are augmented


def test_pixmix_without_rounds_or_start_is_the_image_and_m_is_one():
    x, z = images(40, 16, 16, 3), images(40, 16, 16, 4)
    out, plan = augment_batch(x, z, PixMixConfig(k=0), 0, return_plan=True)
    clean = ~plan.start[:, 0]
    assert clean.any() and (~clean).any()
    np.testing.assert_array_equal(out[clean], x[clean].astype(np.float32))


def test_augmix_takes_no_mixing_and_ipmix_needs_it():
    x = images(4, 16, 16, 5)
    a = augment_batch(x, None, AugMixConfig(), 3)
    np.testing.assert_array_equal(a, augment_batch(x, images(4, 16, 16, 6), AugMixConfig(), 3))
    assert ipmix_batch is augment_batch
    with pytest.raises(TypeError, match="mixing is None, but IPMixConfig"):
        augment_batch(x, None, IPMixConfig(), 0)
    with pytest.raises(TypeError, match="mixing is None, but PixMixConfig"):
        augment_batch(x, None, PixMixConfig(), 0)

"""The random plan: its frequencies are what the spec implies, and it is reproducible."""

import numpy as np
import pytest
from scipy import stats

from dali_ipmix import IPMixConfig
from dali_ipmix.keys import KeyedGenerator, sample_keys
from dali_ipmix.plan import IMAGE_CHAIN, PATCH_CHAIN, PIXEL_OPS, draw_plan

N = 4000


@pytest.fixture(scope="module", params=["generator", "keyed"])
def plan(request):
    """A plan drawn by a NumPy Generator, or per sample from keys (what the pipelines draw with):
    every law below must hold for both."""
    rng = 2024 if request.param == "generator" else KeyedGenerator(sample_keys(2024, 0, np.arange(N)))
    return draw_plan(N, 224, 224, IPMixConfig.imagenet(all_ops=True), rng)


def assert_uniform(values, categories):
    counts = np.array([(values == c).sum() for c in categories])
    assert counts.sum() == values.size, "values outside the allowed categories"
    assert stats.chisquare(counts).pvalue > 1e-4, counts


def test_chain_kinds_op_counts_and_ops_are_uniform(plan):
    assert_uniform(plan.kind.ravel(), [IMAGE_CHAIN, PATCH_CHAIN])
    assert_uniform(plan.n_ops.ravel(), range(4))
    assert_uniform(plan.op[plan.active(IMAGE_CHAIN)], range(15))
    assert_uniform(plan.src_op[plan.active(PATCH_CHAIN) & plan.from_image], range(15))
    assert_uniform(plan.pixel_op[plan.active(PATCH_CHAIN)], range(len(PIXEL_OPS)))
    assert_uniform(plan.size[plan.active(PATCH_CHAIN)], (4, 8, 16, 32, 64, 224))
    assert_uniform(plan.sign.ravel(), (-1, 1))


def test_levels_weights_and_blend_follow_their_laws(plan):
    assert stats.kstest(plan.level.ravel(), stats.uniform(0.1, 0.9).cdf).pvalue > 1e-4
    # Dirichlet(1, 1, 1): each weight is Beta(1, 2); weights sum to one.
    np.testing.assert_allclose(plan.weights.sum(1), 1)
    assert stats.kstest(plan.weights[:, 0], stats.beta(1, 2).cdf).pvalue > 1e-4
    assert stats.kstest(plan.m, "uniform").pvalue > 1e-4
    assert stats.kstest(plan.p.ravel(), "uniform").pvalue > 1e-4
    assert abs(plan.from_image.mean() - 0.5) < 0.02


def test_get_ab_mixture(plan):
    wa, wb = plan.wa.ravel(), plan.wb.ravel()
    first = wa < 1      # Beta(4, 1) < 1 almost surely; 1 + Beta(1, 4) > 1
    assert abs(first.mean() - 0.5) < 0.02
    assert stats.kstest(wa[first], stats.beta(4, 1).cdf).pvalue > 1e-4
    assert stats.kstest(wb[first], stats.beta(1, 4).cdf).pvalue > 1e-4
    assert stats.kstest(wa[~first] - 1, stats.beta(1, 4).cdf).pvalue > 1e-4
    assert stats.kstest(-wb[~first], stats.beta(1, 4).cdf).pvalue > 1e-4


def test_rectangles_are_inside_and_half_square(plan):
    s, h, w = plan.size, plan.rect_h, plan.rect_w
    assert (plan.left >= 0).all() and (plan.left + s <= 224).all()
    assert (plan.top >= 0).all() and (plan.top + s <= 224).all()
    assert (h >= 2).all() and (h <= s).all() and (w >= 2).all() and (w <= s).all()
    big = s == 64      # P(square) = 1/2; a non-square draw is square only with prob 1/63
    square = (h[big] == 64) & (w[big] == 64)
    assert abs(square.mean() - (0.5 + 0.5 / 63 ** 2)) < 0.03
    # Given non-square, width is uniform on [2, s].
    assert_uniform(w[big & (h != 64)], range(2, 65))
    assert_uniform(plan.left[big], range(0, 161))


def test_cifar_plan_never_takes_patches_from_the_image():
    plan = draw_plan(500, 32, 32, IPMixConfig.cifar(), 0)
    assert not plan.from_image.any()
    assert set(np.unique(plan.size)) == {4, 8, 16, 32}


def test_same_seed_same_plan_and_generator_is_advanced():
    cfg = IPMixConfig.imagenet()
    a, b = draw_plan(8, 64, 64, cfg, 5), draw_plan(8, 64, 64, cfg, 5)
    for name, value in a.__dict__.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(value, getattr(b, name), err_msg=name)
    rng = np.random.default_rng(5)
    first, second = draw_plan(8, 64, 64, cfg, rng), draw_plan(8, 64, 64, cfg, rng)
    assert not np.array_equal(first.level, second.level)


def test_plan_is_inspectable():
    plan = draw_plan(3, 32, 32, IPMixConfig.cifar(), 1)
    text = repr(plan)
    assert "N=3" in text and "image ops" in text and "patch sizes" in text
    one = plan.sample(2)
    assert one.batch_size == 1 and np.array_equal(one.level[0], plan.level[2])


def test_t_zero_makes_every_chain_the_clean_image():
    plan = draw_plan(10, 32, 32, IPMixConfig.cifar(t=0), 1)
    assert (plan.n_ops == 0).all() and not plan.active(IMAGE_CHAIN).any()


def test_rng_must_be_generator_or_int():
    with pytest.raises(TypeError, match="Generator or an int seed"):
        draw_plan(1, 8, 8, IPMixConfig.cifar(), "seed")

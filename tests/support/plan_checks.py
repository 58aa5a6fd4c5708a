"""Distribution checks of drawn plans (the checks of tests/core/test_plan.py), shared by the tests of
the C++ drawer (tests/compiled/test_native_plan.py) and of the native operator (tests/dali/test_native.py)."""

import numpy as np
from scipy import stats

from dali_ipmix.plan import IMAGE_CHAIN, PATCH_CHAIN, PIXEL_OPS


def assert_uniform(values, categories):
    counts = np.array([(values == c).sum() for c in categories])
    assert counts.sum() == values.size, "values outside the allowed categories"
    assert stats.chisquare(counts).pvalue > 1e-4, counts


def check_plan_distribution(plan, sizes=(4, 8, 16, 32, 64, 224), severity=1.0, beta=4.0):
    """The checks of tests/core/test_plan.py, for a plan of an ImageNet-like config with all 15 ops."""
    assert_uniform(plan.kind.ravel(), [IMAGE_CHAIN, PATCH_CHAIN])
    assert_uniform(plan.n_ops.ravel(), range(plan.t + 1))
    assert_uniform(plan.op[plan.active(IMAGE_CHAIN)], range(len(plan.op_names)))
    assert_uniform(plan.src_op[plan.active(PATCH_CHAIN) & plan.from_image], range(len(plan.op_names)))
    assert_uniform(plan.pixel_op[plan.active(PATCH_CHAIN)], range(len(PIXEL_OPS)))
    assert_uniform(plan.size[plan.active(PATCH_CHAIN)], sizes)
    assert_uniform(plan.sign.ravel(), (-1, 1))
    assert stats.kstest(plan.level.ravel(), stats.uniform(0.1, severity - 0.1).cdf).pvalue > 1e-4
    np.testing.assert_allclose(plan.weights.sum(1), 1)
    k = plan.k
    assert stats.kstest(plan.weights[:, 0], stats.beta(1, k - 1).cdf).pvalue > 1e-4
    assert stats.kstest(plan.m, "uniform").pvalue > 1e-4
    assert stats.kstest(plan.p.ravel(), "uniform").pvalue > 1e-4
    assert abs(plan.from_image.mean() - 0.5) < 0.03
    wa, wb = plan.wa.ravel(), plan.wb.ravel()
    first = wa < 1
    assert abs(first.mean() - 0.5) < 0.03
    assert stats.kstest(wa[first], stats.beta(beta, 1).cdf).pvalue > 1e-4
    assert stats.kstest(wb[first], stats.beta(1, beta).cdf).pvalue > 1e-4
    assert stats.kstest(wa[~first] - 1, stats.beta(1, beta).cdf).pvalue > 1e-4
    assert stats.kstest(-wb[~first], stats.beta(1, beta).cdf).pvalue > 1e-4
    keys = plan.mask_key.ravel().astype(np.float64)
    assert stats.kstest(keys / 2 ** 32, "uniform").pvalue > 1e-4
    s, h, w = plan.size, plan.rect_h, plan.rect_w
    H, W = plan.image_shape
    assert (plan.left >= 0).all() and (plan.left + s <= W).all()
    assert (plan.top >= 0).all() and (plan.top + s <= H).all()
    assert (h >= 2).all() and (h <= s).all() and (w >= 2).all() and (w <= s).all()
    big = s == 64
    square = (h[big] == 64) & (w[big] == 64)
    assert abs(square.mean() - (0.5 + 0.5 / 63 ** 2)) < 0.04
    assert_uniform(w[big & (h != 64)], range(2, 65))
    assert_uniform(plan.left[big], range(0, W - 64 + 1))


def check_augmix_plan(plan, depth=None, severity=1.0):
    """An AugMix plan (``AugMixConfig``): image-level chains only, ``depth`` ops each (None: 1..3
    uniform), the op list's ops uniform, Dirichlet(1) weights and m ~ Beta(1, 1), no chain start."""
    assert (plan.kind == IMAGE_CHAIN).all()
    if depth is None:
        assert plan.t == 3
        assert_uniform(plan.n_ops.ravel(), (1, 2, 3))
    else:
        assert (plan.n_ops == depth).all() and plan.t == depth
    assert_uniform(plan.op[plan.active(IMAGE_CHAIN)], range(len(plan.op_names)))
    assert_uniform(plan.sign[plan.active(IMAGE_CHAIN)], (-1, 1))
    level = plan.level[plan.active(IMAGE_CHAIN)]
    assert stats.kstest(level, stats.uniform(0.1, severity - 0.1).cdf).pvalue > 1e-4
    np.testing.assert_allclose(plan.weights.sum(1), 1)
    if plan.k > 1:
        assert stats.kstest(plan.weights[:, 0], stats.beta(1, plan.k - 1).cdf).pvalue > 1e-4
    assert stats.kstest(plan.m, "uniform").pvalue > 1e-4
    assert not plan.chain_start and not plan.start.any()


def check_pixmix_plan(plan, k=4, beta=4.0, severity=1.0):
    """A PixMix plan (``PixMixConfig``): one patch-level chain of 0..k rounds, each on the whole image
    with add or multiply (get_ab(beta) weights) and its source A(x) with prob. 1/2; the chain starts
    from A(x) with prob. 1/2; weight 1 and m = 1."""
    H, W = plan.image_shape
    assert plan.k == 1 and (plan.kind == PATCH_CHAIN).all()
    assert_uniform(plan.n_ops.ravel(), range(k + 1))
    active = plan.active(PATCH_CHAIN)
    assert_uniform(plan.pixel_op[active], (0, 1))
    assert (plan.top == 0).all() and (plan.left == 0).all()
    assert (plan.rect_h == H).all() and (plan.rect_w == W).all()
    assert abs(plan.from_image[active].mean() - 0.5) < 0.03
    assert_uniform(plan.src_op[active & plan.from_image], range(len(plan.op_names)))
    assert (plan.weights == 1).all() and (plan.m == 1).all()
    assert plan.chain_start and abs(plan.start.mean() - 0.5) < 0.03
    assert_uniform(plan.start_op[plan.start], range(len(plan.op_names)))
    assert_uniform(plan.start_sign.ravel(), (-1, 1))
    assert stats.kstest(plan.start_level.ravel(), stats.uniform(0.1, severity - 0.1).cdf).pvalue > 1e-4
    wa, wb = plan.wa[active], plan.wb[active]
    first = wa < 1
    assert abs(first.mean() - 0.5) < 0.03
    assert stats.kstest(wa[first], stats.beta(beta, 1).cdf).pvalue > 1e-4
    assert stats.kstest(-wb[~first], stats.beta(1, beta).cdf).pvalue > 1e-4

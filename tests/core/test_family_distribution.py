"""AugMix and PixMix as wholes, against the per-image ports of the authors' code
(``dali_ipmix.reference.augmix_reference`` / ``pixmix_reference``): the ports follow the structure of
docs/augmix-spec.md and docs/pixmix-spec.md where it is checkable (draw order, op laws, chain depths,
mixing rounds, the start image), and ``augment_batch``'s outputs follow the ports in distribution.

The distribution checks compare five per-image statistics of the views (mean shift, correlation with
the clean image, fraction of changed values, mean absolute difference, standard deviation) with
two-sample KS tests on the same images: the batch function against the port, the port against itself
with another seed (the seed-noise floor the threshold must clear), PixMix's rounding convention
against the authors' floats, and a deliberately wrong config (another severity or beta), which must
be rejected. docs/performance.md states the measured p-values.
"""

import functools
import os
import sys

import numpy as np
import pytest
from scipy import stats

import dali_ipmix.reference as reference
from dali_ipmix import augment_batch
from dali_ipmix.config import AugMixConfig, PixMixConfig
from dali_ipmix.reference import augmix_reference, authors_op, image_op, pixmix_reference

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "support"))
from image_sets import photos, structured  # noqa: E402

#: Views per distribution check, and the KS threshold (the IPMix check's): every statistic of a
#: matching pair must keep p above it, a wrong config must push one below it.
N_VIEWS = 400
ALPHA = 1e-3
CONFIGS = {"augmix": AugMixConfig, "pixmix": PixMixConfig}
CASES = [("augmix", "imagenet", 64), ("augmix", "cifar", 32), ("pixmix", "imagenet", 64),
         ("pixmix", "cifar", 32)]
SIGNED = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
NO_LEVEL = ("autocontrast_plain", "equalize")


def pair(n, h, w):
    x = photos(h, w, count=n)
    return x, np.roll(photos(h, w, count=n + 1)[1:], 1, axis=2).copy()


def config(method, preset):
    return CONFIGS[method].from_preset(preset, jsd=False)


def view_statistics(views, x):
    """Per image: mean shift, correlation with the clean image, changed fraction, MAD, std."""
    v, x = views.astype(np.float64), x.astype(np.float64)
    d = v - x
    vf, xf = v.reshape(len(v), -1), x.reshape(len(x), -1)
    vc, xc = vf - vf.mean(1, keepdims=True), xf - xf.mean(1, keepdims=True)
    corr = (vc * xc).sum(1) / np.sqrt((vc ** 2).sum(1) * (xc ** 2).sum(1) + 1e-12)
    return {"mean_shift": d.mean((1, 2, 3)), "correlation": corr,
            "changed": (np.abs(d) > 0.5).mean((1, 2, 3)), "mad": np.abs(d).mean((1, 2, 3)),
            "std": v.std((1, 2, 3))}


def ks_pvalues(a, b):
    return {k: float(stats.ks_2samp(a[k], b[k]).pvalue) for k in a}


def reference_views(x, z, cfg, seed, **kw):
    rng = np.random.default_rng(seed)
    if cfg.method == "augmix":
        return np.stack([augmix_reference(x[i], None, cfg, rng) for i in range(len(x))])
    return np.stack([pixmix_reference(x[i], z[i], cfg, rng, **kw) for i in range(len(x))])


@functools.lru_cache(maxsize=None)
def reference_statistics(method, preset, size, seed, float_mixing=False):
    x, z = pair(N_VIEWS, size, size)
    kw = {"float_mixing": True} if float_mixing else {}
    return view_statistics(reference_views(x, z, config(method, preset), seed, **kw), x)


def batch_statistics(method, preset, size, cfg=None):
    x, z = pair(N_VIEWS, size, size)
    cfg = cfg or config(method, preset)
    return view_statistics(augment_batch(x, None if method == "augmix" else z, cfg, 1), x)


def wrong_config(method, preset):
    """A visibly different augmentation: another severity (and for PixMix another beta too)."""
    cfg = config(method, preset)
    severity = 3.0 if cfg.severity == 1 else 1.0
    if method == "pixmix":
        return cfg.replace(severity=severity, beta=3 * cfg.beta)
    return cfg.replace(severity=severity)


# ------------------------------------------------------------------------- whole outputs (KS)
@pytest.mark.parametrize("method,preset,size", CASES)
def test_reference_seed_noise_floor(method, preset, size):
    """The port against itself with another seed: no statistic may fall below the threshold, else
    the threshold would reject the authors' code."""
    p = ks_pvalues(reference_statistics(method, preset, size, 3), reference_statistics(method, preset, size, 2))
    assert min(p.values()) > ALPHA, p


@pytest.mark.parametrize("method,preset,size", CASES)
def test_batch_outputs_follow_the_authors_code(method, preset, size):
    ref = reference_statistics(method, preset, size, 2)
    p = ks_pvalues(batch_statistics(method, preset, size), ref)
    assert min(p.values()) > ALPHA, p
    # The test has power: a wrong config, run by the same engine, is rejected.
    wrong = ks_pvalues(batch_statistics(method, preset, size, wrong_config(method, preset)), ref)
    assert min(wrong.values()) < ALPHA, wrong


@pytest.mark.parametrize("preset,size", [("imagenet", 64), ("cifar", 32)])
def test_pixmix_rounding_moves_the_distribution_less_than_seed_noise(preset, size):
    """The spec's deviation (uint8 after each round, where the authors keep float32) measured on the
    port itself: its float mode and its rounded mode, other seeds."""
    p = ks_pvalues(reference_statistics("pixmix", preset, size, 4, float_mixing=True),
                   reference_statistics("pixmix", preset, size, 2))
    assert min(p.values()) > ALPHA, p


# -------------------------------------------------------------- the ports follow the specs
def replay_op(x, name, severity, rng):
    """The spec's law of one AugMix/PixMix op, its level and sign drawn in the authors' order, run by
    the IPMix reference's PIL op table (autocontrast_plain: PIL's default cutoff 0)."""
    from PIL import Image, ImageOps
    if name in NO_LEVEL:
        img = Image.fromarray(x)
        return np.asarray(ImageOps.autocontrast(img) if name == "autocontrast_plain" else ImageOps.equalize(img))
    level = rng.uniform(0.1, severity)
    sign = (-1 if rng.uniform() > 0.5 else 1) if name in SIGNED else 1
    return image_op(x, name, level, sign)


@pytest.mark.parametrize("severity", [1.0, 3.0, 10.0])
def test_authors_ops_draw_in_their_order_and_follow_the_spec_laws(severity):
    ops = AugMixConfig(all_ops=True).op_names
    assert ops[:9] == ("autocontrast_plain", "equalize", "posterize", "rotate", "solarize", "shear_x",
                       "shear_y", "translate_x", "translate_y")
    assert ops[9:] == ("color", "contrast", "brightness", "sharpness")
    images = structured(3, 24, 20, seed=int(severity))
    for name in ops:
        for i, x in enumerate(images):
            a, b = np.random.default_rng([i, 7]), np.random.default_rng([i, 7])
            np.testing.assert_array_equal(authors_op(x, name, severity, a), replay_op(x, name, severity, b),
                                          err_msg=name)
            assert a.random() == b.random(), f"{name}: a different number of draws"


def test_authors_autocontrast_has_cutoff_zero_and_is_not_ipmix_autocontrast():
    from PIL import Image, ImageOps
    x = structured(1, 32, 32)[0]
    x[0, 0], x[0, 1] = 0, 255              # the extremes present once: cutoff 0 keeps them
    plain = authors_op(x, "autocontrast_plain", 3.0, np.random.default_rng(0))
    np.testing.assert_array_equal(plain, np.asarray(ImageOps.autocontrast(Image.fromarray(x), cutoff=0)))
    assert not np.array_equal(plain, image_op(x, "autocontrast", 1.0, 1))   # IPMix's: cutoff 9 %


def count_calls(monkeypatch, name):
    """Wraps ``reference.<name>`` (a function) so that each call is logged; returns the log."""
    calls, inner = [], getattr(reference, name)

    def wrapper(*args, **kw):
        calls.append(args)
        return inner(*args, **kw)
    monkeypatch.setattr(reference, name, wrapper)
    return calls


def test_augmix_reference_is_one_blend_of_the_image_and_its_chains():
    """width 1, depth 1, one op without draws: the view is (1 - m) x + m equalize(x), one m in [0, 1]."""
    x = photos(32, 32, count=6)
    cfg = AugMixConfig(width=1, depth=1, ops=("equalize",))
    ms = []
    for i, img in enumerate(x):
        eq = authors_op(img, "equalize", 1.0, None).astype(np.float64)
        out = augmix_reference(img, None, cfg, i).astype(np.float64)
        d = eq - img
        m = (d * (out - img)).sum() / (d * d).sum()
        np.testing.assert_allclose(out, img + m * d, atol=1e-3)
        ms.append(m)
    assert all(0 <= m <= 1 for m in ms) and len(set(np.round(ms, 6))) == len(ms)


@pytest.mark.parametrize("depth", [None, 2])
def test_augmix_reference_chain_depths(monkeypatch, depth):
    calls = count_calls(monkeypatch, "authors_op")
    cfg = AugMixConfig(width=3, depth=depth)
    x = photos(16, 16, count=1)[0]
    rng = np.random.default_rng(5)
    per_view = []
    for _ in range(600):
        before = len(calls)
        augmix_reference(x, None, cfg, rng)
        per_view.append(len(calls) - before)
    if depth is not None:
        assert set(per_view) == {3 * depth}
        return
    # The sum of three independent uniform depths in 1..3.
    one = np.ones(3) / 3
    law = np.convolve(np.convolve(one, one), one)          # P(total = 3..9)
    counts = np.bincount(np.asarray(per_view) - 3, minlength=7)
    assert stats.chisquare(counts, law * len(per_view)).pvalue > ALPHA, counts


def test_pixmix_reference_without_rounds_is_the_image_or_one_op():
    """k = 0: the view is x (prob. 1/2) or A(x), one op of the list, drawn as ``augment_input``."""
    x = photos(32, 32, count=1)[0]
    z = np.full_like(x, 200)
    cfg = PixMixConfig.cifar(k=0)
    starts = 0
    for seed in range(40):
        replay = np.random.default_rng(seed)
        want = x
        if replay.random() < 0.5:
            starts += 1
            names = cfg.op_names
            want = authors_op(x, names[replay.integers(len(names))], cfg.severity, replay)
        for float_mixing in (False, True):
            out = pixmix_reference(x, z, cfg, np.random.default_rng(seed), float_mixing=float_mixing)
            np.testing.assert_array_equal(out, want.astype(np.float32))
    assert 8 < starts < 32


def test_pixmix_reference_rounds_sources_and_clipping(monkeypatch):
    """0..k rounds (uniform), each mixing with A(x) or z (prob. 1/2) by add or multiply (prob. 1/2),
    the start A(x) with prob. 1/2; every round's result clipped and back on uint8 levels."""
    ops = count_calls(monkeypatch, "authors_op")
    mixes = []
    monkeypatch.setattr(reference, "PIXMIX_MIXINGS", tuple(
        (lambda f: lambda a, b, rng, beta: mixes.append(f.__name__) or f(a, b, rng, beta))(f)
        for f in reference.PIXMIX_MIXINGS))
    x, z = pair(1, 24, 24)
    cfg = PixMixConfig.cifar(k=4)
    rng = np.random.default_rng(11)
    rounds, op_calls = [], []
    for _ in range(800):
        m0, o0 = len(mixes), len(ops)
        out = pixmix_reference(x[0], z[0], cfg, rng)
        rounds.append(len(mixes) - m0)
        op_calls.append(len(ops) - o0)
        assert out.min() >= 0 and out.max() <= 255 and np.array_equal(out, np.round(out))
    rounds, op_calls = np.asarray(rounds), np.asarray(op_calls)
    assert stats.chisquare(np.bincount(rounds, minlength=5)).pvalue > ALPHA
    assert np.all(op_calls <= rounds + 1)
    # Each view calls A once for its start (prob. 1/2) and once per round whose source is A(x) (1/2).
    expected = 0.5 + 0.5 * rounds.mean()
    assert abs(op_calls.mean() - expected) < 4 * np.sqrt(op_calls.var() / len(op_calls))
    kinds = np.unique(mixes, return_counts=True)
    assert list(kinds[0]) == ["_pixmix_add", "_pixmix_multiply"]
    assert stats.binomtest(int(kinds[1][0]), len(mixes)).pvalue > ALPHA


def test_pixmix_float_mode_draws_the_same_and_stays_close():
    """``float_mixing`` changes only the rounding between rounds: the same draws, nearly the same view."""
    x, z = pair(20, 32, 32)
    cfg = PixMixConfig.cifar()
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    diffs = []
    for i in range(len(x)):
        rounded = pixmix_reference(x[i], z[i], cfg, a)
        exact = pixmix_reference(x[i], z[i], cfg, b, float_mixing=True)
        diffs.append(np.abs(rounded - exact).mean())
    assert a.random() == b.random()
    assert np.median(diffs) < 1.0, diffs


def print_pvalues(reseeds=0):
    """The p-values behind docs/performance.md's table (and with ``reseeds``, the floor over that many
    other seeds): ``python tests/core/test_family_distribution.py [RESEEDS]``."""
    for method, preset, size in CASES:
        ref = reference_statistics(method, preset, size, 2)
        rows = {"batch vs port": ks_pvalues(batch_statistics(method, preset, size), ref),
                "port vs port (floor)": ks_pvalues(reference_statistics(method, preset, size, 3), ref),
                "wrong config vs port": ks_pvalues(
                    batch_statistics(method, preset, size, wrong_config(method, preset)), ref)}
        if method == "pixmix":
            rows["float port vs port"] = ks_pvalues(
                reference_statistics(method, preset, size, 4, float_mixing=True), ref)
        for what, p in rows.items():
            print(f"| {method} | {preset} {size} px | {what} | "
                  + " | ".join(f"{v:.2g}" for v in p.values()) + f" | {min(p.values()):.2g} |")
        if reseeds:
            x, z = pair(N_VIEWS, size, size)
            cfg = config(method, preset)
            floor = [min(ks_pvalues(view_statistics(reference_views(x, z, cfg, 100 + s), x), ref).values())
                     for s in range(reseeds)]
            ours = [min(ks_pvalues(view_statistics(augment_batch(x, None if method == "augmix" else z, cfg,
                                                                 200 + s), x), ref).values())
                    for s in range(reseeds)]
            print(f"| {method} | {preset} {size} px | {min(floor):.2g} / {np.median(floor):.2g} | "
                  f"{min(ours):.2g} / {np.median(ours):.2g} |")


if __name__ == "__main__":
    print_pvalues(int(sys.argv[1]) if len(sys.argv) > 1 else 0)

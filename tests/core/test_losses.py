"""jsd_loss against a direct float64 NumPy formula, and its properties."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dali_ipmix.losses import jsd_loss


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _direct(lc, l1, l2, y, weight):
    """The spec's formula written out in float64: CE + weight * mean_i sum_c p_i log(p_i / p_mix), batch mean."""
    ps = [_softmax(np.asarray(t, np.float64)) for t in (lc, l1, l2)]
    ce = -np.mean(np.log(ps[0][np.arange(len(y)), y]))
    mix = np.clip((ps[0] + ps[1] + ps[2]) / 3, 1e-7, 1)
    kl = [np.sum(np.where(p > 0, p * (np.log(np.where(p > 0, p, 1)) - np.log(mix)), 0.0)) / len(y) for p in ps]
    return ce + weight * np.mean(kl)


def _logits(n=8, c=10, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, c, generator=g) * scale for _ in range(3)], torch.randint(0, c, (n,), generator=g)


@pytest.mark.parametrize("seed,scale,weight", [(0, 1.0, 12), (1, 5.0, 12), (2, 30.0, 12), (3, 2.0, 0.5)])
def test_matches_direct_formula(seed, scale, weight):
    (lc, l1, l2), y = _logits(seed=seed, scale=scale)
    got = jsd_loss(lc, l1, l2, y, weight=weight)
    want = _direct(lc.numpy(), l1.numpy(), l2.numpy(), y.numpy(), weight)
    assert got.dtype == torch.float32 and got.dim() == 0
    assert got.item() == pytest.approx(want, rel=1e-5, abs=1e-5)


def test_default_weight_is_12():
    (lc, l1, l2), y = _logits(seed=4)
    assert jsd_loss(lc, l1, l2, y).item() == pytest.approx(jsd_loss(lc, l1, l2, y, weight=12).item())


def test_identical_views_reduce_to_cross_entropy():
    (lc, _, _), y = _logits(seed=5)
    assert jsd_loss(lc, lc, lc.clone(), y).item() == pytest.approx(F.cross_entropy(lc, y).item(), abs=1e-6)


def test_weight_zero_is_cross_entropy_and_consistency_is_nonnegative_and_bounded():
    (lc, l1, l2), y = _logits(seed=6, scale=20)
    ce = F.cross_entropy(lc, y).item()
    assert jsd_loss(lc, l1, l2, y, weight=0).item() == pytest.approx(ce)
    term = (jsd_loss(lc, l1, l2, y, weight=1).item() - ce)
    # The Jensen-Shannon divergence of 3 distributions lies in [0, log 3].
    assert 0 <= term <= np.log(3) + 1e-6


def test_symmetric_in_the_two_views_and_shift_invariant():
    (lc, l1, l2), y = _logits(seed=7)
    a = jsd_loss(lc, l1, l2, y).item()
    assert jsd_loss(lc, l2, l1, y).item() == pytest.approx(a, rel=1e-6)
    # softmax ignores a per-row constant shift.
    shift = torch.arange(8.0)[:, None]
    assert jsd_loss(lc + shift, l1 - shift, l2 + 2 * shift, y).item() == pytest.approx(a, rel=1e-5)


def test_gradients_reach_all_three_views_and_are_finite_for_extreme_logits():
    for scale, nonzero in ((3.0, True), (1e4, False)):  # 1e4: saturated softmax, p has exact zeros
        (lc, l1, l2), y = _logits(seed=8, scale=scale)
        ts = [t.clone().requires_grad_(True) for t in (lc, l1, l2)]
        loss = jsd_loss(*ts, y)
        loss.backward()
        assert torch.isfinite(loss)
        for t in ts:
            assert torch.isfinite(t.grad).all()
            assert (t.grad.abs().sum() > 0) or not nonzero


def test_half_precision_logits_are_computed_in_float32():
    (lc, l1, l2), y = _logits(seed=9)
    half = jsd_loss(lc.half(), l1.half(), l2.half(), y)
    assert half.dtype == torch.float32
    ref = jsd_loss(lc.half().float(), l1.half().float(), l2.half().float(), y)
    assert half.item() == pytest.approx(ref.item(), rel=1e-6)


def test_bad_shapes_are_rejected_with_a_message():
    (lc, l1, _), y = _logits()
    with pytest.raises(ValueError, match="same shape"):
        jsd_loss(lc, l1, l1[:4], y)
    with pytest.raises(ValueError, match="targets"):
        jsd_loss(lc, l1, l1, y[:3])


def test_jsd_loss_module_takes_the_3n_logits_of_a_jsd_batch_and_falls_back_to_cross_entropy():
    from dali_ipmix.losses import JSDLoss
    (lc, l1, l2), y = _logits(n=6, c=5, seed=4)
    criterion = JSDLoss(weight=12.0)
    assert isinstance(criterion, torch.nn.Module) and "weight=12" in repr(criterion)
    cat = torch.cat([lc, l1, l2]).requires_grad_()
    loss = criterion(cat, y)
    torch.testing.assert_close(loss, jsd_loss(lc, l1, l2, y))
    assert loss.item() > F.cross_entropy(lc, y).item()       # the consistency term counts
    loss.backward()
    assert cat.grad is not None and torch.isfinite(cat.grad).all() and cat.grad[6:].abs().sum() > 0
    torch.testing.assert_close(criterion((lc, l1, l2), y), jsd_loss(lc, l1, l2, y))
    torch.testing.assert_close(criterion(lc, y), F.cross_entropy(lc, y))   # a plain (N, C) batch
    torch.testing.assert_close(JSDLoss(weight=0.5)(cat, y), jsd_loss(lc, l1, l2, y, weight=0.5))
    with pytest.raises(ValueError, match=r"logits \(12, 5\) for targets \(6,\): expected 18 rows"):
        criterion(cat[:12], y)
    with pytest.raises(ValueError, match="3 tensors"):
        criterion((lc, l1), y)
    with pytest.raises(ValueError, match=r"got logits \(18,\)"):
        criterion(cat[:, 0], y)

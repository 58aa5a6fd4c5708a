"""Keyed draws: row n depends on key n only, the laws hold, and bad calls are refused."""

import numpy as np
import pytest
from scipy import stats

from dali_ipmix import IPMixConfig, draw_plan
from dali_ipmix.keys import (STREAM_CROP, STREAM_FLIP, STREAM_IPMIX, STREAM_MIXING_CROP, KeyedGenerator,
                             SampleDraws, sample_keys, subkeys, uniforms)
from dali_ipmix.presets import RandomResizedCrop


def test_keys_depend_on_root_epoch_and_position_only():
    pos = np.arange(1000)
    keys = sample_keys(3, 1, pos)
    assert keys.dtype == np.uint64 and len(np.unique(keys)) == 1000
    assert np.array_equal(sample_keys(3, 1, pos[::-1]), keys[::-1])   # order of the call is irrelevant
    for other in (sample_keys(4, 1, pos), sample_keys(3, 2, pos)):
        assert not np.isin(other, keys).any()


def test_uniforms_are_uniform_and_streams_independent():
    keys = sample_keys(0, 0, np.arange(20000))
    a, b = uniforms(keys, STREAM_FLIP, 3), uniforms(keys, STREAM_CROP, 3)
    assert a.shape == (20000, 3) and ((a >= 0) & (a < 1)).all()
    for col in (a[:, 0], a[:, 2], b[:, 1]):
        assert stats.kstest(col, "uniform").pvalue > 1e-4
    assert abs(np.corrcoef(a[:, 0], b[:, 0])[0, 1]) < 0.03   # two consumers of one key
    assert abs(np.corrcoef(a[:, 0], a[:, 1])[0, 1]) < 0.03   # two draws of one consumer
    assert np.array_equal(uniforms(keys[5:9], STREAM_FLIP, 3), a[5:9])


def test_signed_keys_keep_their_bits():
    """DALI hands keys around as int64: -1 is the key 2**64 - 1."""
    assert np.array_equal(subkeys(np.array([-1, 5], np.int64), 2),
                          subkeys(np.array([2 ** 64 - 1, 5], np.uint64), 2))
    with pytest.raises(TypeError, match="keys must be integers"):
        subkeys(np.array([1.5]), 2)


def test_keyed_plans_are_per_sample():
    """draw_plan with a KeyedGenerator: sample n's plan is the same in any batch, at any place."""
    config = IPMixConfig.imagenet()
    keys = sample_keys(9, 0, np.arange(64))
    whole = draw_plan(64, 224, 224, config, KeyedGenerator(keys))
    pick = [40, 3, 17]
    part = draw_plan(3, 224, 224, config, KeyedGenerator(keys[pick]))
    for name in ("weights", "m", "kind", "n_ops", "op", "level", "size", "top", "rect_w", "mask_key", "wa"):
        assert np.array_equal(getattr(part, name), getattr(whole, name)[pick]), name
    again = KeyedGenerator(keys)
    first, second = draw_plan(64, 224, 224, config, again), draw_plan(64, 224, 224, config, again)
    assert np.array_equal(first.level, whole.level) and not np.array_equal(second.level, first.level)


def test_keyed_generator_refuses_what_it_cannot_draw():
    gen = KeyedGenerator(np.arange(4, dtype=np.uint64))
    with pytest.raises(ValueError, match="must start with the number of keys"):
        gen.random((3, 2))
    with pytest.raises(NotImplementedError, match="Beta"):
        gen.beta(2.0, 3.0, 4)
    with pytest.raises(NotImplementedError, match="all-ones"):
        gen.dirichlet([1.0, 2.0], 4)
    u = KeyedGenerator(sample_keys(1, 0, np.arange(20000)))
    assert stats.kstest(u.beta(4.0, 1.0, 20000), stats.beta(4, 1).cdf).pvalue > 1e-4
    assert stats.kstest(u.beta(1.0, 3.0, 20000), stats.beta(1, 3).cdf).pvalue > 1e-4
    w = u.dirichlet(np.ones(3), 20000)
    assert stats.kstest(w[:, 1], stats.beta(1, 2).cdf).pvalue > 1e-4
    assert np.allclose(w.sum(1), 1)
    assert set(np.unique(u.integers(2, 5, 20000))) == {2, 3, 4}


def test_sample_draws_are_the_keyed_uniforms_typed_for_dali():
    crop = RandomResizedCrop()
    draws = SampleDraws(5, crop.draws, lambda u: crop.law(u, 224))
    out = dict(zip(SampleDraws.OUTPUTS, draws(3, np.arange(10, 20))))
    assert {k: (v.dtype, v.shape) for k, v in out.items()} == dict(
        crop=(np.float64, (10, 22)), flip=(np.int32, (10,)), mixing_x=(np.float32, (10,)),
        mixing_y=(np.float32, (10,)), ipmix_keys=(np.int64, (10,)))
    keys = sample_keys(5, 3, np.arange(10, 20))
    assert np.array_equal(out["flip"], uniforms(keys, STREAM_FLIP, 1)[:, 0] < 0.5)
    assert np.array_equal(out["mixing_y"], uniforms(keys, STREAM_MIXING_CROP, 2)[:, 1].astype(np.float32))
    assert np.array_equal(out["crop"], crop.law(uniforms(keys, STREAM_CROP, 22), 224))
    assert np.array_equal(out["ipmix_keys"].view(np.uint64), subkeys(keys, STREAM_IPMIX))
    later = draws(3, np.arange(15, 20))   # the same positions in another batch: the same draws
    assert all(np.array_equal(a[5:], b) for a, b in zip(draws(3, np.arange(10, 20)), later))
    plain = SampleDraws(5, crop.draws, lambda u: crop.law(u, 224), mixing=False)   # no mixing crop
    assert tuple(plain.outputs) == ("crop", "flip", "ipmix_keys")
    assert all(np.array_equal(a, out[k]) for k, a in zip(plain.outputs, plain(3, np.arange(10, 20))))

"""The array executor issues the same number of array operations whatever the batch size.

A counting stand-in for the array module (NumPy underneath) records every ``xp.<function>`` call,
with the geometric ops routed through the whole-batch warp that the array executor uses on CuPy.
Each such call is one or a few kernel launches on CuPy, so equal counts at N=1024 and N=4096 (every
op group present in both) mean that path has no per-sample Python loop. The compiled core's fixed
launch sequence (2 t + 1 per view) is checked in test_compiled_core.py.
"""

import numpy as np

import dali_ipmix.execute as execute
from dali_ipmix import IPMixConfig
from dali_ipmix.plan import draw_plan


class CountingXp:
    def __init__(self):
        self.calls = 0

    def __getattr__(self, name):
        attr = getattr(np, name)
        if not callable(attr) or isinstance(attr, type):
            return attr

        def counted(*args, **kwargs):
            self.calls += 1
            return attr(*args, **kwargs)
        return counted


def count_calls(monkeypatch, n, cfg, size):
    xp = CountingXp()
    monkeypatch.setattr(execute, "array_module", lambda a: xp)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    z = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    execute.execute_arrays(draw_plan(n, size, size, cfg, 1), x, z, warp=execute.warp_affine_batched)
    return xp.calls


def test_array_calls_do_not_grow_with_batch_size(monkeypatch):
    for cfg in (IPMixConfig.imagenet(all_ops=True), IPMixConfig.cifar()):
        small = count_calls(monkeypatch, 1024, cfg, 16)
        large = count_calls(monkeypatch, 4096, cfg, 16)
        assert small == large, (small, large)
        assert small < 3000


def test_counter_sees_per_sample_work(monkeypatch):
    """The check has teeth: a per-sample loop is counted."""
    xp = CountingXp()
    for _ in range(5):
        xp.asarray([1])
    assert xp.calls == 5

"""The batched executor issues the same number of array operations whatever the batch size.

A counting stand-in for the array module (NumPy underneath) records every ``xp.<function>`` call,
with the geometric ops routed through the whole-batch warp that the CuPy backend uses. Each such
call is one or a few kernel launches on CuPy, so equal counts at N=1024 and N=4096 (every op group present in both) mean the GPU path
has no per-sample Python loop. The same is checked for the path CuPy takes by default, with the fused
kernels: there the kernels run through their CPU harness and each launch counts as one call.
"""

import numpy as np
import pytest

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


def count_calls(monkeypatch, n, cfg, size, kernels=None):
    xp = CountingXp()
    monkeypatch.setattr(execute, "array_module", lambda a: xp)
    monkeypatch.setattr(execute, "warp_affine", execute.warp_affine_batched)
    if kernels is not None:   # the kernel path: execute.warp_affine etc. dispatch to the kernels
        monkeypatch.setattr(execute, "warp_affine", WARP_DISPATCH)
        monkeypatch.setattr(execute, "kernel_backend", lambda module: kernels(xp))
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    z = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    execute.execute_plan(draw_plan(n, size, size, cfg, 1), x, z)
    return xp.calls


def test_array_calls_do_not_grow_with_batch_size(monkeypatch):
    for cfg in (IPMixConfig.imagenet(all_ops=True), IPMixConfig.cifar()):
        small = count_calls(monkeypatch, 1024, cfg, 16)
        large = count_calls(monkeypatch, 4096, cfg, 16)
        assert small == large, (small, large)
        assert small < 3000


WARP_DISPATCH = execute.warp_affine


def counting_kernels(xp):
    """The CPU harness of the kernels, each launch counted as one call of ``xp``."""
    from dali_ipmix._kernel_harness import HostKernels, compiler
    if compiler() is None:
        pytest.skip("no C++ compiler for the kernel harness")

    class Counting(HostKernels):
        def _launch(self, name, total, *args):
            xp.calls += 1
            super()._launch(name, total, *args)
    return Counting()


def test_kernel_path_calls_do_not_grow_with_batch_size(monkeypatch):
    for cfg in (IPMixConfig.imagenet(all_ops=True), IPMixConfig.cifar()):
        small = count_calls(monkeypatch, 1024, cfg, 16, counting_kernels)
        large = count_calls(monkeypatch, 4096, cfg, 16, counting_kernels)
        generic = count_calls(monkeypatch, 1024, cfg, 16)
        assert small == large, (small, large)
        assert small < generic, (small, generic)   # the kernels replace chains of calls


def test_counter_sees_per_sample_work(monkeypatch):
    """The check has teeth: a per-sample loop is counted."""
    xp = CountingXp()
    for _ in range(5):
        xp.asarray([1])
    assert xp.calls == 5

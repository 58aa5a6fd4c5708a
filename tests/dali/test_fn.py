"""fn.ipmix: the DALI operator wrapper (the batch function alone, and inside a CPU pipeline)."""

import numpy as np
import pytest
from nvidia.dali import fn as dali_fn, pipeline_def

from dali_ipmix import IPMixConfig
from dali_ipmix.fn import ipmix, make_ipmix_function

from image_sets import photos

CFG = IPMixConfig.cifar()


def batch(n=4, hw=(16, 16), seed=0):
    x = photos(*hw, count=n)
    z = np.random.default_rng(seed).integers(0, 256, (n, *hw, 3), dtype=np.uint8)
    return list(x), list(z)


def test_batch_function_jsd_returns_clean_and_two_views():
    x, z = batch()
    clean, v1, v2 = make_ipmix_function(CFG, seed=0)(x, z)
    assert len(clean) == len(v1) == len(v2) == 4
    for c, a, b, img in zip(clean, v1, v2, x):
        assert c.shape == a.shape == b.shape == (16, 16, 3)
        assert c.dtype == a.dtype == b.dtype == np.float32
        np.testing.assert_array_equal(c, img.astype(np.float32))
        for v in (a, b):
            assert np.isfinite(v).all() and v.min() >= 0 and v.max() <= 255


def test_batch_function_without_jsd_returns_one_list():
    x, z = batch()
    out = make_ipmix_function(CFG.replace(jsd=False), seed=0)(x, z)
    assert isinstance(out, list) and len(out) == 4 and out[0].shape == (16, 16, 3)


def test_batch_function_is_seeded_and_keeps_its_state():
    x, z = batch()
    f, g = make_ipmix_function(CFG, seed=3), make_ipmix_function(CFG, seed=3)
    first_f, first_g = f(x, z), g(x, z)
    for a, b in zip(first_f[1] + first_f[2], first_g[1] + first_g[2]):
        np.testing.assert_array_equal(a, b)
    second_f = f(x, z)   # the generator advances: the next batch gets new draws
    assert any(not np.array_equal(a, b) for a, b in zip(first_f[1], second_f[1]))


@pytest.mark.needs_core
def test_batch_function_views_differ():
    x, z = batch(8)
    clean, v1, v2 = make_ipmix_function(CFG, seed=1)(x, z)
    assert any(not np.array_equal(a, b) for a, b in zip(v1, v2))
    assert any(not np.array_equal(a, c) for a, c in zip(v1, clean))


def test_batch_function_with_keys_draws_each_sample_from_its_key():
    """Keyed: a sample's views depend on its key (and the seed), not on its batch or place."""
    x, z = batch()
    f = make_ipmix_function(CFG, seed=2)
    keys = [np.array(k, np.int64) for k in (11, -3, 7, 2 ** 40)]
    _, a1, a2 = f(x, z, keys)
    _, b1, b2 = f(x[::-1], z[::-1], keys[::-1])   # another batch, reversed: the state is not used
    for i in range(4):
        np.testing.assert_array_equal(a1[i], b1[3 - i])
        np.testing.assert_array_equal(a2[i], b2[3 - i])
    _, c1, _ = make_ipmix_function(CFG, seed=3)(x, z, keys)   # the seed still matters
    assert any(not np.array_equal(u, v) for u, v in zip(a1, c1))
    with pytest.raises(ValueError, match="differ in size"):
        f(x, z, keys[:3])
    with pytest.raises(TypeError, match="keys must be a DataNode"):
        ipmix(None, None, keys=5, backend="python", device="cpu")


def test_batch_function_errors_name_the_problem():
    x, z = batch()
    f = make_ipmix_function(CFG, seed=0)
    with pytest.raises(ValueError, match="same .*shape"):
        f(x[:2] + [np.zeros((8, 16, 3), np.uint8)] + x[3:], z)
    with pytest.raises(ValueError, match="differ in size"):
        f(x, z[:3])
    with pytest.raises(ValueError, match="same shape"):
        f(x, [np.zeros((12, 12, 3), np.uint8)] * 4)
    assert f([], []) == ([], [], [])
    with pytest.raises(TypeError, match="IPMixConfig"):
        make_ipmix_function({"k": 3}, 0)


def run_op(images, mixing, config, seed=0, n_iter=1, **kw):
    """fn.ipmix inside a CPU pipeline fed by external_source; returns the outputs per iteration."""
    @pipeline_def(batch_size=len(images), num_threads=2, device_id=None)
    def pipe():
        x = dali_fn.external_source(source=lambda: images, layout="HWC", batch=True)
        z = dali_fn.external_source(source=lambda: mixing, layout="HWC", batch=True)
        out = ipmix(x, z, config=config, seed=seed, **kw)
        return out if isinstance(out, tuple) else (out,)
    p = pipe()
    p.build()
    return [[(o.layout(), [np.array(t) for t in o]) for o in p.run()] for _ in range(n_iter)]


def test_operator_in_a_cpu_pipeline_jsd():
    x, z = batch()
    (clean, v1, v2), = run_op(x, z, CFG)
    for layout, arrays in (clean, v1, v2):
        assert layout == "HWC"
        assert [a.shape for a in arrays] == [(16, 16, 3)] * 4
        assert all(a.dtype == np.float32 and np.isfinite(a).all() for a in arrays)
    np.testing.assert_array_equal(np.stack(clean[1]), np.stack(x).astype(np.float32))


def test_operator_without_jsd_has_one_output_and_is_reproducible():
    x, z = batch()
    a = run_op(x, z, CFG.replace(jsd=False), seed=9, n_iter=2)
    b = run_op(x, z, CFG.replace(jsd=False), seed=9, n_iter=2)
    assert len(a[0]) == 1
    for it_a, it_b in zip(a, b):
        np.testing.assert_array_equal(np.stack(it_a[0][1]), np.stack(it_b[0][1]))


def test_operator_reports_mismatched_mixing_size_by_name():
    x, _ = batch()
    z = [np.zeros((12, 12, 3), np.uint8)] * 4
    with pytest.raises(RuntimeError, match="same shape"):
        run_op(x, z, CFG)


def test_operator_rejects_bad_device():
    x, z = batch()
    with pytest.raises(ValueError, match="device"):
        run_op(x, z, CFG, device="tpu")


@pytest.mark.cupy
def test_operator_on_gpu_matches_shapes_and_range():
    pytest.importorskip("cupy")
    import torch
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    x, z = batch()

    @pipeline_def(batch_size=4, num_threads=2, device_id=0)
    def pipe():
        xi = dali_fn.external_source(source=lambda: x, layout="HWC", batch=True, device="gpu")
        zi = dali_fn.external_source(source=lambda: z, layout="HWC", batch=True)   # moved by ipmix
        return ipmix(xi, zi, config=CFG, seed=0)
    p = pipe()
    p.build()
    clean, v1, v2 = (o.as_cpu() for o in p.run())
    np.testing.assert_array_equal(np.stack([np.array(t) for t in clean]), np.stack(x).astype(np.float32))
    for out in (v1, v2):
        arr = np.stack([np.array(t) for t in out])
        assert arr.shape == (4, 16, 16, 3) and np.isfinite(arr).all() and 0 <= arr.min() <= arr.max() <= 255


def test_operator_device_checks_at_graph_definition():
    import importlib.util
    from nvidia.dali import Pipeline
    pipe = Pipeline(batch_size=2, num_threads=1, device_id=0)   # defined only, never built or run
    with pipe:
        x = dali_fn.external_source(name="x", device="gpu")
        z = dali_fn.external_source(name="z")
        with pytest.raises(ValueError, match="device='cpu' but an input is on the GPU"):
            ipmix(x, z, device="cpu")
        if importlib.util.find_spec("cupy") is None:
            with pytest.raises(ImportError, match="CuPy"):
                ipmix(x, z, backend="python")


@pytest.mark.cupy
def test_gpu_error_leaves_dali_stream_alive():
    """An exception in the GPU batch function reaches the caller as a pipeline error naming the cause,
    and DALI's stream survives it: the same process then runs a GPU pipeline normally."""
    pytest.importorskip("cupy")
    import gc
    import torch
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    x, z = batch()
    small = [a[:8] for a in z]   # mixing pictures of another size: ipmix raises inside the pipeline

    def gpu_pipe(mix):
        @pipeline_def(batch_size=4, num_threads=2, device_id=0)
        def pipe():
            xi = dali_fn.external_source(source=lambda: x, layout="HWC", batch=True, device="gpu")
            zi = dali_fn.external_source(source=lambda: mix, layout="HWC", batch=True, device="gpu")
            return ipmix(xi, zi, config=CFG, seed=0)
        p = pipe()
        p.build()
        return p

    bad = gpu_pipe(small)
    for _ in range(2):
        with pytest.raises(Exception, match="same shape"):
            bad.run()
    del bad
    gc.collect()
    good = gpu_pipe(z)
    for _ in range(3):
        clean, _, _ = (o.as_cpu() for o in good.run())
        np.testing.assert_array_equal(np.stack([np.array(t) for t in clean]), np.stack(x).astype(np.float32))


def test_stream_detached_only_for_dali_stream(monkeypatch):
    """The exception path clears the pointer of DALI's lent stream and of no other stream."""
    import sys
    import types
    from dali_ipmix import fn as ipmix_fn

    class Stream:
        def __init__(self, ptr):
            self.ptr = ptr
    current = Stream(1234)
    fake = types.SimpleNamespace(cuda=types.SimpleNamespace(get_current_stream=lambda: current))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    device_batch = [object()]
    monkeypatch.setattr(ipmix_fn, "_dali_stream_ptr", lambda: 999)
    ipmix_fn._detach_dali_stream(device_batch)
    assert current.ptr == 1234            # a caller's own stream: untouched
    monkeypatch.setattr(ipmix_fn, "_dali_stream_ptr", lambda: 1234)
    ipmix_fn._detach_dali_stream(device_batch)
    assert current.ptr == 0               # DALI's stream: detached
    ipmix_fn._detach_dali_stream([np.zeros(3)])   # CPU batches: nothing to do

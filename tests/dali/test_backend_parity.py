"""One plan drawer for every backend: the same ``(seed, keys)`` gives the same plans, bit for bit, and the
same views within one grey level, on ``fn.ipmix(..., backend="python")`` (NumPy on the CPU, CuPy on
the GPU) and ``backend="native"`` (the compiled core on DALI's CPU thread pool or its GPU kernels).

The native plans come from the operator's ``return_plan`` records; the python backend's are
``draw_plan(..., KeyedGenerator(keys.plan_keys(seed, keys)))``, what its batch function draws."""

import dataclasses

import numpy as np
import pytest
from nvidia.dali import fn as dali_fn
from nvidia.dali import pipeline_def

from dali_ipmix import AugMixConfig, IPMixConfig, PixMixConfig, draw_plan, native
from dali_ipmix.fn import ipmix
from dali_ipmix.keys import KeyedGenerator, plan_keys, sample_keys, subkeys, STREAM_IPMIX
from dali_ipmix.table import pack_plan
from dali_data import split_table
from image_sets import structured

pytestmark = pytest.mark.skipif(not native.available(),
                                reason="native plugin not built (run ./scripts/setup.sh)")

#: The presets' configs (JSD and not) and a few corners: all 15 ops, odd sizes, k = 1, t = 0,
#: beta and severity that float32 does not hold exactly.
CONFIGS = {
    "imagenet": (IPMixConfig.imagenet(), 72, 88),
    "imagenet-all-ops-no-jsd": (IPMixConfig.imagenet(all_ops=True, jsd=False), 64, 64),
    "cifar": (IPMixConfig.cifar(), 32, 32),
    "cifar-no-jsd": (IPMixConfig.cifar(jsd=False), 32, 32),
    "odd": (IPMixConfig.imagenet(k=5, t=4, beta=0.7, severity=3.3, all_ops=True), 37, 53),
    "k1-t0": (IPMixConfig.cifar(k=1, t=0, jsd=False), 20, 24),
    "augmix-imagenet": (AugMixConfig.imagenet(), 72, 88),
    "augmix-cifar-all-ops-depth2": (AugMixConfig.cifar(all_ops=True, depth=2, jsd=False), 32, 32),
    "pixmix-imagenet": (PixMixConfig.imagenet(), 72, 88),
    "pixmix-cifar-all-ops": (PixMixConfig.cifar(all_ops=True, jsd=False), 32, 32),
}


def worst_allowed(config):
    """The largest difference allowed between the backends: one grey level (float rounding, and
    PIL's warp on the python backend against the compiled one for rotate and shear). PixMix's later
    rounds (one chain, weights up to 2, no averaging) may carry and double it; AugMix's chains of up
    to three image ops may feed it to a threshold (solarize, posterize, equalize), which turns one
    grey level into a jump at a few values (:func:`assert_close` bounds how many)."""
    return {"pixmix": 4.0, "augmix": 255.0}.get(config.method, 1.0)


def assert_close(config, a, b, context):
    """Views of two backends: >= 99.9% of values within one grey level, the rest within
    :func:`worst_allowed`, and (AugMix) under 1e-4 of the values beyond one grey level."""
    within, worst = closeness(a, b)
    assert within >= 0.999, (context, within, worst)
    assert worst <= worst_allowed(config), (context, within, worst)
    if config.method == "augmix":
        assert 1 - within < 1e-4, (context, within, worst)
BATCH, SEED = 6, 1234


def batches(h, w, count=2):
    """``count`` batches of (images, mixing, keys): the ready pipelines' kind of keys, the second
    batch repeating a key of the first at another place."""
    out = []
    for b in range(count):
        positions = np.arange(b * BATCH, (b + 1) * BATCH) - b   # position BATCH - 1 comes back
        keys = subkeys(sample_keys(7, 0, positions), STREAM_IPMIX).view(np.int64)
        out.append((structured(BATCH, h, w, seed=b), structured(BATCH, h, w, seed=10 + b), keys))
    return out


def run_routes(config, feed, device="cpu", keyed=True, seed=SEED):
    """Per batch of ``feed``: ``{backend: [outputs]}`` for the python and the native backend in one
    pipeline on ``device`` (outputs stacked over the samples; native's plan records and tables after
    its images)."""
    @pipeline_def(batch_size=BATCH, num_threads=2, device_id=0 if device == "gpu" else None,
                  prefetch_queue_depth=1)
    def pipe():
        def part(i):
            return lambda info: feed[info.iteration % len(feed)][i]
        x, z, k = (dali_fn.external_source(source=part(i), batch=True, batch_info=True, layout=layout)
                   for i, layout in enumerate(("HWC", "HWC", None)))
        if device == "gpu":
            x, z = x.gpu(), z.gpu()
        key_arg = dict(keys=k) if keyed else {}
        py = ipmix(x, z, config=config, seed=seed, backend="python", device=device, **key_arg)
        nat = ipmix(x, z, config=config, seed=seed, backend="native", device=device, return_plan=True,
                    **key_arg)
        py = py if isinstance(py, tuple) else (py,)
        return py + nat
    p = pipe()
    p.build()
    n_py = 3 if config.jsd else 1
    out = []
    for _ in feed:
        got = [np.stack([np.array(t) for t in (o.as_cpu() if device == "gpu" else o)]) for o in p.run()]
        out.append(dict(python=got[:n_py], native=got[n_py:]))
    return out


def native_plans(native_outputs, config, h, w):
    """The native backend's plans, per view, from its ``return_plan`` outputs."""
    views = 2 if config.jsd else 1
    extra = native_outputs[len(native_outputs) - 2 * views:]
    return [(native.plan_from_records(extra[2 * v], config, h, w), extra[2 * v + 1]) for v in range(views)]


def assert_same_plan(a, b):
    for field in dataclasses.fields(a):
        x, y = getattr(a, field.name), getattr(b, field.name)
        if isinstance(x, np.ndarray):
            assert x.dtype.kind == y.dtype.kind and np.array_equal(x, y), field.name
        else:
            assert x == y, field.name


def closeness(a, b):
    """(fraction of values within one grey level, largest difference)."""
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return float((diff <= 1.0).mean()), float(diff.max())


@pytest.mark.parametrize("name", CONFIGS)
def test_python_and_native_draw_the_same_plans_and_views_for_the_same_keys(name):
    """Keyed (what the ready pipelines use): the native operator's plans are the python backend's plans
    bit for bit (records and table rows), and the views agree within one grey level on >= 99.9% of
    values."""
    config, h, w = CONFIGS[name]
    feed = batches(h, w)
    for (x, z, keys), got in zip(feed, run_routes(config, feed)):
        draws = KeyedGenerator(plan_keys(SEED, keys))
        py_views, nat_images = got["python"][1:] if config.jsd else got["python"], got["native"]
        if config.jsd:
            np.testing.assert_array_equal(nat_images[0], got["python"][0])   # the clean images
            nat_images = nat_images[1:]
        for v, (plan, table) in enumerate(native_plans(got["native"], config, h, w)):
            expect = draw_plan(BATCH, h, w, config, draws)   # call v + 1: view v
            assert_same_plan(plan, expect)
            steps, mixw = pack_plan(expect)
            np.testing.assert_array_equal(split_table(table, config)[0], steps)
            assert_close(config, py_views[v], nat_images[v], (name, v))


def test_a_repeated_key_gets_the_same_plans_in_another_batch():
    """The key at the end of batch 0 comes back at the start of batch 1: the same plans there."""
    config, h, w = CONFIGS["cifar"]
    feed = batches(h, w)
    first, second = run_routes(config, feed)
    a = native_plans(first["native"], config, h, w)
    b = native_plans(second["native"], config, h, w)
    for (pa, _), (pb, _) in zip(a, b):
        assert_same_plan(pa.sample(BATCH - 1), pb.sample(0))
        assert not np.array_equal(pa.level[0], pb.level[0])


@pytest.mark.parametrize("name", ["imagenet", "cifar-no-jsd", "augmix-imagenet", "pixmix-imagenet"])
def test_unkeyed_routes_agree_for_the_same_seed(name):
    """Without keys, both backends draw sample s of batch b from (seed, b, s): the same views too."""
    config, h, w = CONFIGS[name]
    feed = batches(h, w)
    for b, got in enumerate(run_routes(config, feed, keyed=False)):
        draws = KeyedGenerator(plan_keys(SEED, batch=b, size=BATCH))
        py_views = got["python"][1:] if config.jsd else got["python"]
        nat_images = got["native"][1:] if config.jsd else got["native"]
        for v, (plan, _) in enumerate(native_plans(got["native"], config, h, w)):
            assert_same_plan(plan, draw_plan(BATCH, h, w, config, draws))
            assert_close(config, py_views[v], nat_images[v], (name, b, v))


def _cuda():
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


@pytest.mark.cupy
@pytest.mark.skipif(not _cuda(), reason="needs CuPy and a CUDA GPU")
@pytest.mark.parametrize("name", ["imagenet", "imagenet-all-ops-no-jsd", "cifar", "odd", "augmix-imagenet",
                                  "pixmix-imagenet"])
def test_gpu_routes_give_the_cpu_views_for_the_same_keys(name):
    """On the GPU: the CuPy python backend and the native GPU operator draw the CPU plans and give the
    CPU native views within one grey level on >= 99.9% of values."""
    if not native.has_gpu_operator():
        pytest.skip("the plugin has no GPU operator")
    config, h, w = CONFIGS[name]
    feed = batches(h, w)
    for cpu, gpu in zip(run_routes(config, feed), run_routes(config, feed, device="gpu")):
        for (pc, tc), (pg, tg) in zip(native_plans(cpu["native"], config, h, w),
                                      native_plans(gpu["native"], config, h, w)):
            assert_same_plan(pc, pg)
            np.testing.assert_array_equal(tc, tg)
        n = 3 if config.jsd else 1
        for backend in ("python", "native"):
            for o in range(n):
                assert_close(config, gpu[backend][o], cpu["native"][o], (name, backend, o))


@pytest.mark.parametrize("backend", ["python", "native"])
def test_augmix_takes_no_mixing_input(backend):
    """AugMix reads no mixing picture: ``mixing=None`` (or any node, e.g. the images) on either backend."""
    config = AugMixConfig.cifar()
    x = structured(BATCH, 32, 32)

    @pipeline_def(batch_size=BATCH, num_threads=2, device_id=None, prefetch_queue_depth=1)
    def pipe():
        images = dali_fn.external_source(source=lambda: x, batch=True, layout="HWC")
        other = dali_fn.external_source(source=lambda: x[::-1], batch=True, layout="HWC")
        return (ipmix(images, config=config, seed=3, backend=backend)
                + ipmix(images, other, config=config, seed=3, backend=backend))
    p = pipe()
    p.build()
    out = [np.stack([np.array(t) for t in o]) for o in p.run()]
    for a, b in zip(out[:3], out[3:]):
        np.testing.assert_array_equal(a, b)
    assert np.abs(out[1] - out[0]).mean() > 1
    with pytest.raises(TypeError, match="mixing is None, but PixMixConfig"):
        ipmix(None, config=PixMixConfig(), backend=backend)

"""The native DALI operator (``fn.ipmix(..., backend="native")``) on the CPU: outputs, parity with the
NumPy executor on the plan it reports, its draws' distributions, reproducibility, and input errors.

Skipped when the plugin is not built (``scripts/setup.sh`` builds it; CI runs that first)."""

import os
import re
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from nvidia.dali import fn as dali_fn
from nvidia.dali import pipeline_def

from dali_ipmix import AugMixConfig, IPMixConfig, PixMixConfig, native
from dali_ipmix.execute import execute_plan
from dali_ipmix.fn import ipmix
from dali_ipmix.table import pack_plan
from dali_data import split_table
from image_sets import structured

pytestmark = pytest.mark.skipif(not native.available(),
                                reason="native plugin not built (run ./scripts/setup.sh)")


def _cuda():
    try:
        import torch
        return torch.cuda.is_available()
    except Exception:
        return False


def run(images, mixing, config, seed=0, n_iter=1, num_threads=2, layout="HWC", **kw):
    """fn.ipmix(backend="native") in a CPU pipeline fed by external_source; per iteration a list of
    outputs, each a list of per-sample NumPy arrays."""
    @pipeline_def(batch_size=len(images), num_threads=num_threads, device_id=None)
    def pipe():
        x = dali_fn.external_source(source=lambda: images, layout=layout, batch=True)
        z = dali_fn.external_source(source=lambda: mixing, layout=layout, batch=True)
        out = ipmix(x, z, config=config, seed=seed, backend="native", **kw)
        return out if isinstance(out, tuple) else (out,)
    p = pipe()
    p.build()
    return [[[np.array(t) for t in o] for o in p.run()] for _ in range(n_iter)]


CONFIGS = {
    "imagenet-all-ops": (IPMixConfig.imagenet(all_ops=True), 40, 48),
    "cifar": (IPMixConfig.cifar(), 32, 32),
    "t0": (IPMixConfig.imagenet(t=0), 20, 24),
    "k1-t5-two-ops": (IPMixConfig.imagenet(k=1, t=5, ops=("rotate", "autocontrast"), jsd=False), 17, 30),
    "augmix": (AugMixConfig.imagenet(all_ops=True), 40, 48),
    "pixmix": (PixMixConfig.cifar(), 32, 32),
    "pixmix-k0-no-jsd": (PixMixConfig(k=0, jsd=False), 17, 30),
}


def views_and_plans(outs, config, h, w, x):
    """``(plan, table rows, mixw, view)`` per view of one ``return_plan=True`` batch (lists of samples
    per output); checks the clean output of JSD mode on the way."""
    views = 2 if config.jsd else 1
    images, extra = outs[:len(outs) - 2 * views], outs[len(outs) - 2 * views:]
    if config.jsd:
        np.testing.assert_array_equal(np.stack(images[0]), np.stack(x).astype(np.float32))
        images = images[1:]
    for v in range(views):
        plan = native.plan_from_records(np.stack(extra[2 * v]), config, h, w)
        steps, mixw = split_table(np.stack(extra[2 * v + 1]), config)
        yield plan, steps, mixw, np.stack(images[v])


@pytest.mark.parametrize("name", CONFIGS)
def test_views_equal_numpy_executor_on_the_returned_plan(name):
    config, h, w = CONFIGS[name]
    x, z = structured(6, h, w), structured(6, h, w, seed=1)
    (outs,) = run(x, z, config, seed=11, return_plan=True)
    for plan, steps, mixw, got in views_and_plans(outs, config, h, w, x):
        ref_steps, ref_mixw = pack_plan(plan)   # the operator ran exactly pack_plan's rows
        np.testing.assert_array_equal(steps, ref_steps)
        np.testing.assert_array_equal(mixw.view(np.uint32), ref_mixw.view(np.uint32))
        ref = execute_plan(plan, np.stack(x), np.stack(z))
        assert got.dtype == np.float32 and got.shape == (6, h, w, 3)
        diff = np.abs(got - ref)
        if config.method == "ipmix":
            assert diff.max() <= 1.0, diff.max()
        else:   # PIL's warp (NumPy executor) vs the compiled one, carried by later ops or rounds
            assert (diff <= 1).mean() >= 0.999 and (diff > 1).mean() < 1e-4, diff.max()


def test_augmix_and_pixmix_draws_follow_their_distributions():
    """AugMix and PixMix plans the operator reports (both views of 1500 samples)."""
    from plan_checks import check_augmix_plan, check_pixmix_plan
    x = structured(1, 24, 24) * 1500
    for config, check in ((AugMixConfig.cifar(), lambda p: check_augmix_plan(p, severity=3.0)),
                          (PixMixConfig.imagenet(), lambda p: check_pixmix_plan(p))):
        (outs,) = run(x, x, config, seed=2024, return_plan=True, num_threads=2)
        records = np.concatenate([np.stack(outs[3]), np.stack(outs[5])])
        check(native.plan_from_records(records, config, 24, 24))


def test_samples_of_different_sizes_in_one_batch():
    config = IPMixConfig.imagenet()
    sizes = [(9, 31), (40, 12), (2, 2), (64, 64)]
    x = [structured(1, h, w, seed=i)[0] for i, (h, w) in enumerate(sizes)]
    z = [structured(1, h, w, seed=9 + i)[0] for i, (h, w) in enumerate(sizes)]
    (outs,) = run(x, z, config, seed=5, return_plan=True)
    for i, (h, w) in enumerate(sizes):
        for v in range(2):
            plan = native.plan_from_records(outs[3 + 2 * v][i][None], config, h, w)
            assert plan.size.max() <= min(h, w)
            ref = execute_plan(plan, x[i][None], z[i][None])[0]
            assert np.abs(outs[1 + v][i] - ref).max() <= 1.0


def test_same_seed_same_result_whatever_the_thread_count_and_batches_differ():
    config = IPMixConfig.cifar()
    x, z = structured(5, 32, 32), structured(5, 32, 32, seed=3)
    a = run(x, z, config, seed=7, n_iter=2, num_threads=1)
    b = run(x, z, config, seed=7, n_iter=2, num_threads=3)
    c = run(x, z, config, seed=8, n_iter=1)
    for it in range(2):
        for o in range(3):
            np.testing.assert_array_equal(np.stack(a[it][o]), np.stack(b[it][o]))
    assert not np.array_equal(np.stack(a[0][1]), np.stack(a[1][1]))      # batch counter in the key
    assert not np.array_equal(np.stack(a[0][1]), np.stack(a[0][2]))      # views independent
    assert not np.array_equal(np.stack(a[0][1]), np.stack(c[0][1]))      # seed in the key


def test_draws_follow_the_plan_distributions():
    """The checks of tests/core/test_plan.py on plans the operator reports (both views of 1500 samples)."""
    from plan_checks import check_plan_distribution
    config = IPMixConfig.imagenet(all_ops=True)
    h = w = 96
    x = structured(1, h, w) * 750
    (outs,) = run(x, x, config, seed=2024, return_plan=True, num_threads=2)
    records = np.concatenate([np.stack(outs[3]), np.stack(outs[5])])
    (outs,) = run(x, x, config, seed=2025, return_plan=True, num_threads=2)
    records = np.concatenate([records, np.stack(outs[3]), np.stack(outs[5])])
    plan = native.plan_from_records(records, config, h, w)
    check_plan_distribution(plan, sizes=(4, 8, 16, 32, 64, 96))


def test_fn_defaults_to_native_when_built(monkeypatch):
    monkeypatch.delenv("DALI_IPMIX_BACKEND", raising=False)
    assert native.default_backend() == "native"
    monkeypatch.setenv("DALI_IPMIX_BACKEND", "python")
    assert native.default_backend() == "python"


def test_gpu_default_needs_the_gpu_operator(monkeypatch):
    """On the GPU the default is native only when the plugin has its GPU operator (built where CMake
    found nvcc); asked for explicitly without it, the error names the rebuild and the python backend."""
    monkeypatch.delenv("DALI_IPMIX_BACKEND", raising=False)
    monkeypatch.setattr(native, "has_gpu_operator", lambda: False)
    assert native.default_backend("gpu") == "python"
    assert native.default_backend("cpu") == "native"
    with pytest.raises(native.NotBuiltError, match="built without it .*CUDA .*nvcc.*backend='python'"):
        native.require_gpu_operator()
    monkeypatch.setattr(native, "has_gpu_operator", lambda: True)
    assert native.default_backend("gpu") == "native"


def test_not_built_gives_the_build_command(monkeypatch):
    monkeypatch.setattr(native, "_loaded", None)
    monkeypatch.setattr(native, "library_path", lambda: None)
    with pytest.raises(native.NotBuiltError) as err:
        native.load()
    for fix in ("--no-binary dali-ipmix dali-ipmix", "scripts/setup.sh", "DALI_IPMIX_NATIVE_LIB",
                "backend='python'"):
        assert fix in str(err.value)


def _nvcc_major():
    nvcc = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if os.path.exists("/usr/local/cuda/bin/nvcc") else None)
    if nvcc is None:
        return None
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    return re.search(r"release (\d+)\.", out).group(1)


def test_gpu_operator_is_built_exactly_when_nvcc_has_dalis_cuda_major():
    """One CUDA line: CMake compiles the GPU operator only with a toolkit of DALI's CUDA major, and the
    build stamp says whether it did."""
    import nvidia.dali
    from nvidia.dali import backend
    native.load()
    stamp = native.build_stamp()
    dali_major = str(nvidia.dali.__cuda_version__)[:2]
    assert stamp["dali"] == nvidia.dali.__version__ and stamp["cuda"] == dali_major
    assert stamp["gpu"] == (dali_major if _nvcc_major() == dali_major else "0")
    assert "IpmixNative" in backend.RegisteredCPUOps()
    assert ("IpmixNative" in backend.RegisteredGPUOps()) == (stamp["gpu"] != "0")


def _doctored_copy(tmp_path, release=b"9.9.9"):
    """A copy of the plugin whose stamp names another DALI release (same length, so the file stays valid)."""
    data = open(native.library_path(), "rb").read()
    stamp = native.STAMP_PREFIX + b"dali=" + native.build_stamp()["dali"].encode()
    assert data.count(stamp) == 1 and len(release) == len(native.build_stamp()["dali"])
    path = tmp_path / native.LIBRARY
    path.write_bytes(data.replace(stamp, native.STAMP_PREFIX + b"dali=" + release))
    return path


def test_a_plugin_built_for_another_dali_is_refused_with_the_rebuild_command(tmp_path):
    import nvidia.dali
    path = _doctored_copy(tmp_path)
    assert native.build_stamp(str(path))["dali"] == "9.9.9"
    with pytest.raises(native.IncompatibleBuildError) as err:
        native.check_build(str(path))
    message = str(err.value)
    assert f"built for DALI 9.9.9" in message and f"runs DALI {nvidia.dali.__version__}" in message
    assert "pip install --force-reinstall --no-binary dali-ipmix dali-ipmix" in message
    assert "scripts/setup.sh" in message and "backend='python'" in message


def test_doctored_plugin_in_a_fresh_process_is_refused_at_load_and_the_default_falls_back(tmp_path):
    """Through DALI_IPMIX_NATIVE_LIB in a new process (the real plugin is not loaded there):
    ``load()`` refuses the library before DALI sees it, ``backend="native"`` raises the same error,
    and the default backend falls back to ``python`` with one warning that says why."""
    path = _doctored_copy(tmp_path)
    code = textwrap.dedent("""
        import warnings
        from dali_ipmix import native
        try:
            native.load()
        except native.IncompatibleBuildError as err:
            print("REFUSED", err)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            print("DEFAULT", native.default_backend(), native.default_backend())
        print("WARNINGS", len(caught), caught[0].message if caught else "")
        from nvidia.dali import backend
        print("LOADED", "IpmixNative" in backend.RegisteredCPUOps())
    """)
    env = {**os.environ, "DALI_IPMIX_NATIVE_LIB": str(path)}
    env.pop("DALI_IPMIX_BACKEND", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "REFUSED " + str(path) + " was built for DALI 9.9.9" in out.stdout
    assert "DEFAULT python python" in out.stdout
    assert "WARNINGS 1 dali-ipmix runs IPMix on the slower python_function backend" in out.stdout
    assert "LOADED False" in out.stdout


def test_the_lookup_order_and_a_missing_env_library(monkeypatch, tmp_path):
    copy = _doctored_copy(tmp_path, release=native.build_stamp()["dali"].encode())
    monkeypatch.setenv("DALI_IPMIX_NATIVE_LIB", str(tmp_path / "nowhere.so"))
    assert native.library_path() is None
    with pytest.raises(native.NotBuiltError, match="nowhere.so' is not a file"):
        native.check_build()
    monkeypatch.setenv("DALI_IPMIX_NATIVE_LIB", str(copy))
    assert native.library_path() == str(copy) and native.check_build() == str(copy)


# ---------------------------------------------------------------------------------- fused normalisation

MEAN, STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]


GPU = pytest.param("gpu", marks=[pytest.mark.cupy, pytest.mark.skipif(not _cuda(), reason="needs a CUDA GPU")])


@pytest.mark.parametrize("device", ["cpu", GPU])
@pytest.mark.parametrize("layout, dtype", [("CHW", "float32"), ("HWC", "float32"), ("CHW", "float16")])
@pytest.mark.parametrize("jsd", [True, False])
def test_fused_normalisation_equals_crop_mirror_normalize(layout, dtype, jsd, device):
    """normalize= writes what crop_mirror_normalize on the same device makes of the plain outputs of
    the same draws, bit for bit (CPU: (v - mean) * (1 / std); GPU: fmaf(v, 1 / std, -mean / std));
    the plan outputs stay as they are."""
    from nvidia.dali import types
    config = IPMixConfig.imagenet(jsd=jsd)
    x, z = structured(4, 20, 26), structured(4, 20, 26, seed=1)
    norm = dict(mean=MEAN, std=STD, layout=layout, dtype=dtype)
    images = 3 if jsd else 1

    @pipeline_def(batch_size=4, num_threads=2, device_id=0 if device == "gpu" else None)
    def pipe():
        a = dali_fn.external_source(source=lambda: x, layout="HWC", batch=True)
        b = dali_fn.external_source(source=lambda: z, layout="HWC", batch=True)
        if device == "gpu":
            a, b = a.gpu(), b.gpu()
        plain = ipmix(a, b, config=config, seed=3, backend="native", return_plan=True)
        fused = ipmix(a, b, config=config, seed=3, backend="native", return_plan=True, normalize=norm)
        ref = [dali_fn.crop_mirror_normalize(
            o, output_layout=layout, mean=MEAN, std=STD,
            dtype=types.FLOAT16 if dtype == "float16" else types.FLOAT) for o in plain[:images]]
        return (*ref, *plain[images:], *fused)
    p = pipe()
    p.build()
    for _ in range(2):
        outs = [o.as_cpu() if device == "gpu" else o for o in p.run()]
        n = len(outs) // 2
        for o in range(n):
            assert outs[n + o].layout() == outs[o].layout()
            want, got = np.stack([np.array(t) for t in outs[o]]), np.stack([np.array(t) for t in outs[n + o]])
            assert got.dtype == want.dtype and got.shape == want.shape
            np.testing.assert_array_equal(got, want)
        shape = (4, 3, 20, 26) if layout == "CHW" else (4, 20, 26, 3)
        assert np.stack([np.array(t) for t in outs[n]]).shape == shape


def test_layout_alone_keeps_the_values():
    """output_layout="CHW" without mean/std: the plain outputs transposed, 0..255."""
    config = IPMixConfig.cifar()
    x, z = structured(3, 16, 12), structured(3, 16, 12, seed=2)
    (plain,) = run(x, z, config, seed=4)

    @pipeline_def(batch_size=3, num_threads=2, device_id=None)
    def pipe():
        a = dali_fn.external_source(source=lambda: x, layout="HWC", batch=True)
        b = dali_fn.external_source(source=lambda: z, layout="HWC", batch=True)
        native.load()
        return tuple(dali_fn.ipmix_native(a, b, seed=4, output_layout="CHW",
                                          **native.operator_args(config)))
    p = pipe()
    p.build()
    for want, got in zip(plain, p.run()):
        np.testing.assert_array_equal(np.stack([np.array(t) for t in got]),
                                      np.stack(want).transpose(0, 3, 1, 2))


def operator_pipeline(x, z, **kwargs):
    """A CPU pipeline definition running the native operator itself with ``kwargs`` on batches x, z."""
    @pipeline_def(batch_size=len(x), num_threads=1, device_id=None)
    def pipe():
        a = dali_fn.external_source(source=lambda: x, layout="HWC", batch=True)
        b = dali_fn.external_source(source=lambda: z, layout="HWC", batch=True)
        native.load()
        return dali_fn.ipmix_native(a, b, **kwargs)
    return pipe


def build_and_run(pipe):
    """Builds the pipeline of definition ``pipe`` and runs one batch (where the operator's checks fire)."""
    p = pipe()
    p.build()
    return p.run()


@pytest.mark.parametrize("kwargs, match", [
    (dict(mean=[1.0, 2.0, 3.0]), r"`mean` and `std` go together"),
    (dict(mean=[1.0, 2.0], std=[1.0, 1.0]), r"argument `mean` has 2 values; expected 1 or 3"),
    (dict(mean=[0.0], std=[1.0, 0.0, 1.0]), r"argument `std` has entry 0: every std must be finite and > 0"),
    (dict(mean=[0.0], std=[1.0, float("inf"), 1.0]), r"argument `std` has entry inf: every std must be finite"),
    (dict(mean=[0.0, float("nan"), 0.0], std=[1.0]), r"argument `mean` has entry nan: every mean must be finite"),
    (dict(output_layout="HCW"), r"argument `output_layout`=\"HCW\" is invalid"),
])
def test_bad_normalisation_arguments_are_named(kwargs, match):
    pipe = operator_pipeline(*ok_batch(), **kwargs)
    with pytest.raises(RuntimeError, match=match):
        build_and_run(pipe)


def test_bad_normalize_dict_is_named():
    from dali_ipmix.fn import normalize_args
    with pytest.raises(ValueError, match="give mean and std"):
        normalize_args(dict(mean=MEAN))
    with pytest.raises(ValueError, match="expected 1 or 3"):
        normalize_args(dict(mean=MEAN[:2], std=STD))
    with pytest.raises(ValueError, match="layout"):
        normalize_args(dict(mean=MEAN, std=STD, layout="NCHW"))
    assert normalize_args(dict(mean=1, std=2)) == dict(mean=[1.0] * 3, std=[2.0] * 3, layout="CHW",
                                                        dtype="float32")


# ---------------------------------------------------------------------------------- bad inputs

def ok_batch(n=3, h=8, w=8):
    return structured(n, h, w), structured(n, h, w, seed=1)


@pytest.mark.parametrize("case, match", [
    ("dtype", r"input `images` \(every sample\) has type float.*expected uint8"),
    ("channels", r"input `mixing` sample 1 has 4 channels"),
    ("shapes", r"sample 2: input `mixing` has shape \(8, 9, 3\) but `images` has shape \(8, 8, 3\)"),
    ("tiny", r"input `images` sample 0 is 1 x 8 pixels; images must be at least 2 x 2"),
    ("ndim", r"input `images` sample 0 has shape \(8, 24\); expected 3 dimensions"),
])
def test_bad_inputs_name_the_input_and_the_sample(case, match):
    x, z = ok_batch()
    layout = "HWC"
    if case == "dtype":
        x = [a.astype(np.float32) for a in x]
    elif case == "channels":
        z[1] = np.zeros((8, 8, 4), np.uint8)
    elif case == "shapes":
        z[2] = np.zeros((8, 9, 3), np.uint8)
    elif case == "tiny":
        x[0], z[0] = x[0][:1], z[0][:1]
    elif case == "ndim":
        x, z = [a.reshape(8, 24) for a in x], [a.reshape(8, 24) for a in z]
        layout = None   # no layout: the shape check speaks
    with pytest.raises(RuntimeError, match=match):
        run(x, z, IPMixConfig.cifar(), layout=layout)


def test_bad_layout_is_named():
    x, z = ok_batch()
    with pytest.raises(RuntimeError, match=r"input `images` \(every sample\) has layout \"CHW\""):
        run(x, z, IPMixConfig.cifar(), layout="CHW")


@pytest.mark.parametrize("kwargs, match", [
    (dict(k=0), r"argument `k`=0 is invalid: must be >= 1 and <= 32"),
    (dict(k=2**31 - 1), r"argument `k`=2147483647 is invalid: must be >= 1 and <= 32"),
    (dict(k=33), r"argument `k`=33 is invalid"),
    (dict(t=-1), r"argument `t`=-1 is invalid: must be >= 0 and <= 32"),
    (dict(t=33), r"argument `t`=33 is invalid"),
    (dict(t=2**31 - 1), r"argument `t`=2147483647 is invalid"),
    (dict(beta=float("inf")), r"argument `beta`=inf is invalid: must be finite and > 0"),
    (dict(t=2, min_ops=3), r"argument `min_ops`=3 is invalid: must be >= 0 and <= `t` \(2\)"),
    (dict(min_ops=-1), r"argument `min_ops`=-1 is invalid"),
    (dict(chain_kinds=3), r"argument `chain_kinds`=3 is invalid: 0 \(image or patch level\)"),
    (dict(pixel_ops=0), r"argument `pixel_ops`=0 is invalid: must be >= 1 and <= 4"),
    (dict(pixel_ops=5), r"argument `pixel_ops`=5 is invalid"),
    (dict(op_codes=[16]), r"argument `op_codes` has entry 16: op codes are 0..15"),
])
def test_bad_arguments_are_named(kwargs, match):
    """The raw operator bounds k and t as IPMixConfig does: k = 2^31 - 1 is refused when the pipeline
    is built, not allocated until the process is killed."""
    pipe = operator_pipeline(*ok_batch(), **kwargs)
    with pytest.raises(RuntimeError, match=match):
        build_and_run(pipe)


def test_k_and_t_bounds_are_the_configs():
    from dali_ipmix.config import K_MAX, T_MAX
    assert (K_MAX, T_MAX) == (32, 32)   # the operator's kMaxK / kMaxT (ipmix_op.cc)
    p = operator_pipeline(*ok_batch(n=1, h=4, w=4), k=K_MAX, t=T_MAX, seed=1)()
    p.build()
    (out,) = p.run()
    assert np.array(out[0]).shape == (4, 4, 3)
    for kw in (dict(k=K_MAX + 1), dict(t=T_MAX + 1)):
        with pytest.raises(ValueError, match="must be <= 32"):
            IPMixConfig(**kw)


# ---------------------------------------------------------------------------------- GPU (device check)

@pytest.mark.cupy   # run by pipelines/gpu_check.sh with the other GPU tests (needs no CuPy itself)
@pytest.mark.skipif(not _cuda(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", ["imagenet-all-ops", "t0", "k1-t5-two-ops", "augmix", "pixmix"])
def test_gpu_operator_equals_numpy_executor_on_the_returned_plan(name):
    config, h, w = CONFIGS[name]
    x, z = structured(5, h, w), structured(5, h, w, seed=1)

    @pipeline_def(batch_size=5, num_threads=2, device_id=0)
    def pipe():
        a = dali_fn.external_source(source=lambda: x, layout="HWC", batch=True)
        b = dali_fn.external_source(source=lambda: z, layout="HWC", batch=True)
        out = ipmix(a.gpu(), b.gpu(), config=config, seed=11, backend="native", return_plan=True)
        return out if isinstance(out, tuple) else (out,)
    p = pipe()
    p.build()
    for _ in range(2):   # the second batch draws with the next batch counter
        outs = [[np.array(t) for t in o.as_cpu()] for o in p.run()]
        for plan, steps, _, got in views_and_plans(outs, config, h, w, x):
            np.testing.assert_array_equal(steps, pack_plan(plan)[0])
            diff = np.abs(got - execute_plan(plan, np.stack(x), np.stack(z)))
            if config.method == "ipmix":
                assert diff.max() <= 1.0
            else:   # PIL's warp (NumPy executor) vs the compiled one, carried by later ops or rounds
                assert (diff <= 1).mean() >= 0.999 and (diff > 1).mean() < 1e-4, diff.max()


@pytest.mark.cupy
@pytest.mark.skipif(not _cuda(), reason="needs a CUDA GPU")
def test_gpu_operator_needs_one_size_per_batch():
    x = [structured(1, 8, 8)[0], structured(1, 9, 8)[0]]

    @pipeline_def(batch_size=2, num_threads=1, device_id=0)
    def pipe():
        a = dali_fn.external_source(source=lambda: x, layout="HWC", batch=True)
        return ipmix(a.gpu(), a.gpu(), config=IPMixConfig.cifar(jsd=False), backend="native")
    with pytest.raises(RuntimeError, match="sample 1 has shape .* one size across the batch"):
        build_and_run(pipe)


# ---------------------------------------------------------------------------------- sample_key

def keyed_run(batches, config, seed=0, num_threads=2, device="cpu", **kwargs):
    """fn.ipmix_native with ``sample_key`` fed by external_source: batches is a list of (x, z, keys)
    per iteration (one batch size throughout); per iteration a list of outputs, each an array
    stacked over the samples."""
    @pipeline_def(batch_size=len(batches[0][0]), num_threads=num_threads,
                  device_id=0 if device == "gpu" else None)
    def pipe():
        def part(i):
            return lambda info: batches[info.iteration % len(batches)][i]   # (prefetch reads ahead)
        feed = [dali_fn.external_source(source=part(i), batch=True, batch_info=True, layout=layout,
                                        name=name)
                for i, (layout, name) in enumerate([("HWC", "x"), ("HWC", "z"),
                                                    (None, "sample_key")])]
        a, b, keys = feed
        if device == "gpu":
            a, b = a.gpu(), b.gpu()
        native.load()
        out = dali_fn.ipmix_native(a, b, sample_key=keys, seed=seed, device=device,
                                   **native.operator_args(config), **kwargs)
        return tuple(out) if isinstance(out, (tuple, list)) else (out,)
    p = pipe()
    p.build()
    outs = []
    for _ in batches:
        got = [o.as_cpu() if device == "gpu" else o for o in p.run()]
        outs.append([np.stack([np.array(t) for t in o]) for o in got])
    return outs


def keys(*values):
    return np.array(values, np.int64)


def take(batch, order):
    """The samples of (x, z, keys) in `order`."""
    x, z, k = batch
    return [x[i] for i in order], [z[i] for i in order], k[list(order)]


@pytest.mark.parametrize("device", ["cpu", GPU])
def test_sample_key_makes_the_views_independent_of_batch_and_position(device):
    """Keyed, a sample's views are a function of (image, key) alone: the same pairs permuted in a
    second batch, or in a smaller batch of another pipeline, give bit-identical outputs."""
    config = IPMixConfig.cifar()   # JSD: clean, view1, view2
    x, z = structured(4, 32, 32), structured(4, 32, 32, seed=1)
    a = (x, z, keys(10, 11, 12, 13))
    order = [2, 0, 3, 1]
    first, second = keyed_run([a, take(a, order)], config, seed=5, device=device)
    for o in range(3):
        np.testing.assert_array_equal(second[o], first[o][order])
    (small,) = keyed_run([take(a, [3, 1])], config, seed=5, device=device)
    for o in range(3):
        np.testing.assert_array_equal(small[o], first[o][[3, 1]])
    assert not np.array_equal(first[1], first[2])   # the views still draw apart


def test_sample_key_replaces_the_batch_counter():
    """The same batch twice: keyed, batch 1 repeats batch 0; unkeyed (as before), it does not. A
    keyed draw is no unkeyed one either, even with the keys 0..n-1 of the batch indices."""
    config = IPMixConfig.cifar()
    x, z = structured(4, 32, 32), structured(4, 32, 32, seed=1)
    first, second = keyed_run([(x, z, keys(0, 1, 2, 3))] * 2, config, seed=5)
    for o in range(3):
        np.testing.assert_array_equal(first[o], second[o])
    plain = run(x, z, config, seed=5, n_iter=2)
    assert not np.array_equal(np.stack(plain[0][1]), np.stack(plain[1][1]))
    assert not np.array_equal(np.stack(plain[0][1]), first[1])


def test_different_keys_draw_differently_equal_keys_alike():
    config = IPMixConfig.cifar()
    x, z = structured(1, 32, 32) * 4, structured(1, 32, 32, seed=1) * 4
    ((_, *views),) = keyed_run([(x, z, keys(1, 2, 1, -3))], config, seed=5)
    for view in views:
        np.testing.assert_array_equal(view[0], view[2])
        for i, j in [(0, 1), (0, 3), (1, 3)]:
            assert not np.array_equal(view[i], view[j])
    (other,) = keyed_run([(x, z, keys(1, 2, 1, -3))], config, seed=6)
    assert not np.array_equal(other[1][0], views[0][0])   # the seed stays in the key


def test_sample_key_same_result_whatever_the_thread_count():
    config = IPMixConfig.cifar()
    x, z = structured(5, 32, 32), structured(5, 32, 32, seed=3)
    batches = [(x, z, keys(4, 8, 15, 16, 23)), (x, z, keys(42, 4, 8, 15, 16))]
    one = keyed_run(batches, config, seed=7, num_threads=1)
    two = keyed_run(batches, config, seed=7, num_threads=2)
    for it in range(2):
        for o in range(3):
            np.testing.assert_array_equal(one[it][o], two[it][o])


def test_sample_key_scalar_or_one_element_shape():
    config = IPMixConfig.cifar()
    x, z = structured(3, 32, 32), structured(3, 32, 32, seed=1)
    (scalar,) = keyed_run([(x, z, keys(7, 8, 9))], config, seed=5)
    (column,) = keyed_run([(x, z, keys(7, 8, 9)[:, None])], config, seed=5)
    for o in range(3):
        np.testing.assert_array_equal(scalar[o], column[o])


def test_sample_key_plans_equal_for_equal_keys():
    """return_plan: equal keys report equal plan records and table rows in both views, whatever
    their batch and position; and every view is still the NumPy executor's result of its plan."""
    config = IPMixConfig.cifar()
    h = w = 32
    x, z = structured(1, h, w) * 4, structured(1, h, w, seed=1) * 4
    first, second = keyed_run([(x, z, keys(7, 8, 7, 9)), (x, z, keys(9, 7, 8, 8))], config, seed=5,
                              return_plan=True)
    for v in range(2):
        rec, tab = first[3 + 2 * v], first[4 + 2 * v]
        np.testing.assert_array_equal(rec[0], rec[2])
        np.testing.assert_array_equal(tab[0], tab[2])
        assert not np.array_equal(rec[0], rec[1]) and not np.array_equal(rec[0], rec[3])
        for i, j in [(0, 1), (1, 2), (3, 0)]:   # first[i] and second[j] share a key
            np.testing.assert_array_equal(second[3 + 2 * v][j], rec[i])
            np.testing.assert_array_equal(second[4 + 2 * v][j], tab[i])
    for plan, steps, _, got in views_and_plans([list(o) for o in first], config, h, w, x):
        np.testing.assert_array_equal(steps, pack_plan(plan)[0])
        assert np.abs(got - execute_plan(plan, np.stack(x), np.stack(z))).max() <= 1.0


@pytest.mark.cupy
@pytest.mark.skipif(not _cuda(), reason="needs a CUDA GPU")
def test_gpu_operator_draws_the_cpu_plans_for_the_same_keys():
    config = IPMixConfig.cifar()
    x, z = structured(4, 32, 32), structured(4, 32, 32, seed=1)
    batch = [(x, z, keys(3, 1, 4, 1))]
    (cpu,) = keyed_run(batch, config, seed=9, return_plan=True)
    (gpu,) = keyed_run(batch, config, seed=9, return_plan=True, device="gpu")
    for o in range(3, 7):
        np.testing.assert_array_equal(gpu[o], cpu[o])


@pytest.mark.parametrize("case, match", [
    ("shape", r"argument `sample_key` sample 1 has shape \(2,\); expected one int64 per sample"),
    ("dtype", r"argument `sample_key` \(every sample\) has type float; expected int64"),
    ("constant", r"argument `sample_key` is a constant: give it as a per-sample tensor input"),
])
def test_bad_sample_keys_are_named(case, match):
    x, z = ok_batch()
    if case == "constant":
        pipe = operator_pipeline(x, z, sample_key=5)
        with pytest.raises(RuntimeError, match=match):
            build_and_run(pipe)
        return
    k = [np.zeros(1, np.int64), np.zeros(2, np.int64), np.zeros(1, np.int64)]
    if case == "dtype":
        k = np.arange(3, dtype=np.float32)
    with pytest.raises(RuntimeError, match=match):
        keyed_run([(x, z, k)], IPMixConfig.cifar())


def test_sample_key_batch_of_the_wrong_length_fails():
    """DALI itself refuses it before the operator's own check (external_source's batch size clash,
    then OperatorBase's argument input check); the error names the key's source, which keyed_run
    calls sample_key."""
    x, z = ok_batch()
    clash = r'Batch size clash! The input operator "sample_key" returned a batch size 2'
    with pytest.raises(RuntimeError, match=clash):
        keyed_run([(x, z, keys(1, 2))], IPMixConfig.cifar())

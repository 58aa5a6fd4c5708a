"""The compiled core (``dali_ipmix/csrc``), checked without a GPU.

The per-element bodies of the CUDA kernels are compiled with g++ into host loops
(``kernel_harness.HostDevice``) and driven by the very launch sequence the GPU runs
(``table.TableExecutor``), so every plan-table field, every op and the step/mix order are checked
against the array executor (``execute.py``, the reference) on the same plan: bit-exact, except where
the reference itself takes another path: the NumPy executor warps through PIL (PIL's own rounding: the
core is checked bit-exact against ``warp_affine_batched`` instead, and within one grey level of PIL),
and ``multiply``'s ``powf`` (an ulp between libm and NumPy can move a rounded value by one level).
The CUDA source is also compiled with nvcc and NVRTC (CuPy's compiler), warnings refused.
"""

import ctypes
import dataclasses
import glob
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import dali_ipmix.execute as execute
from dali_ipmix import AugMixConfig, IPMixConfig, PixMixConfig
from dali_ipmix.cuda_source import COMPILE_OPTIONS, kernel_source
from dali_ipmix.ops import IMAGE_OPS
from dali_ipmix.plan import PATCH_CHAIN, PIXEL_OPS, draw_plan
from dali_ipmix.laws import KERNEL_CODES
from dali_ipmix.table import (COL, OP_CODES, STEP_FIELDS, TableExecutor, op_parameters, pack_plan)

import kernel_harness
from image_sets import extremes, photos

KERNELS = ("ipx_prepare", "ipx_step", "ipx_mix")
ALL_OPS = tuple(IMAGE_OPS)


@pytest.fixture(scope="module")
def device():
    if kernel_harness.compiler() is None:
        pytest.skip("no C++ compiler for the host loops")
    return kernel_harness.HostDevice()


@pytest.fixture()
def core(device):
    device.launches.clear()
    return TableExecutor(device)


def images(height, width, count=12, seed=0):
    rng = np.random.default_rng(seed)
    out = np.concatenate([photos(height, width), extremes(height, width)])
    extra = rng.integers(0, 256, (max(count - len(out), 0), height, width, 3), dtype=np.uint8)
    return np.concatenate([out, extra])[:count]


# The array executor warping as the compiled core does (not through PIL).
BATCHED = kernel_harness.BatchedWarpExecutor()


def forced(plan, **fields):
    """``plan`` with some fields replaced (arrays broadcast to the field's shape)."""
    new = {name: np.broadcast_to(np.asarray(v), getattr(plan, name).shape).copy()
           for name, v in fields.items()}
    return dataclasses.replace(plan, **new)


# ------------------------------------------------------------------------------ compilation

def test_cuda_source_compiles_with_nvcc(tmp_path):
    nvcc = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if os.path.exists("/usr/local/cuda/bin/nvcc") else None)
    if nvcc is None:
        pytest.skip("nvcc not installed")
    src = tmp_path / "ipx_kernels.cu"
    src.write_text(kernel_source())
    opts = [o.replace("--fmad=", "-fmad=").replace("--std=", "-std=") for o in COMPILE_OPTIONS]
    done = subprocess.run([nvcc, "-c", "-x", "cu", "-arch=sm_80", *opts, str(src), "-o", str(tmp_path / "k.o")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "warning" not in (done.stdout + done.stderr).lower(), done.stderr


def _nvrtc():
    roots = [p for p in sys.path if p.endswith("site-packages")]
    found = [f for r in roots for f in sorted(glob.glob(os.path.join(r, "nvidia", "*", "lib", "libnvrtc.so*")))
             if "builtins" not in f and ".alt." not in f]
    found += glob.glob("/usr/local/cuda*/lib64/libnvrtc.so*")
    for path in found:
        try:
            # NVRTC dlopens its builtins library by name: load the one beside it first.
            for builtins in glob.glob(os.path.join(os.path.dirname(path), "libnvrtc-builtins.so*")):
                if ".alt." not in builtins:
                    ctypes.CDLL(builtins, mode=ctypes.RTLD_GLOBAL)
            return ctypes.CDLL(path)
        except OSError:
            continue
    return None


def test_cuda_source_compiles_with_nvrtc():
    """NVRTC is what ``cupy.RawModule`` compiles with: same source, same options, every kernel present."""
    lib = _nvrtc()
    if lib is None:
        pytest.skip("libnvrtc not found")
    prog = ctypes.c_void_p()
    assert lib.nvrtcCreateProgram(ctypes.byref(prog), kernel_source().encode(), b"ipx.cu", 0, None, None) == 0
    try:
        opts = [o.encode() for o in COMPILE_OPTIONS + ("--gpu-architecture=compute_80",)]
        rc = lib.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(prog, log)
        assert rc == 0, log.value.decode()
        assert "warning" not in log.value.decode().lower(), log.value.decode()
        lib.nvrtcGetPTXSize(prog, ctypes.byref(size))
        ptx = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetPTX(prog, ptx)
        for name in KERNELS:
            assert f".entry {name}(" in ptx.value.decode(), name
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


def test_layout_and_op_codes_agree_with_c(device):
    dll = device.dll
    assert dll.ipx_step_bytes_c() == 4 * len(STEP_FIELDS)
    assert {name: dll.ipx_op_code_c(i) for i, name in enumerate(kernel_harness.OP_ORDER)} == {
        name: code for name, code in OP_CODES.items() if KERNEL_CODES[name] == code}
    assert set(OP_CODES) == set(IMAGE_OPS)


def test_host_device_checks_launch_arguments(device):
    """CuPy passes NumPy scalars by their dtype: a wrong width would be silent on the device."""
    assert set(kernel_harness.kernel_signatures()) == set(KERNELS)
    x = np.zeros((1, 4, 4, 3), np.uint8)
    out, mixw = np.zeros((1, 4, 4, 3), np.float32), np.array([[0.5, 1.0]], np.float32)
    good = (x, x, mixw, out, np.int32(1), np.int64(48), np.int64(48))
    device.launch("ipx_mix", 1, good)
    for bad in [good[:-1], good[:4] + (1,) + good[5:], good[:4] + (np.int64(1),) + good[5:],
                good[:2] + (mixw.astype(np.float64),) + good[3:]]:
        with pytest.raises(TypeError):
            device.launch("ipx_mix", 1, bad)


# ------------------------------------------------------------------------------ the plan table

def test_pack_plan_fields():
    cfg = IPMixConfig.imagenet(all_ops=True)
    plan = draw_plan(16, 40, 56, cfg, 5)
    steps, mixw = pack_plan(plan)
    ints = steps.view(np.int32)
    floats = steps.view(np.float32)
    act = ints[:, COL["act"]].reshape(plan.kind.shape + (plan.t,))
    np.testing.assert_array_equal(act > 0, np.arange(plan.t) < plan.n_ops[..., None])
    np.testing.assert_array_equal(act[act > 0], np.broadcast_to(plan.kind[..., None] + 1, act.shape)[act > 0])
    patch = ints[:, COL["act"]] == 2
    np.testing.assert_array_equal(steps[patch, COL["key"]], plan.mask_key.ravel()[patch])
    np.testing.assert_allclose(floats[patch, COL["wa"]], plan.wa.ravel()[patch].astype(np.float32))
    src = ints[:, COL["src_op"]]
    assert ((src == -1) == ~(patch & plan.from_image.ravel())).all()
    np.testing.assert_allclose(mixw[:, 0], plan.m.astype(np.float32))
    np.testing.assert_allclose(mixw[:, 1:], plan.weights.astype(np.float32))


def test_op_parameters_follow_the_magnitude_laws():
    names = ALL_OPS
    level = np.array([5.0] * len(names))
    sign = np.array([-1] * len(names))
    codes, params, cuts = op_parameters(names, np.arange(len(names)), level, sign, 30, 60)
    assert list(codes) == [KERNEL_CODES[n] for n in names]
    row = dict(zip(names, params))
    assert row["posterize"][0] == 2 and row["solarize"][0] == 128
    assert row["translate_x"].tolist() == [1, 0, -10, 0, 1, 0]       # floor(5 * 20 / 10) px, sign -1
    assert row["mirror"].tolist() == [-1, 0, 60, 0, 1, 0]
    np.testing.assert_allclose(row["contrast"][0], 5 * 0.18 + 0.1, rtol=1e-6)
    assert cuts[names.index("autocontrast")] == np.floor(1800 * 5.0 // 100)


# ------------------------------------------------------------------------------ ops, one at a time

@pytest.mark.parametrize("name", ALL_OPS)
def test_each_image_op(core, name):
    """Every chain does ``name`` at step 0 (levels and signs as drawn): exact vs the array executor."""
    cfg = IPMixConfig.imagenet(ops=ALL_OPS, severity=10)
    x = images(24, 40, count=12)
    plan = draw_plan(12, 24, 40, cfg, 1)
    plan = forced(plan, kind=0, n_ops=1, op=cfg.op_names.index(name), m=1.0)
    got = core(plan, x, x[::-1].copy())
    ref = BATCHED.execute(plan, x, x[::-1].copy())
    np.testing.assert_array_equal(got, ref)
    pil = execute.execute_arrays(plan, x, x[::-1].copy())
    assert np.abs(got - pil).max() <= 1.0


@pytest.mark.parametrize("pixel_op", PIXEL_OPS)
@pytest.mark.parametrize("from_image", [False, True])
def test_each_patch_op(core, pixel_op, from_image):
    cfg = IPMixConfig.imagenet(all_ops=True, severity=10, source_from_image=True)
    x, z = images(32, 32, count=12), images(32, 32, count=12, seed=3)
    plan = draw_plan(12, 32, 32, cfg, 2)
    plan = forced(plan, kind=PATCH_CHAIN, pixel_op=PIXEL_OPS.index(pixel_op), from_image=from_image)
    got = core(plan, x, z)
    ref = BATCHED.execute(plan, x, z)
    if pixel_op == "multiply":
        assert np.abs(got - ref).max() <= 1.0
    else:
        np.testing.assert_array_equal(got, ref)


# ------------------------------------------------------------------------------ whole plans

@pytest.mark.parametrize("cfg", [IPMixConfig.imagenet(), IPMixConfig.cifar(),
                                 IPMixConfig.imagenet(all_ops=True, severity=10),
                                 IPMixConfig.cifar(k=1, t=1), IPMixConfig.cifar(t=0),
                                 IPMixConfig.imagenet(k=5, t=4, jsd=False),
                                 AugMixConfig.imagenet(), AugMixConfig.cifar(all_ops=True, depth=3),
                                 AugMixConfig(width=1, depth=1), PixMixConfig.imagenet(),
                                 PixMixConfig.cifar(all_ops=True), PixMixConfig(k=0)])
@pytest.mark.parametrize("shape", [(32, 32), (23, 41), (2, 2)])
def test_whole_plans_match_the_array_executor(core, cfg, shape):
    """IPMix, AugMix and PixMix plans: one core (a chain's start is one more table row)."""
    h, w = shape
    x, z = images(h, w, count=16), images(h, w, count=16, seed=9)
    plan = draw_plan(16, h, w, cfg, 7)
    got = core(plan, x, z)
    assert got.dtype == np.float32 and got.shape == x.shape
    ref = BATCHED.execute(plan, x, z)
    # multiply's powf only: one grey level, which PixMix's later rounds (one chain, no average) may carry
    worst = 4.0 if cfg.method == "pixmix" else 1.0
    assert np.abs(got - ref).max() <= worst
    assert (np.abs(got - ref) > 1).mean() < 1e-3
    assert (got != ref).mean() < 1e-2
    if cfg.method == "ipmix":
        assert np.abs(got - execute.execute_arrays(plan, x, z)).max() <= 1.0
    else:   # PIL's warp: a grey level at a few pixels, carried by later ops or rounds
        assert (np.abs(got - execute.execute_arrays(plan, x, z)) <= 1).mean() >= 0.999


def test_non_contiguous_inputs(core):
    x = images(16, 32, count=8)
    plan = draw_plan(8, 16, 16, IPMixConfig.cifar(), 0)
    left = x[:, :, :16]                                   # a strided view
    np.testing.assert_array_equal(core(plan, left, left[::-1]),
                                  BATCHED.execute(plan, np.ascontiguousarray(left),
                                               np.ascontiguousarray(left[::-1])))


def test_empty_batch(core):
    plan = draw_plan(0, 8, 8, IPMixConfig.cifar(), 0)
    x = np.zeros((0, 8, 8, 3), np.uint8)
    assert core(plan, x, x).shape == (0, 8, 8, 3)
    assert core.device.launches == []


def test_per_sample_runner_matches_the_batch(core):
    """``ipx_run_sample`` (what the native CPU operator runs per sample) equals the batched launches."""
    cfg = IPMixConfig.imagenet(all_ops=True, severity=10)
    x, z = images(24, 24, count=6), images(24, 24, count=6, seed=4)
    plan = draw_plan(6, 24, 24, cfg, 11)
    whole = core(plan, x, z)
    steps, mixw = pack_plan(plan)
    per = steps.reshape(6, -1, steps.shape[1])
    for n in range(6):
        np.testing.assert_array_equal(kernel_harness.run_sample(per[n], mixw[n], plan.k, plan.t, x[n], z[n]),
                                      whole[n])


# ------------------------------------------------------------------------------ launches

@pytest.mark.parametrize("cfg", [IPMixConfig.imagenet(all_ops=True), IPMixConfig.cifar(t=1),
                                 IPMixConfig.imagenet(k=4, t=5), AugMixConfig(), PixMixConfig(k=3)])
def test_launches_fixed_by_t_alone(core, cfg):
    """The same launch sequence for any batch size and whatever the plan drew: 2 T + 1 kernels, T the
    table's steps (t, plus one for a chain's start: PixMix), set by the config."""
    seen = []
    for n, seed in ((1, 0), (7, 1), (300, 2)):
        x = images(4, 4, count=n, seed=seed)
        core.device.launches.clear()
        core(draw_plan(n, 4, 4, cfg, seed), x, x)
        seen.append(list(core.device.launches))
    steps = max(cfg.engine.t, 1) + int(cfg.engine.chain_start)
    expected = ["ipx_prepare", "ipx_step"] * steps + ["ipx_mix"]
    assert all(s == expected for s in seen), seen
    assert core.launches_per_view(steps) == len(expected)


def test_per_sample_runner_without_steps():
    """t = 0 (no step rows at all): every chain is the image itself, so the view is the image."""
    x, z = images(8, 8, count=2), images(8, 8, count=2, seed=1)
    mixw = np.array([0.7, 0.2, 0.3, 0.5], np.float32)
    steps = np.zeros((0, len(STEP_FIELDS)), np.uint32)
    got = kernel_harness.run_sample(steps, mixw, 3, 0, x[0], z[0])
    np.testing.assert_allclose(got, x[0].astype(np.float32), atol=1e-4)


# ---------------------------------------------------------------------------------- normalised output

def fma_f32(v, mul, add):
    """fmaf(v, mul, add) for float32 arrays, exactly as IEEE 754 (and CUDA) rounds it: once, to nearest
    even. v * mul is exact in float64 (24 + 24 bits); the float64 sum's rounding error comes from
    TwoSum, and decides the one case where rounding twice could differ (a float32 tie)."""
    prod = v.astype(np.float64) * mul.astype(np.float64)
    add = np.broadcast_to(add.astype(np.float64), prod.shape)
    s = prod + add
    bb = s - prod
    err = (prod - (s - bb)) + (add - bb)
    f = s.astype(np.float32)
    lo = np.where(f.astype(np.float64) > s, np.nextafter(f, np.float32(-np.inf)), f)
    hi = np.nextafter(lo, np.float32(np.inf))
    tie = (lo.astype(np.float64) + hi.astype(np.float64)) / 2 == s
    return np.where(tie & (err > 0), hi, np.where(tie & (err < 0), lo, f))


def test_fma_reference_rounds_once():
    v = np.array([1.0, 3.0, 255.0, 0.1], np.float32)
    m = np.array([1.0 + 2 ** -23, 1.0 / 3, 0.017124753, 3.0], np.float32)
    a = np.array([-1.0, -2.0, -2.117904, 2 ** -30], np.float32)
    want = [float(np.float32(np.float64(x) * np.float64(y) + np.float64(z)))   # exact here in float64
            for x, y, z in zip(v[:3], m[:3], a[:3])]
    np.testing.assert_array_equal(fma_f32(v, m, a)[:3], np.array(want, np.float32))
    # 0.1 * 3 + 2**-30: the float64 sum sits on a float32 tie only after rounding; the exact sum is above
    assert fma_f32(v, m, a)[3] >= np.float32(np.float64(np.float32(0.1)) * 3)


@pytest.mark.parametrize("chw", [True, False])
@pytest.mark.parametrize("k", [0, 1, 3])
def test_gpu_normalised_output_is_the_gpu_crop_mirror_normalize_of_the_mix(device, k, chw):
    """ipx_mix_norm (the native GPU operator's fused output) equals DALI's GPU crop_mirror_normalize of
    the plain output: fmaf(v, 1 / std, -mean / std) per channel, rounded once, in CHW or HWC; k == 0 is
    the clean image. Values from ipx_mix (the plain output), the reference from exact arithmetic."""
    n, h, w = 3, 9, 14
    rng = np.random.default_rng(k)
    x = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    chains = rng.integers(0, 256, (n * k, h, w, 3), dtype=np.uint8) if k else None
    mixw = np.concatenate([rng.uniform(0, 1, (n, 1)), rng.dirichlet([1.0] * k, n)], 1).astype(np.float32) \
        if k else None
    mean = np.array([123.675, 116.28, 103.53], np.float32)
    std = np.array([58.395, 57.12, 57.375], np.float32)
    if k:
        plain = np.empty((n, h, w, 3), np.float32)
        device.launch("ipx_mix", 1, [x, chains, mixw, plain, np.int32(k), np.int64(h * w * 3),
                                     np.int64(plain.size)])
    else:
        plain = x.astype(np.float32)
    inv = (1.0 / std.astype(np.float64)).astype(np.float32)
    want = fma_f32(plain, inv, -mean * inv)
    want = want.transpose(0, 3, 1, 2) if chw else want
    got = kernel_harness.mix_norm(x, chains, mixw, mean, std, chw)
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    # (v - mean) / std in float64, for scale: the fused output is that within float32 rounding
    exact = (plain.astype(np.float64) - mean) / std
    np.testing.assert_allclose(got, exact.transpose(0, 3, 1, 2) if chw else exact, rtol=0, atol=1e-5)

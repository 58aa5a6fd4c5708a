"""The CUDA kernels of the CuPy backend, checked without a GPU.

``kernels.KERNEL_CORE`` (the per-element logic of every kernel) is compiled with g++ into a host
harness (``dali_ipmix._kernel_harness``) that runs the same element bodies in host loops behind the
same argument handling as the CuPy launcher. Its results are compared with the xp-generic NumPy code
of ``execute.py`` (what CuPy runs with the kernels off): bit-exact, except the ``multiply`` pixel op,
whose ``powf`` may differ by an ulp between glibc and NumPy's SIMD power and so move a rounded value
by one grey level. The full CUDA source is also compiled with nvcc and with NVRTC (CuPy's compiler)
so that device-only code is at least syntax- and type-checked.
"""

import ctypes
import glob
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import dali_ipmix.execute as execute
from dali_ipmix import IPMixConfig, _kernel_harness
from dali_ipmix.kernels import COMPILE_OPTIONS, KERNEL_NAMES, KERNEL_SOURCE, pack_patch_entries
from dali_ipmix.ops import AFFINE, IMAGE_OPS, LUT
from dali_ipmix.plan import PATCH_CHAIN, PIXEL_OPS, draw_plan

from photos import extremes, photos

AFFINE_OPS = [n for n, op in IMAGE_OPS.items() if op.family == AFFINE]
LUT_OPS = [n for n, op in IMAGE_OPS.items() if op.family == LUT]


@pytest.fixture(scope="module")
def host():
    if _kernel_harness.compiler() is None:
        pytest.skip("no C++ compiler for the kernel harness")
    return _kernel_harness.HostKernels()


def generic(fn, *args):
    """``fn(*args)`` on the xp-generic path as CuPy runs it with the kernels off (batched warp)."""
    saved = execute.warp_affine
    execute.warp_affine = execute.warp_affine_batched
    try:
        return fn(*args)
    finally:
        execute.warp_affine = saved


def with_kernels(backend, fn, *args):
    """``fn(*args)`` on the kernel path of ``execute.py``, with ``backend`` standing in for CuPy's."""
    saved = execute.kernel_backend
    execute.kernel_backend = lambda xp: backend
    try:
        return fn(*args)
    finally:
        execute.kernel_backend = saved


def images(height, width, count=12, seed=0):
    rng = np.random.default_rng(seed)
    out = np.concatenate([photos(height, width), extremes(height, width)])
    extra = rng.integers(0, 256, (max(count - len(out), 0), height, width, 3), dtype=np.uint8)
    return np.concatenate([out, extra])[:count]


# ------------------------------------------------------------------------------ compilation

def test_cuda_source_compiles_with_nvcc(tmp_path):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc not installed")
    src = tmp_path / "ipmix_kernels.cu"
    src.write_text(KERNEL_SOURCE)
    opts = [o.replace("--fmad=", "-fmad=").replace("--std=", "-std=") for o in COMPILE_OPTIONS]
    done = subprocess.run([nvcc, "-c", "-x", "cu", *opts, str(src), "-o", str(tmp_path / "k.o")],
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
    assert lib.nvrtcCreateProgram(ctypes.byref(prog), KERNEL_SOURCE.encode(), b"ipmix.cu", 0, None, None) == 0
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
        for name in KERNEL_NAMES:
            assert f".entry {name}(" in ptx.value.decode(), name
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


def test_harness_checks_launch_arguments_against_cuda_signatures(host):
    """CuPy passes NumPy scalars by their dtype: a wrong width would be silent on the device."""
    assert set(_kernel_harness.cuda_signatures()) == set(KERNEL_NAMES)
    x, mats = np.zeros((1, 4, 4, 3), np.uint8), np.zeros((1, 6), np.float32)
    host._launch("ipx_warp", 16, x, mats, x.copy(), np.int32(4), np.int32(4))
    for bad in [(x, mats, x, 4, np.int32(4)), (x, mats, x, np.int64(4), np.int32(4)),
                (x, mats.astype(np.float64), x, np.int32(4), np.int32(4)), (x, mats, x, np.int32(4))]:
        with pytest.raises(TypeError):
            host._launch("ipx_warp", 16, *bad)


def test_kernels_module_needs_no_cupy():
    assert execute.kernel_backend(np) is None
    assert "cupy" not in sys.modules or execute.kernel_backend(sys.modules["cupy"]) is not None


# ------------------------------------------------------------------------------ single kernels

@pytest.mark.parametrize("shape", [(33, 47), (64, 64), (3, 5)])
def test_warp_bit_exact(host, shape):
    h, w = shape
    x = images(h, w, count=24)
    rng = np.random.default_rng(1)
    for name in AFFINE_OPS:
        op = IMAGE_OPS[name]
        mats = op.fn(op.params(rng.uniform(0.1, 10, len(x)), rng.choice([-1, 1], len(x)), h, w), h, w)
        np.testing.assert_array_equal(host.warp_affine(x, mats), execute.warp_affine_batched(x, mats), name)
    # Arbitrary matrices: scaling, large offsets, points far outside the image.
    mats = rng.normal(0, 1, (len(x), 2, 3)) * [[1, 1, w], [1, 1, h]]
    np.testing.assert_array_equal(host.warp_affine(x, mats), execute.warp_affine_batched(x, mats))


def test_luts_bit_exact(host):
    x = images(21, 30, count=16)
    luts = np.random.default_rng(2).integers(0, 256, (16, 3, 256), dtype=np.uint8)
    np.testing.assert_array_equal(host.apply_luts(x, luts), execute.apply_luts(x, luts))
    # Through apply_image_ops, every LUT op (its tables still built by the xp-generic code).
    names = tuple(IMAGE_OPS)
    rng = np.random.default_rng(3)
    ids = rng.choice([names.index(n) for n in LUT_OPS], len(x))
    args = (names, ids, rng.uniform(0.1, 10, len(x)), rng.choice([-1, 1], len(x)))
    np.testing.assert_array_equal(with_kernels(host, execute.apply_image_ops, x, *args),
                                  generic(execute.apply_image_ops, x, *args))


def test_image_ops_bit_exact_all_families(host):
    x = images(40, 52, count=40)
    names = tuple(IMAGE_OPS)
    rng = np.random.default_rng(4)
    args = (names, rng.integers(0, len(names), len(x)), rng.uniform(0.1, 10, len(x)), rng.choice([-1, 1], len(x)))
    np.testing.assert_array_equal(with_kernels(host, execute.apply_image_ops, x, *args),
                                  generic(execute.apply_image_ops, x, *args))


def patch_plan(n, h, w, cfg, seed, pixel_op=None):
    """A plan whose chains are all patch-level with t steps; ``pixel_op`` forces one op everywhere."""
    plan = draw_plan(n, h, w, cfg, seed)
    fields = dict(kind=np.full((n, cfg.k), PATCH_CHAIN), n_ops=np.full((n, cfg.k), cfg.t))
    if pixel_op is not None:
        fields["pixel_op"] = np.full_like(plan.pixel_op, PIXEL_OPS.index(pixel_op))
    return type(plan)(**{**plan.__dict__, **fields})


def patch_steps(plan, x, z, chains):
    """Every patch step of ``plan`` through ``execute._patch_step``, in place on ``chains``."""
    n, k = plan.batch_size, plan.k
    sample_of = np.repeat(np.arange(n), k)
    for j in range(plan.t):
        execute._patch_step(chains, x, z, plan, np.arange(n * k), j, sample_of, execute.array_module(chains))
    return chains


@pytest.mark.parametrize("pixel_op", PIXEL_OPS)
@pytest.mark.parametrize("cfg", [IPMixConfig.imagenet(), IPMixConfig.cifar(beta=0.5)], ids=["imagenet", "cifar"])
def test_patch_step_matches_numpy(host, pixel_op, cfg):
    h, w = 48, 40
    x, z = images(h, w, count=16), images(h, w, count=16, seed=5)[::-1].copy()
    plan = patch_plan(16, h, w, cfg, 6, pixel_op)
    start = np.repeat(x, cfg.k, axis=0)
    want = generic(patch_steps, plan, x, z, start.copy())
    got = with_kernels(host, patch_steps, plan, x, z, start.copy())
    assert (want != start).any()
    diff = np.abs(got.astype(int) - want)
    if pixel_op == "multiply":   # powf: glibc (harness) vs NumPy's SIMD power, an ulp apart at most
        assert diff.max() <= 1 and (diff > 0).mean() <= 1e-3, (diff.max(), (diff > 0).mean())
    else:
        assert diff.max() == 0


def test_patch_step_one_launch_per_step(host):
    cfg = IPMixConfig.imagenet()
    plan = patch_plan(32, 64, 64, cfg, 7)
    assert len(np.unique(plan.size)) > 3 and plan.from_image.any()
    x = images(64, 64, count=32)
    backend = _kernel_harness.HostKernels()
    with_kernels(backend, patch_steps, plan, x, x[::-1].copy(), np.repeat(x, cfg.k, axis=0))
    # Per step: the A(x) sources (one warp, one LUT launch at most) and one patch launch.
    assert backend.launches.count("ipx_patch") == cfg.t
    assert len(backend.launches) <= 3 * cfg.t


def test_pack_patch_entries_keeps_key_bits():
    ints, floats, offsets = pack_patch_entries([0, 5], [1, 2], [3, 4], [5, 6], [2, 7], [4, 3], [0, 3],
                                               [0.5, 1.5], [-0.5, 0.25], [0.1, 0.9],
                                               np.array([1, 2 ** 32 - 1], np.uint32))
    assert ints.dtype == np.int32 and ints.shape == (2, 8) and floats.dtype == np.float32
    assert ints.view(np.uint32)[1, 7] == 2 ** 32 - 1
    np.testing.assert_array_equal(offsets, [0, 24, 24 + 63])


# ------------------------------------------------------------------------------ whole plans

@pytest.mark.parametrize("cfg", [IPMixConfig.imagenet(), IPMixConfig.cifar(),
                                 IPMixConfig.imagenet(all_ops=True, severity=10)],
                         ids=["imagenet", "cifar", "all_ops"])
@pytest.mark.parametrize("shape", [(64, 64), (33, 47)])
def test_execute_plan_kernel_path_matches_numpy(host, cfg, shape):
    """The kernel path of execute.py end to end (final mix included) against the xp-generic path."""
    h, w = shape
    x, z = images(h, w, count=24), images(h, w, count=24, seed=9)[::-1].copy()
    plan = draw_plan(24, h, w, cfg, 11)
    want = generic(execute.execute_plan, plan, x, z)
    got = with_kernels(host, execute.execute_plan, plan, x, z)
    assert got.dtype == np.float32 and got.shape == want.shape
    diff = np.abs(got - want)
    # Bit-exact but for multiply's powf (one grey level in a chain, weighted by m * w_c <= 1).
    assert diff.max() <= 1 and (diff > 0).mean() <= 1e-3, (diff.max(), (diff > 0).mean())


def test_execute_plan_kernel_path_close_to_numpy_backend(host):
    """What tests/test_cupy.py asserts of CuPy against the NumPy backend (PIL warps), here on the CPU."""
    for cfg in (IPMixConfig.imagenet(), IPMixConfig.cifar(), IPMixConfig.imagenet(all_ops=True)):
        x, z = photos(64, 64, count=32), photos(64, 64, count=33)[1:]
        plan = draw_plan(32, 64, 64, cfg, 3)
        diff = np.abs(with_kernels(host, execute.execute_plan, plan, x, z) - execute.execute_plan(plan, x, z))
        assert diff.max() <= 1.0 and diff.mean() < 1e-2


def test_final_mix_bit_exact(host):
    """Plans with no ops at all leave only the final mix: must equal NumPy's to the bit."""
    cfg = IPMixConfig.imagenet()
    plan = draw_plan(16, 24, 20, cfg, 12)
    plan = type(plan)(**{**plan.__dict__, "n_ops": np.zeros_like(plan.n_ops)})
    x = images(24, 20, count=16)
    chains = np.random.default_rng(3).integers(0, 256, (16 * cfg.k, 24, 20, 3), dtype=np.uint8)
    got = host.final_mix(x, chains, plan.m, plan.weights)
    # The NumPy formula of execute_plan on the same chains.
    m = plan.m.astype(np.float32).reshape(-1, 1, 1, 1)
    wts = plan.weights.astype(np.float32).reshape(16, cfg.k, 1, 1, 1)
    want = (1 - m) * x
    for c in range(cfg.k):
        want += (m * wts[:, c]) * chains.reshape(16, cfg.k, 24, 20, 3)[:, c]
    np.testing.assert_array_equal(got, np.clip(want, 0, 255))
    np.testing.assert_array_equal(with_kernels(host, execute.execute_plan, plan, x, x),
                                  execute.execute_plan(plan, x, x))

"""The array executor: a plan (IPMix, AugMix or PixMix: one engine) on a whole batch with NumPy (or
CuPy, the same code with ``xp``).

This is the reference every compiled executor is checked against, and the CPU executor. The batch is
processed step by step over all N*k chains at once. Within a step, samples are grouped by what they
do (image-level op, patch size and pixel op), so the number of array operations per batch depends on
the config (t, number of ops and patch sizes), never on the batch size: no per-sample Python loop.
Images are (N, H, W, 3) uint8 HWC 0..255; chains stay uint8 between steps, as in the reference code,
and only the final mix is float32.

Executors: who executes a drawn plan on arrays. One interface (:class:`Executor`), chosen once per
call by :func:`execute_plan`. An executor replays an :class:`~dali_ipmix.plan.IPMixPlan` (every
random decision, drawn on the host) on a batch; executors differ only in where and how, never in what
(``docs/ipmix-spec.md``):

- ``"arrays"``: the array executor below: NumPy on the CPU (the default for NumPy inputs, and the
  reference of every other executor); on CuPy the same array calls.
- ``"cuda"``: the compiled core (``csrc/``) replayed from one plan table with ``2 t + 1`` launches
  per view and no host synchronisation (``table.py``, ``cuda.py``); the default for CuPy inputs.
- inside DALI, the ``fn.ipmix`` backends (``"native"``: the same compiled core as a DALI operator;
  ``"python"``: these executors in a ``python_function``) run them.

Replay a plan on another executor::

    >>> import numpy as np
    >>> from dali_ipmix import IPMixConfig, ipmix_batch
    >>> x = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    >>> out, plan = ipmix_batch(x, x[::-1].copy(), IPMixConfig.cifar(), rng=0, return_plan=True)
    >>> again = get_executor("arrays", x).execute(plan, x, x[::-1].copy())
    >>> bool((again == out).all())
    True
"""

from __future__ import annotations

import warnings
from typing import Protocol

import numpy as np

from .arrays import array_module, nvtx_range
from .ops import AFFINE, IMAGE, IMAGE_OPS, LUT
from .plan import IMAGE_CHAIN, PATCH_CHAIN, PIXEL_OPS, IPMixPlan


def execute_plan(plan: IPMixPlan, images, mixing, executor=None, *, backend=None):
    """Runs ``plan`` on ``images`` and ``mixing`` ((N, H, W, 3) uint8, both NumPy or both CuPy).

    ``executor``: None (the array executor for NumPy inputs, the compiled core for CuPy inputs), a
    name from :data:`EXECUTORS` or an executor object (:class:`Executor`); ``backend=`` is its
    deprecated old name.
    Returns (N, H, W, 3) float32 on the inputs' device.
    """
    executor = executor_argument(executor, backend, "execute_plan")
    return get_executor(executor, images).execute(plan, images, mixing)


def execute_arrays(plan: IPMixPlan, images, mixing, warp=None):
    """:func:`execute_plan` with the array executor (NumPy, or CuPy through the same calls).

    ``warp``: the affine warp, ``f(images (M, H, W, 3) uint8, matrices (M, 2, 3)) -> images``;
    default :func:`warp_affine` (PIL's on NumPy); :func:`warp_affine_batched` is the compiled core's
    arithmetic.
    """
    xp = array_module(images)
    n, h, w, _ = images.shape
    if n == 0:
        return images.astype(xp.float32)
    k, t = plan.k, plan.t
    chains = xp.repeat(images[:, None], k, axis=1).reshape(n * k, h, w, 3)
    sample_of = np.repeat(np.arange(n), k)
    flat = lambda a: a.reshape(n * k, -1)  # noqa: E731 - (N, k, t) -> (N*k, t)
    image_steps, patch_steps = flat(plan.active(IMAGE_CHAIN)), flat(plan.active(PATCH_CHAIN))

    rows = np.flatnonzero(plan.start.ravel())
    if rows.size:   # chains that start from A(x): one fresh image-level op on x
        d_rows = xp.asarray(rows)
        with nvtx_range("chain_start", xp):
            chains[d_rows] = apply_image_ops(
                images[xp.asarray(sample_of[rows])], plan.op_names, plan.start_op.ravel()[rows],
                plan.start_level.ravel()[rows], plan.start_sign.ravel()[rows], warp)
    for j in range(min(t, int(plan.n_ops.max(initial=0)))):
        rows = np.flatnonzero(image_steps[:, j])
        if rows.size:
            d_rows = xp.asarray(rows)
            with nvtx_range(f"image_step{j}", xp):
                chains[d_rows] = apply_image_ops(
                    chains[d_rows], plan.op_names, flat(plan.op)[rows, j], flat(plan.level)[rows, j],
                    flat(plan.sign)[rows, j], warp)
        rows = np.flatnonzero(patch_steps[:, j])
        if rows.size:
            with nvtx_range(f"patch_step{j}", xp):
                _patch_step(chains, images, mixing, plan, rows, j, sample_of, xp, warp)

    chains = chains.reshape(n, k, h, w, 3)
    weights = xp.asarray(plan.weights, dtype=xp.float32).reshape(n, k, 1, 1, 1)
    m = xp.asarray(plan.m, dtype=xp.float32).reshape(n, 1, 1, 1)
    out = images.astype(xp.float32)
    out *= 1 - m
    term = xp.empty_like(out)
    for c in range(k):  # k in-place passes, not a (N, k, H, W, 3) float temporary
        xp.multiply(chains[:, c], m * weights[:, c], out=term)
        out += term
    return xp.clip(out, 0, 255, out=out)   # float32 weights sum to 1 only within rounding


# ----------------------------------------------------------------------------- executors

class Executor(Protocol):
    """Executes plans. ``images``/``mixing``: (N, H, W, 3) uint8 arrays of the executor's kind."""

    name: str

    def execute(self, plan: IPMixPlan, images, mixing):
        """(N, H, W, 3) float32, 0..255, on the inputs' device."""


class ArrayExecutor:
    """The array executor (:func:`execute_arrays`) on NumPy or CuPy inputs (PIL's C warp on NumPy)."""

    name = "arrays"

    def execute(self, plan, images, mixing):
        return execute_arrays(plan, images, mixing)


class CudaExecutor:
    """The compiled core on CUDA through CuPy (``cuda.cuda_executor``); CuPy inputs only."""

    name = "cuda"

    def execute(self, plan, images, mixing):
        if array_module(images) is np:
            raise TypeError("executor 'cuda' runs on CuPy arrays, got NumPy inputs; use executor='arrays' "
                            "(or None) for NumPy, or move the batch to the GPU with cupy.asarray")
        from .cuda import cuda_executor
        with nvtx_range("execute_table", array_module(images)):
            return cuda_executor()(plan, images, mixing)


EXECUTORS = {"arrays": ArrayExecutor(), "cuda": CudaExecutor()}


def get_executor(executor, images) -> Executor:
    """The executor for ``executor`` (None, a name from :data:`EXECUTORS`, or an object with
    ``execute``); None picks ``"arrays"`` for NumPy ``images`` and ``"cuda"`` for CuPy ones."""
    if executor is None:
        return EXECUTORS["arrays" if array_module(images) is np else "cuda"]
    if isinstance(executor, str):
        try:
            return EXECUTORS[executor]
        except KeyError:
            raise ValueError(f"executor={executor!r} is unknown: use one of {sorted(EXECUTORS)} or None"
                             ) from None
    if not callable(getattr(executor, "execute", None)):
        raise TypeError(f"executor must be None, a name from {sorted(EXECUTORS)} or an object with an "
                        f"execute(plan, images, mixing) method, got {type(executor).__name__}")
    return executor


def executor_argument(executor, backend, where: str):
    """``executor``, or the deprecated ``backend=`` spelling of it (with a DeprecationWarning)."""
    if backend is None:
        return executor
    if executor is not None:
        raise TypeError(f"{where}: pass executor= only (backend= is its deprecated old name)")
    warnings.warn(f"{where}(backend=...) is deprecated: the argument is now called executor= "
                  "('arrays' or 'cuda'); backend= names the DALI operator's 'native' / 'python' only",
                  DeprecationWarning, stacklevel=3)
    return backend


# ------------------------------------------------------------------------------ image level

def apply_image_ops(images, op_names, op_ids, levels, signs, warp=None):
    """Applies one image-level op per sample: ``op_names[op_ids[i]]`` to ``images[i]``.

    ``images`` (M, H, W, 3) uint8; ``op_ids``, ``levels``, ``signs`` host arrays of shape (M,);
    ``warp`` as in :func:`execute_arrays`.
    Returns a new (M, H, W, 3) uint8 array. One group of array operations per op family.
    """
    xp = array_module(images)
    count, h, w, _ = images.shape
    ops = [IMAGE_OPS[name] for name in op_names]
    op_ids = np.asarray(op_ids)
    family = np.array([ops[i].family for i in op_ids]) if count else np.zeros(0, str)
    params = np.zeros(count)
    for i in np.unique(op_ids):
        sel = op_ids == i
        params[sel] = ops[i].params(np.asarray(levels)[sel], np.asarray(signs)[sel], h, w)
    out = images.copy()

    lut_rows = np.flatnonzero(family == LUT)
    if lut_rows.size:
        luts = xp.empty((lut_rows.size, 3, 256), dtype=xp.uint8)
        for i in np.unique(op_ids[lut_rows]):
            sub = np.flatnonzero(op_ids[lut_rows] == i)
            luts[xp.asarray(sub)] = ops[i].fn(xp.asarray(params[lut_rows[sub]]),
                                              images[xp.asarray(lut_rows[sub])], xp)
        out[xp.asarray(lut_rows)] = apply_luts(images[xp.asarray(lut_rows)], luts)

    aff_rows = np.flatnonzero(family == AFFINE)
    if aff_rows.size:
        mats = np.empty((aff_rows.size, 2, 3))
        for i in np.unique(op_ids[aff_rows]):
            sub = op_ids[aff_rows] == i
            mats[sub] = ops[i].fn(params[aff_rows[sub]], h, w)
        d_rows = xp.asarray(aff_rows)
        out[d_rows] = (warp or warp_affine)(images[d_rows], mats)

    for i in np.unique(op_ids[family == IMAGE]):
        rows = np.flatnonzero(op_ids == i)
        d_rows = xp.asarray(rows)
        out[d_rows] = ops[i].fn(xp.asarray(params[rows]), images[d_rows], xp)
    return out


def apply_luts(images, luts):
    """``out[m, y, x, c] = luts[m, c, images[m, y, x, c]]``; (M, H, W, 3) uint8, luts (M, 3, 256) uint8."""
    xp = array_module(images)
    count = images.shape[0]
    if xp is np:   # per image and channel: a 256-entry take beats one int64-indexed gather on a CPU
        out = np.empty_like(images)
        for i in range(count):
            for c in range(3):
                np.take(luts[i, c], images[i, ..., c], out=out[i, ..., c])
        return out
    base = (xp.arange(count, dtype=xp.int64)[:, None, None, None] * 3
            + xp.arange(3, dtype=xp.int64)) * 256
    return luts.reshape(-1)[base + images]


def warp_affine(images, matrices):
    """Bilinear affine warp with black fill, PIL's ``Image.transform(AFFINE, BILINEAR)`` convention.

    ``images`` (M, H, W, 3) uint8; ``matrices`` (M, 2, 3) host float64 maps output pixel centres
    (u + 0.5, v + 0.5) to input points; a point outside [0, W) x [0, H) gives black; neighbours at
    the edge are clamped. On NumPy each image goes through PIL's C warp (the reference itself, and
    several times faster on a CPU than any whole-batch NumPy formulation); on CuPy
    :func:`warp_affine_batched` (the compiled core's arithmetic).
    """
    xp = array_module(images)
    if xp is np:
        return _warp_affine_cpu(images, np.asarray(matrices, np.float64))
    return warp_affine_batched(images, matrices)


def _warp_affine_cpu(images, matrices):
    """The NumPy executor's warp: pixel-exact maps (identity, integer shifts, flips: half of the
    geometric ops) as array copies, the rest through PIL's C code, one image at a time."""
    from PIL import Image
    _, h, w, _ = images.shape
    out = np.zeros_like(images)
    for i, ((a, b, c), (d, e, f)) in enumerate(matrices):
        if b == d == 0 and abs(a) == abs(e) == 1 and c == np.round(c) and f == np.round(f):
            rows, cols = _exact_axis_map(e, int(f), h), _exact_axis_map(a, int(c), w)
            if rows and cols:
                out[i][rows[0], cols[0]] = images[i][rows[1], cols[1]]
        else:
            out[i] = np.asarray(Image.fromarray(images[i]).transform(
                (w, h), Image.Transform.AFFINE, (a, b, c, d, e, f), resample=Image.Resampling.BILINEAR))
    return out


def warp_affine_batched(images, matrices):
    """:func:`warp_affine` as one gather-based pass over the batch, written for NumPy and CuPy alike."""
    xp = array_module(images)
    count, h, w, _ = images.shape
    mat = xp.asarray(matrices, dtype=xp.float32)
    u = xp.arange(w, dtype=xp.float32) + 0.5
    v = xp.arange(h, dtype=xp.float32) + 0.5
    # Each coordinate is a row term (M, H, 1) plus a column term (M, 1, W).
    xs = (mat[:, 0, 1, None] * v + mat[:, 0, 2, None])[:, :, None] + mat[:, 0, 0, None, None] * u
    ys = (mat[:, 1, 1, None] * v + mat[:, 1, 2, None])[:, :, None] + mat[:, 1, 0, None, None] * u
    valid = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
    xs, ys = xs - 0.5, ys - 0.5
    x0, y0 = xp.floor(xs), xp.floor(ys)
    dx, dy = (xs - x0)[..., None], (ys - y0)[..., None]
    x0, y0 = x0.astype(xp.int64), y0.astype(xp.int64)
    xa, xb = xp.clip(x0, 0, w - 1), xp.clip(x0 + 1, 0, w - 1)
    base = xp.arange(count, dtype=xp.int64).reshape(count, 1, 1) * (h * w)
    row_a, row_b = base + xp.clip(y0, 0, h - 1) * w, base + xp.clip(y0 + 1, 0, h - 1) * w
    pix = images.reshape(-1, 3)
    at = lambda rows, cols: pix[rows + cols].astype(xp.float32)  # noqa: E731
    p00, p10 = at(row_a, xa), at(row_b, xa)
    top = p00 + (at(row_a, xb) - p00) * dx
    bottom = p10 + (at(row_b, xb) - p10) * dx
    val = top + (bottom - top) * dy
    val = xp.clip(xp.floor(val), 0, 255).astype(xp.uint8)   # PIL truncates: (UINT8) cast
    return xp.where(valid[..., None], val, xp.uint8(0))


def _exact_axis_map(a, c, n):
    """(output slice, input slice) along one axis for the map u -> a * (u + 0.5) + c with a = +-1 and
    integer c (PIL samples at ``that - 0.5``, an integer); None when no output pixel lands inside."""
    if a == 1:    # input u + c
        u0, u1 = max(0, -c), min(n, n - c)
        return (slice(u0, u1), slice(u0 + c, u1 + c)) if u0 < u1 else None
    u0, u1 = max(0, c - n), min(n, c)   # input c - 1 - u, read backwards
    stop = c - 1 - u1
    return (slice(u0, u1), slice(c - 1 - u0, stop if stop >= 0 else None, -1)) if u0 < u1 else None


# ------------------------------------------------------------------------------ patch level

def _patch_step(chains, images, mixing, plan, rows, j, sample_of, xp, warp):
    """Patch-mixes step ``j`` of the chains ``rows`` (host indices into N*k) in place."""
    n_k = chains.shape[0]
    field = lambda a: a.reshape(n_k, -1)[rows, j]  # noqa: E731
    size, op = field(plan.size), field(plan.pixel_op)
    from_image = field(plan.from_image)
    augmented = None
    source_of = sample_of[rows].copy()
    if from_image.any():
        # A(x): one fresh image-level op on the ORIGINAL image, stacked behind the mixing pictures.
        fi = np.flatnonzero(from_image)
        augmented = apply_image_ops(images[xp.asarray(sample_of[rows[fi]])], plan.op_names,
                                    field(plan.src_op)[fi], field(plan.src_level)[fi],
                                    field(plan.src_sign)[fi], warp)
        source_of[fi] = mixing.shape[0] + np.arange(fi.size)
    top, left = field(plan.top), field(plan.left)
    rect_h, rect_w = field(plan.rect_h), field(plan.rect_w)
    wa, wb, p, keys = field(plan.wa), field(plan.wb), field(plan.p), field(plan.mask_key)

    whole = (rect_h == chains.shape[1]) & (rect_w == chains.shape[2])
    sources = None   # the mixing pictures with A(x) behind them, for windows

    for s in np.unique(size):
        for o in np.unique(op[size == s]):
            sel = np.flatnonzero((size == s) & (op == o))
            if whole[sel].all():   # whole-image patches (PixMix's): rows, no window to gather
                dst = xp.asarray(rows[sel])
                b = _whole_sources(mixing, augmented, source_of[sel], xp)
                chains[dst] = pixel_mix(PIXEL_OPS[o], chains[dst], b, wa[sel], wb[sel], p[sel], keys[sel])
                continue
            if sources is None:
                sources = mixing if augmented is None else xp.concatenate([mixing, augmented])
            # The group's window: its rectangles' largest height and width from each corner (at most
            # s x s; a whole-image patch is H x W).
            gh, gw = int(rect_h[sel].max()), int(rect_w[sel].max())
            ri = xp.asarray(top[sel])[:, None] + xp.arange(gh)
            ci = xp.asarray(left[sel])[:, None] + xp.arange(gw)
            win = (ri[:, :, None], ci[:, None, :])
            dst = xp.asarray(rows[sel])[:, None, None]
            a = chains[(dst,) + win]
            b = sources[(xp.asarray(source_of[sel])[:, None, None],) + win]
            mixed = pixel_mix(PIXEL_OPS[o], a, b, wa[sel], wb[sel], p[sel], keys[sel])
            inside = ((xp.arange(gh)[None, :] < xp.asarray(rect_h[sel])[:, None])[:, :, None]
                      & (xp.arange(gw)[None, :] < xp.asarray(rect_w[sel])[:, None])[:, None, :])
            chains[(dst,) + win] = xp.where(inside[..., None], mixed, a)


def _whole_sources(mixing, augmented, source_of, xp):
    """The source images ``source_of`` (host indices into the mixing pictures, then into
    ``augmented`` past them), gathered without stacking the two."""
    n = mixing.shape[0]
    from_mixing = source_of < n
    if from_mixing.all():
        return mixing[xp.asarray(source_of)]
    out = xp.empty((source_of.size,) + mixing.shape[1:], mixing.dtype)
    out[xp.asarray(np.flatnonzero(from_mixing))] = mixing[xp.asarray(source_of[from_mixing])]
    out[xp.asarray(np.flatnonzero(~from_mixing))] = augmented[xp.asarray(source_of[~from_mixing] - n)]
    return out


def pixel_mix(op, a, b, wa, wb, p, keys):
    """One pixel-level op on windows ``a`` (the chain) and ``b`` (the source), (M, S, S, 3) uint8.

    Computed on [0, 1] float32 as the spec says, clamped and rounded back to uint8. ``wa``, ``wb``,
    ``p`` (float) and ``keys`` (uint32) are host arrays of shape (M,).
    """
    xp = array_module(a)
    if op in ("add", "multiply"):
        # Each term depends on one uint8 value and the sample's weight: a 256-entry table per sample
        # (the same float32 expression for every value), looked up per pixel, instead of the
        # expression on every pixel.
        w = lambda v: xp.asarray(v, dtype=xp.float32).reshape(-1, 1)  # noqa: E731
        v = xp.arange(256, dtype=xp.float32)[None, :] / 255
        if op == "add":
            ta, tb = w(wa) * (2 * v - 1), w(wb) * (2 * v - 1)
            out = (_lookup(ta, a, xp) + _lookup(tb, b, xp) + 1) / 2
        else:
            ta, tb = (2 * v) ** w(wa), xp.maximum(2 * v, xp.float32(1e-37)) ** w(wb)
            out = _lookup(ta, a, xp) * _lookup(tb, b, xp) / 2
    elif op in ("random_pixels", "random_elems"):
        channels = 1 if op == "random_pixels" else 3
        per = xp.asarray(p, dtype=xp.float32).reshape(-1, 1, 1, 1)
        noise = mask_noise(xp.asarray(keys, dtype=xp.uint32), a.shape[1], a.shape[2], channels, xp)
        out = xp.where(noise < per, a.astype(xp.float32) / 255, b.astype(xp.float32) / 255)
    else:
        raise ValueError(f"unknown pixel-level op {op!r}; allowed: {PIXEL_OPS}")
    return to_uint8(out, xp)


def _lookup(table, values, xp):
    """``table[m, values[m, ...]]``: (M, 256) float32 per-sample tables indexed by (M, ...) uint8."""
    flat = values.reshape(values.shape[0], -1).astype(xp.intp)
    return xp.take_along_axis(table, flat, axis=1).reshape(values.shape)


def to_uint8(values, xp):
    """[0, 1] floats -> uint8 with clamping and round-to-nearest (the spec's deviation from the paper)."""
    return xp.floor(xp.clip(values, 0, 1) * 255 + 0.5).astype(xp.uint8)


def mask_noise(keys, height, width, channels, xp):
    """U(0, 1) noise (M, height, width, channels) float32 from a counter-based hash of (key, y, x, c).

    The same bits on NumPy and CuPy, so the random masks of a plan are executor-independent.
    """
    r = xp.arange(height, dtype=xp.uint32)[:, None, None]
    c = xp.arange(width, dtype=xp.uint32)[None, :, None]
    ch = xp.arange(channels, dtype=xp.uint32)[None, None, :]
    counter = (r * xp.uint32(65536) + c) * xp.uint32(4) + ch
    bits = _lowbias32(counter[None] ^ _lowbias32(keys, xp).reshape(-1, 1, 1, 1), xp)
    return (bits >> xp.uint32(8)).astype(xp.float32) * xp.float32(1.0 / (1 << 24))


def _lowbias32(x, xp):
    """Chris Wellons' lowbias32 integer hash on uint32 arrays (wrapping arithmetic)."""
    x = x.astype(xp.uint32)
    x = x ^ (x >> xp.uint32(16))
    x = x * xp.uint32(0x7FEB352D)
    x = x ^ (x >> xp.uint32(15))
    x = x * xp.uint32(0x846CA68B)
    return x ^ (x >> xp.uint32(16))

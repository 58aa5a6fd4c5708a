"""The random plan of one batch: every random decision, drawn on the host.

A plan is a handful of small NumPy arrays indexed by sample ``n < N``, chain ``c < k`` and step
``j < t``; executors (NumPy, CuPy, the per-image PIL reference) only execute it. The drawer reads the
config's :class:`~dali_ipmix.config.Engine` (``config.engine``) alone, so IPMix, AugMix and PixMix are
plans of one shape. Each sample's plan is made from ``laws.plan_draws(k, t, chain_start)`` uniforms,
one per slot of ``laws.STEP_DRAWS`` (and the header, and ``laws.START_DRAWS``): entries that a sample
does not use (steps past its chain's op count, patch fields of an image-level chain, ...) are drawn
anyway, so that the plan's shape and the draws' places depend on the engine only. The native
operator's drawer (``csrc/ipx_plan.h``) makes the same plan from the same uniforms with the same
float64 arithmetic, so a :class:`~dali_ipmix.keys.KeyedGenerator` gives every backend the same plan,
bit for bit.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Tuple

import numpy as np

from . import checks
from .config import CHAIN_KINDS, MixConfig
from .laws import PIXEL_OPS, START_DRAWS, STEP_DRAWS, plan_draws

IMAGE_CHAIN, PATCH_CHAIN = 0, 1


@dataclasses.dataclass(frozen=True)
class IPMixPlan:
    """All random decisions of one batch. Shapes: (N,) per sample, (N, k) per chain, (N, k, t) per step.

    Per sample: ``weights`` (N, k) Dirichlet(1..1) chain weights, ``m`` (N,) Beta(1, 1) blend of the mix
    with the clean image.
    Per chain: ``kind`` (N, k) 0 = image level, 1 = patch level; ``n_ops`` (N, k) in 0..t.
    Image-level step: ``op`` index into ``op_names``, ``level`` in [0.1, severity), ``sign`` +-1.
    Patch-level step: ``size`` patch edge in pixels, ``top``/``left`` corner, ``rect_h``/``rect_w``
    height and width of the rectangle in pixels (<= size; the image size is ``image_shape``), ``pixel_op`` index into ``PIXEL_OPS``, ``wa``/``wb`` mixing weights (add,
    multiply), ``p`` mask threshold (random_pixels/elems), ``mask_key`` uint32 seed of the mask noise,
    ``from_image`` whether the source is A(x) instead of z, and ``src_op``/``src_level``/``src_sign``
    for that one fresh image-level op. A whole-image patch (``Engine.whole_image_only``) has
    ``top = left = 0``, ``rect_h, rect_w = H, W`` and ``size`` the shorter side.
    Chain start (``chain_start``: the engine draws one): ``start`` (N, k) whether the chain starts
    from A(x), one fresh image-level op on x (``start_op``/``start_level``/``start_sign``), instead of
    x; without one, ``start`` is all False.
    """

    op_names: Tuple[str, ...]
    image_shape: Tuple[int, int]          # (H, W) the plan was drawn for
    weights: np.ndarray
    m: np.ndarray
    kind: np.ndarray
    n_ops: np.ndarray
    op: np.ndarray
    level: np.ndarray
    sign: np.ndarray
    size: np.ndarray
    top: np.ndarray
    left: np.ndarray
    rect_h: np.ndarray
    rect_w: np.ndarray
    pixel_op: np.ndarray
    wa: np.ndarray
    wb: np.ndarray
    p: np.ndarray
    mask_key: np.ndarray
    from_image: np.ndarray
    src_op: np.ndarray
    src_level: np.ndarray
    src_sign: np.ndarray
    start: np.ndarray
    start_op: np.ndarray
    start_level: np.ndarray
    start_sign: np.ndarray
    chain_start: bool = False

    @property
    def batch_size(self) -> int:
        return int(self.m.shape[0])

    @property
    def k(self) -> int:
        return int(self.kind.shape[1])

    @property
    def t(self) -> int:
        return int(self.op.shape[2])

    @property
    def table_steps(self) -> int:
        """Plan-table rows per chain (``table.pack_plan``): ``t``, plus the start row with a chain start."""
        return self.t + int(self.chain_start)

    def active(self, chain_kind: int) -> np.ndarray:
        """(N, k, t) bool: steps that are executed by chains of ``chain_kind``."""
        steps = np.arange(self.t)[None, None, :] < self.n_ops[:, :, None]
        return steps & (self.kind == chain_kind)[:, :, None]

    def rows(self, start: int, stop: int) -> "IPMixPlan":
        """The plan of samples ``start:stop`` (e.g. one chunk of a batch run on its own thread)."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name, value in fields.items():
            if isinstance(value, np.ndarray):
                fields[name] = value[start:stop]
        return IPMixPlan(**fields)

    def sample(self, n: int) -> "IPMixPlan":
        """The plan of sample ``n`` alone (a batch of one), e.g. for a per-image executor."""
        return self.rows(n, n + 1)

    def summary(self) -> str:
        """A short human-readable description: chain kinds, op counts and op frequencies."""
        img, pat = self.active(IMAGE_CHAIN), self.active(PATCH_CHAIN)
        ops = np.bincount(self.op[img], minlength=len(self.op_names))
        lines = [f"IPMixPlan: N={self.batch_size} k={self.k} t={self.t} image={self.image_shape}"
                 + (f", {int(self.start.sum())} chains start from A(x)" if self.chain_start else ""),
                 f"  chains: {int((self.kind == IMAGE_CHAIN).sum())} image-level, "
                 f"{int((self.kind == PATCH_CHAIN).sum())} patch-level; "
                 f"ops per chain {np.bincount(self.n_ops.ravel(), minlength=self.t + 1).tolist()}",
                 "  image ops: " + ", ".join(f"{n}={c}" for n, c in zip(self.op_names, ops)),
                 "  patch steps: " + ", ".join(
                     f"{n}={c}" for n, c in zip(PIXEL_OPS, np.bincount(self.pixel_op[pat], minlength=4))),
                 f"  patch sizes: {dict(zip(*np.unique(self.size[pat], return_counts=True)))}"]
        return "\n".join(lines)

    def __repr__(self):
        return self.summary()


def as_generator(rng) -> np.random.Generator:
    from .keys import KeyedGenerator
    if isinstance(rng, (np.random.Generator, KeyedGenerator)):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, (bool, np.bool_)):
        return np.random.default_rng(checks.integer("rng", rng, 0, note=" (a seed)"))
    raise TypeError(f"rng must be a numpy.random.Generator, a keys.KeyedGenerator or an int seed, got {type(rng).__name__}")


def draw_plan(batch_size: int, height: int, width: int, config: MixConfig, rng) -> IPMixPlan:
    """Draws every random decision of a batch of ``batch_size`` images of ``height x width`` for
    ``config`` (any :class:`~dali_ipmix.config.MixConfig`): one ``rng.random((batch_size,
    laws.plan_draws(k, t, chain_start)))`` call, then :func:`plan_from_uniforms`."""
    rng = as_generator(rng)
    e = config.engine
    u = rng.random((int(batch_size), plan_draws(e.k, e.t, e.chain_start)))
    return plan_from_uniforms(u, height, width, config)


def plan_from_uniforms(u, height: int, width: int, config: MixConfig) -> IPMixPlan:
    """The plan of ``u`` ((N, ``laws.plan_draws(k, t, chain_start)``) uniforms on [0, 1), one row per
    sample), as ``csrc/ipx_plan.h``'s ``ipx_draw_sample`` makes it from ``config.engine``: the same
    formulas, in float64, in the same order; ``log`` and ``pow`` from the C library (Python's
    ``math``), ``beta`` and ``severity`` as the float32 values the native operator receives."""
    e = config.engine
    u = np.asarray(u, np.float64)
    n, k, t = u.shape[0], e.k, e.t
    steps = max(t, 1)   # t = 0 keeps one unused step so every array has a real shape
    if u.shape != (n, plan_draws(k, t, e.chain_start)):
        raise ValueError(f"plan_from_uniforms: u has shape {u.shape}; expected "
                         f"({n}, {plan_draws(k, t, e.chain_start)})")
    beta, severity = float(np.float32(e.beta)), float(np.float32(e.severity))
    n_image_ops = len(e.op_names)
    sizes = np.asarray(e.patch_sizes_for(height, width), np.int64)

    if k > 1:   # Dirichlet(1, ..., 1): normalised Exp(1) draws, summed in chain order
        ex = -_libm(math.log, 1.0 - u[:, :k])
        total = np.zeros(n)
        for c in range(k):
            total = total + ex[:, c]
        weights = ex / total[:, None]
    else:
        weights = np.ones((n, 1))
    m = u[:, k].copy() if e.final_blend else np.ones(n)   # Beta(1, 1), or no blend: the mix itself
    kind = _uniform_int(u[:, k + 1:2 * k + 1], *CHAIN_KINDS[e.chain_kinds])
    n_ops = _uniform_int(u[:, 2 * k + 1:3 * k + 1], e.min_ops, t)

    end = 3 * k + 1 + k * steps * len(STEP_DRAWS)
    slots = u[:, 3 * k + 1:end].reshape(n, k, steps, len(STEP_DRAWS))
    d = {name: slots[..., i] for i, name in enumerate(STEP_DRAWS)}
    op = _uniform_int(d["op"], 0, n_image_ops - 1)
    level = 0.1 + (severity - 0.1) * d["level"]
    sign = np.where(d["sign"] < 0.5, -1, 1)
    size = sizes[_uniform_int(d["size"], 0, len(sizes) - 1)]
    square = d["square"] < 0.5
    rect_w = np.where(square, size, _uniform_int(d["rect_w"], 2, size))
    rect_h = np.where(square, size, _uniform_int(d["rect_h"], 2, size))
    left = _uniform_int(d["left"], 0, int(width) - size)
    top = _uniform_int(d["top"], 0, int(height) - size)
    if e.whole_image_only:   # the patch is the whole image
        size = np.full(size.shape, min(int(height), int(width)), np.int64)
        rect_h, rect_w = np.full(size.shape, int(height), np.int64), np.full(size.shape, int(width), np.int64)
        top, left = np.zeros(size.shape, np.int64), np.zeros(size.shape, np.int64)
    pixel_op = _uniform_int(d["pixel_op"], 0, e.pixel_ops - 1)
    # get_ab(beta): (Beta(beta, 1), Beta(1, beta)) or (1 + Beta(1, beta), -Beta(1, beta)), by
    # inversion: Beta(beta, 1) = (1 - U)^(1/beta) =: P, Beta(1, beta) = 1 - P.
    pa = _libm(math.pow, 1.0 - d["wa"], 1.0 / beta)
    pb = _libm(math.pow, 1.0 - d["wb"], 1.0 / beta)
    first = d["ab"] < 0.5
    wa = np.where(first, pa, 1.0 + (1.0 - pa))
    wb = np.where(first, 1.0 - pb, -(1.0 - pb))
    p = d["p"].copy()
    mask_key = (d["mask_key"] * 4294967296.0).astype(np.uint64).astype(np.uint32)
    from_image = (d["from_image"] < 0.5) & bool(e.source_from_image)
    src_op = _uniform_int(d["src_op"], 0, n_image_ops - 1)
    src_level = 0.1 + (severity - 0.1) * d["src_level"]
    src_sign = np.where(d["src_sign"] < 0.5, -1, 1)

    if e.chain_start:   # per chain, after every other draw
        s = {name: u[:, end + i::len(START_DRAWS)] for i, name in enumerate(START_DRAWS)}
        start = s["start"] < 0.5
        start_op = _uniform_int(s["start_op"], 0, n_image_ops - 1)
        start_level = 0.1 + (severity - 0.1) * s["start_level"]
        start_sign = np.where(s["start_sign"] < 0.5, -1, 1)
    else:
        start, start_op = np.zeros((n, k), bool), np.zeros((n, k), np.int64)
        start_level, start_sign = np.zeros((n, k)), np.ones((n, k), np.int64)

    return IPMixPlan(
        op_names=e.op_names, image_shape=(int(height), int(width)),
        weights=weights.astype(np.float64), m=m, kind=kind, n_ops=n_ops,
        op=op, level=level, sign=sign, size=size, top=top, left=left, rect_h=rect_h, rect_w=rect_w,
        pixel_op=pixel_op, wa=wa, wb=wb, p=p, mask_key=mask_key, from_image=from_image,
        src_op=src_op, src_level=src_level, src_sign=src_sign, start=start, start_op=start_op,
        start_level=start_level, start_sign=start_sign, chain_start=bool(e.chain_start))


def _uniform_int(u, low, high):
    """Uniform integers in [low, high] (inclusive; ``high`` may be an array): low + floor(U * (high -
    low + 1)), as ``ipx_uniform_int``."""
    span = np.asarray(np.asarray(high) - low + 1, np.float64)
    return low + np.floor(u * span).astype(np.int64)


def _libm(fn, x, *args):
    """``fn`` (``math.log``, ``math.pow``: the C library's, as the compiled drawer calls it) element by
    element; NumPy's own vectorised versions may round differently (SIMD implementations)."""
    x = np.asarray(x, np.float64)
    flat = [fn(v, *args) for v in x.ravel().tolist()]
    return np.asarray(flat, np.float64).reshape(x.shape)

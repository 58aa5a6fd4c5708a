"""The random plan of one IPMix batch: every random decision, drawn on the host by one Generator.

A plan is a handful of small NumPy arrays indexed by sample ``n < N``, chain ``c < k`` and step
``j < t``; backends (NumPy, CuPy, the per-image PIL reference) only execute it. Entries that a
sample does not use (steps past its chain's op count, patch fields of an image-level chain, ...) are
drawn anyway so that the plan's shape and the Generator's consumption depend on (N, k, t) only.
"""

from __future__ import annotations

import dataclasses
from typing import Tuple

import numpy as np

from . import checks
from .config import IPMixConfig

IMAGE_CHAIN, PATCH_CHAIN = 0, 1
PIXEL_OPS = ("add", "multiply", "random_pixels", "random_elems")


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
    for that one fresh image-level op.
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

    @property
    def batch_size(self) -> int:
        return int(self.m.shape[0])

    @property
    def k(self) -> int:
        return int(self.kind.shape[1])

    @property
    def t(self) -> int:
        return int(self.op.shape[2])

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
        lines = [f"IPMixPlan: N={self.batch_size} k={self.k} t={self.t} image={self.image_shape}",
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


def draw_plan(batch_size: int, height: int, width: int, config: IPMixConfig, rng) -> IPMixPlan:
    """Draws every random decision of an IPMix batch of ``batch_size`` images of ``height x width``."""
    rng = as_generator(rng)
    n, k, t = int(batch_size), config.k, config.t
    step = (n, k, max(t, 1))   # t = 0 keeps one unused step so every array has a real shape
    n_image_ops = len(config.op_names)
    sizes = np.asarray(config.patch_sizes_for(height, width))

    weights = rng.dirichlet(np.ones(k), size=n) if k > 1 else np.ones((n, 1))
    m = rng.beta(1.0, 1.0, size=n)
    kind = rng.integers(0, 2, size=(n, k))
    n_ops = rng.integers(0, t + 1, size=(n, k))

    op = rng.integers(0, n_image_ops, size=step)
    level = rng.uniform(0.1, config.severity, size=step)
    sign = rng.choice(np.array([-1, 1]), size=step)

    size = sizes[rng.integers(0, len(sizes), size=step)]
    square = rng.random(step) < 0.5
    rect_w = np.where(square, size, _uniform_int(rng, 2, size, step))
    rect_h = np.where(square, size, _uniform_int(rng, 2, size, step))
    left = _uniform_int(rng, 0, width - size, step)
    top = _uniform_int(rng, 0, height - size, step)
    pixel_op = rng.integers(0, len(PIXEL_OPS), size=step)
    wa, wb = _draw_ab(rng, config.beta, step)
    p = rng.random(step)
    mask_key = rng.integers(0, 2 ** 32, size=step, dtype=np.uint64).astype(np.uint32)
    from_image = (rng.random(step) < 0.5) & bool(config.source_from_image)
    src_op = rng.integers(0, n_image_ops, size=step)
    src_level = rng.uniform(0.1, config.severity, size=step)
    src_sign = rng.choice(np.array([-1, 1]), size=step)

    return IPMixPlan(
        op_names=config.op_names, image_shape=(int(height), int(width)),
        weights=weights.astype(np.float64), m=m, kind=kind, n_ops=n_ops,
        op=op, level=level, sign=sign, size=size, top=top, left=left, rect_h=rect_h, rect_w=rect_w,
        pixel_op=pixel_op, wa=wa, wb=wb, p=p, mask_key=mask_key, from_image=from_image,
        src_op=src_op, src_level=src_level, src_sign=src_sign)


def _uniform_int(rng, low, high, shape):
    """Uniform integers in [low, high] (inclusive) with per-entry ``high``."""
    high = np.broadcast_to(np.asarray(high), shape)
    return low + np.floor(rng.random(shape) * (high - low + 1)).astype(np.int64)


def _draw_ab(rng, beta, shape):
    """The spec's get_ab(beta): (Beta(beta,1), Beta(1,beta)) or (1 + Beta(1,beta), -Beta(1,beta))."""
    first = rng.random(shape) < 0.5
    wa = np.where(first, rng.beta(beta, 1.0, shape), 1.0 + rng.beta(1.0, beta, shape))
    wb = np.where(first, rng.beta(1.0, beta, shape), -rng.beta(1.0, beta, shape))
    return wa, wb

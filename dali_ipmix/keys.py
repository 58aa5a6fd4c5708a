"""Random draws keyed per sample occurrence: the same sample of the same epoch gets the same
augmentation however the data is split into shards and batches, and whatever ran before.

The training pipelines key every random decision of a sample by ``(root, epoch, position)``, where
``position`` is the sample's place in the epoch's global order (:mod:`dali_ipmix.epochs`) and
``root`` comes from the user's seed alone (not the shard). From that 64-bit key, a counter-based
hash gives uniforms for each consumer (``stream``): the crop, the flip, the mixing picture and its
crop, and the IPMix plan of each view. Nothing depends on a generator's state, so a run split over
8 shards of 32 samples draws what one process with batches of 256 draws for the same samples, and a
run resumed at epoch ``e`` draws what an uninterrupted run draws in epoch ``e``.

The hash is SplitMix64's (the words of a key absorbed one by one, as ``ipx_stream`` in
``csrc/ipx_plan.h`` does for the native operator's plans): every function here is vectorised over samples, uint64
arithmetic wrapping mod 2**64. Uniforms have 53 random bits, on [0, 1).

Replay: ``uniforms(sample_keys(root, e, positions), stream, count)`` recomputes any draw, e.g.::

    >>> import numpy as np
    >>> keys = sample_keys(7, epoch=2, positions=np.array([0, 1, 5]))
    >>> u = uniforms(keys, STREAM_FLIP, 1)
    >>> bool((uniforms(keys[2:], STREAM_FLIP, 1) == u[2:]).all())   # row n depends on key n only
    True
"""

from __future__ import annotations

from typing import Callable, Sequence, Tuple

import numpy as np

__all__ = ["sample_keys", "subkeys", "uniforms", "key_chain", "plan_keys", "KeyedGenerator", "SampleDraws", "STREAM_FLIP", "STREAM_MIXING",
           "STREAM_MIXING_CROP", "STREAM_CROP", "STREAM_IPMIX"]

#: The consumers of a sample's key; each gets its own stream of uniforms.
STREAM_FLIP, STREAM_MIXING, STREAM_MIXING_CROP, STREAM_CROP, STREAM_IPMIX = 1, 2, 3, 4, 5

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_START = np.uint64(0x6A09E667F3BCC908)
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64's output function of ``z + golden`` (uint64 arrays, wrapping)."""
    z = z + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def _absorb(state: np.ndarray, word) -> np.ndarray:
    return _mix(state ^ np.asarray(word).astype(np.uint64))


def _as_u64(value, name) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must be integers, got dtype {arr.dtype}")
    # Signed keys (DALI passes int64) keep their 64 bits: -1 is 2**64 - 1.
    return arr.astype(np.int64).view(np.uint64) if arr.dtype.kind == "i" else arr.astype(np.uint64)


def sample_keys(root: int, epoch: int, positions) -> np.ndarray:
    """The key of each sample occurrence: uint64 (N,) from ``(root, epoch, positions[n])``.

    ``root``: a non-negative integer from the seed; ``epoch`` >= 0; ``positions``: int (N,), the
    places of the samples in the epoch's global order."""
    with np.errstate(over="ignore"):
        state = _absorb(np.full(1, _START), _as_u64(int(root), "root"))
        state = _absorb(state, _as_u64(int(epoch), "epoch"))
        return _absorb(np.broadcast_to(state, np.shape(positions)), _as_u64(positions, "positions"))


def key_chain(*words) -> np.ndarray:
    """uint64: the words (integers or arrays, broadcast; signed ones keep their 64 bits) absorbed in
    order from the start state, as ``ipx_stream`` in ``csrc/ipx_plan.h`` absorbs ``(a, b, c)``."""
    arrays = np.broadcast_arrays(*(_as_u64(np.asarray(w), "key words") for w in words))
    with np.errstate(over="ignore"):
        state = np.full(arrays[0].shape, _START)
        for word in arrays:
            state = _absorb(state, word)
    return state


def plan_keys(seed: int, keys=None, batch: int = 0, size: int = 0) -> np.ndarray:
    """uint64 (N,): the keys of a batch's IPMix plans, as the native operator keys them. With ``keys``
    (N integers, ``sample_key``): ``key_chain(seed, keys[n], 2**64 - 1)``; without: ``key_chain(seed,
    batch, n)`` for the ``size`` samples of batch number ``batch``. ``KeyedGenerator(plan_keys(...))``
    then draws view ``v``'s plans with its call ``v + 1``, what ``ipx_stream(..., v)`` draws."""
    if keys is not None:
        return key_chain(int(seed), _as_u64(keys, "keys").reshape(-1), np.uint64(2 ** 64 - 1))
    return key_chain(int(seed), int(batch), np.arange(int(size), dtype=np.uint64))


def subkeys(keys, stream: int) -> np.ndarray:
    """uint64 (N,): the key of consumer ``stream`` for each key (e.g. an IPMix view's plan)."""
    with np.errstate(over="ignore"):
        return _absorb(_as_u64(keys, "keys"), np.uint64(stream))


def uniforms(keys, stream: int, count: int) -> np.ndarray:
    """float64 (N, count) on [0, 1): draw ``j`` of consumer ``stream`` of each key in row ``n``."""
    sub = subkeys(keys, stream)
    with np.errstate(over="ignore"):
        bits = _absorb(sub[:, None], np.arange(int(count), dtype=np.uint64)[None, :])
    return (bits >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


class KeyedGenerator:
    """A part of ``numpy.random.Generator`` (``random``, which :func:`dali_ipmix.draw_plan` calls once
    per plan, and a few laws), with row ``n`` of every draw taken from ``keys[n]`` alone (draw calls
    are counted: call ``c`` is stream ``c``; ``csrc/ipx_plan.h``'s ``ipx_stream`` is call ``view + 1``).

    Every ``size`` must have ``len(keys)`` rows first. Laws by inversion of uniforms: ``beta`` with
    one parameter equal to 1 (``Beta(a, 1) = U ** (1 / a)``), ``dirichlet`` with all-ones alpha
    (normalised exponentials), ``integers`` as ``low + floor(U * (high - low))``. So
    ``draw_plan(n, h, w, config, KeyedGenerator(keys))`` draws sample ``n``'s plan from ``keys[n]``:
    the same plan in any batch, at any position.
    """

    def __init__(self, keys):
        self.keys = _as_u64(keys, "keys").reshape(-1)
        self._calls = 0

    def _u(self, size) -> np.ndarray:
        shape = (size,) if np.ndim(size) == 0 else tuple(size)
        if not shape or shape[0] != len(self.keys):
            raise ValueError(f"KeyedGenerator: size {shape} must start with the number of keys "
                             f"({len(self.keys)}): one row per keyed sample")
        self._calls += 1
        return uniforms(self.keys, self._calls, int(np.prod(shape[1:], dtype=np.int64))).reshape(shape)

    def random(self, size) -> np.ndarray:
        return self._u(size)

    def uniform(self, low=0.0, high=1.0, size=None) -> np.ndarray:
        return low + (high - low) * self._u(size)

    def integers(self, low, high=None, size=None, dtype=np.int64) -> np.ndarray:
        low, high = (0, low) if high is None else (low, high)
        return (low + np.floor(self._u(size) * (high - low))).astype(dtype)

    def choice(self, a: Sequence, size=None) -> np.ndarray:
        a = np.asarray(a)
        return a[np.floor(self._u(size) * len(a)).astype(np.int64)]

    def beta(self, a: float, b: float, size=None) -> np.ndarray:
        u = self._u(size)
        if b == 1.0:
            return u ** (1.0 / a)
        if a == 1.0:
            return 1.0 - u ** (1.0 / b)
        raise NotImplementedError(f"KeyedGenerator.beta({a}, {b}): only Beta(a, 1) and Beta(1, b)")

    def dirichlet(self, alpha, size=None) -> np.ndarray:
        alpha = np.asarray(alpha, np.float64)
        if not (alpha == 1.0).all():
            raise NotImplementedError(f"KeyedGenerator.dirichlet({alpha.tolist()}): only all-ones alpha")
        n = size if np.ndim(size) == 0 else size[0]
        e = -np.log1p(-self._u((n, len(alpha))))
        return e / e.sum(axis=1, keepdims=True)


class SampleDraws:
    """The keyed draws of a training pipeline's batch, as its feed hands them to DALI.

    Args:
        root: the key root (from the seed alone).
        crop_count: uniforms the training crop takes per sample.
        crop_law: ``float64 (N, crop_count)`` uniforms -> ``float64 (N, crop_count)`` crop parameters
            (the crop recipe's ``law``).

    ``draws(epoch, positions)`` returns one array per entry of :attr:`outputs`, each ready for the
    DALI node that takes it (typed and shaped so, to spare the graph slicing and casting nodes):
    ``crop`` float64 (N, crop_count) the crop's parameters; ``flip`` int32 (N,), 1 = mirror (prob.
    1/2); ``mixing_x`` / ``mixing_y`` float32 (N,) the mixing crop's relative anchor on [0, 1) (only
    with ``mixing``: a method without mixing pictures has no mixing crop); ``ipmix_keys`` int64 (N,)
    the augmentation operator's per-sample keys (their 64 bits as int64). Every draw has its own
    stream, so leaving the mixing crop out changes no other draw.
    """

    #: Name and dtype of each array a call returns, in order (with ``mixing``).
    OUTPUTS = dict(crop=np.float64, flip=np.int32, mixing_x=np.float32, mixing_y=np.float32,
                   ipmix_keys=np.int64)

    def __init__(self, root: int, crop_count: int, crop_law: Callable[[np.ndarray], np.ndarray],
                 mixing: bool = True):
        self.root, self.crop_count, self.crop_law = int(root), int(crop_count), crop_law
        self.mixing = bool(mixing)
        self.outputs = dict(self.OUTPUTS) if mixing else \
            {k: v for k, v in self.OUTPUTS.items() if k not in ("mixing_x", "mixing_y")}

    def __call__(self, epoch: int, positions) -> Tuple[np.ndarray, ...]:
        keys = sample_keys(self.root, epoch, positions)
        crop = (self.crop_law(uniforms(keys, STREAM_CROP, self.crop_count)),
                (uniforms(keys, STREAM_FLIP, 1)[:, 0] < 0.5).astype(np.int32))
        mixing = ()
        if self.mixing:
            u = uniforms(keys, STREAM_MIXING_CROP, 2).astype(np.float32)
            mixing = (np.ascontiguousarray(u[:, 0]), np.ascontiguousarray(u[:, 1]))
        return (*crop, *mixing, subkeys(keys, STREAM_IPMIX).view(np.int64))

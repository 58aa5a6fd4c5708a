"""Mixing pictures decoded once and kept in host memory for a training pipeline's life.

Every IPMix sample reads one mixing picture. Decoding it per sample is a large part of a GPU
pipeline's cost (measured in ``docs/performance.md``), yet the set is small and the same every epoch
(PixMix's fractals: about 14,000 pictures, 2.6 GiB decoded at 256 px). So the training pipeline
decodes the set once, with the decoder and resize of its uncached graph run on the CPU (DALI's ``decoders.image`` and
``resize(resize_shorter=side)``), into one host buffer (page-locked for a GPU pipeline, so that it
copies each batch by DMA), and feeds each batch's pictures to DALI as views of it: no
decode, no resize and no host copy per batch; the random crop stays in the pipeline.

    cache = MixingCache.build(files, side=256)        # HWC uint8 RGB, shorter side 256
    cache[i]                                          # picture i: a view, never copied
"""

from __future__ import annotations

import dataclasses
import os
import re
import warnings
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from . import checks
from .extras import progress_bar
from .constants import MIXING_CACHE_MAX_BYTES
from . import files as _files
from .files import decoded_shape

__all__ = ["MixingCache", "DeviceMixingCache", "MixingSet", "prepare_mixing_set", "decoded_shape",
           "estimate_bytes", "MIXING_CACHE_MAX_BYTES", "GPU_DECODED"]

_BUILD_BATCH = 64            # pictures per decoding batch
_PROGRESS_FROM = 2000        # a build of this many pictures shows a progress bar


def estimate_bytes(sizes: Sequence[Optional[Tuple[int, int]]], side: Optional[int]) -> Optional[int]:
    """Bytes the decoded pictures would take, from their ``(width, height)``
    (:func:`dali_ipmix.files.header_sizes`); ``None`` when a size is unknown."""
    if any(s is None for s in sizes):
        return None
    return sum(int(np.prod(decoded_shape(w, h, side))) for w, h in sizes)


class MixingCache:
    """Decoded mixing pictures: ``cache[i]`` is picture ``i`` of ``files`` as HWC uint8 RGB (0..255),
    its shorter side resized to ``side`` (or as decoded when ``side`` is None), a read-only view of
    one buffer that lives as long as the cache.

    Args:
        pictures: the decoded pictures, in ``files`` order (copied into the cache's buffer).
        files: their paths (for messages).
        pin: page-locked memory (for a GPU pipeline: its per-batch copy is then a DMA); needs CUDA
            (falls back to ordinary memory without it). A CPU pipeline leaves it off: pinning would
            start a CUDA context for nothing.
    """

    def __init__(self, pictures: Sequence[np.ndarray], files: Sequence[str] = (), pin: bool = False):
        packer = _Packer(sum(p.nbytes for p in pictures), pin)
        for p in pictures:
            packer.add(p)
        self._adopt(packer, files)

    device = "cpu"   # where the pictures are (DeviceMixingCache: "gpu")

    def _adopt(self, packer: "_Packer", files: Sequence[str]):
        self.files = tuple(files)
        self.nbytes, self._owner, self.pinned = packer.used, packer.owner, packer.pinned
        self._flat = packer.flat()
        self._views = packer.views()

    def __len__(self) -> int:
        return len(self._views)

    def __getitem__(self, i) -> np.ndarray:
        return self._views[i]

    def __repr__(self):
        return (f"MixingCache({len(self)} pictures, {self.nbytes / 2**20:.1f} MiB, "
                f"{'page-locked' if self.pinned else 'pageable'})")

    def to_device(self, device_id: int) -> "DeviceMixingCache":
        """The same pictures in GPU ``device_id``'s memory (one copy, made now)."""
        return DeviceMixingCache(self, device_id)

    @classmethod
    def build(cls, files: Sequence[str], side: Optional[int], num_threads: int = 4,
              progress: Optional[bool] = None, pin: bool = False,
              expected_bytes: Optional[int] = None) -> "MixingCache":
        """Decodes ``files`` with DALI on the CPU (RGB) and resizes their shorter side to ``side``
        (``None``: no resize), in batches over ``num_threads`` threads, each batch straight into the
        cache's buffer (sized from ``expected_bytes``, e.g. :func:`estimate_bytes`, and grown if the
        pictures need more), so the peak memory is the cache plus one batch. ``progress``: a progress
        bar on stderr (default: from 2,000 pictures); ``pin``: as for the constructor. A picture DALI
        cannot decode raises ``ValueError`` naming the files of its batch."""
        files = list(files)
        if not files:
            raise ValueError("MixingCache.build: no mixing files given")
        side = checks.optional_integer("side", side, 1, note=" (None: no resize)")
        show = len(files) >= _PROGRESS_FROM if progress is None else progress
        packer = _Packer(expected_bytes or 0, pin)
        with progress_bar(len(files), "decoding mixing pictures", "img", disable=not show,
                          mininterval=1.0) as bar:
            _decode(files, side, num_threads, packer.add, bar.update)
        cache = cls.__new__(cls)
        cache._adopt(packer, files)
        return cache


class _Packer:
    """Pictures copied one after the other into one host buffer (:func:`_host_buffer`), which grows
    (a new buffer, the bytes so far copied over) when a picture does not fit."""

    def __init__(self, capacity: int, pin: bool):
        self.pin, self.used = pin, 0
        self.owner, self._flat, self.pinned = _host_buffer(int(capacity), pin, 0)
        self._layout: List[Tuple[int, Tuple[int, ...]]] = []

    def add(self, picture: np.ndarray):
        n = picture.nbytes
        if self.used + n > self._flat.size:
            # Geometric growth: a set with no size estimate is copied O(log n) times, not n.
            grown = max(self.used + n, self._flat.size * 3 // 2, 1 << 20)
            owner, flat, pinned = _host_buffer(grown, self.pin, self.used)
            flat[:self.used] = self._flat[:self.used]
            self.owner, self._flat, self.pinned = owner, flat, pinned
        self._flat[self.used:self.used + n] = np.ascontiguousarray(picture).reshape(-1)
        self._layout.append((self.used, tuple(picture.shape)))
        self.used += n

    def flat(self) -> np.ndarray:
        """The bytes written so far, as one uint8 array (a view)."""
        return self._flat[:self.used]

    def views(self) -> List[np.ndarray]:
        """Read-only views of the pictures: fed to DALI without a copy, they must never change."""
        out = []
        for pos, shape in self._layout:
            view = self._flat[pos:pos + int(np.prod(shape))].reshape(shape)
            view.flags.writeable = False
            out.append(view)
        return out


class DeviceMixingCache:
    """A :class:`MixingCache` copied to GPU memory: ``cache[i]`` is a torch CUDA uint8 HWC view of one
    buffer (no per-batch copy at all). The copy is finished before the constructor returns, so DALI's
    streams may read the views without an event."""

    device = "gpu"

    def __init__(self, host: MixingCache, device_id: int):
        import torch
        self.files, self.nbytes, self.device_id = host.files, host.nbytes, int(device_id)
        flat = torch.empty(max(1, host.nbytes), dtype=torch.uint8, device=f"cuda:{self.device_id}")
        if host.nbytes:
            flat[:host.nbytes].copy_(torch.from_numpy(host._flat))
        torch.cuda.synchronize(self.device_id)
        self._flat = flat
        views, pos = [], 0
        for p in host:
            views.append(flat[pos:pos + p.nbytes].view(*p.shape))
            pos += p.nbytes
        self._views = views

    def __len__(self) -> int:
        return len(self._views)

    def __getitem__(self, i):
        return self._views[i]

    def __repr__(self):
        return (f"DeviceMixingCache({len(self)} pictures, {self.nbytes / 2**20:.1f} MiB, "
                f"cuda:{self.device_id})")


def _decode(paths: List[str], side: Optional[int], num_threads: int, sink, done):
    """The pictures through the uncached graph's decode and resize, on the CPU, in batches of
    ``_BUILD_BATCH`` (one DALI pipeline): ``sink(picture)`` for each, in order (the array is DALI's
    and valid only during the call), ``done(n)`` after each batch."""
    from nvidia.dali import fn, types
    from nvidia.dali.pipeline import Pipeline

    chunks = [paths[i:i + _BUILD_BATCH] for i in range(0, len(paths), _BUILD_BATCH)]
    fed: List[List[str]] = []

    def source():
        fed.append(chunks[len(fed)])
        return [np.frombuffer(os.fsencode(p), dtype=np.uint8) for p in fed[-1]]   # any file name

    pipe = Pipeline(batch_size=_BUILD_BATCH, num_threads=max(1, int(num_threads)), device_id=None,
                    prefetch_queue_depth=1, seed=0)
    with pipe:
        encoded = fn.external_source(source=source, batch=True, dtype=types.UINT8)
        images = fn.decoders.image(fn.io.file.read(encoded, dont_use_mmap=True), device="cpu",
                                   output_type=types.RGB)
        pipe.set_outputs(images if side is None else fn.resize(images, resize_shorter=side))
    try:
        pipe.build()
        for chunk in chunks:
            (batch,) = _run(pipe, fed)
            for i in range(len(chunk)):
                sink(batch.at(i))
            done(len(chunk))
    finally:
        del pipe


def _run(pipe, fed):
    """One batch of the decoding pipeline. A failure names the pictures of the batch it was fed that
    fail the full check (decoded with PIL), with their reasons and DALI's own cause; when none does,
    the whole batch with DALI's cause."""
    try:
        return pipe.run()
    except Exception as err:
        batch = fed[-1] if fed else []
        cause = f"{type(err).__name__}: {dali_cause(err)}"
        bad = _files.find_bad_images(batch, "full")
        if bad:
            named = "; ".join(f"{_files.shown(p)}: {why}" for p, why in bad[:8])
            more = f" (+{len(bad) - 8} more)" if len(bad) > 8 else ""
            raise ValueError(f"mixing cache: {len(bad)} mixing picture(s) cannot be decoded: {named}{more} "
                             f"(DALI said {cause})") from None
        names = ", ".join(map(_files.shown, batch[:8])) + (f" (+{len(batch) - 8} more)" if len(batch) > 8 else "")
        raise ValueError(f"mixing cache: DALI failed on a batch of these mixing pictures: "
                         f"{names or '(no file fed yet)'} ({cause}); they pass PIL's full check") from None


#: Lines of a DALI pipeline error that say nothing about its cause.
_BOILERPLATE = ("Current pipeline object is no longer valid.", "Critical error in pipeline:")


def dali_cause(err: BaseException) -> str:
    """The cause in a DALI pipeline error, on one line: the failing operator and the text after
    DALI's ``encountered:`` (not its last line, which is "Current pipeline object is no longer
    valid."); the whole message, less such boilerplate, when it has no such part."""
    text = str(err)
    op = re.search(r"Error in (?:CPU|GPU|MIXED) operator `([^`]+)`", text)
    body = text.rsplit("encountered:", 1)[-1]
    lines = [line.strip() for line in body.splitlines()
             if line.strip() and line.strip() not in _BOILERPLATE]
    cause = " ".join(lines)[:500] or text.strip()[:500]
    return f"{op.group(1)}: {cause}" if op else cause


def _host_buffer(nbytes: int, pin: bool, filled: int):
    """``(owner, flat uint8 array, pinned)``: with ``pin``, page-locked memory from torch where CUDA
    is present (falls back to ordinary memory when it is not, or the pinning fails). Out of memory
    raises ``MemoryError`` saying so for the mixing cache (``filled``: bytes decoded so far)."""
    try:
        import torch
        if pin and torch.cuda.is_available():
            owner = torch.empty(max(1, nbytes), dtype=torch.uint8, pin_memory=True)
            return owner, owner.numpy()[:nbytes], True
    except Exception:   # no usable CUDA or too much to pin: ordinary memory works, a little slower
        pass
    try:
        flat = np.empty(nbytes, dtype=np.uint8)
    except MemoryError:
        raise MemoryError(f"mixing cache: {nbytes / 2**30:.2f} GiB of host memory are not available "
                          f"({filled / 2**30:.2f} GiB of pictures decoded so far): pass "
                          "mixing_cache=False to decode the mixing pictures per sample, or use a "
                          "smaller mixing set") from None
    return flat, flat, False


# ---------------------------------------------------------------- a training pipeline's mixing set

#: Mixing-set formats DALI's mixed decoder decodes on the GPU; the rest (PNG, ...) go to CPU threads.
GPU_DECODED = (".jpg", ".jpeg", ".jpe")


@dataclasses.dataclass(frozen=True)
class MixingSet:
    """The mixing pictures of a training pipeline, prepared before its graph is built.

    ``files``: the checked pictures, sorted (empty for a method that needs none). ``side``: the
    shorter side the preset resizes them to. ``resize``: False when every picture has that side
    already (read from the headers), so the graph leaves DALI's resize out (the identity, as PIL's).
    ``cache``: the decoded set (:class:`MixingCache`, or :class:`DeviceMixingCache` in GPU memory),
    or None: decoded per sample."""
    files: Tuple[str, ...] = ()
    side: int = 0
    resize: bool = True
    cache: Union[None, MixingCache, DeviceMixingCache] = None

    @property
    def nbytes(self) -> int:
        """Bytes of decoded pictures held (0: decoded per sample)."""
        return 0 if self.cache is None else self.cache.nbytes


def prepare_mixing_set(mixing_root, side: int, *, validate: str = "header", on_bad_file: str = "error",
                       mixing_cache: Union[None, bool, str] = None, num_threads: int = 4,
                       device: str = "cpu", device_id: Optional[int] = None) -> MixingSet:
    """The pictures under ``mixing_root``, listed and checked (:func:`dali_ipmix.files.list_mixing_images`),
    and cached as ``mixing_cache`` asks: ``None`` in host memory when the decoded set takes at most
    ``MIXING_CACHE_MAX_BYTES`` and a quarter of the memory available now (else per sample, with a
    warning), ``True`` always, ``"device"`` in GPU ``device_id``'s memory, ``False`` never. A GPU
    pipeline that decodes per sample mostly non-JPEG pictures warns (DALI decodes them on the CPU)."""
    files = _files.list_mixing_images(mixing_root, validate, on_bad_file, shorter_side=side)
    sizes = None if validate == "none" else _files.header_sizes(files)
    resize = sizes is None or not _files.shorter_sides_equal(sizes, side)
    cache = _cache(files, sizes, side if resize else None, mixing_cache, num_threads, device, device_id)
    if device == "gpu" and cache is None:
        _warn_cpu_decoded(files, mixing_root)
    return MixingSet(tuple(files), int(side), resize, cache)


def _warn_cpu_decoded(files, mixing_root):
    """Warns when most mixing pictures will be decoded on the CPU in a GPU pipeline (every sample
    decodes one; ``docs/performance.md`` has the measured cost)."""
    cpu = sum(not f.lower().endswith(GPU_DECODED) for f in files)
    if cpu * 2 > len(files):
        warnings.warn(f"{cpu} of {len(files)} mixing pictures in {mixing_root} are not JPEG: DALI "
                      f"decodes them on the CPU even in a GPU pipeline, which can halve its throughput. "
                      f"Re-encode them as JPEG (quality 95), e.g. write fractals with "
                      f"'dali-ipmix fractals OUT -n N' (JPEG by default).", stacklevel=5)


def _default_cache_limit() -> int:
    """Bytes ``mixing_cache=None`` may hold: ``MIXING_CACHE_MAX_BYTES``, and no more than a quarter of
    the host memory available now (several ranks on one node each hold a cache)."""
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):   # not reported here: the fixed limit alone
        return MIXING_CACHE_MAX_BYTES
    return min(MIXING_CACHE_MAX_BYTES, available // 4)


def _cache(files, sizes, side, mixing_cache, num_threads, device, device_id):
    """The decoded mixing set as ``mixing_cache`` asks (see :func:`prepare_mixing_set`), or None;
    ``sizes``: the files' header sizes (None: not read)."""
    if not (mixing_cache is None or isinstance(mixing_cache, bool) or
            (isinstance(mixing_cache, str) and mixing_cache == "device")):
        raise ValueError(f"mixing_cache={mixing_cache!r} is invalid: use None (cache in host memory when "
                         f"the decoded set takes at most {MIXING_CACHE_MAX_BYTES / 2**30:g} GiB), True "
                         "(host memory, any size), 'device' (GPU memory) or False (decode per sample)")
    if mixing_cache == "device" and device != "gpu":
        raise ValueError("mixing_cache='device' needs device='gpu' (it keeps the pictures in GPU memory)")
    if mixing_cache is False:
        return None
    need = estimate_bytes(sizes or _files.header_sizes(files), side)
    if mixing_cache is None:
        limit = _default_cache_limit()
        if need is None or need > limit:
            why = "some headers could not be read" if need is None else f"{need / 2**30:.2f} GiB"
            warnings.warn(f"mixing pictures decoded per sample, not cached ({len(files)} pictures, {why}; "
                          f"the default cache holds up to {limit / 2**30:.2f} GiB: "
                          f"{MIXING_CACHE_MAX_BYTES / 2**30:g} GiB and at most a quarter of the memory "
                          "available now): pass mixing_cache=True to cache them anyway, or False to "
                          "silence this", stacklevel=5)
            return None
    cache = MixingCache.build(files, side, num_threads, pin=device == "gpu", expected_bytes=need)
    if mixing_cache == "device":
        import torch
        return cache.to_device(torch.cuda.current_device() if device_id is None else device_id)
    return cache

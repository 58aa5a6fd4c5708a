"""Which samples each shard reads in which epoch, and the feed that hands them to a DALI pipeline.

The pipelines of :mod:`dali_ipmix.graphs` do not use DALI's file reader: the sample order is
planned here, in Python, one epoch at a time, and fed to the pipeline as file paths (DALI reads the
bytes with ``fn.io.file.read`` and plain file I/O). Owning the plan is what makes an epoch exact:

- Epoch ``e`` of a shuffled data set is the permutation drawn from ``(shuffle_seed, e)``: the same on
  every shard (so the shards are disjoint), independent of how earlier epochs went, so a run resumed
  at epoch ``e`` reads exactly what an uninterrupted run reads in its epoch ``e``.
- Shard ``s`` of ``n`` takes positions ``s, s + n, s + 2n, ...`` of the epoch's order (sizes differ
  by at most one sample), so step ``i`` of ``n`` shards with batches of ``B`` reads the positions
  that step ``i`` of one process with batches of ``n * B`` reads. Unshuffled (validation) data keep
  the listed order.
- Every random decision about a sample is keyed by its position (:mod:`dali_ipmix.keys`): together
  with the interleaved shards, a seed gives the same samples, augmented the same way, whatever the
  shard layout, batch split, thread count, or epoch a run was resumed at.
- The last-batch policy shapes the batches (see :data:`POLICIES`); a batch is never empty.
- The mixing picture of every sample is drawn uniformly with replacement from the key
  ``(mixing_seed, e, position)``, so it is also the same after a resume or in another layout.
"""

from __future__ import annotations

import collections
import math
import os
import threading
import warnings
import weakref
from typing import List, Optional, Sequence, Tuple

import numpy as np

from . import checks
from .keys import STREAM_MIXING, sample_keys, uniforms

__all__ = ["POLICIES", "EpochPlan", "shard_positions", "Feed", "empty_epoch_warning", "shard_defaults",
           "claim_pipeline"]

#: ``partial``: every sample of the shard exactly once, the last batch may be short (and shards may
#: differ by one batch). ``drop``: only full batches, the same number on every shard
#: (``(N // num_shards) // batch_size``; the samples left over change every epoch).
#: ``fill``: every shard runs ``ceil(ceil(N / num_shards) / batch_size)`` full batches, the shard's
#: own samples repeated from its start to fill them (every sample at least once).
POLICIES = ("partial", "drop", "fill")


def shard_positions(num_samples: int, shard_id: int, num_shards: int) -> np.ndarray:
    """Positions in an epoch's order of ``num_samples`` samples that shard ``shard_id`` reads,
    int64: every ``num_shards``-th from ``shard_id``."""
    return np.arange(shard_id, num_samples, num_shards, dtype=np.int64)


class EpochPlan:
    """The batches (arrays of sample indices into the file list) of one shard, epoch by epoch.

    Args:
        num_samples: samples in the whole data set (all shards).
        batch_size: samples per batch.
        shard_id, num_shards: this shard.
        policy: one of :data:`POLICIES`.
        shuffle_seed: ``None`` keeps the listed order every epoch; else a new permutation per epoch.
    """

    def __init__(self, num_samples: int, batch_size: int, shard_id: int, num_shards: int,
                 policy: str = "partial", shuffle_seed: Optional[int] = None):
        if policy not in POLICIES:
            raise ValueError(f"last_batch_policy={policy!r} is invalid: choose one of {POLICIES}")
        self.num_samples, self.batch_size = int(num_samples), int(batch_size)
        self.shard_id, self.num_shards = int(shard_id), int(num_shards)
        self.policy, self.shuffle_seed = policy, shuffle_seed
        self.shard_size = len(shard_positions(self.num_samples, self.shard_id, self.num_shards))
        if policy == "partial":
            self.length = math.ceil(self.shard_size / self.batch_size)
        elif policy == "drop":
            self.length = (self.num_samples // self.num_shards) // self.batch_size
        else:
            self.length = math.ceil(math.ceil(self.num_samples / self.num_shards) / self.batch_size)

    def __len__(self) -> int:
        """Batches per epoch (the same in every epoch)."""
        return self.length

    def order(self, epoch: int) -> np.ndarray:
        """All ``num_samples`` indices in epoch ``epoch``'s order (shared by every shard), int64."""
        if self.shuffle_seed is None:
            return np.arange(self.num_samples, dtype=np.int64)
        rng = np.random.default_rng([int(self.shuffle_seed), int(epoch)])
        return rng.permutation(self.num_samples).astype(np.int64)

    def positions(self, epoch: int) -> np.ndarray:
        """This shard's positions in epoch ``epoch``'s order after the last-batch policy, int64.
        ``fill``'s repeats get positions past the data set (``num_samples + shard_id + num_shards *
        r`` for the ``r``-th repeat), so that no two occurrences share a position, hence a key."""
        mine = shard_positions(self.num_samples, self.shard_id, self.num_shards)
        if self.policy == "partial":
            return mine
        want = self.length * self.batch_size
        if self.policy == "drop":
            return mine[:want]
        extra = np.arange(max(0, want - len(mine)), dtype=np.int64)
        return np.concatenate([mine, self.num_samples + self.shard_id + self.num_shards * extra])

    def shard_indices(self, epoch: int) -> np.ndarray:
        """This shard's sample indices in epoch ``epoch``, after the last-batch policy, int64 (``fill``
        repeats the shard's own samples from its start)."""
        mine = shard_positions(self.num_samples, self.shard_id, self.num_shards)
        pos = self.positions(epoch)
        if self.policy == "fill":   # a repeat reads the shard's r-th sample again
            pos = mine[np.arange(len(pos)) % len(mine)]
        return self.order(epoch)[pos]

    def batches(self, epoch: int) -> List[np.ndarray]:
        """Epoch ``epoch`` as ``len(self)`` non-empty index arrays."""
        return self._split(self.shard_indices(epoch))

    def batch_positions(self, epoch: int) -> List[np.ndarray]:
        """The positions of :meth:`batches`' samples, batch by batch."""
        return self._split(self.positions(epoch))

    def _split(self, values):
        return [values[i:i + self.batch_size] for i in range(0, len(values), self.batch_size)]


def _encode(path: str) -> np.ndarray:
    """A path as DALI's file reader takes it: its bytes as the file system has them (``os.fsencode``:
    a name that is not valid UTF-8, legal on Linux, is read as is)."""
    return np.frombuffer(os.fsencode(path), dtype=np.uint8)


def empty_epoch_warning(plan: "EpochPlan") -> Optional[str]:
    """The warning for a plan without a batch (``drop`` with fewer samples per shard than a batch),
    naming the numbers; None when it has batches."""
    if len(plan):
        return None
    per_shard = plan.num_samples // plan.num_shards
    return (f"last_batch_policy={plan.policy!r} gives 0 batches per epoch: {plan.num_samples} samples "
            f"over {plan.num_shards} shard(s) leave {per_shard} per shard, fewer than batch_size="
            f"{plan.batch_size}; every epoch is empty. Lower batch_size, use fewer shards, or use "
            "last_batch_policy='partial' / 'fill'")


class Feed:
    """The ``source`` of a pipeline's ``fn.external_source`` (``batch_info=True``): DALI's own
    ``BatchInfo(iteration, epoch_idx)`` says which batch to hand out.

    DALI epoch ``epoch_idx`` (it counts the pipeline's resets after an epoch's end) is epoch
    ``start_epoch + epoch_idx`` of :attr:`plan` unless :meth:`begin` named another for the next one;
    its batch ``iteration`` is ``plan.batches(epoch)[iteration]``, and a call past the last batch
    raises ``StopIteration``, DALI's end of an epoch. Nothing is queued: a batch is computed from
    (epoch, iteration) alone, so any driver (``IPMixIterator``, DALI's ``DALIGenericIterator``, a
    ``pipe.run()`` loop) reads the same batches, and an epoch cut short leaves nothing behind.

    Each call returns ``(data, labels)`` or, with mixing files, ``(data, labels, mixing)``: data the
    file paths as UTF-8 byte arrays (uint8 1-D), or with ``images`` the samples' HWC uint8 arrays
    (views, no copy); labels one int32 array of shape (N, 1) (one array, not N: DALI wraps each list
    item on the caller's thread); ``mixing`` the mixing pictures' paths, or with ``mixing_cache``
    their decoded pictures (HWC uint8 views of the cache). The mixing picture of the sample at
    position ``p`` of epoch ``e`` is drawn from the key ``(mixing_seed, e, p)``. With ``draws`` (a
    :class:`dali_ipmix.keys.SampleDraws`), its arrays for the batch's keys follow. A cache in GPU
    memory (``mixing_cache.device == "gpu"``) is not an output of the call: :meth:`device_mixing` is
    the source of a second, GPU ``external_source`` that computes the same batch's pictures from the
    same ``BatchInfo``.

    The pipeline takes every array without a copy (``no_copy``): paths, images and pictures live as
    long as the feed; each batch's own arrays are kept in :attr:`in_flight` (the last ``keep``
    batches handed out, at least DALI's prefetch queue), which also lets a read or decode error name
    the files of the batches DALI was working on.
    """

    def __init__(self, files: Sequence[str], labels: Sequence[int], mixing_files: Sequence[str] = (),
                 mixing_seed: Optional[int] = None, mixing_cache=None, draws=None,
                 plan: Optional[EpochPlan] = None, start_epoch: int = 0, keep: int = 4, images=None):
        self.files = tuple(files)
        self.images = images
        self._data = [_encode(f) for f in self.files] if images is None else list(images)
        self._labels = np.asarray(labels, dtype=np.int64).astype(np.int32).reshape(-1, 1)
        self.mixing_files = tuple(mixing_files)
        self._mix_paths = [_encode(f) for f in self.mixing_files]
        if mixing_cache is not None and len(mixing_cache) != len(self.mixing_files):
            raise ValueError(f"mixing_cache holds {len(mixing_cache)} pictures for "
                             f"{len(self.mixing_files)} mixing files")
        self.mixing_cache = mixing_cache
        self.on_device = getattr(mixing_cache, "device", "cpu") == "gpu"
        self.mixing_seed = 0 if mixing_seed is None else int(mixing_seed)
        self.draws = draws
        self.plan = plan
        self.start_epoch = int(start_epoch)
        self._epoch_of = {}          # DALI epoch_idx -> epoch (only the running one is kept)
        self._next: Optional[int] = None
        self._last = self.start_epoch - 1
        self._stopped = False
        self._planned = (None, None)   # (epoch, (batches, positions)): the last epoch planned
        self.in_flight: collections.deque = collections.deque(maxlen=max(2, int(keep)))
        self.calls = 0               # batches handed out so far (any epoch)
        self._lock = threading.Lock()   # DALI may call the sources from its own threads

    def set_plan(self, plan: EpochPlan):
        """Plans the epochs with ``plan`` from the next batch on (the driver sets it before the
        pipeline runs); a plan without a batch warns, naming the numbers."""
        message = empty_epoch_warning(plan)
        if message:
            warnings.warn(message, stacklevel=3)
        with self._lock:
            self.plan, self._planned = plan, (None, None)

    def begin(self, epoch: int):
        """The next DALI epoch the sources see is epoch ``epoch`` (and the ones after it follow it);
        ends the effect of :meth:`stop`."""
        with self._lock:
            self._next, self._stopped = int(epoch), False
            self._epoch_of.clear()
            self.in_flight.clear()

    def stop(self):
        """Every call raises ``StopIteration`` until :meth:`begin`: the running epoch ends after the
        batches DALI already has."""
        with self._lock:
            self._stopped = True

    def _epoch(self, epoch_idx: int) -> int:
        """Caller holds the lock."""
        epoch = self._epoch_of.get(epoch_idx)
        if epoch is None:
            epoch = self._last + 1 if self._next is None else self._next
            self._next, self._last = None, epoch
            self._epoch_of = {epoch_idx: epoch}
        return epoch

    def _batches(self, epoch: int):
        """(batches, positions) of epoch ``epoch``; caller holds the lock."""
        if self._planned[0] != epoch:
            self._planned = (epoch, (self.plan.batches(epoch), self.plan.batch_positions(epoch)))
        return self._planned[1]

    def batch(self, info):
        """``(epoch, indices, positions, mixing indices or None)`` of DALI's ``BatchInfo`` ``info``;
        ``StopIteration`` past the epoch's end (or after :meth:`stop`)."""
        if self.plan is None:
            raise RuntimeError("Feed: no EpochPlan set (the pipeline sets one)")
        with self._lock:
            if self._stopped:
                raise StopIteration
            epoch = self._epoch(int(info.epoch_idx))
            batches, positions = self._batches(epoch)
        i = int(info.iteration)
        if i >= len(batches):
            raise StopIteration
        b, pos = batches[i], positions[i]
        m = None
        if self.mixing_files:
            u = uniforms(sample_keys(self.mixing_seed, epoch, pos), STREAM_MIXING, 1)[:, 0]
            m = np.floor(u * len(self.mixing_files)).astype(np.int64)
        return epoch, b, pos, m

    def __call__(self, info):
        epoch, b, pos, m = self.batch(info)
        out = ([self._data[i] for i in b], self._labels[b])
        if m is not None and not self.on_device:
            mixing = self._mix_paths if self.mixing_cache is None else self.mixing_cache
            out += ([mixing[i] for i in m],)
        if self.draws is not None:
            out += tuple(self.draws(epoch, pos))
        with self._lock:   # keeps the batch's own arrays alive while DALI reads them (no_copy)
            self.in_flight.append((b, m, out))
            self.calls += 1
        return out

    def device_mixing(self, info):
        """The source of the GPU mixing pictures: those of the batch the feed hands out for the same
        ``BatchInfo``; ``StopIteration`` with it."""
        if not self.on_device:
            raise RuntimeError("device_mixing: this feed has no mixing cache in GPU memory")
        _, _, _, m = self.batch(info)
        return [self.mixing_cache[i] for i in m]

    def taken(self):
        """The driver took the oldest batch in flight."""
        with self._lock:
            if self.in_flight:
                self.in_flight.popleft()

    def files_in_flight(self) -> List[str]:
        """Data and mixing files of the batches handed to DALI and not yet taken, in order (with a
        driver that does not call :meth:`taken`: of the last ``keep`` batches)."""
        with self._lock:
            batches = list(self.in_flight)
        out = []
        for b, m, _ in batches:
            out += [self.files[i] for i in b] if self.files else []
            out += [] if m is None else [self.mixing_files[i] for i in m]
        return list(dict.fromkeys(out))


# ---------------------------------------------------------------- shards and the iterator that drives a pipeline

def _dist_rank_world() -> Optional[Tuple[int, int]]:
    try:
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except Exception:   # torch without distributed support
        pass
    return None


def shard_defaults(shard_id: Optional[int] = None, num_shards: Optional[int] = None) -> Tuple[int, int]:
    """``(shard_id, num_shards)``: the given values, else rank and world size under an initialised
    ``torch.distributed``, else ``(0, 1)``. Raises ValueError when they do not form a valid shard."""
    dist = _dist_rank_world()
    if num_shards is None:
        num_shards = dist[1] if dist else 1
    if shard_id is None:
        shard_id = dist[0] if dist else 0
    shard_id, num_shards = checks.integer("shard_id", shard_id), checks.integer("num_shards", num_shards)
    if num_shards < 1 or not 0 <= shard_id < num_shards:
        raise ValueError(f"shard_id={shard_id}, num_shards={num_shards} is invalid: "
                         "need num_shards >= 1 and 0 <= shard_id < num_shards")
    return shard_id, num_shards


def claim_pipeline(pipeline, driver):
    """Records ``driver`` (an iterator) as the one that drives ``pipeline``; a RuntimeError when
    another iterator that is still alive drives it (two would share one stream of batches)."""
    ref = getattr(pipeline, "_ipmix_driver", None)
    current = ref() if ref is not None else None
    if current is not None and current is not driver:
        raise RuntimeError(
            f"this pipeline is already driven by a {type(current).__name__}: one iterator per pipeline "
            f"(a second {type(driver).__name__} would share its stream of batches, and each would read "
            "part of every epoch). Keep using the first one, delete it first, or make a second "
            "pipeline with the same arguments")
    pipeline._ipmix_driver = weakref.ref(driver)


def _release_pipeline(pipeline, driver):
    ref = getattr(pipeline, "_ipmix_driver", None)
    if ref is not None and ref() is driver:
        pipeline._ipmix_driver = None

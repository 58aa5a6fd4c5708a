"""Which samples each shard reads in which epoch, and the feed that hands them to a DALI pipeline.

The pipelines of :mod:`dali_ipmix.pipelines` do not use DALI's file reader: the sample order is
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
import threading
from typing import List, Optional, Sequence

import numpy as np

from .keys import STREAM_MIXING, sample_keys, uniforms

__all__ = ["POLICIES", "EpochPlan", "shard_positions", "Feed"]

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
    return np.frombuffer(path.encode("utf-8"), dtype=np.uint8)


class Feed:
    """The ``source`` of a pipeline's ``fn.external_source``: one planned batch per call.

    Each call returns ``(paths, labels)`` or, with mixing files, ``(paths, labels, mixing)``: paths a
    list of UTF-8 byte arrays (uint8 1-D); labels one int32 array of shape (N, 1) (one array, not N:
    DALI wraps each list item on the caller's thread); ``mixing`` the mixing pictures' paths, or with
    ``mixing_cache`` their decoded pictures (HWC uint8 views of the cache). The mixing picture of the
    sample at position ``p`` of epoch ``e`` is drawn from the key ``(mixing_seed, e, p)``. With
    ``draws`` (a :class:`dali_ipmix.keys.SampleDraws`), its arrays for the batch's keys follow. A cache in GPU memory
    (``mixing_cache.device == "gpu"``) is not an output of the call: :meth:`device_mixing` is the
    source of a second, GPU ``external_source`` that hands out the same batch's pictures. DALI calls
    both sources once per iteration in no fixed order (it keeps them in a set), so the n-th call of
    either gets the n-th batch, whichever comes first.

    The pipeline takes every array without a copy (``no_copy``): paths and pictures live as long as
    the feed, a batch's labels until the iterator took the batch, and none of them changes. A call
    raises ``StopIteration`` when the loaded epoch has no batch left, which ends DALI's epoch.
    :class:`dali_ipmix.IPMixIterator` loads the epochs; the batches handed out and not yet taken by
    the iterator are kept (``in_flight``) so that a read or decode error can name their files.
    """

    def __init__(self, files: Sequence[str], labels: Sequence[int], mixing_files: Sequence[str] = (),
                 mixing_seed: Optional[int] = None, mixing_cache=None, draws=None):
        self.files = tuple(files)
        self._paths = [_encode(f) for f in self.files]
        self._labels = np.asarray(labels, dtype=np.int64).astype(np.int32).reshape(-1, 1)
        self.mixing_files = tuple(mixing_files)
        self._mix_paths = [_encode(f) for f in self.mixing_files]
        if mixing_cache is not None and len(mixing_cache) != len(self.mixing_files):
            raise ValueError(f"mixing_cache holds {len(mixing_cache)} pictures for "
                             f"{len(self.mixing_files)} mixing files")
        self.mixing_cache = mixing_cache
        self.on_device = getattr(mixing_cache, "device", "cpu") == "gpu"
        # Batches taken from the queue and not yet handed out by every source (see _take).
        self._taken: collections.deque = collections.deque()
        self._calls = [0, 0] if self.on_device else [0]
        self._first = 0   # call number of self._taken[0]
        self.mixing_seed = 0 if mixing_seed is None else int(mixing_seed)
        self.draws = draws
        self._queue: collections.deque = collections.deque()
        self.in_flight: collections.deque = collections.deque()
        self._lock = threading.Lock()   # DALI may call the source from its own thread

    def load(self, batches: List[np.ndarray], epoch: int, positions: Optional[List[np.ndarray]] = None):
        """Queues epoch ``epoch``'s batches (replacing whatever was left); ``positions``: each batch's
        positions in the epoch's order (:meth:`EpochPlan.batch_positions`; default: the batches'
        samples numbered from 0 in order), which key every random draw about them."""
        if positions is None:
            ends = np.cumsum([len(b) for b in batches])
            positions = [np.arange(e - len(b), e, dtype=np.int64) for b, e in zip(batches, ends)]
        with self._lock:
            self._queue.clear()
            self._reset_calls()
            for b, pos in zip(batches, positions):
                m = None
                if self.mixing_files:
                    u = uniforms(sample_keys(self.mixing_seed, epoch, pos), STREAM_MIXING, 1)[:, 0]
                    m = np.floor(u * len(self.mixing_files)).astype(np.int64)
                # The labels array lives in the queue item until the iterator took the batch: DALI
                # reads it without a copy.
                self._queue.append((b, m, self._labels[b], (epoch, pos)))

    def clear(self):
        """Drops the batches not yet handed out (the epoch then ends after those in flight)."""
        with self._lock:
            self._queue.clear()
            self._reset_calls()

    def _reset_calls(self):
        self._taken.clear()
        self._calls = [0] * len(self._calls)
        self._first = 0

    def _take(self, source: int):
        """The batch ``(indices, mixing indices, labels)`` of source ``source``'s next call (0: the
        feed, 1: the GPU mixing source): the n-th call of each source gets the n-th batch of the
        queue. Caller holds the lock. ``StopIteration`` when the epoch has no batch left for it."""
        n = self._calls[source]
        if n - self._first < len(self._taken):
            item = self._taken[n - self._first]
        else:
            if not self._queue:
                raise StopIteration
            item = self._queue.popleft()
            self.in_flight.append(item)
            self._taken.append(item)
        self._calls[source] += 1
        while self._taken and min(self._calls) > self._first:   # every source has had it
            self._taken.popleft()
            self._first += 1
        return item

    def taken(self):
        """The iterator took the oldest batch in flight."""
        with self._lock:
            if self.in_flight:
                self.in_flight.popleft()

    def files_in_flight(self) -> List[str]:
        """Data and mixing files of the batches handed to DALI and not yet taken, in order."""
        with self._lock:
            batches = list(self.in_flight)
        out = []
        for b, m, *_ in batches:
            out += [self.files[i] for i in b]
            out += [] if m is None else [self.mixing_files[i] for i in m]
        return list(dict.fromkeys(out))

    def __call__(self):
        with self._lock:
            b, m, labels, (epoch, pos) = self._take(0)
        out = ([self._paths[i] for i in b], labels)
        if m is not None and not self.on_device:
            mixing = self._mix_paths if self.mixing_cache is None else self.mixing_cache
            out += ([mixing[i] for i in m],)
        if self.draws is not None:
            out += tuple(self.draws(epoch, pos))
        return out

    def device_mixing(self):
        """The source of the GPU mixing pictures: those of the batch that the feed's call of the same
        iteration hands out (before or after this one); ``StopIteration`` with it."""
        if not self.on_device:
            raise RuntimeError("device_mixing: this feed has no mixing cache in GPU memory")
        with self._lock:
            _, m, *_ = self._take(1)
        return [self.mixing_cache[i] for i in m]

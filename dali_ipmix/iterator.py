"""``IPMixIterator``: a DALI pipeline as a PyTorch batch iterator with exact epochs.

    it = IPMixIterator(training_pipeline(file_root="train", mixing_root="fractals", batch_size=128))
    for epoch in range(epochs):
        for (clean, view1, view2), labels in it:     # JSD mode; else ``for images, labels in it``
            ...

Tensors are NCHW (as the pipeline produces them: normalised float32/float16) and labels int64 of
shape (N,), all on the pipeline's device (CUDA for ``device="gpu"``, else CPU).

Epochs follow ``torch.utils.data.DataLoader``: every ``for`` loop (every ``iter(it)``) is one epoch; a
loop left with ``break`` abandons the rest of its epoch, and the next loop starts a fresh, full epoch
(the batches DALI had already prefetched, at most ``prefetch_queue_depth``, are run and dropped).
A batch is never empty, and ``len(it)`` is the exact number of batches every epoch.
"""

from __future__ import annotations

import math
import warnings
from typing import Optional, Sequence, Tuple

from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy, feed_ndarray, to_torch_type

from .epochs import EpochPlan

__all__ = ["IPMixIterator", "shard_defaults", "LAST_BATCH_POLICIES"]

#: ``last_batch_policy`` names: ``partial`` returns a short last batch (every sample exactly once per
#: epoch); ``drop`` leaves the incomplete last batch out (every shard runs the same number of full
#: batches); ``fill`` pads it to full size with repeats. Details: :data:`dali_ipmix.epochs.POLICIES`.
LAST_BATCH_POLICIES = {"partial": LastBatchPolicy.PARTIAL, "drop": LastBatchPolicy.DROP,
                       "fill": LastBatchPolicy.FILL}


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
    for name, v in (("shard_id", shard_id), ("num_shards", num_shards)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"{name}={v!r} is invalid: expected an integer")
    if num_shards < 1 or not 0 <= shard_id < num_shards:
        raise ValueError(f"shard_id={shard_id}, num_shards={num_shards} is invalid: "
                         "need num_shards >= 1 and 0 <= shard_id < num_shards")
    return shard_id, num_shards


class IPMixIterator:
    """Iterates a DALI pipeline in epochs, yielding ``(images, labels)`` or ``((clean, v1, v2), labels)``.

    Args:
        pipeline: a pipeline from :func:`training_pipeline` / :func:`validation_pipeline` (built here if
            needed), or any DALI pipeline whose outputs are images then one label output, in which case
            give ``output_names`` and ``reader_name``.
        last_batch_policy: ``"partial"`` (default; every sample exactly once per epoch), ``"drop"``
            (full batches only, as many on every shard: use it for DDP training) or ``"fill"``; see
            :data:`dali_ipmix.epochs.POLICIES`.
        auto_reset: a finished epoch is followed by the next one on the next ``for`` / ``next()``
            (default True); with False call :meth:`reset` between epochs.
        output_names: names of the pipeline outputs; the last must be ``"label"``. Three image outputs
            mean JSD mode.
        reader_name: the pipeline's data reader (sets the epoch size and shard bookkeeping).

    Attributes:
        epoch: the epoch being read (the training pipeline's ``start_epoch`` first, then +1 per epoch).
        num_samples: samples this shard yields per epoch (repeats of ``"fill"`` included).
        total_samples: samples in the data set (all shards).

    The pipelines made by dali_ipmix are fed by this iterator, which plans every epoch (see
    :mod:`dali_ipmix.epochs`); other pipelines go through DALI's ``DALIGenericIterator``, where a new
    epoch after a ``break`` has to run the rest of the old one first.
    """

    def __init__(self, pipeline, *, last_batch_policy: str = "partial", auto_reset: bool = True,
                 output_names: Optional[Sequence[str]] = None, reader_name: Optional[str] = None):
        info = getattr(pipeline, "ipmix_info", None)
        feed = getattr(pipeline, "ipmix_feed", None) if info is not None else None
        output_names = tuple(output_names or (info.output_names if info else ()))
        reader_name = reader_name or (info.reader_name if info else None)
        if not output_names or output_names[-1] != "label" or len(output_names) not in (2, 4):
            raise ValueError(f"output_names={output_names!r} is invalid: expected (images, 'label') or "
                             "(clean, view1, view2, 'label'); pipelines not made by dali_ipmix must "
                             "pass output_names and reader_name")
        if reader_name is None and feed is None:
            raise ValueError("reader_name is required for a pipeline not made by dali_ipmix: it is the "
                             "name= of the data reader, which defines the epoch")
        if last_batch_policy not in LAST_BATCH_POLICIES:
            raise ValueError(f"last_batch_policy={last_batch_policy!r} is invalid: choose one of "
                             f"{tuple(LAST_BATCH_POLICIES)}")
        self._check_shard(info)
        self.pipeline = pipeline
        self.info = info   # set before the first batch runs: _explain needs it
        self.output_names = output_names
        self.jsd = len(output_names) == 4
        self.last_batch_policy = last_batch_policy
        self.auto_reset = bool(auto_reset)
        if feed is not None:
            self._epochs = _FedEpochs(pipeline, feed, info, last_batch_policy)
            self.epoch = info.start_epoch
        else:
            self._epochs = _ReaderEpochs(pipeline, output_names, reader_name, last_batch_policy)
            self.epoch = 0
        self._pos: Optional[int] = None   # batches yielded in the running epoch; None: none running
        self._start(self.epoch)           # build, and prefetch the first batches: errors show here

    @staticmethod
    def _check_shard(info):
        dist = _dist_rank_world()
        if info is not None and dist is not None and (info.shard_id, info.num_shards) != dist:
            warnings.warn(f"pipeline reads shard {info.shard_id} of {info.num_shards} but this process "
                          f"is rank {dist[0]} of {dist[1]} in torch.distributed", stacklevel=3)

    @property
    def batch_size(self) -> int:
        return self._epochs.batch_size

    @property
    def num_samples(self) -> int:
        return self._epochs.num_samples

    @property
    def total_samples(self) -> int:
        return self._epochs.total_samples

    def __len__(self) -> int:
        """Batches per epoch, exactly (none of them empty)."""
        return len(self._epochs)

    def __getattr__(self, name):
        if name in ("sampler", "dataset", "batch_sampler"):
            raise AttributeError(
                f"IPMixIterator has no {name!r}: the pipeline shards the data itself (each sample "
                "exactly once per epoch over all ranks with last_batch_policy='partial'), so a "
                "distributed validation needs no padding sampler and no auxiliary loader for the "
                "remainder; use it.num_samples / it.total_samples for counts (see docs/training.md)")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _start(self, epoch: int):
        try:
            self._epochs.start(epoch)
        except RuntimeError as err:
            raise self._explain(err) from err
        self.epoch, self._pos = epoch, 0

    def _finish(self):
        """Ends the running epoch, dropping what is left of it."""
        if self._pos is not None:
            self._pos = None
            try:
                self._epochs.finish()
            except RuntimeError as err:
                raise self._explain(err) from err

    def __iter__(self):
        if self._pos is None:
            if self.auto_reset:
                self._start(self.epoch + 1)
        elif self._pos > 0:   # a new loop after a break: a fresh, full epoch, as a DataLoader does
            self._finish()
            self._start(self.epoch + 1)
        return self

    def __next__(self):
        if self._pos is None:
            if not self.auto_reset:
                raise StopIteration
            self._start(self.epoch + 1)
        if self._pos >= len(self._epochs):
            self._finish()
            raise StopIteration
        try:
            out = self._epochs.next()
        except RuntimeError as err:
            raise self._explain(err) from err
        self._pos += 1
        labels = out["label"].reshape(-1).long()
        if self.jsd:
            return (out[self.output_names[0]], out[self.output_names[1]],
                    out[self.output_names[2]]), labels
        return out[self.output_names[0]], labels

    def reset(self):
        """Starts the next epoch now: a running epoch that has yielded batches is abandoned (needed
        between epochs only with ``auto_reset=False``; a new ``for`` loop does it anyway)."""
        if self._pos is None or self._pos > 0:
            self._finish()
            self._start(self.epoch + 1)

    def _explain(self, err: RuntimeError) -> RuntimeError:
        """A read or decode failure names the file only sometimes; then check the files involved (the
        batches in flight, else all of the pipeline's files; header check: fast) and name the ones
        that fail. Other errors pass through unchanged."""
        text = str(err)
        if self.info is None or not any(w in text for w in ("decoders", "io__file__read", "file")):
            return err
        from .files import find_bad_images
        in_flight = getattr(self._epochs, "files_in_flight", lambda: [])()
        suspects = find_bad_images(in_flight or (*self.info.files, *self.info.mixing_files), "header")
        if not suspects:
            return err
        named = "\n".join(f"  {p}: {why}" for p, why in suspects[:20])
        return RuntimeError(f"DALI could not read or decode an input image; these files fail the "
                            f"check (changed or removed since the pipeline was made?):\n"
                            f"{named}\nDALI said: {text.strip()}")


def _torch_device(pipeline):
    import torch
    return torch.device("cuda", pipeline.device_id) if pipeline.device_id is not None else torch.device("cpu")


def _to_torch(tensor_list, device, copy: bool = True):
    """A dense DALI batch as a torch tensor on ``device``. ``copy=False`` (pipelines on DALI's dynamic
    executor, its default) shares DALI's memory through DLPack, which keeps it alive for as long as
    the tensor lives (DALI's own PyTorch iterator does the same); otherwise DALI reuses its output
    buffers, so the batch is copied."""
    import torch
    dense = tensor_list.as_tensor()
    if not copy:
        with device:
            return torch.from_dlpack(dense)
    out = torch.empty(dense.shape(), dtype=to_torch_type[dense.dtype], device=device)
    feed_ndarray(dense, out, cuda_stream=torch.cuda.current_stream(device) if device.type == "cuda"
                 else None)
    return out


class _FedEpochs:
    """Epochs of a dali_ipmix pipeline: each one planned by :class:`EpochPlan` and fed batch by batch.

    DALI calls the feed up to ``prefetch_queue_depth`` batches ahead; the feed raises StopIteration
    at the end of the planned epoch, which is DALI's own end-of-epoch signal."""

    def __init__(self, pipeline, feed, info, policy):
        self.pipeline, self.feed = pipeline, feed
        self.plan = EpochPlan(info.num_samples, info.batch_size, info.shard_id, info.num_shards,
                              policy, info.shuffle_seed)
        self.batch_size, self.total_samples = info.batch_size, info.num_samples
        self.num_samples = len(self.plan.shard_indices(0))
        self.output_names = info.output_names
        self.device = _torch_device(pipeline)
        pipeline.build()
        self.copy = not getattr(pipeline, "exec_dynamic", False)

    def __len__(self):
        return len(self.plan)

    def files_in_flight(self):
        return self.feed.files_in_flight()

    def start(self, epoch):
        self.feed.load(self.plan.batches(epoch), epoch, self.plan.batch_positions(epoch))
        self.pipeline.schedule_run()

    def next(self):
        outs = self.pipeline.outputs()
        self.feed.taken()
        batch = {n: _to_torch(t, self.device, self.copy) for n, t in zip(self.output_names, outs)}
        self.pipeline.schedule_run()   # keeps the queue full; a no-op once the feed has run dry
        return batch

    def finish(self):
        self.feed.clear()
        while not self.pipeline.empty():   # batches already scheduled: run and drop them
            self.pipeline.outputs()
            self.feed.taken()
        self.pipeline.schedule_run()   # lets DALI see the feed's end, if it has not yet
        self.pipeline.reset()


class _ReaderEpochs:
    """Epochs of a pipeline with its own DALI reader, through ``DALIGenericIterator``.

    DALI gives a shard that is one sample shorter than the others an empty last batch under the
    partial policy; it is skipped, and ``len`` counts only the non-empty batches. DALI cannot drop
    the rest of an epoch, so :meth:`finish` runs it."""

    def __init__(self, pipeline, output_names, reader_name, policy):
        # DALIGenericIterator builds the pipeline and runs the first batch right away
        self._it = DALIGenericIterator([pipeline], list(output_names), reader_name=reader_name,
                                       last_batch_policy=LAST_BATCH_POLICIES[policy], auto_reset=False)
        self.batch_size = self._it.batch_size
        self.policy = policy
        self.meta = pipeline.reader_meta(reader_name)
        self.total_samples = self.meta["epoch_size"]
        self._dali_len = len(self._it)
        self._epochs_started = 0
        self._set_epoch_size(0)

    def _set_epoch_size(self, k):
        """DALI moves each reader on to the next shard every epoch unless ``stick_to_shard``."""
        n, shards, shard = self.total_samples, self.meta["number_of_shards"], self.meta["shard_id"]
        if not self.meta["stick_to_shard"]:
            shard = (shard + k) % shards
        if self.policy == "partial":
            self.num_samples = (shard + 1) * n // shards - shard * n // shards
            self._len = math.ceil(self.num_samples / self.batch_size)
        else:
            self._len = self._dali_len
            self.num_samples = self._len * self.batch_size

    def __len__(self):
        return self._len

    def start(self, epoch):
        if self._epochs_started:
            self._it.reset()
        self._set_epoch_size(self._epochs_started)
        self._epochs_started += 1

    def next(self):
        while True:
            out = next(self._it)[0]
            if out["label"].numel():
                return out

    def finish(self):
        try:   # DALI cannot skip: run what is left of the epoch (not iter(): that would reset)
            while True:
                next(self._it)
        except StopIteration:
            pass

"""``IPMixIterator``: a DALI pipeline as a PyTorch batch iterator with exact epochs.

    it = IPMixIterator(training_pipeline(file_root="train", mixing_root="fractals", batch_size=128))
    for epoch in range(epochs):
        for (clean, view1, view2), labels in it:     # JSD mode; else ``for images, labels in it``
            ...

Tensors are NCHW (as the pipeline produces them: normalised float32/float16) and labels int64 of
shape (N,), all on the pipeline's device (CUDA for ``device="gpu"``, else CPU).

Epochs follow ``torch.utils.data.DataLoader``: every ``for`` loop (every ``iter(it)``) is one full
epoch from its start, whatever ended the loop before (its end, a ``break``, an error raised in a
batch, a ``KeyboardInterrupt``, an abandoned ``next(iter(it))``). Which epoch: the one
:meth:`IPMixIterator.set_epoch` named, else the next one after an epoch that handed out a batch,
else the same one again (an epoch that failed or was interrupted before its first batch is read from
its start). The batches DALI had already prefetched, at most ``prefetch_queue_depth``, are run and
dropped. A batch is never empty, and ``len(it)`` is the exact number of batches every epoch.
One iterator per pipeline: a second one (ours or DALI's) on a pipeline that one drives is an error.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import warnings
from typing import Optional, Sequence

from .extras import require

require("torch", "dali_ipmix.iterator (IPMixIterator)")
from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy, feed_ndarray, to_torch_type  # noqa: E402

from . import checks  # noqa: E402
from .epochs import EpochPlan, _dist_rank_world, _release_pipeline, claim_pipeline, shard_defaults  # noqa: E402

__all__ = ["IPMixIterator", "shard_defaults", "LAST_BATCH_POLICIES", "claim_pipeline"]

#: ``last_batch_policy`` names: ``partial`` returns a short last batch (every sample exactly once per
#: epoch); ``drop`` leaves the incomplete last batch out (every shard runs the same number of full
#: batches); ``fill`` pads it to full size with repeats. Details: :data:`dali_ipmix.epochs.POLICIES`.
LAST_BATCH_POLICIES = {"partial": LastBatchPolicy.PARTIAL, "drop": LastBatchPolicy.DROP,
                       "fill": LastBatchPolicy.FILL}


@contextlib.contextmanager
def _sigint_deferred():
    """Holds a Ctrl-C (SIGINT with Python's default handler, in the main thread) back until the
    block ends, then raises it: DALI's own bookkeeping of a run (feed, count, run) is never cut in
    half. Other threads and custom handlers are left alone."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    got = []
    signal.signal(signal.SIGINT, lambda signum, frame: got.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if got:
            raise KeyboardInterrupt


class IPMixIterator:
    """Iterates a DALI pipeline in epochs, yielding ``(images, labels)`` or ``((clean, v1, v2), labels)``.

    Args:
        pipeline: a pipeline from :func:`training_pipeline` / :func:`validation_pipeline` (built here if
            needed), or any DALI pipeline whose outputs are images then one label output, in which case
            give ``output_names`` and ``reader_name``.
        last_batch_policy: ``"partial"`` (every sample exactly once per epoch), ``"drop"``
            (full batches only, as many on every shard: use it for DDP training) or ``"fill"``; see
            :data:`dali_ipmix.epochs.POLICIES`. Default: the pipeline's own
            (``pipe.source.last_batch_policy``, ``"partial"`` unless it was made with another),
            else ``"partial"``. An epoch without a batch (``"drop"`` with fewer samples per shard
            than a batch) warns, naming the numbers.
        auto_reset: a finished epoch is followed by the next one on the next ``for`` / ``next()``
            (default True); with False call :meth:`reset` between epochs.
        output_names: names of the pipeline outputs; the last must be ``"label"``. Three image outputs
            mean JSD mode.
        reader_name: the pipeline's data reader (sets the epoch size and shard bookkeeping).

    Attributes:
        epoch: the epoch being read (the training pipeline's ``start_epoch`` first, then as the module
            docstring says; :meth:`set_epoch` names the next one).
        num_samples: samples this shard yields per epoch (repeats of ``"fill"`` included).
        total_samples: samples in the data set (all shards).

    The pipelines made by dali_ipmix compute each batch from (epoch, step) (see
    :mod:`dali_ipmix.epochs`): this iterator only says which epoch comes next, so an epoch is always
    read whole from its start. Other pipelines go through DALI's ``DALIGenericIterator``, where a new
    epoch after a ``break`` has to run the rest of the old one first.
    """

    def __init__(self, pipeline, *, last_batch_policy: Optional[str] = None, auto_reset: bool = True,
                 output_names: Optional[Sequence[str]] = None, reader_name: Optional[str] = None):
        from .sources import PipelineSource
        source = getattr(pipeline, "source", None)
        source = source if isinstance(source, PipelineSource) else None
        output_names = tuple(output_names or (source.output_names if source else ()))
        if not output_names or output_names[-1] != "label" or len(output_names) not in (2, 4):
            raise ValueError(f"output_names={output_names!r} is invalid: expected (images, 'label') or "
                             "(clean, view1, view2, 'label'); pipelines not made by dali_ipmix must "
                             "pass output_names and reader_name")
        if reader_name is None and source is None:
            raise ValueError("reader_name is required for a pipeline not made by dali_ipmix: it is the "
                             "name= of the data reader, which defines the epoch")
        if last_batch_policy is None:
            last_batch_policy = source.last_batch_policy if source else "partial"
        if last_batch_policy not in LAST_BATCH_POLICIES:
            raise ValueError(f"last_batch_policy={last_batch_policy!r} is invalid: choose one of "
                             f"{tuple(LAST_BATCH_POLICIES)}")
        self._check_shard(source)
        self.pipeline = pipeline
        self.source = source   # set before the first batch runs: _explain needs it
        self.output_names = output_names
        self.jsd = len(output_names) == 4
        self.last_batch_policy = last_batch_policy
        self.auto_reset = bool(auto_reset)
        claim_pipeline(pipeline, self)
        # State: epoch ``self.epoch`` has handed out ``_pos`` batches; ``_running``: the pipeline is
        # in that epoch; ``_done``: it ran to its end; ``_dirty``: an operation on the pipeline was
        # cut short (error, Ctrl-C): drain it before anything else; ``_requested``: set_epoch's.
        self._running = self._done = self._dirty = False
        self._requested: Optional[int] = None
        self._pos = 0
        try:
            if source is not None:
                self.epoch = source.start_epoch
                self._epochs = _FedEpochs(pipeline, source, last_batch_policy)
            else:
                self.epoch = 0
                self._epochs = _ReaderEpochs(pipeline, output_names, reader_name, last_batch_policy)
            self._start(self.epoch)       # build, and prefetch the first batches: errors show here
        except BaseException:
            _release_pipeline(pipeline, self)
            raise

    @staticmethod
    def _check_shard(source):
        dist = _dist_rank_world()
        if source is not None and dist is not None and (source.shard_id, source.num_shards) != dist:
            warnings.warn(f"pipeline reads shard {source.shard_id} of {source.num_shards} but this process "
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

    def set_epoch(self, epoch: int):
        """The next loop (``iter(it)``, or ``next(it)`` once the running epoch is over) reads epoch
        ``epoch`` from its start, like ``DistributedSampler.set_epoch``: call it before each epoch's
        loop with the loop's epoch number and every loop reads that epoch, whatever ran before it (a
        debugging ``next(iter(it))``, a ``break``, an error). Keyed augmentation: the same samples,
        order and draws as an uninterrupted run's epoch ``epoch``."""
        from .checks import INT64_MAX, integer
        self._requested = integer("epoch", epoch, 0, INT64_MAX)

    def _following(self) -> int:
        """The epoch the next loop reads (see the module docstring)."""
        if self._requested is not None:
            return self._requested
        return self.epoch + 1 if self._done or self._pos > 0 else self.epoch

    def _sync(self):
        """After an operation on the pipeline was cut short: drains it (the batches DALI holds are run
        and dropped) and ends the epoch it was in."""
        if self._dirty:
            self._running = False
            self._operate(self._epochs.drain)

    def _operate(self, operation, *args):
        """Runs an operation on the pipeline with Ctrl-C held back and DALI's errors explained; the
        iterator counts as cut short (``_dirty``) unless it completes."""
        self._dirty = True
        with _sigint_deferred():
            try:
                operation(*args)
            except RuntimeError as err:
                raise self._explain(err) from err
        self._dirty = False

    def _start(self, epoch: int):
        """Starts epoch ``epoch`` (the pipeline is at an epoch's boundary)."""
        self._requested = None
        self.epoch, self._pos, self._done, self._running = epoch, 0, False, True
        self._operate(self._epochs.start, epoch)

    def _switch(self, epoch: int):
        """Ends the running epoch, if any, and starts epoch ``epoch`` (nothing to do when ``epoch`` is
        the running one and has handed out nothing yet)."""
        self._sync()
        if self._running and self._pos == 0 and self.epoch == epoch:
            self._requested = None
            return
        if self._running:
            self._finish(done=False)
        self._start(epoch)

    def _finish(self, done: bool):
        """Ends the running epoch, dropping what is left of it."""
        self._running, self._done = False, done
        self._operate(self._epochs.drain)

    def __iter__(self):
        self._sync()
        if self._running or self.auto_reset or self._requested is not None or not self._done:
            self._switch(self._following())
        return self

    def __next__(self):
        self._sync()
        if not self._running:
            if self._done and not self.auto_reset and self._requested is None:
                raise StopIteration
            self._switch(self._following())
        if self._pos >= len(self._epochs):
            self._finish(done=True)
            raise StopIteration
        self._dirty = True
        with _sigint_deferred():
            try:
                out = self._epochs.next()
            except RuntimeError as err:
                raise self._explain(err) from err
            self._pos += 1
            self._dirty = False
        labels = out["label"].reshape(-1).long()
        if self.jsd:
            return (out[self.output_names[0]], out[self.output_names[1]],
                    out[self.output_names[2]]), labels
        return out[self.output_names[0]], labels

    def reset(self):
        """Starts the next epoch now (:meth:`set_epoch`'s, else the following one): a running epoch
        that has handed out batches is abandoned (needed between epochs only with
        ``auto_reset=False``; a new ``for`` loop does it anyway)."""
        self._sync()
        self._switch(self._following())

    def _explain(self, err: RuntimeError) -> RuntimeError:
        """A read or decode failure (from any operator that reads the encoded files: the file read,
        the decoders, the crop's ``peek_image_shape``) names the file only sometimes; then check the
        files involved and name the ones that fail: the batches in flight with the full check (decode
        every one: a damaged body passes the header check), else all of the pipeline's files with
        the header check (fast). Other errors pass through unchanged."""
        text = str(err)
        if self.source is None or not any(w in text for w in _READ_OPERATORS):
            return err
        from .files import find_bad_images, shown
        in_flight = getattr(self._epochs, "files_in_flight", lambda: [])()
        if in_flight:
            suspects = find_bad_images(in_flight, "full")
        else:
            suspects = find_bad_images((*self.source.files, *self.source.mixing_files), "header")
        if not suspects:
            return err
        named = "\n".join(f"  {shown(p)}: {why}" for p, why in suspects[:20])
        return RuntimeError(f"DALI could not read or decode an input image; these files fail the "
                            f"check (changed or removed since the pipeline was made?):\n"
                            f"{named}\nDALI said: {text.strip()}")


#: Words of a DALI error from an operator that reads the encoded input files.
_READ_OPERATORS = ("io.file.read", "io__file__read", "decoders", "peek_image_shape", "nvImageCodec")


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

    def __init__(self, pipeline, source, policy):
        self.pipeline, self.feed = pipeline, source.feed
        self.batch_size, self.total_samples = source.batch_size, source.num_samples
        self.output_names = source.output_names
        self.device = _torch_device(pipeline)
        pipeline.build()
        self.copy = not getattr(pipeline, "exec_dynamic", False)
        if self.feed.calls:   # run before (by an iterator now gone): end the epoch it was in
            self.drain()
        self.plan = source.use_policy(policy)
        self.num_samples = source.epoch_size

    def __len__(self):
        return len(self.plan)

    def files_in_flight(self):
        return self.feed.files_in_flight()

    def start(self, epoch):
        self.feed.begin(epoch)
        self.pipeline.schedule_run()

    def next(self):
        outs = self.pipeline.outputs()
        self.feed.taken()
        batch = {n: _to_torch(t, self.device, self.copy) for n, t in zip(self.output_names, outs)}
        self.pipeline.schedule_run()   # keeps the queue full; a no-op once the feed has run dry
        return batch

    def drain(self):
        """Ends the pipeline's epoch: the feed stops, the batches already scheduled are run and
        dropped (a failed one too: the epoch is being left), DALI sees the end and resets."""
        self.feed.stop()
        while not self.pipeline.empty():
            try:
                self.pipeline.outputs()
            except RuntimeError:
                pass
            finally:
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

    def drain(self):
        try:   # DALI cannot skip: run what is left of the epoch (not iter(): that would reset)
            while True:
                next(self._it)
        except StopIteration:
            pass

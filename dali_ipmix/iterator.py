"""``IPMixIterator``: a DALI pipeline as a PyTorch batch iterator with exact epochs.

    it = IPMixIterator(training_pipeline(file_root="train", mixing_root="fractals", batch_size=128))
    for epoch in range(epochs):
        for (clean, view1, view2), labels in it:     # JSD mode; else ``for images, labels in it``
            ...

Tensors are NCHW (as the pipeline produces them: normalised float32/float16) and labels int64 of
shape (N,), all on the pipeline's device (CUDA for ``device="gpu"``, else CPU).
"""

from __future__ import annotations

import warnings
from typing import Optional, Sequence, Tuple

from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

__all__ = ["IPMixIterator", "shard_defaults", "LAST_BATCH_POLICIES"]

#: ``last_batch_policy`` names: ``partial`` returns a short last batch (every sample exactly once per
#: epoch); ``drop`` leaves the incomplete last batch out; ``fill`` pads it to full size with repeats.
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
            or ``"fill"``; see :data:`LAST_BATCH_POLICIES`.
        auto_reset: start the next epoch automatically after ``StopIteration`` (default True), so that
            ``for epoch ...: for batch in it:`` works; with False call :meth:`reset` between epochs.
        output_names: names of the pipeline outputs; the last must be ``"label"``. Three image outputs
            mean JSD mode.
        reader_name: the pipeline's data reader (sets the epoch size and shard bookkeeping).
    """

    def __init__(self, pipeline, *, last_batch_policy: str = "partial", auto_reset: bool = True,
                 output_names: Optional[Sequence[str]] = None, reader_name: Optional[str] = None):
        info = getattr(pipeline, "ipmix_info", None)
        output_names = tuple(output_names or (info.output_names if info else ()))
        reader_name = reader_name or (info.reader_name if info else None)
        if not output_names or output_names[-1] != "label" or len(output_names) not in (2, 4):
            raise ValueError(f"output_names={output_names!r} is invalid: expected (images, 'label') or "
                             "(clean, view1, view2, 'label'); pipelines not made by dali_ipmix must "
                             "pass output_names and reader_name")
        if reader_name is None:
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
        try:   # DALIGenericIterator builds the pipeline and runs the first batch right away
            self._it = DALIGenericIterator([pipeline], list(output_names), reader_name=reader_name,
                                           last_batch_policy=LAST_BATCH_POLICIES[last_batch_policy],
                                           auto_reset=auto_reset)
        except RuntimeError as err:
            raise self._explain(err) from err

    @staticmethod
    def _check_shard(info):
        dist = _dist_rank_world()
        if info is not None and dist is not None and (info.shard_id, info.num_shards) != dist:
            warnings.warn(f"pipeline reads shard {info.shard_id} of {info.num_shards} but this process "
                          f"is rank {dist[0]} of {dist[1]} in torch.distributed", stacklevel=3)

    @property
    def batch_size(self) -> int:
        return self._it.batch_size

    def __len__(self) -> int:
        """Batches per epoch."""
        return len(self._it)

    def __iter__(self):
        return self

    def _explain(self, err: RuntimeError) -> RuntimeError:
        """A decoder failure names the file only sometimes; then find the culprit by checking the
        pipeline's files (header check: fast) and name it. Other errors pass through unchanged."""
        if self.info is None or "decoders" not in str(err):
            return err
        from .files import find_bad_images
        suspects = find_bad_images((*self.info.files, *self.info.mixing_files), "header")
        if not suspects:
            return err
        named = "\n".join(f"  {p}: {why}" for p, why in suspects[:20])
        return RuntimeError(f"DALI could not decode an input image; these files fail the check:\n"
                            f"{named}\nDALI said: {str(err).strip()}")

    def __next__(self):
        try:
            out = next(self._it)[0]
        except RuntimeError as err:
            raise self._explain(err) from err
        labels = out["label"].reshape(-1).long()
        if self.jsd:
            return (out[self.output_names[0]], out[self.output_names[1]],
                    out[self.output_names[2]]), labels
        return out[self.output_names[0]], labels

    def reset(self):
        """Start the next epoch (needed only with ``auto_reset=False``)."""
        self._it.reset()

"""Checkpoint files of the training scripts: written with plain values only, read without running code.

``torch.load(..., weights_only=False)`` unpickles anything, so evaluating or resuming from a checkpoint
someone else made would run whatever code was pickled into it. The scripts' checkpoints hold only
tensors, state dicts and plain values (numbers, strings, lists, dicts, None), which torch's
``weights_only=True`` unpickler loads; a file that needs more is refused, naming it.
"""

from __future__ import annotations

import os
import pickle
from pathlib import PurePath

import torch

__all__ = ["load", "plain_args"]

_PLAIN = (str, int, float, bool, type(None))


def plain_args(args) -> dict:
    """``vars(args)`` (an ``argparse.Namespace`` or a dict) with every value a plain one: paths become
    strings, tuples lists, anything else ``str(value)``; what ``weights_only`` loading accepts."""
    def plain(v):
        if isinstance(v, _PLAIN):
            return v
        if isinstance(v, PurePath):
            return os.fspath(v)
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        return str(v)
    return {str(k): plain(v) for k, v in (args if isinstance(args, dict) else vars(args)).items()}


def load(path, map_location="cpu"):
    """The contents of checkpoint ``path``, loaded with ``weights_only=True``. A file that needs
    anything beyond tensors, state dicts and plain values to load raises ``SystemExit`` naming it
    (loading it unsafely would run code pickled into it); nothing of it is executed."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
        why = next((line for line in lines if "WeightsUnpickler error" in line), lines[-1])
        why = why.split(". Please use")[0]
        raise SystemExit(
            f"{path}: refused: this checkpoint needs more than tensors, state dicts and plain values to "
            f"load ({why}); loading it would run code pickled into it. The training scripts' "
            "checkpoints never need more: load only files you made or trust.") from None

"""Argument checks, in one place and one style: a bad value raises ``ValueError`` naming the argument,
the value and the rule, e.g. ``seed=-1 is invalid: must be >= 0``.

Integers may be Python or NumPy integers (``np.int64(0)``) and come back as ``int``; ``bool`` (an
``int`` subclass), strings and floats are refused, so ``seed="3"`` or ``batch_size=True`` is an error
instead of silently read as a number. Real numbers may be ints, floats or NumPy scalars, never bools
or strings, and must be finite.
"""

from __future__ import annotations

import math
import numbers
from typing import List, Optional

import numpy as np

__all__ = ["integer", "optional_integer", "finite_reals", "INT64_MAX"]

#: Seeds and epochs are carried as 64-bit integers (DALI's seeds, the per-sample keys).
INT64_MAX = 2**63 - 1


def _rule(lo, hi) -> str:
    if lo is not None and hi is not None:
        return f"an integer in {lo}..{hi}"
    if lo is not None:
        return f"an integer >= {lo}"
    return "an integer" if hi is None else f"an integer <= {hi}"


def _is_integer(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def integer(name: str, value, lo: Optional[int] = None, hi: Optional[int] = None, *,
            note: str = "", label: Optional[str] = None) -> int:
    """``value`` as an ``int`` when it is a Python or NumPy integer with ``lo <= value <= hi`` (a bound
    of None: none); else ``ValueError`` ``"<name>=<value> is invalid: ..."`` (``label`` replaces
    ``"<name>=<value>"``; ``note`` is appended to the message, e.g. what the argument means)."""
    label = label or f"{name}={value!r}"
    if not _is_integer(value):
        raise ValueError(f"{label} is invalid: expected {_rule(lo, hi)} (a Python or NumPy integer), "
                         f"got {type(value).__name__}{note}")
    v = int(value)
    if lo is not None and v < lo:
        raise ValueError(f"{label} is invalid: must be >= {lo}{note}")
    if hi is not None and v > hi:
        raise ValueError(f"{label} is invalid: must be <= {hi}{note}")
    return v


def optional_integer(name: str, value, lo: Optional[int] = None, hi: Optional[int] = None, *,
                     note: str = "") -> Optional[int]:
    """``None``, or :func:`integer`'s result; the message of a bad value says None is allowed too."""
    if value is None:
        return None
    return integer(name, value, lo, hi, note=" (or None)" + note)


def finite_reals(name: str, values, *, positive: bool = False) -> List[float]:
    """``values`` (one real number or a sequence of them) as a list of floats, each finite (and > 0
    with ``positive``); else ``ValueError`` naming ``name``, the entry and the rule."""
    single = not isinstance(values, (list, tuple, np.ndarray))
    items = [values] if single else np.asarray(values).reshape(-1).tolist() \
        if isinstance(values, np.ndarray) else list(values)
    rule = "a finite real number" + (" > 0" if positive else "") + " (int, float or a NumPy scalar)"
    out = []
    for v in items:
        entry = "" if single else f"entry {v!r}: "
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real) or \
                not math.isfinite(float(v)) or (positive and not float(v) > 0):
            raise ValueError(f"{name}={values!r} is invalid: {entry}expected {rule}")
        out.append(float(v))
    return out

"""The native DALI operator ``IpmixNative`` (``fn.ipmix_native``): finding and loading the plugin, its
arguments from an :class:`IPMixConfig`, and its debug plan outputs as an :class:`IPMixPlan`.

The plugin is built by the top-level ``CMakeLists.txt`` (``scripts/setup.sh`` runs it) into
``build/libdali_ipmix_native.so``. It is looked up, in order, at ``$DALI_IPMIX_NATIVE_LIB``, next to
this package (an install that copied it there) and in the repository's ``build/`` folder, and loaded
once per process with ``nvidia.dali.plugin_manager.load_library``. Nothing here imports DALI until
:func:`load` is called.

Plan record (``return_plan=True``, one float64 vector per sample and view; ``csrc/ipx_plan.h``'s
``ipx_write_plan``): chain weights (k), m, chain kinds (k), op counts (k), then per chain and step
(``max(t, 1)`` steps) the :data:`RECORD_FIELDS`. Table output: the view's ``k * max(t, 1)`` IpxStep rows
(26 uint32 words each) then ``m, w_0 .. w_k-1`` as float32 bits, what ``table.pack_plan`` writes.
"""

from __future__ import annotations

import os
import threading
from typing import Optional

import numpy as np

from .config import IPMixConfig
from .plan import IPMixPlan
from .table import OP_CODES, STEP_FIELDS

__all__ = ["OPERATOR", "library_path", "available", "default_backend", "has_gpu_operator", "require_gpu_operator",
           "load", "operator_args", "plan_from_records", "split_table", "RECORD_FIELDS", "NotBuiltError"]

OPERATOR = "ipmix_native"                 # the fn.* name of the IpmixNative schema
LIBRARY = "libdali_ipmix_native.so"
#: Per-step fields of a plan record, in order (IPMixPlan field names).
RECORD_FIELDS = ("op", "level", "sign", "size", "top", "left", "rect_h", "rect_w", "pixel_op", "wa", "wb",
               "p", "mask_key", "from_image", "src_op", "src_level", "src_sign")
_INT_FIELDS = {"op", "sign", "size", "top", "left", "rect_h", "rect_w", "pixel_op", "src_op", "src_sign"}
_PACKAGE = os.path.dirname(os.path.abspath(__file__))
_lock = threading.Lock()
_loaded: Optional[str] = None


class NotBuiltError(RuntimeError):
    """The native plugin library was asked for but is not built (or not found)."""


def library_path() -> Optional[str]:
    """Path of the built plugin library, or None when none is found."""
    env = os.environ.get("DALI_IPMIX_NATIVE_LIB")
    candidates = [env] if env else []
    candidates += [os.path.join(_PACKAGE, LIBRARY),
                   os.path.join(os.path.dirname(_PACKAGE), "build", LIBRARY)]
    for path in candidates:
        if path and os.path.isfile(path):
            return path
    return None


def available() -> bool:
    """Whether the native operator is built (it is loaded on first use)."""
    return library_path() is not None


def default_backend(device: str = "cpu") -> str:
    """``fn.ipmix``'s backend when none is given: ``$DALI_IPMIX_BACKEND`` if set, else ``"native"``
    when the plugin is built (for ``device="gpu"``: with its GPU operator), else ``"python"``."""
    chosen = os.environ.get("DALI_IPMIX_BACKEND")
    if chosen:
        return chosen
    if not available():
        return "python"
    return "native" if device != "gpu" or has_gpu_operator() else "python"


def has_gpu_operator() -> bool:
    """Whether the built plugin has the GPU operator (CMake builds it when it finds ``nvcc``); loads
    the plugin. False when the plugin is not built."""
    if not available():
        return False
    load()
    from nvidia.dali import backend
    return "IpmixNative" in backend.RegisteredGPUOps()


def require_gpu_operator():
    """Raises :class:`NotBuiltError` naming the fix when the plugin has no GPU operator."""
    if not has_gpu_operator():
        raise NotBuiltError(
            f"backend='native' on the GPU needs the plugin's GPU operator, but {library_path()} was "
            "built without it (CMake found no CUDA compiler). Rebuild where nvcc is found (e.g. "
            "CUDACXX=/usr/local/cuda/bin/nvcc ./scripts/setup.sh), or use backend='python' (CuPy)")


def load() -> str:
    """Loads the plugin into DALI once per process; returns its path. Raises :class:`NotBuiltError`
    with the build command when it is not built."""
    global _loaded
    with _lock:
        if _loaded:
            return _loaded
        path = library_path()
        if path is None:
            hint = os.environ.get("DALI_IPMIX_NATIVE_LIB")
            raise NotBuiltError(
                "backend='native' needs the dali-ipmix DALI plugin, which is not built"
                + (f" (DALI_IPMIX_NATIVE_LIB={hint!r} is not a file)" if hint else "")
                + ". Build it from the repository root with ./scripts/setup.sh, or: cmake -S . -B build "
                  "-G Ninja -DPython_EXECUTABLE=.venv/bin/python && cmake --build build; "
                  "or use backend='python'")
        from nvidia.dali import plugin_manager
        plugin_manager.load_library(path)
        _loaded = path
        return path


def operator_args(config: IPMixConfig) -> dict:
    """The ``fn.ipmix_native`` arguments that carry ``config``."""
    args = dict(k=int(config.k), t=int(config.t), beta=float(config.beta),
                severity=float(config.severity), whole_image_patch=bool(config.whole_image_patch),
                source_from_image=bool(config.source_from_image), jsd=bool(config.jsd),
                op_codes=[OP_CODES[name] for name in config.op_names])
    # An empty list has no element type for DALI; sizes above any image are dropped at run time, so
    # one huge entry means "no fixed size" (config validation guarantees whole_image_patch then).
    args["patch_sizes"] = [int(s) for s in config.patch_sizes] or [2 ** 30]
    return args


def plan_from_records(records, config: IPMixConfig, height: int, width: int) -> IPMixPlan:
    """The :class:`IPMixPlan` of N plan records ((N, D) float64, one row per sample) of one view,
    drawn for ``height x width`` images with ``config``."""
    records = np.asarray(records, np.float64)
    k, steps = config.k, max(config.t, 1)
    n = records.shape[0]
    expect = 1 + 3 * k + k * steps * len(RECORD_FIELDS)
    if records.ndim != 2 or records.shape[1] != expect:
        raise ValueError(f"plan records have shape {records.shape}; expected (N, {expect}) for "
                         f"k={k}, t={config.t}")
    weights = records[:, :k]
    m = records[:, k]
    kind = records[:, k + 1:2 * k + 1].astype(np.int64)
    n_ops = records[:, 2 * k + 1:3 * k + 1].astype(np.int64)
    fields = records[:, 3 * k + 1:].reshape(n, k, steps, len(RECORD_FIELDS))
    step = {}
    for i, name in enumerate(RECORD_FIELDS):
        value = fields[..., i]
        if name in _INT_FIELDS:
            value = value.astype(np.int64)
        elif name == "mask_key":
            value = value.astype(np.uint32)
        elif name == "from_image":
            value = value != 0
        step[name] = value
    return IPMixPlan(op_names=config.op_names, image_shape=(int(height), int(width)), weights=weights,
                     m=m, kind=kind, n_ops=n_ops, **step)


def split_table(table, config: IPMixConfig):
    """A table output ((N, W) uint32) as ``(steps, mixw)``: (N * k * max(t, 1), 26) uint32 rows and
    (N, 1 + k) float32, the layout of ``table.pack_plan``."""
    table = np.asarray(table, np.uint32)
    rows = config.k * max(config.t, 1) * len(STEP_FIELDS)
    steps = table[:, :rows].reshape(-1, len(STEP_FIELDS))
    return steps, np.ascontiguousarray(table[:, rows:]).view(np.float32)

"""The native DALI operator ``IpmixNative`` (``fn.ipmix_native``): finding, checking and loading the
plugin, its arguments from an :class:`IPMixConfig`, and its debug plan outputs as an :class:`IPMixPlan`.

The plugin (``libdali_ipmix_native.so``) is compiled by the package's build backend (scikit-build-core
running ``CMakeLists.txt``) when the package is installed or its wheel is built, and lies next to this
module. It is looked up, in order, at ``$DALI_IPMIX_NATIVE_LIB`` (a library built elsewhere), next to
this package (a wheel or ``pip install .``), in the installed distribution's files (an editable
install) and in a repository's ``build/native/`` (a developer's ``cmake -S . -B build/native``).

DALI has no stable plugin ABI, so the library carries a build stamp (``plugin/build_stamp.cc``: the
DALI release and CUDA major it was compiled against, and whether it holds the GPU operator), read from
the file before DALI loads it; a library built for another DALI is refused with the rebuild command.
It is loaded once per process with ``nvidia.dali.plugin_manager.load_library``.

Plan record (``return_plan=True``, one float64 vector per sample and view; ``csrc/ipx_plan.h``'s
``ipx_write_plan``): chain weights (k), m, chain kinds (k), op counts (k), then per chain and step
(``max(t, 1)`` steps) the :data:`RECORD_FIELDS`, then with a chain start per chain the
:data:`START_RECORD_FIELDS`. Table output: the view's ``k * max(t, 1)`` IpxStep rows
(26 uint32 words each) then ``m, w_0 .. w_k-1`` as float32 bits, what ``table.pack_plan`` writes.
"""

from __future__ import annotations

import functools
import os
import threading
import warnings
from typing import Dict, Optional

import numpy as np

from .config import MixConfig
from .plan import IPMixPlan
from .table import OP_CODES, STEP_FIELDS

__all__ = ["OPERATOR", "library_path", "available", "default_backend", "has_gpu_operator", "require_gpu_operator",
           "load", "build_stamp", "check_build", "operator_args", "plan_from_records",
           "RECORD_FIELDS", "NotBuiltError", "IncompatibleBuildError"]

OPERATOR = "ipmix_native"                 # the fn.* name of the IpmixNative schema
LIBRARY = "libdali_ipmix_native.so"
STAMP_PREFIX = b"dali-ipmix-build-stamp:"
#: How to get a plugin compiled for the DALI in use, for error messages.
REBUILD = ("rebuild it against this DALI: pip install --force-reinstall --no-binary dali-ipmix dali-ipmix "
           "(an install from the package index; needs CMake and a C++17 compiler), pip install "
           "--force-reinstall . (a source folder) or ./scripts/setup.sh (a repository checkout); "
           "DALI_IPMIX_NATIVE_LIB=/path/to/" + LIBRARY + " uses a library built elsewhere")
#: Per-step fields of a plan record, in order (IPMixPlan field names).
RECORD_FIELDS = ("op", "level", "sign", "size", "top", "left", "rect_h", "rect_w", "pixel_op", "wa", "wb",
               "p", "mask_key", "from_image", "src_op", "src_level", "src_sign")
#: Per-chain fields after the steps, with a chain start (``Engine.chain_start``).
START_RECORD_FIELDS = ("start", "start_op", "start_level", "start_sign")
#: The ``chain_kinds`` argument's codes (``Engine.chain_kinds``).
CHAIN_KIND_CODES = {"both": 0, "image": 1, "patch": 2}
_INT_FIELDS = {"op", "sign", "size", "top", "left", "rect_h", "rect_w", "pixel_op", "src_op", "src_sign"}
_PACKAGE = os.path.dirname(os.path.abspath(__file__))
_lock = threading.Lock()
_loaded: Optional[str] = None
_warned_fallback = False


class NotBuiltError(RuntimeError):
    """The native plugin library was asked for but is not built (or not found)."""


class IncompatibleBuildError(NotBuiltError):
    """The plugin library found was built for another DALI release or CUDA line."""


def _installed_library() -> Optional[str]:
    """The plugin among the installed distribution's files (an editable install keeps it in
    site-packages while the package's modules stay in the source folder)."""
    from importlib import metadata
    # Every dali-ipmix found: a stale egg-info of an older setuptools install may come first.
    for dist in metadata.distributions(name="dali-ipmix"):
        for file in dist.files or ():
            if file.name == LIBRARY:
                return str(file.locate())
    return None


def library_path() -> Optional[str]:
    """Path of the plugin library, or None when none is found (see the module's lookup order)."""
    env = os.environ.get("DALI_IPMIX_NATIVE_LIB")
    if env:
        return env if os.path.isfile(env) else None
    candidates = [os.path.join(_PACKAGE, LIBRARY), _installed_library(),
                  os.path.join(os.path.dirname(_PACKAGE), "build", "native", LIBRARY)]
    for path in candidates:
        if path and os.path.isfile(path):
            return path
    return None


def build_stamp(path: Optional[str] = None) -> Optional[Dict[str, str]]:
    """The build stamp of the plugin at ``path`` (default: :func:`library_path`), read from the file
    without loading it: ``{"dali": "2.4.0", "cuda": "12", "gpu": "12"}`` (``cuda``: DALI's CUDA major;
    ``gpu``: ``"0"`` without the GPU operator, else the CUDA major it was compiled with). None when there is no
    library, or it carries no stamp."""
    path = path or library_path()
    if path is None:
        return None
    with open(path, "rb") as f:
        data = f.read()
    start = data.find(STAMP_PREFIX)
    if start < 0:
        return None
    end = data.find(b"\0", start)
    text = data[start + len(STAMP_PREFIX):end].decode("ascii", "replace")
    return dict(item.split("=", 1) for item in text.split(";") if "=" in item)


@functools.lru_cache(maxsize=None)
def _running_dali():
    """``(release, CUDA major)`` of the DALI this process imports."""
    import nvidia.dali as dali
    return dali.__version__, str(dali.__cuda_version__)[:2]


def check_build(path: Optional[str] = None) -> str:
    """Raises :class:`NotBuiltError` unless a plugin is found (at ``path``, default
    :func:`library_path`) and was built for the running DALI release and CUDA line
    (:class:`IncompatibleBuildError` then, naming both); returns its path."""
    path = path or library_path()
    if path is None:
        hint = os.environ.get("DALI_IPMIX_NATIVE_LIB")
        raise NotBuiltError(
            "backend='native' needs the dali-ipmix DALI plugin (" + LIBRARY + "), which this install "
            "does not have" + (f" (DALI_IPMIX_NATIVE_LIB={hint!r} is not a file)" if hint else "")
            + ". It is compiled when the package is built: pip install --force-reinstall --no-binary "
              "dali-ipmix dali-ipmix (needs CMake and a C++17 compiler), or ./scripts/setup.sh in a "
              "repository checkout; DALI_IPMIX_NATIVE_LIB=/path/to/" + LIBRARY + " uses a library built "
              "elsewhere; or use backend='python' (the python_function backend, slower)")
    stamp = build_stamp(path)
    release, cuda = _running_dali()
    if stamp is None:
        raise IncompatibleBuildError(f"{path} carries no build stamp (built by an older dali-ipmix), so "
                                     f"it cannot be checked against DALI {release}: {REBUILD}; or use "
                                     "backend='python'")
    if (stamp.get("dali"), stamp.get("cuda")) != (release, cuda):
        raise IncompatibleBuildError(
            f"{path} was built for DALI {stamp.get('dali')} (CUDA {stamp.get('cuda')}) but this process "
            f"runs DALI {release} (CUDA {cuda}); DALI has no stable plugin ABI, so {REBUILD}; or use "
            "backend='python'")
    return path


def available() -> bool:
    """Whether a plugin built for the running DALI is found (it is loaded on first use)."""
    try:
        check_build()
    except NotBuiltError:
        return False
    return True


def default_backend(device: str = "cpu") -> str:
    """``fn.ipmix``'s backend when none is given: ``$DALI_IPMIX_BACKEND`` if set, else ``"native"``
    when a usable plugin is found (for ``device="gpu"``: with its GPU operator), else ``"python"``, with
    a warning (once per process) that says why."""
    chosen = os.environ.get("DALI_IPMIX_BACKEND")
    if chosen:
        return chosen
    try:
        check_build()
    except NotBuiltError as err:
        _warn_fallback(str(err))
        return "python"
    if device == "gpu" and not has_gpu_operator():
        _warn_fallback(f"{library_path()} has no GPU operator (built without a CUDA compiler of DALI's "
                       "CUDA major)")
        return "python"
    return "native"


def _warn_fallback(why: str):
    global _warned_fallback
    if not _warned_fallback:
        _warned_fallback = True
        warnings.warn(f"dali-ipmix runs IPMix on the slower python_function backend: {why}. Pass "
                      "backend='python' (or set DALI_IPMIX_BACKEND=python) to choose it without this "
                      "warning", RuntimeWarning, stacklevel=3)


def has_gpu_operator() -> bool:
    """Whether the plugin has the GPU operator (CMake builds it when it finds a CUDA compiler of
    DALI's CUDA major); loads the plugin. False when no usable plugin is found."""
    if not available():
        return False
    load()
    from nvidia.dali import backend
    return "IpmixNative" in backend.RegisteredGPUOps()


def require_gpu_operator():
    """Raises :class:`NotBuiltError` naming the fix when the plugin has no GPU operator."""
    if not has_gpu_operator():
        cuda = _running_dali()[1]
        raise NotBuiltError(
            f"backend='native' on the GPU needs the plugin's GPU operator, but {library_path()} was "
            f"built without it (CMake found no CUDA {cuda} compiler: the GPU operator is compiled only "
            f"with a toolkit of DALI's CUDA major). Rebuild where a CUDA {cuda} nvcc is found (e.g. "
            f"CUDACXX=/usr/local/cuda-{cuda}/bin/nvcc pip install --force-reinstall --no-binary "
            "dali-ipmix dali-ipmix, or ./scripts/setup.sh), or use backend='python' (CuPy)")


def load() -> str:
    """Loads the plugin into DALI once per process; returns its path. Raises :class:`NotBuiltError`
    (:class:`IncompatibleBuildError`) with the build command when none is found or it was built for
    another DALI."""
    global _loaded
    with _lock:
        if _loaded:
            return _loaded
        path = check_build()
        from nvidia.dali import plugin_manager
        plugin_manager.load_library(path)
        _loaded = path
        return path


def operator_args(config: MixConfig) -> dict:
    """The ``fn.ipmix_native`` arguments that carry ``config`` (its engine's knobs, ``config.engine``)."""
    e = config.engine
    args = dict(k=int(e.k), t=int(e.t), beta=float(e.beta), severity=float(e.severity),
                whole_image_patch=bool(e.whole_image_patch), source_from_image=bool(e.source_from_image),
                jsd=bool(config.jsd), op_codes=[OP_CODES[name] for name in e.op_names],
                min_ops=int(e.min_ops), chain_kinds=CHAIN_KIND_CODES[e.chain_kinds],
                pixel_ops=int(e.pixel_ops), whole_image_only=bool(e.whole_image_only),
                final_blend=bool(e.final_blend), chain_start=bool(e.chain_start))
    # An empty list has no element type for DALI; sizes above any image are dropped at run time, so
    # one huge entry means "no fixed size" (config validation guarantees whole_image_patch then).
    args["patch_sizes"] = [int(s) for s in e.patch_sizes] or [2 ** 30]
    return args


def plan_from_records(records, config: MixConfig, height: int, width: int) -> IPMixPlan:
    """The :class:`IPMixPlan` of N plan records ((N, D) float64, one row per sample) of one view,
    drawn for ``height x width`` images with ``config``."""
    records = np.asarray(records, np.float64)
    e = config.engine
    k, steps = e.k, max(e.t, 1)
    n = records.shape[0]
    body = 1 + 3 * k + k * steps * len(RECORD_FIELDS)
    expect = body + (k * len(START_RECORD_FIELDS) if e.chain_start else 0)
    if records.ndim != 2 or records.shape[1] != expect:
        raise ValueError(f"plan records have shape {records.shape}; expected (N, {expect}) for "
                         f"k={k}, t={e.t}, chain_start={e.chain_start}")
    weights = records[:, :k]
    m = records[:, k]
    kind = records[:, k + 1:2 * k + 1].astype(np.int64)
    n_ops = records[:, 2 * k + 1:3 * k + 1].astype(np.int64)
    fields = records[:, 3 * k + 1:body].reshape(n, k, steps, len(RECORD_FIELDS))
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
    if e.chain_start:
        start = records[:, body:].reshape(n, k, len(START_RECORD_FIELDS))
        step.update(start=start[..., 0] != 0, start_op=start[..., 1].astype(np.int64),
                    start_level=start[..., 2], start_sign=start[..., 3].astype(np.int64))
    else:
        step.update(start=np.zeros((n, k), bool), start_op=np.zeros((n, k), np.int64),
                    start_level=np.zeros((n, k)), start_sign=np.ones((n, k), np.int64))
    return IPMixPlan(op_names=e.op_names, image_shape=(int(height), int(width)), weights=weights,
                     m=m, kind=kind, n_ops=n_ops, chain_start=bool(e.chain_start), **step)

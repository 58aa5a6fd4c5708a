"""``ipmix``: IPMix as a DALI operator, for use inside any DALI pipeline definition.

    from dali_ipmix import fn as ipmix_fn
    clean, view1, view2 = ipmix_fn.ipmix(images, mixing, config=IPMixConfig.imagenet(), seed=0)

Layout: both inputs are batches of HWC uint8 RGB images on the 0..255 scale, every image of a batch the
same H x W (crop before IPMix), ``mixing`` holding one mixing picture per sample of the same size.
Outputs are HWC float32 on the 0..255 scale (not normalised), layout ``"HWC"``; or, with
``normalize=dict(mean=..., std=..., layout="CHW", dtype="float32")``, normalised as
``fn.crop_mirror_normalize`` would: the native operator then writes them so in its final mix (no
extra pass over the images, on the CPU and the GPU), the python backend runs
``fn.crop_mirror_normalize`` after IPMix. In JSD mode (``config.jsd``) the outputs are
``(clean, view1, view2)``: the input as float32 and two independent IPMix views sharing the mixing picture.

Two backends (``backend=``). ``"native"`` (the default when the plugin is built, see
:mod:`dali_ipmix.native`) is the C++/CUDA DALI operator ``fn.ipmix_native``: per-sample work on DALI's
thread pool on the CPU, the compiled core's kernels on DALI's stream on the GPU, no Python per batch;
every sample and view draws its plan from (seed, batch, sample, view), or with per-sample ``keys``
from (seed, key, view). ``"python"`` is
``fn.python_function(batch_processing=True)`` around :func:`dali_ipmix.ipmix_batch`: on the CPU
the function gets lists of NumPy arrays, on the GPU lists of CuPy arrays, and DALI runs it with its
CUDA stream made CuPy's current stream, so the CuPy kernels are ordered with DALI's own work.

Both backends draw every plan alike (:mod:`dali_ipmix.plan`, ``csrc/ipx_plan.h``): sample ``s`` of
the operator's batch ``b`` from ``(seed, b, s, view)``, or with ``keys`` from ``(seed, keys[s],
view)`` (:func:`dali_ipmix.keys.plan_keys`), so the same seed (and keys) gives the same views on
either backend and device, within float rounding. ``seed=None`` takes a fresh seed (python) or DALI's
per-operator seed (native), which differ.
"""

from __future__ import annotations

import importlib.util
import itertools
from typing import Optional

import numpy as np
from nvidia.dali import fn as dali_fn
from nvidia.dali import types
from nvidia.dali.data_node import DataNode
from nvidia.dali.pipeline import do_not_convert

from . import checks
from .augment import check_config, ipmix_views
from .config import IPMixConfig, MixConfig
from .arrays import array_module
from .keys import KeyedGenerator, plan_keys

__all__ = ["ipmix", "make_ipmix_function", "normalize_args", "normalize_node"]

_DTYPES = {"float32": types.FLOAT, "float16": types.FLOAT16}


def normalize_args(normalize: Optional[dict]) -> Optional[dict]:
    """``normalize`` of :func:`ipmix` checked and completed: ``mean`` and ``std`` as 3 floats each
    (0..255 scale, std > 0), ``layout`` ``"CHW"`` (default) or ``"HWC"``, ``dtype`` ``"float32"``
    (default) or ``"float16"``; None stays None."""
    if normalize is None:
        return None
    if not isinstance(normalize, dict):
        raise TypeError(f"normalize must be a dict(mean=..., std=..., layout=..., dtype=...), got "
                        f"{type(normalize).__name__}")
    unknown = set(normalize) - {"mean", "std", "layout", "dtype"}
    if unknown or not {"mean", "std"} <= set(normalize):
        raise ValueError(f"normalize={normalize!r}: give mean and std (and optionally layout, dtype); "
                         f"unknown keys: {sorted(unknown)}")
    out = {}
    for key in ("mean", "std"):   # finite (std > 0): NaN or inf would make NaN or zero outputs
        values = checks.finite_reals(f"normalize[{key!r}]", normalize[key], positive=key == "std")
        values = values * 3 if len(values) == 1 else values
        if len(values) != 3:
            raise ValueError(f"normalize[{key!r}] has {len(values)} values; expected 1 or 3 "
                             f"(per RGB channel, 0..255 scale)")
        out[key] = values
    out["layout"] = normalize.get("layout", "CHW")
    if out["layout"] not in ("CHW", "HWC"):
        raise ValueError(f"normalize['layout']={out['layout']!r} is invalid: use 'CHW' or 'HWC'")
    out["dtype"] = normalize.get("dtype", "float32")
    if out["dtype"] not in _DTYPES:
        raise ValueError(f"normalize['dtype']={out['dtype']!r} is invalid: use 'float32' or 'float16'")
    return out


def normalize_node(image, norm, **crop):
    """``fn.crop_mirror_normalize`` as ``norm`` (from :func:`normalize_args`) says: HWC (uint8 or float
    0..255) -> ``norm``'s layout and type; ``crop`` passes crop arguments through."""
    return dali_fn.crop_mirror_normalize(image, dtype=_DTYPES[norm["dtype"]], output_layout=norm["layout"],
                                         mean=norm["mean"], std=norm["std"], **crop)


def _stack(batch, name):
    """A list of (H, W, 3) arrays -> one (N, H, W, 3) array, or a ValueError naming the shapes.

    On the GPU a batch that DALI holds in one contiguous buffer (the usual case) becomes a view of that
    buffer: no copy, and no pointer table uploaded from the host as ``cupy.stack`` would.
    """
    xp = array_module(batch[0])
    if xp is not np:
        whole = _contiguous_view(batch, xp)
        if whole is not None:
            return whole
    try:
        return xp.stack(batch)
    except ValueError:
        shapes = sorted({tuple(a.shape) for a in batch})
        raise ValueError(f"ipmix: every {name} sample of a batch must have the same (H, W, 3) shape; "
                         f"got shapes {shapes[:8]}. Crop or resize to one size before fn.ipmix."
                         ) from None


def _contiguous_view(batch, cupy):
    """The samples as one (N, H, W, 3) CuPy view when they lie back to back in memory, else None."""
    first = batch[0]
    step = first.nbytes
    for i, a in enumerate(batch):
        if (a.shape != first.shape or a.dtype != first.dtype or not a.flags.c_contiguous
                or a.data.ptr != first.data.ptr + i * step):
            return None
    return cupy.ndarray((len(batch),) + tuple(first.shape), first.dtype, memptr=first.data)


@do_not_convert   # the returned closure must not be rewritten by DALI's AutoGraph (conditionals)
def make_ipmix_function(config: MixConfig, seed: Optional[int], num_threads: int = 1):
    """The batch function behind :func:`ipmix`: ``f(images, mixing[, keys]) -> outputs``.

    ``images`` and ``mixing`` are lists of N (H, W, 3) uint8 arrays (NumPy or CuPy). Returns a list of N
    (H, W, 3) float32 arrays (0..255), or in JSD mode a tuple of three such lists (clean, view1, view2).
    Outputs are returned as lists of views into one batched array because DALI's batch-mode
    python_function takes a list per output, not one stacked array. With ``keys`` (N int64 scalars),
    sample n's plans are drawn from ``(seed, keys[n])`` alone; without, from ``(seed, batch, n)``,
    ``batch`` counting the calls from 0: what the native operator draws (:func:`keys.plan_keys`).
    ``seed=None``: a fresh seed.
    """
    check_config(config)
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1, np.uint64)[0] >> np.uint64(1))
    batches = itertools.count()

    def ipmix_function(images, mixing, keys=None):
        batch = next(batches)   # as the native operator's counter: every call counts
        if len(images) != len(mixing) or (keys is not None and len(keys) != len(images)):
            raise ValueError(f"ipmix: the batches of images, mixing (and keys) differ in size: "
                             f"{len(images)} vs {len(mixing)}" + ("" if keys is None else f" vs {len(keys)}"))
        if not images:
            return ([], [], []) if config.jsd else []
        try:
            x = _stack(images, "images")
            z = _stack(mixing, "mixing")
            draw = KeyedGenerator(plan_keys(seed, None if keys is None else _host_keys(keys),
                                            batch=batch, size=len(images)))
            outputs = [list(a) for a in ipmix_views(x, z, config, draw, num_threads=num_threads)]
            return tuple(outputs) if config.jsd else outputs[0]
        except BaseException:
            _detach_dali_stream(images)
            raise

    return ipmix_function


def _host_keys(keys) -> np.ndarray:
    """int64 (N,) on the host from a batch of N scalar keys (NumPy, or CuPy in a GPU pipeline: a copy of
    N * 8 bytes that waits for DALI's stream, the one host synchronisation of the python backend)."""
    if isinstance(keys[0], np.ndarray):
        return np.asarray([k.reshape(()) for k in keys], dtype=np.int64)
    import cupy
    return cupy.asnumpy(cupy.stack([k.reshape(()) for k in keys])).astype(np.int64)


def _detach_dali_stream(batch):
    """Before an exception leaves a GPU batch function: forget DALI's stream in CuPy's Stream object.

    DALI 2.4's ``python_function`` wraps its own CUDA stream in a ``cupy.cuda.Stream`` and clears the
    pointer only when the function returns normally; after an exception, CuPy's ``Stream.__del__``
    would destroy the stream DALI still uses. Only DALI's stream is touched (a caller's own CuPy
    stream outside a pipeline is left alone).
    """
    if not batch or isinstance(batch[0], np.ndarray):
        return
    import cupy
    stream = cupy.cuda.get_current_stream()
    if stream.ptr and stream.ptr == _dali_stream_ptr():
        stream.ptr = 0


def _dali_stream_ptr():
    """The CUDA stream DALI lent the running ``python_function``, or None outside one."""
    try:
        from nvidia.dali.ops._operators.python_function import PythonFunction
        return PythonFunction.current_stream().ptr
    except Exception:   # not inside a DALI GPU python_function (or another DALI layout)
        return None


def ipmix(images, mixing=None, *, config: Optional[MixConfig] = None, seed: Optional[int] = None,
          keys=None, device: Optional[str] = None, num_threads: int = 1, backend: Optional[str] = None,
          return_plan: bool = False, normalize: Optional[dict] = None):
    """IPMix, AugMix or PixMix (as ``config`` says) on a batch of DataNodes.

    Args:
        images: DataNode, HWC uint8 RGB (0..255), one size across the batch.
        mixing: DataNode, same shape per sample as ``images``: the mixing picture of each sample. A
            method that reads none (AugMix: ``config.needs_mixing`` is False) takes None (or any such
            DataNode, e.g. ``images`` itself, never read).
        config: :class:`IPMixConfig`, :class:`AugMixConfig` or :class:`PixMixConfig`; defaults to
            ``IPMixConfig.imagenet()``.
        seed: seed of the operator's random generator; ``None`` draws a fresh one (python) or
            takes DALI's per-operator seed, derived from the pipeline's seed (native).
        keys: None, or a CPU DataNode of one int64 scalar per sample: sample n's plans are then drawn
            from ``(seed, keys[n])`` alone, the same in any batch and at any position (the ready
            pipelines pass :class:`keys.SampleDraws`' IPMix keys); ``seed=None`` then means 0 (the
            keys carry the randomness). Without keys the draws depend on the batch count and the
            sample's place in its batch.
        device: ``"cpu"`` or ``"gpu"``; defaults to ``"gpu"`` when either input is on
            the GPU (the other is then moved there), else ``"cpu"``.
        num_threads: python backend on the CPU only: threads the NumPy executor splits each batch
            over (0 = one per core); the native operator uses the pipeline's thread pool instead.
        backend: ``"native"`` (the DALI plugin; an error naming the build command when it is not
            built), ``"python"`` (python_function: NumPy on the CPU, CuPy on the GPU), or ``None``:
            native when built (on the GPU: with its GPU operator), else python
            (:func:`dali_ipmix.native.default_backend`).
        return_plan: native only: also return, per view, its plan record and plan-table rows
            (see :mod:`dali_ipmix.native`; ``native.plan_from_records`` makes an ``IPMixPlan``).
        normalize: None (outputs HWC float32, 0..255), or ``dict(mean=, std=, layout=, dtype=)``:
            every image output becomes ``(v - mean[c]) / std[c]`` (mean and std: 1 or 3 floats on the
            0..255 scale), in ``layout`` ``"CHW"`` (default) or ``"HWC"``, of ``dtype``
            ``"float32"`` (default) or ``"float16"``, exactly as ``fn.crop_mirror_normalize(...,
            mean=mean, std=std, output_layout=layout)`` of the unnormalised output on the same
            device. Fused into the native operator's final mix; a separate
            ``crop_mirror_normalize`` after the python backend.

    Returns:
        One DataNode (float32 HWC, 0..255, or as ``normalize`` says), or with ``config.jsd`` a tuple
        ``(clean, view1, view2)``; with ``return_plan`` a tuple with ``plan, table`` per view appended.
    """
    from . import native
    config = IPMixConfig.imagenet() if config is None else config
    check_config(config)
    on_gpu = [getattr(node, "device", "cpu") == "gpu" for node in (images, mixing)]
    if device is None:
        device = "gpu" if any(on_gpu) else "cpu"
    if device not in ("cpu", "gpu"):
        raise ValueError(f"device={device!r} is invalid: use 'cpu' or 'gpu'")
    backend = native.default_backend(device) if backend is None else backend
    if backend not in ("native", "python"):
        raise ValueError(f"backend={backend!r} is invalid: use 'native', 'python' or None")
    if return_plan and backend != "native":
        raise ValueError("return_plan=True needs backend='native' (the python backend keeps its plan "
                         "inside ipmix_batch(..., return_plan=True))")
    if device == "cpu" and any(on_gpu):
        raise ValueError("ipmix: device='cpu' but an input is on the GPU; DALI cannot move data "
                         "back to the CPU inside a pipeline, use device='gpu'")
    norm = normalize_args(normalize)
    seed = checks.optional_integer("seed", seed, 0, checks.INT64_MAX)
    num_threads = checks.integer("num_threads", num_threads, 0, note=" (0: one per core)")
    if keys is not None and not isinstance(keys, DataNode):
        raise TypeError(f"keys must be a DataNode of one int64 per sample (e.g. fn.external_source), got "
                        f"{type(keys).__name__}: one key for every sample would draw every sample alike")
    seed = 0 if keys is not None and seed is None else seed
    if mixing is None:
        if config.needs_mixing:
            raise TypeError(f"mixing is None, but {type(config).__name__} mixes every image with a "
                            "mixing picture: pass a DataNode of one per sample")
        mixing = images
    if backend == "native":
        native.load()
        if device == "gpu":
            native.require_gpu_operator()
            images, mixing = images.gpu(), mixing.gpu()
        extra = {} if seed is None else {"seed": int(seed)}
        if norm is not None:
            extra.update(mean=norm["mean"], std=norm["std"], output_layout=norm["layout"],
                         dtype=_DTYPES[norm["dtype"]])
        if keys is not None:
            extra["sample_key"] = keys
        out = getattr(dali_fn, native.OPERATOR)(images, mixing, device=device, return_plan=return_plan,
                                                **native.operator_args(config), **extra)
        out = tuple(out) if isinstance(out, (list, tuple)) else out
        return out
    if device == "gpu":
        if importlib.util.find_spec("cupy") is None:
            raise ImportError("fn.ipmix on the GPU runs IPMix with CuPy, which is not installed: "
                              "pip install 'dali-ipmix[gpu]' (the CuPy of DALI's CUDA line, cupy-cuda12x or "
                              "cupy-cuda13x), or use device='cpu'")
        images, mixing = images.gpu(), mixing.gpu()
    num_outputs = 3 if config.jsd else 1
    inputs = (images, mixing) if keys is None else (images, mixing, keys.gpu() if device == "gpu" else keys)
    out = dali_fn.python_function(
        *inputs, function=make_ipmix_function(config, seed, num_threads), batch_processing=True,
        num_outputs=num_outputs, device=device, output_layouts=["HWC"] * num_outputs)
    out = tuple(out) if config.jsd else out
    return out if norm is None else _normalize_images(out, norm, num_outputs)


def _normalize_images(out, norm, num_images):
    """``out`` (one DataNode or a tuple whose first ``num_images`` are images) with those normalised."""
    if not isinstance(out, tuple):
        return normalize_node(out, norm)
    return tuple(normalize_node(o, norm) if i < num_images else o for i, o in enumerate(out))

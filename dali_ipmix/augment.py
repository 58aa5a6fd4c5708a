"""augment_batch (also ``ipmix_batch``): the public batched entry point of the engine, for every
config of the family (check inputs, draw a plan, execute it)."""

from __future__ import annotations

import atexit
import concurrent.futures
import os

import numpy as np

from . import checks
from .config import MixConfig
from .arrays import array_module, nvtx_range
from .execute import executor_argument, get_executor
from .plan import IPMixPlan, draw_plan

_POOLS = {}
# A chunk smaller than this many pixels costs more in thread hand-off than it saves (CIFAR batches).
MIN_PIXELS_PER_THREAD = 1 << 19


def check_batch(images, mixing):
    """Raises TypeError/ValueError naming the problem unless both are (N, H, W, 3) uint8 of one kind."""
    for name, arr in (("images", images), ("mixing", mixing)):
        try:
            array_module(arr)
        except TypeError as err:
            raise TypeError(f"{name}: {err}") from None
    if type(images) is not type(mixing):
        raise TypeError(f"images and mixing must both be NumPy or both CuPy arrays, got "
                        f"{type(images).__module__}.{type(images).__name__} and "
                        f"{type(mixing).__module__}.{type(mixing).__name__}")
    for name, arr in (("images", images), ("mixing", mixing)):
        if str(arr.dtype) != "uint8":
            raise TypeError(f"{name} must be uint8 (0..255), got dtype {arr.dtype}")
        if arr.ndim != 4:
            raise ValueError(f"{name} must have shape (N, H, W, 3) (NHWC), got shape {tuple(arr.shape)}")
        if arr.shape[-1] != 3:
            raise ValueError(f"{name} must have 3 channels (RGB, HWC layout), got shape "
                             f"{tuple(arr.shape)} with {arr.shape[-1]} channels")
        if min(arr.shape[1:3]) < 2:
            raise ValueError(f"{name} images must be at least 2x2 pixels, got shape {tuple(arr.shape)}")
    if tuple(images.shape) != tuple(mixing.shape):
        raise ValueError(f"images and mixing must have the same shape (one mixing picture per sample), "
                         f"got {tuple(images.shape)} and {tuple(mixing.shape)}")


def augment_batch(images, mixing, config: MixConfig, rng, *, return_plan: bool = False,
                  executor=None, num_threads: int = 1, backend=None):
    """One augmented view of every sample of a batch: IPMix, AugMix or PixMix, as ``config`` says.

    Args:
        images: (N, H, W, 3) uint8 HWC 0..255, the (cropped, flipped) training images; NumPy or CuPy.
        mixing: (N, H, W, 3) uint8, one mixing picture per sample, same array type as ``images``; or
            None when the method reads none (``config.needs_mixing`` is False: AugMix).
        config: an :class:`IPMixConfig`, :class:`AugMixConfig` or :class:`PixMixConfig`.
        rng: a ``numpy.random.Generator`` or an int seed; all random decisions come from it (on the host).
        return_plan: also return the :class:`IPMixPlan` that was executed.
        executor: who executes the plan: None (NumPy inputs: the array executor; CuPy inputs: the
            compiled core on CUDA), a name from ``execute.EXECUTORS`` or an executor object.
        num_threads: NumPy only: run the batch in up to this many contiguous chunks on a thread pool
            (NumPy and PIL release the GIL in their loops); 0 means one per CPU core. Small batches
            (under ``MIN_PIXELS_PER_THREAD`` pixels a chunk) use fewer threads. The plan is drawn
            for the whole batch first, so the output does not depend on the thread count.
        backend: the deprecated old name of ``executor``.

    Returns:
        (N, H, W, 3) float32 on the 0..255 scale (not normalised), on the inputs' device;
        with ``return_plan``, ``(output, plan)``.
    """
    check_config(config)
    num_threads = checks.integer("num_threads", num_threads, 0, note=" (0: one per core)")
    mixing = _mixing_or_images(images, mixing, config)
    check_batch(images, mixing)
    runner = get_executor(executor_argument(executor, backend, "augment_batch"), images)
    n, h, w, _ = images.shape
    with nvtx_range("draw_plan", array_module(images)):
        plan: IPMixPlan = draw_plan(n, h, w, config, rng)
    threads = min(num_threads or os.cpu_count() or 1, n * h * w // MIN_PIXELS_PER_THREAD)
    if threads > 1 and array_module(images) is np and runner.name == "arrays":
        out = _execute_chunks(plan, images, mixing, threads, runner)
    else:
        out = runner.execute(plan, images, mixing)
    return (out, plan) if return_plan else out


#: The name of the paper's method, kept: the same function.
ipmix_batch = augment_batch


def ipmix_views(images, mixing, config: MixConfig, rng, *, num_threads: int = 1, executor=None,
                backend=None):
    """What one batch of ``fn.ipmix`` returns: ``[view]``, or with ``config.jsd``
    ``[clean, view1, view2]`` (clean = ``images`` as float32; two independent draws of ``rng``
    sharing the mixing pictures). Arrays as :func:`augment_batch` takes and returns them (``mixing``
    may be None when ``config.needs_mixing`` is False)."""
    executor = executor_argument(executor, backend, "ipmix_views")
    check_config(config)
    mixing = _mixing_or_images(images, mixing, config)
    views = [augment_batch(images, mixing, config, rng, num_threads=num_threads, executor=executor)
             for _ in range(2 if config.jsd else 1)]
    return [images.astype(array_module(images).float32)] + views if config.jsd else views


def check_config(config):
    """Raises TypeError unless ``config`` is a config of the family (:class:`MixConfig`)."""
    if not isinstance(config, MixConfig):
        raise TypeError(f"config must be an IPMixConfig, AugMixConfig or PixMixConfig, got "
                        f"{type(config).__name__}")


def _mixing_or_images(images, mixing, config):
    """``mixing``, or ``images`` standing in for it when the method reads none (never read then)."""
    if mixing is not None:
        return mixing
    if config.needs_mixing:
        raise TypeError(f"mixing is None, but {type(config).__name__} mixes every image with a mixing "
                        "picture: pass one (N, H, W, 3) uint8 mixing picture per sample")
    return images


def shutdown_pools():
    """Stops the worker threads of the NumPy executor (started on demand, one pool per size)."""
    while _POOLS:
        _, pool = _POOLS.popitem()
        pool.shutdown(wait=True)


def _execute_chunks(plan, images, mixing, threads, runner):
    pool = _POOLS.get(threads)
    if pool is None:
        pool = _POOLS[threads] = concurrent.futures.ThreadPoolExecutor(threads, "ipmix")
        if len(_POOLS) == 1:
            atexit.register(shutdown_pools)
    bounds = np.linspace(0, images.shape[0], threads + 1).astype(int)
    out = np.empty(images.shape, np.float32)

    def run(a, b):
        out[a:b] = runner.execute(plan.rows(a, b), images[a:b], mixing[a:b])

    for job in [pool.submit(run, a, b) for a, b in zip(bounds[:-1], bounds[1:])]:
        job.result()
    return out

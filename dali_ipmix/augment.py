"""ipmix_batch: the public batched entry point (check inputs, draw a plan, execute it)."""

from __future__ import annotations

from .config import IPMixConfig
from .execute import array_module, execute_plan
from .plan import IPMixPlan, draw_plan


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


def ipmix_batch(images, mixing, config: IPMixConfig, rng, *, return_plan: bool = False):
    """One IPMix view of every sample of a batch.

    Args:
        images: (N, H, W, 3) uint8 HWC 0..255, the (cropped, flipped) training images; NumPy or CuPy.
        mixing: (N, H, W, 3) uint8, one mixing picture per sample, same array type as ``images``.
        config: an :class:`IPMixConfig`.
        rng: a ``numpy.random.Generator`` or an int seed; all random decisions come from it (on the host).
        return_plan: also return the :class:`IPMixPlan` that was executed.

    Returns:
        (N, H, W, 3) float32 on the 0..255 scale (not normalised), on the inputs' device;
        with ``return_plan``, ``(output, plan)``.
    """
    if not isinstance(config, IPMixConfig):
        raise TypeError(f"config must be an IPMixConfig, got {type(config).__name__}")
    check_batch(images, mixing)
    n, h, w, _ = images.shape
    plan: IPMixPlan = draw_plan(n, h, w, config, rng)
    out = execute_plan(plan, images, mixing)
    return (out, plan) if return_plan else out

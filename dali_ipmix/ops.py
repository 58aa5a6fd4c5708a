"""The image-level operations A(y) of IPMix, one small decorated function each.

Every op is declared with ``@image_op``, in the style of DALI's ``nvidia/dali/auto_aug/augmentations.py``;
its family, code and magnitude law (level -> parameter) live in :data:`dali_ipmix.laws.LAWS`, the one
source the compiled core is generated from. An op belongs to one *family*, which fixes how an executor
runs it on a whole batch at once:

- ``lut``: pointwise; the function returns per-sample, per-channel lookup tables (M, 3, 256) uint8.
- ``affine``: geometric; the function returns per-sample 2x3 matrices (M, 2, 3) float64 that map an
  output pixel centre ``(u + 0.5, v + 0.5)`` to the input point it samples (PIL's convention), then
  one bilinear warp with black fill runs over every affine sample of the batch.
- ``image``: the function returns the whole (M, H, W, 3) uint8 result images itself (color and
  sharpness: per-pixel blends with a degenerate image), so an executor runs it as it is.

Level -> parameter (:mod:`dali_ipmix.laws`): ``level ~ U(0.1, severity)`` per call, ``ip(level, max) =
int(level * max / 10)``, ``fp(level, max) = level * max / 10``, "signed" ops negate with probability 1/2.
Images are (M, H, W, 3) uint8, HWC, 0..255. ``xp`` is ``numpy`` or ``cupy``.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Optional, Tuple

import numpy as np

from . import laws
from .laws import AFFINE, IMAGE, LUT



@dataclasses.dataclass(frozen=True)
class ImageOp:
    name: str
    family: str
    fn: Callable
    param_range: Optional[Tuple[float, float]]           # param at level 0 and level 10, for docs/tests
    signed: bool

    def params(self, level, sign, height, width) -> np.ndarray:
        """Host-side parameters (float64, shape of ``level``) for levels in 0..10 and signs in {-1, 1}:
        the op's law in :mod:`dali_ipmix.laws`."""
        return laws.parameter(self.name, level, sign, height, width)


IMAGE_OPS: Dict[str, ImageOp] = {}


def image_op(fn):
    """Registers the decorated function as the image-level op named after it; its family, parameter
    law and sign come from ``laws.LAWS``."""
    law = laws.LAWS[fn.__name__]
    IMAGE_OPS[fn.__name__] = ImageOp(fn.__name__, law.family, fn, law.param_range, law.signed)
    return fn


def _affine_op(name):
    """An affine op's function: parameters -> (M, 2, 3) matrices, from its law."""
    def fn(param, height, width):
        return laws.matrix(name, param, height, width)
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"{name}: (M,) parameters -> (M, 2, 3) matrices (``laws.LAWS[{name!r}].matrix``)."
    return image_op(fn)


# ----------------------------------------------------------------------------------- helpers

def channel_histograms(images, xp):
    """(M, H, W, 3) uint8 -> (M, 3, 256) int64 counts, one bincount for the whole batch."""
    m = images.shape[0]
    keys = images.reshape(m, -1, 3).astype(xp.int32)
    keys = keys + (xp.arange(m, dtype=xp.int32)[:, None, None] * 3
                   + xp.arange(3, dtype=xp.int32)[None, None, :]) * 256
    return xp.bincount(keys.ravel(), minlength=m * 768).reshape(m, 3, 256)


def grey_levels(images, xp):
    """PIL's RGB -> L conversion, integer-exact: (M, H, W, 3) uint8 -> (M, H, W) uint8."""
    rgb = images.astype(xp.int32)
    grey = rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000
    return (grey >> 16).astype(xp.uint8)


def blend_to_uint8(degenerate, image, factor, xp):
    """PIL ``Image.blend(degenerate, image, factor)`` on uint8: float32 math, truncation, clipping."""
    d = degenerate.astype(xp.float32)
    out = d + factor.astype(xp.float32) * (image.astype(xp.float32) - d)
    return xp.clip(out, 0, 255).astype(xp.uint8)   # values in (0, 255) truncate, as C's (UINT8) cast


def _identity_lut(m, xp):
    return xp.broadcast_to(xp.arange(256, dtype=xp.int64), (m, 3, 256))


def _per_sample(param, xp):
    return xp.asarray(param).reshape(-1, 1, 1)


# ----------------------------------------------------------------------------------- lut ops

@image_op
def invert(param, images, xp):
    return (255 - _identity_lut(images.shape[0], xp)).astype(xp.uint8)


@image_op
def posterize(bits, images, xp):
    """Keeps the top ``bits`` bits of every value (PIL ``ImageOps.posterize``)."""
    bits = _per_sample(bits, xp).astype(xp.int64)
    mask = (~((1 << (8 - bits)) - 1)) & 0xFF
    return (_identity_lut(images.shape[0], xp) & mask).astype(xp.uint8)


@image_op
def solarize(threshold, images, xp):
    """Inverts every value >= ``threshold`` (PIL ``ImageOps.solarize``)."""
    lut = _identity_lut(images.shape[0], xp)
    return xp.where(lut < _per_sample(threshold, xp), lut, 255 - lut).astype(xp.uint8)


@image_op
def equalize(param, images, xp):
    """Per-channel histogram equalisation, PIL ``ImageOps.equalize`` exactly."""
    h = channel_histograms(images, xp)
    nonzero = h > 0
    last = 255 - xp.argmax(nonzero[..., ::-1], axis=-1)
    h_last = xp.take_along_axis(h, last[..., None], axis=-1)
    # Pillow >= 11 divides by 255 (older releases by 256); the installed Pillow is the reference.
    step = (h.sum(-1, keepdims=True) - h_last) // 255
    cum = xp.cumsum(h, axis=-1) - h
    safe = xp.maximum(step, 1)
    lut = xp.minimum((step // 2 + cum) // safe, 255)
    keep = (nonzero.sum(-1, keepdims=True) <= 1) | (step == 0)
    return xp.where(keep, _identity_lut(images.shape[0], xp), lut).astype(xp.uint8)


@image_op
def autocontrast(cutoff, images, xp):
    """PIL ``ImageOps.autocontrast(cutoff=cutoff)`` (percent cut at both ends), exactly."""
    h = channel_histograms(images, xp)
    n = h.sum(-1, keepdims=True)
    cut = xp.floor(n * _per_sample(cutoff, xp) // 100).astype(xp.int64)
    cum = xp.cumsum(h, axis=-1)
    lo = xp.argmax(cum > cut, axis=-1)[..., None]
    rev = xp.cumsum(h[..., ::-1], axis=-1)[..., ::-1]
    hi = 255 - xp.argmax((rev > cut)[..., ::-1], axis=-1)[..., None]
    scale = 255.0 / xp.maximum(hi - lo, 1)
    offset = -lo * scale
    ix = xp.arange(256, dtype=xp.float64)
    lut = xp.clip(xp.trunc(ix * scale + offset), 0, 255).astype(xp.int64)
    return xp.where(hi <= lo, _identity_lut(images.shape[0], xp), lut).astype(xp.uint8)


@image_op
def autocontrast_plain(cutoff, images, xp):
    """PIL ``ImageOps.autocontrast(image)`` (no cutoff: AugMix's and PixMix's autocontrast); its law
    fixes the cutoff at 0, and the compiled core runs it as ``autocontrast``."""
    return autocontrast(cutoff, images, xp)


@image_op
def brightness(factor, images, xp):
    """PIL ``ImageEnhance.Brightness``: blend with black."""
    lut = _identity_lut(images.shape[0], xp)
    return blend_to_uint8(xp.zeros_like(lut), lut, _per_sample(factor, xp), xp)


@image_op
def contrast(factor, images, xp):
    """PIL ``ImageEnhance.Contrast``: blend with the rounded mean grey level of the image."""
    grey = grey_levels(images, xp).reshape(images.shape[0], -1)
    mean = xp.floor(grey.astype(xp.float64).mean(axis=1) + 0.5)
    lut = _identity_lut(images.shape[0], xp)
    return blend_to_uint8(xp.broadcast_to(_per_sample(mean, xp), lut.shape), lut,
                          _per_sample(factor, xp), xp)


# ---------------------------------------------------------------------- ops that return images

@image_op
def color(factor, images, xp):
    """PIL ``ImageEnhance.Color``: blend with the grey version of the image."""
    grey = grey_levels(images, xp)[..., None]
    return blend_to_uint8(grey, images, factor.reshape(-1, 1, 1, 1), xp)


@image_op
def sharpness(factor, images, xp):
    """PIL ``ImageEnhance.Sharpness``: blend with the 3x3 smoothed image, border pixels kept."""
    src = images.astype(xp.int32)
    acc = xp.zeros_like(src[:, 1:-1, 1:-1])
    h, w = images.shape[1:3]
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            acc += src[:, dy:dy + h - 2, dx:dx + w - 2]
    acc += 4 * src[:, 1:-1, 1:-1]
    # PIL's filter rounds (sum / 13) to nearest before the uint8 store.
    smooth = images.copy()
    smooth[:, 1:-1, 1:-1] = xp.clip(xp.floor(acc.astype(xp.float32) / 13.0 + 0.5), 0, 255).astype(xp.uint8)
    return blend_to_uint8(smooth, images, factor.reshape(-1, 1, 1, 1), xp)


# ----------------------------------------------------------------------------------- affine ops
# Geometric ops are their law alone (rotate about the centre as PIL's Image.rotate, shear_x: output
# (u, v) samples input (u + s v, v), shear_y: (u, s u + v), translate_x/y by whole pixels, mirror
# u -> W - u): the matrices come from laws.LAWS, for every backend.
rotate = _affine_op("rotate")
shear_x = _affine_op("shear_x")
shear_y = _affine_op("shear_y")
translate_x = _affine_op("translate_x")
translate_y = _affine_op("translate_y")
mirror = _affine_op("mirror")


DEFAULT_OPS = ("equalize", "posterize", "rotate", "solarize", "shear_x", "shear_y",
               "translate_x", "translate_y", "mirror", "invert")
EXTRA_OPS = ("autocontrast", "color", "contrast", "brightness", "sharpness")
#: AugMix's op list (google-research/augmix ``augmentations.augmentations``, which PixMix uses too) and
#: what its ``all_ops`` adds (``augmentations_all``).
AUGMIX_OPS = ("autocontrast_plain", "equalize", "posterize", "rotate", "solarize", "shear_x", "shear_y",
              "translate_x", "translate_y")
AUGMIX_EXTRA_OPS = ("color", "contrast", "brightness", "sharpness")

"""The presets: one record per data-set recipe, and the registry every other module reads.

A :class:`Preset` says everything that differs between the paper's ImageNet and CIFAR setups: the
default image size, the IPMix parameters, the training crop, how a mixing picture is prepared and the
validation transform. :func:`dali_ipmix.training_pipeline`, :func:`~dali_ipmix.validation_pipeline`,
:meth:`IPMixConfig.from_preset <dali_ipmix.IPMixConfig.from_preset>` and the training scripts' PyTorch
loader all take a preset by name from :data:`PRESETS` (the IPMix settings themselves are core data,
``config.PAPER_SETTINGS``; :func:`register` tells the core a new name); adding one is one
:func:`register` call::

    from dali_ipmix.presets import PRESETS, PaddedCrop, Preset, ResizeTo, register
    register(Preset("svhn", size=32, ipmix=dict(PRESETS["cifar"].ipmix, severity=2.0),
                    train_crop=PaddedCrop(), mix_resize=36 / 32, validation=ResizeTo()))

Crop recipes are small frozen records that build themselves as DALI operators (``dali``) and as
torchvision transforms (``torchvision``), so both loaders follow the same record. A training crop's
randomness is keyed per sample (:mod:`dali_ipmix.keys`): ``law`` turns ``draws`` uniforms per sample
into the crop's parameters on the host, ``dali`` applies them inside the pipeline. DALI and torchvision
are imported only when those methods run; this module itself imports neither.
"""

from __future__ import annotations

import dataclasses
import math
import types
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import numpy as np

from .config import PAPER_SETTINGS, IPMixConfig, register_settings
from .constants import IMAGENET_RESIZE

__all__ = ["Preset", "RandomResizedCrop", "PaddedCrop", "ResizeCentreCrop", "ResizeTo", "PRESETS",
           "DEFAULT_PRESET", "register", "get_preset", "decoder_device", "resized_side"]


def decoder_device(device: str) -> str:
    """DALI decoder device for a pipeline on ``device`` ("cpu" or "gpu")."""
    return "mixed" if device == "gpu" else "cpu"


def resized_side(size: int, ratio: float) -> int:
    """The shorter side, in pixels, that a ``size x size`` crop is taken from: ``size * ratio``
    rounded, never below ``size``."""
    return max(size, round(size * ratio))


# ------------------------------------------------------------------------------- training crops
@dataclasses.dataclass(frozen=True)
class RandomResizedCrop:
    """A random region (``area`` fraction of the image, ``aspect`` width / height) resized to
    ``size x size``: torchvision's ``RandomResizedCrop(size)`` with its default scale and ratio.

    ``decode``: ``"roi"`` (default) decodes only the region (``decoders.image_slice`` on the keyed
    window, then ``resize``); ``"full"`` decodes the whole image and crops it (``decoders.image``, then
    ``random_resized_crop``, as DALI's ResNet-50 example does). The same crop law and linear
    antialiased resampling either way; which is faster depends on the decoder (a GPU's hardware JPEG
    decoder or the CPU)."""
    area: Tuple[float, float] = (0.08, 1.0)
    aspect: Tuple[float, float] = (3 / 4, 4 / 3)
    attempts: int = 10
    decode: str = "roi"

    def __post_init__(self):
        if self.decode not in ("roi", "full"):
            raise ValueError(f"RandomResizedCrop: decode={self.decode!r} is invalid: use 'roi' (decode "
                             "the region only) or 'full' (decode the whole image, then crop)")

    @property
    def draws(self) -> int:
        """Uniforms per sample: an area and an aspect per attempt, then the anchor's y and x."""
        return 2 * self.attempts + 2

    def law(self, u: np.ndarray, size: int) -> np.ndarray:
        """float64 (N, draws) uniforms -> the crop's parameters, float64 (N, draws): ``attempts``
        area fractions, ``attempts`` aspects (log-uniform), the anchor's uniforms (y, x)."""
        a = self.attempts
        lo, hi = math.log(self.aspect[0]), math.log(self.aspect[1])
        area = self.area[0] + (self.area[1] - self.area[0]) * u[:, :a]
        return np.concatenate([area, np.exp(lo + (hi - lo) * u[:, a:2 * a]), u[:, 2 * a:]], axis=1)

    def window(self, params: np.ndarray, height: int, width: int) -> Tuple[int, int, int, int]:
        """The crop ``(x, y, w, h)`` in pixels of one sample's ``law`` parameters on a ``height x
        width`` image: torchvision's rule (the first attempt whose rounded size fits, at a uniform
        anchor; else the centred crop of the whole image clipped to the aspect range), in float64
        with rounding half up; the fallback's aspect bounds as float32. What :meth:`dali` computes
        inside the pipeline, per sample."""
        a = self.attempts
        for area, ratio in zip(params[:a], params[a:2 * a]):
            target = height * width * area
            w = math.floor(math.sqrt(target * ratio) + 0.5)
            h = math.floor(math.sqrt(target / ratio) + 0.5)
            if 1 <= w <= width and 1 <= h <= height:
                return (math.floor(params[2 * a + 1] * (width - w + 1)),
                        math.floor(params[2 * a] * (height - h + 1)), w, h)
        low, high = self._aspect32()
        w = min(width, math.floor(height * high + 0.5))
        h = min(height, math.floor(width / low + 0.5))
        return math.floor((width - w) * 0.5), math.floor((height - h) * 0.5), w, h

    def _aspect32(self) -> Tuple[float, float]:
        """The aspect range as the pipeline holds it (float32 constants and arguments), in float64."""
        return float(np.float32(self.aspect[0])), float(np.float32(self.aspect[1]))

    def dali(self, encoded, size: int, device: str, params, window: Optional[str] = None,
             decoded: bool = False):
        """Encoded files (``decoded=True``: HWC uint8 images on the CPU, e.g. arrays from memory) ->
        decoded, cropped HWC uint8 ``size x size``; ``params``: a DataNode of each
        sample's :meth:`law` parameters (float64, ``draws``), e.g. a column slice of the feed's
        keyed draws. The window is :meth:`window`'s, computed on the image's decoded shape
        (``peek_image_shape``, EXIF orientation applied) by :meth:`window_nodes`, so no file header
        is read in Python."""
        from nvidia.dali import fn, types as dtypes
        _check_window(window)
        shape = encoded.shape() if decoded else fn.peek_image_shape(encoded)
        anchor, extent = self.window_nodes(shape, params, window)
        if decoded:
            images = fn.slice(encoded.gpu() if device == "gpu" else encoded, anchor, extent, axis_names="WH")
        elif self.decode == "full":
            images = fn.decoders.image(encoded, device=decoder_device(device), output_type=dtypes.RGB)
            images = fn.slice(images, anchor, extent, axis_names="WH")
        else:
            images = fn.decoders.image_slice(encoded, anchor, extent, axis_names="WH",
                                             device=decoder_device(device), output_type=dtypes.RGB)
        return fn.resize(images, resize_x=size, resize_y=size)

    def window_nodes(self, shape, params, window: Optional[str] = None):
        """DALI nodes of :meth:`window` per sample, from the decoded ``shape`` (int64 (H, W[, C])) and
        the ``params`` (float64): anchor ``(x, y)`` and extent ``(w, h)``, int32, for ``slice`` /
        ``decoders.image_slice`` with ``axis_names="WH"``. ``window="native"``: the plugin's
        ``IpmixCropWindow`` (the same rule in C++, one node); ``"python"``: :meth:`window` itself in
        a ``python_function`` on DALI's CPU thread (slower; for a package without its plugin);
        ``None``: native when the plugin is built."""
        from nvidia.dali import fn
        from . import native
        window = ("native" if native.available() else "python") if _check_window(window) is None else window
        if window == "native":
            native.load()
            low, high = self._aspect32()
            return fn.ipmix_crop_window(shape, params, aspect_min=low, aspect_max=high)
        return fn.python_function(shape, params, function=self._window_arrays, num_outputs=2)

    def _window_arrays(self, shape, params):
        x, y, w, h = self.window(params, int(shape[0]), int(shape[1]))
        return np.array([x, y], np.int32), np.array([w, h], np.int32)

    def torchvision(self, size: int) -> list:
        from torchvision import transforms as T
        return [T.RandomResizedCrop(size, scale=self.area, ratio=self.aspect)]


def _check_window(window):
    if window not in (None, "native", "python"):
        raise ValueError(f"window={window!r} is invalid: use 'native', 'python' or None")
    return window


@dataclasses.dataclass(frozen=True)
class PaddedCrop:
    """Resize to ``size x size``, pad with zeros, take a random ``size x size`` window: torchvision's
    ``RandomCrop(size, padding=pad)``. ``pad`` is the padding per side as a fraction of ``size``
    (1/8: the paper's 4 pixels at 32), at least one pixel."""
    pad: float = 1 / 8

    def pad_px(self, size: int) -> int:
        return max(1, round(size * self.pad))

    draws = 2   # uniforms per sample: the offsets along y and x

    def law(self, u: np.ndarray, size: int) -> np.ndarray:
        """float64 (N, 2) uniforms -> integer offsets in ``[-pad, pad]`` (y, x), as float64."""
        pad = self.pad_px(size)
        return np.floor(u * (2 * pad + 1)) - pad

    def dali(self, encoded, size: int, device: str, params, decoded: bool = False):
        """Encoded files (``decoded=True``: HWC uint8 images on the CPU) -> decoded, resized, padded
        and cropped HWC uint8 ``size x size``; ``params``: each sample's :meth:`law` offsets
        (float64 (2,), y then x)."""
        from nvidia.dali import fn, types as dtypes
        if decoded:
            images = encoded.gpu() if device == "gpu" else encoded
        else:
            images = fn.decoders.image(encoded, device=decoder_device(device), output_type=dtypes.RGB)
        images = fn.resize(images, resize_x=size, resize_y=size)
        return fn.slice(images, start=fn.cast(params, dtype=dtypes.INT32), shape=[size, size],
                        axis_names="HW", out_of_bounds_policy="pad", fill_values=0)

    def torchvision(self, size: int) -> list:
        from torchvision import transforms as T
        # Resize is the identity (PIL copies) for inputs that already are size x size, e.g. CIFAR.
        return [T.Resize((size, size)), T.RandomCrop(size, padding=self.pad_px(size))]


# ---------------------------------------------------------------------------- validation crops
@dataclasses.dataclass(frozen=True)
class ResizeCentreCrop:
    """Resize the shorter side to ``size * ratio`` (at least ``size``), centre crop ``size x size``."""
    ratio: float = IMAGENET_RESIZE

    def resized_shorter(self, size: int) -> Optional[int]:
        """The shorter side an image is resized to (its longer side follows the aspect)."""
        return resized_side(size, self.ratio)

    def dali(self, images, size: int):
        """Decoded HWC images -> ``(resized images, centre-crop (h, w))`` for the normalising crop."""
        from nvidia.dali import fn
        return fn.resize(images, resize_shorter=resized_side(size, self.ratio)), (size, size)

    def torchvision(self, size: int) -> list:
        from torchvision import transforms as T
        return [T.Resize(resized_side(size, self.ratio)), T.CenterCrop(size)]


@dataclasses.dataclass(frozen=True)
class ResizeTo:
    """Resize to ``size x size`` (the identity for inputs of that size), no crop."""

    def resized_shorter(self, size: int) -> Optional[int]:
        """None: both sides become ``size``, whatever the aspect (nothing grows with it)."""
        return None

    def dali(self, images, size: int):
        from nvidia.dali import fn
        return fn.resize(images, resize_x=size, resize_y=size), None

    def torchvision(self, size: int) -> list:
        from torchvision import transforms as T
        return [T.Resize((size, size))]


TrainCrop = Union[RandomResizedCrop, PaddedCrop]
ValidationCrop = Union[ResizeCentreCrop, ResizeTo]


# ------------------------------------------------------------------------------------- presets
@dataclasses.dataclass(frozen=True)
class Preset:
    """One data-set recipe.

    Attributes:
        name: what ``preset=`` and ``IPMixConfig.preset`` call it.
        size: default output height = width in pixels.
        ipmix: :class:`~dali_ipmix.IPMixConfig` field values of the recipe (read-only mapping);
            :meth:`config` (or ``IPMixConfig.from_preset(name, **overrides)`` once registered) builds
            the config.
        train_crop: decoding, crop and resize of a training image to ``size x size`` (a horizontal
            flip follows for every preset).
        mix_resize: mixing-picture preparation: shorter side resized to ``size * mix_resize`` (at
            least ``size``), then a random ``size x size`` crop.
        validation: the evaluation transform to ``size x size``.
    """
    name: str
    size: int
    ipmix: Mapping[str, Any]
    train_crop: TrainCrop
    mix_resize: float
    validation: ValidationCrop

    def __post_init__(self):
        object.__setattr__(self, "ipmix", types.MappingProxyType(dict(self.ipmix)))

    def config(self, **overrides) -> IPMixConfig:
        """The recipe's :class:`~dali_ipmix.IPMixConfig` with ``overrides``; it remembers the preset
        (``config.preset``), which must be registered."""
        return IPMixConfig(**{**self.ipmix, "preset": self.name, **overrides})

    def mixing_side(self, size: int) -> int:
        """Shorter side, in pixels, a mixing picture is resized to before its ``size`` crop."""
        return resized_side(size, self.mix_resize)


PRESETS: Dict[str, Preset] = {}
DEFAULT_PRESET = "imagenet"   # what the pipelines use when neither preset nor config names one


def register(preset: Preset, replace: bool = False) -> Preset:
    """Adds ``preset`` to :data:`PRESETS` (``replace=True`` to overwrite a name); returns it."""
    if not isinstance(preset, Preset):
        raise TypeError(f"expected a Preset, got {type(preset).__name__}")
    if preset.name in PRESETS and not replace:
        raise ValueError(f"preset {preset.name!r} is already registered (pass replace=True)")
    PRESETS[preset.name] = preset
    register_settings(preset.name, preset.ipmix)
    return preset


def get_preset(name: Optional[str]) -> Preset:
    """The registered preset ``name``; ``ValueError`` naming the registered ones otherwise."""
    if isinstance(name, str) and name in PRESETS:
        return PRESETS[name]
    raise ValueError(f"preset={name!r} is invalid: choose one of {tuple(PRESETS)}")


#: The paper's ImageNet recipe: ResNet-50 input pipeline at 224 px.
IMAGENET = register(Preset(
    "imagenet", size=224,
    ipmix=PAPER_SETTINGS["imagenet"],
    train_crop=RandomResizedCrop(), mix_resize=IMAGENET_RESIZE, validation=ResizeCentreCrop()))

#: The paper's CIFAR-10/100 recipe: WRN-40-4 at 32 px.
CIFAR = register(Preset(
    "cifar", size=32,
    ipmix=PAPER_SETTINGS["cifar"],
    train_crop=PaddedCrop(), mix_resize=36 / 32, validation=ResizeTo()))

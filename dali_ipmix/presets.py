"""The presets: one record per data-set recipe, and the registry every other module reads.

A :class:`Preset` says everything that differs between the paper's ImageNet and CIFAR setups: the
default image size, the IPMix parameters, the training crop, how a mixing picture is prepared and the
validation transform. :func:`dali_ipmix.training_pipeline`, :func:`~dali_ipmix.validation_pipeline`,
:meth:`IPMixConfig.from_preset <dali_ipmix.IPMixConfig.from_preset>` and the training scripts' PyTorch
loader all take a preset by name from :data:`PRESETS`; adding one is one :func:`register` call::

    from dali_ipmix.presets import PRESETS, PaddedCrop, Preset, ResizeTo, register
    register(Preset("svhn", size=32, ipmix=dict(PRESETS["cifar"].ipmix, severity=2.0),
                    train_crop=PaddedCrop(), mix_resize=36 / 32, validation=ResizeTo()))

Crop recipes are small frozen records that build themselves as DALI operators (``dali``) and as
torchvision transforms (``torchvision``), so both loaders follow the same record. DALI and torchvision
are imported only when those methods run; this module itself imports neither.
"""

from __future__ import annotations

import dataclasses
import types
from typing import Any, Dict, Mapping, Optional, Tuple, Union

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

    ``decode``: ``"roi"`` (default) decodes only the region (``decoders.image_random_crop``, then
    ``resize``); ``"full"`` decodes the whole image and crops it (``decoders.image``, then
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

    def dali(self, encoded, size: int, device: str):
        """Encoded files -> decoded, cropped HWC uint8 ``size x size``."""
        from nvidia.dali import fn, types as dtypes
        law = dict(random_area=list(self.area), random_aspect_ratio=list(self.aspect),
                   num_attempts=self.attempts)
        if self.decode == "full":
            images = fn.decoders.image(encoded, device=decoder_device(device), output_type=dtypes.RGB)
            return fn.random_resized_crop(images, size=[size, size], **law)
        images = fn.decoders.image_random_crop(encoded, device=decoder_device(device),
                                               output_type=dtypes.RGB, **law)
        return fn.resize(images, resize_x=size, resize_y=size)

    def torchvision(self, size: int) -> list:
        from torchvision import transforms as T
        return [T.RandomResizedCrop(size, scale=self.area, ratio=self.aspect)]


@dataclasses.dataclass(frozen=True)
class PaddedCrop:
    """Resize to ``size x size``, pad with zeros, take a random ``size x size`` window: torchvision's
    ``RandomCrop(size, padding=pad)``. ``pad`` is the padding per side as a fraction of ``size``
    (1/8: the paper's 4 pixels at 32), at least one pixel."""
    pad: float = 1 / 8

    def pad_px(self, size: int) -> int:
        return max(1, round(size * self.pad))

    def dali(self, encoded, size: int, device: str):
        """Encoded files -> decoded, resized, padded and cropped HWC uint8 ``size x size``."""
        from nvidia.dali import fn, types as dtypes
        images = fn.decoders.image(encoded, device=decoder_device(device), output_type=dtypes.RGB)
        images = fn.resize(images, resize_x=size, resize_y=size)
        pad = self.pad_px(size)
        # An integer offset in [-pad, pad] per axis, zero fill outside the image.
        offset = fn.cast(fn.random.uniform(values=[float(v) for v in range(-pad, pad + 1)], shape=[2]),
                         dtype=dtypes.INT32)
        return fn.slice(images, start=offset, shape=[size, size], axis_names="HW",
                        out_of_bounds_policy="pad", fill_values=0)

    def torchvision(self, size: int) -> list:
        from torchvision import transforms as T
        # Resize is the identity (PIL copies) for inputs that already are size x size, e.g. CIFAR.
        return [T.Resize((size, size)), T.RandomCrop(size, padding=self.pad_px(size))]


# ---------------------------------------------------------------------------- validation crops
@dataclasses.dataclass(frozen=True)
class ResizeCentreCrop:
    """Resize the shorter side to ``size * ratio`` (at least ``size``), centre crop ``size x size``."""
    ratio: float = IMAGENET_RESIZE

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
            ``IPMixConfig.from_preset(name, **overrides)`` builds the config.
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
    return preset


def get_preset(name: Optional[str]) -> Preset:
    """The registered preset ``name``; ``ValueError`` naming the registered ones otherwise."""
    if isinstance(name, str) and name in PRESETS:
        return PRESETS[name]
    raise ValueError(f"preset={name!r} is invalid: choose one of {tuple(PRESETS)}")


#: The paper's ImageNet recipe: ResNet-50 input pipeline at 224 px.
IMAGENET = register(Preset(
    "imagenet", size=224,
    ipmix=dict(k=3, t=3, beta=4.0, severity=1.0, patch_sizes=(4, 8, 16, 32, 64), whole_image_patch=True,
               source_from_image=True, all_ops=False, jsd=True),
    train_crop=RandomResizedCrop(), mix_resize=IMAGENET_RESIZE, validation=ResizeCentreCrop()))

#: The paper's CIFAR-10/100 recipe: WRN-40-4 at 32 px.
CIFAR = register(Preset(
    "cifar", size=32,
    ipmix=dict(k=3, t=3, beta=3.0, severity=3.0, patch_sizes=(4, 8, 16), whole_image_patch=True,
               source_from_image=False, all_ops=False, jsd=True),
    train_crop=PaddedCrop(), mix_resize=36 / 32, validation=ResizeTo()))

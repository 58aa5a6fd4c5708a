"""IPMixConfig: every parameter of the IPMix spec, validated, and the IPMix settings by preset name (the
paper's two here; :mod:`dali_ipmix.presets` refers to them and adds the ones it registers)."""

from __future__ import annotations

import dataclasses
import types
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from . import checks
from .ops import DEFAULT_OPS, EXTRA_OPS, IMAGE_OPS

#: Upper bounds of ``k`` and ``t``: generous next to the paper's 3 and 3, small enough that a typo
#: (``t=10**9``) is an error and not an attempt to allocate tens of gigabytes.
K_MAX = 32
T_MAX = 32

#: The paper's IPMix settings (``IPMixConfig`` field values) by preset name: ImageNet (ResNet-50 at
#: 224 px) and CIFAR-10/100 (WRN-40-4 at 32 px). The presets of :mod:`dali_ipmix.presets` refer to them.
PAPER_SETTINGS: Mapping[str, Mapping[str, Any]] = types.MappingProxyType({
    "imagenet": types.MappingProxyType(dict(
        k=3, t=3, beta=4.0, severity=1.0, patch_sizes=(4, 8, 16, 32, 64), whole_image_patch=True,
        source_from_image=True, all_ops=False, jsd=True)),
    "cifar": types.MappingProxyType(dict(
        k=3, t=3, beta=3.0, severity=3.0, patch_sizes=(4, 8, 16), whole_image_patch=True,
        source_from_image=False, all_ops=False, jsd=True)),
})

#: The IPMix settings of every known preset name: the paper's, plus those that
#: :func:`dali_ipmix.presets.register` adds (through :func:`register_settings`).
SETTINGS: Dict[str, Mapping[str, Any]] = dict(PAPER_SETTINGS)


def register_settings(name: str, ipmix: Mapping[str, Any]) -> None:
    """Makes ``name`` a preset name of :meth:`IPMixConfig.from_preset` with the field values ``ipmix``
    (called by :func:`dali_ipmix.presets.register`)."""
    SETTINGS[name] = types.MappingProxyType(dict(ipmix))


def settings(name: Optional[str]) -> Mapping[str, Any]:
    """The IPMix settings of preset ``name``; ``ValueError`` naming the known ones otherwise."""
    if isinstance(name, str) and name in SETTINGS:
        return SETTINGS[name]
    raise ValueError(f"preset={name!r} is invalid: choose one of {tuple(SETTINGS)}")


@dataclasses.dataclass(frozen=True)
class IPMixConfig:
    """Parameters of IPMix (see ``docs/ipmix-spec.md``).

    Every field is checked: a bad value raises ``ValueError`` / ``TypeError`` naming the field, the value
    and the rule. Integers and real numbers may be NumPy scalars; the flags must be ``bool`` (or
    ``numpy.bool_``), so that ``"False"`` or ``2`` is refused instead of read as true.

    Images (and mixing pictures) must be at least 2 x 2 pixels: the smallest patch is 2 x 2.

    Attributes:
        k: chains mixed per augmented image, 1..32.
        t: at most this many operations per chain, 0..32 (0 makes every chain the clean image).
            Cost and memory grow with ``k * t``; the paper uses 3 and 3.
        beta: severity of pixel-level mixing, the Beta distribution parameter (> 0).
        severity: severity of image-level operations, 1..10; each op draws ``level ~ U(0.1, severity)``.
        patch_sizes: candidate patch edge lengths in pixels (each >= 2). Sizes larger than the
            image are dropped at run time.
        whole_image_patch: also offer the whole image as a patch size. The paper's ImageNet list
            ``4, 8, 16, 32, 64, 224`` is ``patch_sizes=(4, 8, 16, 32, 64)`` plus the whole image, so at
            other image sizes the largest patch is the image size, as the spec says.
        source_from_image: a patch may come (with prob. 1/2) from an image-level-augmented copy of the
            original image instead of the mixing picture (the paper does this on ImageNet only).
        all_ops: add the five ImageNet-C-like ops (autocontrast, color, contrast, brightness,
            sharpness) to the image-level op list.
        ops: the image-level op list by name; ``None`` means the paper's ten default ops. With
            ``all_ops`` the five extra ops are appended when missing.
        jsd: produce (clean, view1, view2) for the Jensen-Shannon consistency loss.
        preset: name of the :mod:`~dali_ipmix.presets` record this config was made from (set by
            :meth:`from_preset`, kept by :meth:`replace`), or ``None`` for a config built by hand. The
            pipelines take their crop recipe from it when ``preset=`` is not given.
    """

    k: int = 3
    t: int = 3
    beta: float = 4.0
    severity: float = 1.0
    patch_sizes: Tuple[int, ...] = (4, 8, 16, 32, 64)
    whole_image_patch: bool = True
    source_from_image: bool = True
    all_ops: bool = False
    ops: Optional[Tuple[str, ...]] = None
    jsd: bool = True
    preset: Optional[str] = None

    def __post_init__(self):
        if self.preset is not None:
            settings(self.preset)   # an unknown name is an error here, not at pipeline build time
        _check_int("k", self.k, 1, K_MAX)
        _check_int("t", self.t, 0, T_MAX)
        object.__setattr__(self, "k", int(self.k))
        object.__setattr__(self, "t", int(self.t))
        for flag in ("whole_image_patch", "source_from_image", "all_ops", "jsd"):
            object.__setattr__(self, flag, _check_bool(flag, getattr(self, flag)))
        _check_number("beta", self.beta)
        if not self.beta > 0:
            raise ValueError(f"IPMixConfig.beta={self.beta!r} is invalid: beta must be > 0")
        _check_number("severity", self.severity)
        object.__setattr__(self, "beta", float(self.beta))
        object.__setattr__(self, "severity", float(self.severity))
        if not 1 <= self.severity <= 10:
            raise ValueError(
                f"IPMixConfig.severity={self.severity!r} is invalid: allowed range is 1..10")
        sizes = tuple(self.patch_sizes) if isinstance(self.patch_sizes, (list, tuple)) else None
        if sizes is None:
            raise TypeError(
                f"IPMixConfig.patch_sizes={self.patch_sizes!r} is invalid: expected a tuple of ints")
        for s in sizes:
            _check_int("patch_sizes", s, 2, None, what=f"entry {s!r} of patch_sizes")
        if not sizes and not self.whole_image_patch:
            raise ValueError(
                "IPMixConfig.patch_sizes=() is invalid: give at least one patch size "
                "or set whole_image_patch=True")
        object.__setattr__(self, "patch_sizes", tuple(sorted(set(int(s) for s in sizes))))
        if self.ops is not None:
            if isinstance(self.ops, str) or not isinstance(self.ops, Sequence):
                raise TypeError(f"IPMixConfig.ops={self.ops!r} is invalid: expected a sequence of op names")
            unknown = [o for o in self.ops if o not in IMAGE_OPS]
            if unknown:
                raise ValueError(
                    f"IPMixConfig.ops contains unknown op name(s) {unknown}: "
                    f"allowed names are {sorted(IMAGE_OPS)}")
            object.__setattr__(self, "ops", tuple(self.ops))
        if not self.op_names:
            raise ValueError("IPMixConfig.ops=() is invalid: the image-level op list is empty")

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "IPMixConfig":
        """The IPMix setting of preset ``name`` (:data:`SETTINGS`; see :mod:`dali_ipmix.presets`) with
        ``overrides``; the result remembers the preset (``config.preset``), so its crop recipe follows it."""
        return cls(**{**settings(name), "preset": name, **overrides})

    @classmethod
    def imagenet(cls, **overrides) -> "IPMixConfig":
        """The paper's ImageNet setting: ``from_preset("imagenet", **overrides)``."""
        return cls.from_preset("imagenet", **overrides)

    @classmethod
    def cifar(cls, **overrides) -> "IPMixConfig":
        """The paper's CIFAR setting: ``from_preset("cifar", **overrides)``."""
        return cls.from_preset("cifar", **overrides)

    def replace(self, **changes) -> "IPMixConfig":
        return dataclasses.replace(self, **changes)

    @property
    def op_names(self) -> Tuple[str, ...]:
        """The image-level op list actually drawn from, in order (op ids index this tuple)."""
        names = list(DEFAULT_OPS if self.ops is None else self.ops)
        if self.all_ops:
            names += [o for o in EXTRA_OPS if o not in names]
        return tuple(names)

    def patch_sizes_for(self, height: int, width: int) -> Tuple[int, ...]:
        """Patch edge lengths usable on an ``height x width`` image, ascending."""
        side = min(int(height), int(width))
        sizes = {s for s in self.patch_sizes if s <= side}
        if self.whole_image_patch:
            sizes.add(side)
        if not sizes:
            raise ValueError(
                f"no patch size fits a {height}x{width} image: patch_sizes={self.patch_sizes} "
                "are all larger and whole_image_patch is False")
        return tuple(sorted(sizes))


def _check_number(name, value):
    checks.finite_reals(f"IPMixConfig.{name}", value)


def _check_bool(name, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"IPMixConfig.{name}={value!r} is invalid: expected True or False (a bool), "
                        f"got {type(value).__name__}")
    return bool(value)


def _check_int(name, value, lo, hi, what=None):
    checks.integer(f"IPMixConfig.{name}", value, lo, hi, label=what)

"""The configurations of the mixing family (IPMix, AugMix, PixMix), validated, and their settings by
preset name (the papers' two here; :mod:`dali_ipmix.presets` refers to them and adds the ones it
registers).

One engine runs all three: every config describes itself to the plan drawer as an :class:`Engine`
(``config.engine``), the few knobs that make a method out of IPMix's draws (chain kinds, op counts,
pixel ops, whole-image patches, the final blend, a chain's start). AugMix and PixMix are values of
those knobs, not code paths of their own.
"""

from __future__ import annotations

import dataclasses
import types
from typing import Any, ClassVar, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from . import checks
from .ops import AUGMIX_EXTRA_OPS, AUGMIX_OPS, DEFAULT_OPS, EXTRA_OPS, IMAGE_OPS

#: Upper bounds of ``k`` and ``t`` (and AugMix's ``width`` and ``depth``, PixMix's ``k``): generous
#: next to the papers' 3 and 4, small enough that a typo (``t=10**9``) is an error and not an attempt
#: to allocate tens of gigabytes.
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

#: AugMix's settings (``AugMixConfig`` field values) by preset name, as google-research/augmix's
#: ``cifar.py`` / ``imagenet.py`` default them: width 3, depth 1..3 uniform, alpha 1, severity 1
#: (ImageNet) / 3 (CIFAR), the 9-op list, JSD.
AUGMIX_PAPER_SETTINGS: Mapping[str, Mapping[str, Any]] = types.MappingProxyType({
    "imagenet": types.MappingProxyType(dict(width=3, depth=None, severity=1.0, alpha=1.0,
                                            all_ops=False, jsd=True)),
    "cifar": types.MappingProxyType(dict(width=3, depth=None, severity=3.0, alpha=1.0,
                                         all_ops=False, jsd=True)),
})

#: PixMix's settings (``PixMixConfig`` field values) by preset name, as andyzoujm/pixmix's
#: ``imagenet.py`` / ``cifar.py`` default them: k 4, beta 4 / 3, severity 1 / 3, the 9-op list.
PIXMIX_PAPER_SETTINGS: Mapping[str, Mapping[str, Any]] = types.MappingProxyType({
    "imagenet": types.MappingProxyType(dict(k=4, beta=4.0, severity=1.0, all_ops=False, jsd=True)),
    "cifar": types.MappingProxyType(dict(k=4, beta=3.0, severity=3.0, all_ops=False, jsd=True)),
})

#: The IPMix settings of every known preset name: the paper's, plus those that
#: :func:`dali_ipmix.presets.register` adds (through :func:`register_settings`). Every known preset
#: name may be a config's ``preset`` (its crop recipe), whatever the method.
SETTINGS: Dict[str, Mapping[str, Any]] = dict(PAPER_SETTINGS)

#: The settings tables of each method, by ``MixConfig.method``.
METHOD_SETTINGS: Mapping[str, Mapping[str, Mapping[str, Any]]] = types.MappingProxyType({
    "ipmix": SETTINGS, "augmix": AUGMIX_PAPER_SETTINGS, "pixmix": PIXMIX_PAPER_SETTINGS})


def register_settings(name: str, ipmix: Mapping[str, Any]) -> None:
    """Makes ``name`` a preset name of :meth:`IPMixConfig.from_preset` with the field values ``ipmix``
    (called by :func:`dali_ipmix.presets.register`)."""
    SETTINGS[name] = types.MappingProxyType(dict(ipmix))


def settings(name: Optional[str], method: str = "ipmix") -> Mapping[str, Any]:
    """The settings of preset ``name`` for ``method``; ``ValueError`` naming the known ones otherwise."""
    table = METHOD_SETTINGS[method]
    if isinstance(name, str) and name in table:
        return table[name]
    raise ValueError(f"preset={name!r} is invalid for {method}: choose one of {tuple(table)}")


#: Chain kinds an engine draws from: the range of ``kind`` (0 = image level, 1 = patch level).
CHAIN_KINDS = {"both": (0, 1), "image": (0, 0), "patch": (1, 1)}


@dataclasses.dataclass(frozen=True)
class Engine:
    """What the plan drawer draws with: the IPMix engine's knobs (``docs/design.md``). Every config
    gives its own (``config.engine``); the drawers (:func:`dali_ipmix.plan.plan_from_uniforms`,
    ``csrc/ipx_plan.h``) and the native operator's arguments read nothing else.

    Attributes:
        k: chains per view; ``t``: at most this many steps per chain, ``min_ops``: at least this
            many (a chain's op count is uniform in ``min_ops..t``).
        chain_kinds: ``"both"`` (each chain image or patch level, prob. 1/2), ``"image"``, ``"patch"``.
        pixel_ops: the first this many of ``laws.PIXEL_OPS`` are drawn (4: all; 2: add, multiply).
        whole_image_only: every patch is the whole image (top = left = 0, H x W).
        final_blend: the view is ``(1 - m) x + m * sum_i w_i chain_i`` with ``m ~ Beta(1, 1)``;
            False: ``m = 1``.
        chain_start: a chain starts (prob. 1/2) from A(x), one fresh image-level op on x, instead of
            x; its draws are appended after the others (so the other draws keep their places).
        beta, severity, patch_sizes, whole_image_patch, source_from_image, op_names: as
            :class:`IPMixConfig` defines them.
    """

    k: int
    t: int
    min_ops: int
    chain_kinds: str
    pixel_ops: int
    whole_image_only: bool
    final_blend: bool
    chain_start: bool
    beta: float
    severity: float
    patch_sizes: Tuple[int, ...]
    whole_image_patch: bool
    source_from_image: bool
    op_names: Tuple[str, ...]

    def patch_sizes_for(self, height: int, width: int) -> Tuple[int, ...]:
        """Patch edge lengths usable on an ``height x width`` image, ascending."""
        return _patch_sizes_for(self.patch_sizes, self.whole_image_patch or self.whole_image_only,
                                height, width)


class MixConfig:
    """The common part of the configs of the mixing family (:class:`IPMixConfig`,
    :class:`AugMixConfig`, :class:`PixMixConfig`): every function that takes a config takes any of them.

    Each has ``method`` (``"ipmix"``, ``"augmix"``, ``"pixmix"``), ``severity``, ``ops`` /
    ``all_ops`` / ``op_names`` (the image-level op list), ``jsd``, ``preset``, ``needs_mixing`` (whether
    views read a mixing picture per sample), :attr:`engine` (its plan drawer's knobs), ``replace``,
    ``from_preset`` and the ``imagenet()`` / ``cifar()`` presets. Bad values raise ``ValueError`` /
    ``TypeError`` naming the field, the value and the rule.
    """

    method: ClassVar[str] = ""
    needs_mixing: ClassVar[bool] = True
    _default_ops: ClassVar[Tuple[str, ...]] = DEFAULT_OPS
    _extra_ops: ClassVar[Tuple[str, ...]] = EXTRA_OPS

    @classmethod
    def from_preset(cls, name: str, **overrides):
        """The method's setting of preset ``name`` (:data:`METHOD_SETTINGS`) with ``overrides``; the
        result remembers the preset (``config.preset``), so its crop recipe follows it."""
        return cls(**{**settings(name, cls.method), "preset": name, **overrides})

    @classmethod
    def imagenet(cls, **overrides):
        """The paper's ImageNet setting: ``from_preset("imagenet", **overrides)``."""
        return cls.from_preset("imagenet", **overrides)

    @classmethod
    def cifar(cls, **overrides):
        """The paper's CIFAR setting: ``from_preset("cifar", **overrides)``."""
        return cls.from_preset("cifar", **overrides)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    @property
    def op_names(self) -> Tuple[str, ...]:
        """The image-level op list actually drawn from, in order (op ids index this tuple)."""
        names = list(self._default_ops if self.ops is None else self.ops)
        if self.all_ops:
            names += [o for o in self._extra_ops if o not in names]
        return tuple(names)

    @property
    def engine(self) -> Engine:
        raise NotImplementedError

    # ---- the checks every config shares (messages name "<Class>.<field>")

    def _name(self, field: str) -> str:
        return f"{type(self).__name__}.{field}"

    def _set(self, field: str, value):
        object.__setattr__(self, field, value)

    def _check_common(self):
        """``preset``, ``severity``, the flags ``all_ops`` and ``jsd``, ``ops``."""
        if self.preset is not None and not (self.preset in SETTINGS
                                            or self.preset in METHOD_SETTINGS[self.method]):
            raise ValueError(f"{self._name('preset')}={self.preset!r} is invalid: choose one of "
                             f"{tuple(SETTINGS)}")
        for flag in ("all_ops", "jsd"):
            self._flag(flag)
        self._real("severity")
        if not 1 <= self.severity <= 10:
            raise ValueError(f"{self._name('severity')}={self.severity!r} is invalid: allowed range is 1..10")
        if self.ops is not None:
            if isinstance(self.ops, str) or not isinstance(self.ops, Sequence):
                raise TypeError(f"{self._name('ops')}={self.ops!r} is invalid: expected a sequence of op names")
            unknown = [o for o in self.ops if o not in IMAGE_OPS]
            if unknown:
                raise ValueError(f"{self._name('ops')} contains unknown op name(s) {unknown}: "
                                 f"allowed names are {sorted(IMAGE_OPS)}")
            self._set("ops", tuple(self.ops))
        if not self.op_names:
            raise ValueError(f"{self._name('ops')}=() is invalid: the image-level op list is empty")

    def _int(self, field: str, lo, hi, value=None, what=None) -> int:
        value = getattr(self, field) if value is None else value
        v = checks.integer(self._name(field), value, lo, hi, label=what)
        if what is None:
            self._set(field, v)
        return v

    def _real(self, field: str) -> float:
        value = getattr(self, field)
        checks.finite_reals(self._name(field), value)
        self._set(field, float(value))
        return float(value)

    def _flag(self, field: str) -> bool:
        value = getattr(self, field)
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{self._name(field)}={value!r} is invalid: expected True or False (a bool), "
                            f"got {type(value).__name__}")
        self._set(field, bool(value))
        return bool(value)


@dataclasses.dataclass(frozen=True)
class IPMixConfig(MixConfig):
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

    method: ClassVar[str] = "ipmix"
    needs_mixing: ClassVar[bool] = True

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
        self._int("k", 1, K_MAX)
        self._int("t", 0, T_MAX)
        for flag in ("whole_image_patch", "source_from_image"):
            self._flag(flag)
        self._real("beta")
        if not self.beta > 0:
            raise ValueError(f"IPMixConfig.beta={self.beta!r} is invalid: beta must be > 0")
        sizes = tuple(self.patch_sizes) if isinstance(self.patch_sizes, (list, tuple)) else None
        if sizes is None:
            raise TypeError(
                f"IPMixConfig.patch_sizes={self.patch_sizes!r} is invalid: expected a tuple of ints")
        for s in sizes:
            self._int("patch_sizes", 2, None, value=s, what=f"entry {s!r} of patch_sizes")
        if not sizes and not self.whole_image_patch:
            raise ValueError(
                "IPMixConfig.patch_sizes=() is invalid: give at least one patch size "
                "or set whole_image_patch=True")
        self._set("patch_sizes", tuple(sorted(set(int(s) for s in sizes))))
        self._check_common()

    @property
    def engine(self) -> Engine:
        """IPMix's draws: k chains, each image or patch level, 0..t ops, four pixel ops, final blend."""
        return Engine(k=self.k, t=self.t, min_ops=0, chain_kinds="both", pixel_ops=4,
                      whole_image_only=False, final_blend=True, chain_start=False, beta=self.beta,
                      severity=self.severity, patch_sizes=self.patch_sizes,
                      whole_image_patch=self.whole_image_patch, source_from_image=self.source_from_image,
                      op_names=self.op_names)

    def patch_sizes_for(self, height: int, width: int) -> Tuple[int, ...]:
        """Patch edge lengths usable on an ``height x width`` image, ascending."""
        return _patch_sizes_for(self.patch_sizes, self.whole_image_patch, height, width)


@dataclasses.dataclass(frozen=True)
class AugMixConfig(MixConfig):
    """Parameters of AugMix (Hendrycks et al., ICLR 2020; ``docs/augmix-spec.md``): ``width`` chains of
    image-level ops, mixed with ``w ~ Dirichlet(alpha)``, then with the image by ``m ~ Beta(alpha,
    alpha)``. No mixing picture (``needs_mixing`` is False). On the engine: every chain image level,
    ``depth`` ops (or 1..3 uniform), AugMix's op list.

    Checked as :class:`IPMixConfig` is: a bad value raises ``ValueError`` / ``TypeError`` naming the
    field, the value and the rule.

    Attributes:
        width: chains mixed per augmented image, 1..32.
        depth: ops per chain: ``None`` draws it uniformly in 1..3 per chain (the authors' default
            ``mixture_depth=-1``), else a fixed 1..32.
        severity: severity of the image-level ops, 1..10 (``level ~ U(0.1, severity)``).
        alpha: the Dirichlet and Beta parameter. Only ``alpha == 1`` is supported (the papers'
            setting, and what the engine draws); any other value is a ``ValueError``.
        all_ops: add color, contrast, brightness and sharpness (``augmentations_all``).
        ops: the image-level op list by name; ``None``: AugMix's nine (autocontrast without cutoff,
            ``"autocontrast_plain"``, equalize, posterize, rotate, solarize, shear_x, shear_y,
            translate_x, translate_y). With ``all_ops`` the four extra ops are appended when missing.
        jsd: produce (clean, view1, view2) for the Jensen-Shannon consistency loss.
        preset: the preset this config was made from (its crop recipe), or ``None``.
    """

    method: ClassVar[str] = "augmix"
    needs_mixing: ClassVar[bool] = False
    _default_ops: ClassVar[Tuple[str, ...]] = AUGMIX_OPS
    _extra_ops: ClassVar[Tuple[str, ...]] = AUGMIX_EXTRA_OPS

    width: int = 3
    depth: Optional[int] = None
    severity: float = 1.0
    alpha: float = 1.0
    all_ops: bool = False
    ops: Optional[Tuple[str, ...]] = None
    jsd: bool = True
    preset: Optional[str] = None

    def __post_init__(self):
        self._int("width", 1, K_MAX)
        if self.depth is not None:
            self._set("depth", checks.integer(self._name("depth"), self.depth, 1, T_MAX,
                                              note=" (or None: 1..3 per chain)"))
        self._real("alpha")
        if self.alpha != 1.0:
            raise ValueError(f"AugMixConfig.alpha={self.alpha!r} is invalid: only alpha == 1 is supported "
                             "(Dirichlet(1, ..., 1) and Beta(1, 1), the papers' setting)")
        self._check_common()

    @property
    def engine(self) -> Engine:
        """AugMix on the engine: ``width`` image-level chains of ``depth`` (or 1..3) ops, final blend."""
        lo, hi = (1, 3) if self.depth is None else (self.depth, self.depth)
        return Engine(k=self.width, t=hi, min_ops=lo, chain_kinds="image", pixel_ops=4,
                      whole_image_only=False, final_blend=True, chain_start=False, beta=1.0,
                      severity=self.severity, patch_sizes=(), whole_image_patch=True,
                      source_from_image=False, op_names=self.op_names)


@dataclasses.dataclass(frozen=True)
class PixMixConfig(MixConfig):
    """Parameters of PixMix (Hendrycks et al., CVPR 2022; ``docs/pixmix-spec.md``): the view starts
    from x or (prob. 1/2) A(x), then 0..k rounds each mix it (add or multiply, ``get_ab(beta)``
    weights, clipped) with A(x) or (prob. 1/2) the mixing picture. On the engine: one patch-level chain
    whose patch is always the whole image, pixel ops add and multiply, a source from the image with
    prob. 1/2, a chain start from A(x) with prob. 1/2, no final blend. Values return to uint8 after each
    mix (clamped and rounded), where the authors' code stays in float.

    Checked as :class:`IPMixConfig` is: a bad value raises ``ValueError`` / ``TypeError`` naming the
    field, the value and the rule.

    Attributes:
        k: at most this many mixing rounds (uniform in 0..k), 0..32.
        beta: the mixing weights' Beta parameter (> 0).
        severity: severity of the image-level ops, 1..10.
        all_ops: add color, contrast, brightness and sharpness to the op list.
        ops: the image-level op list by name; ``None``: AugMix's nine (PixMix uses them).
        jsd: produce (clean, view1, view2) for the Jensen-Shannon consistency loss.
        preset: the preset this config was made from (its crop recipe), or ``None``.
    """

    method: ClassVar[str] = "pixmix"
    needs_mixing: ClassVar[bool] = True
    _default_ops: ClassVar[Tuple[str, ...]] = AUGMIX_OPS
    _extra_ops: ClassVar[Tuple[str, ...]] = AUGMIX_EXTRA_OPS

    k: int = 4
    beta: float = 4.0
    severity: float = 1.0
    all_ops: bool = False
    ops: Optional[Tuple[str, ...]] = None
    jsd: bool = True
    preset: Optional[str] = None

    def __post_init__(self):
        self._int("k", 0, T_MAX)
        self._real("beta")
        if not self.beta > 0:
            raise ValueError(f"PixMixConfig.beta={self.beta!r} is invalid: beta must be > 0")
        self._check_common()

    @property
    def engine(self) -> Engine:
        """PixMix on the engine: one whole-image patch chain of 0..k add/multiply rounds, its sources
        A(x) or z, a start from A(x) with prob. 1/2, m = 1."""
        return Engine(k=1, t=self.k, min_ops=0, chain_kinds="patch", pixel_ops=2,
                      whole_image_only=True, final_blend=False, chain_start=True, beta=self.beta,
                      severity=self.severity, patch_sizes=(), whole_image_patch=True,
                      source_from_image=True, op_names=self.op_names)


#: The config class of each method, by ``MixConfig.method``.
METHODS: Mapping[str, type] = types.MappingProxyType(
    {cls.method: cls for cls in (IPMixConfig, AugMixConfig, PixMixConfig)})


def method_config(method: str, preset: str, **overrides) -> MixConfig:
    """The paper's setting of ``method`` (``"ipmix"``, ``"augmix"``, ``"pixmix"``) for ``preset``,
    with ``overrides`` (e.g. ``jsd=False``); a ValueError naming the known methods otherwise."""
    if method not in METHODS:
        raise ValueError(f"method={method!r} is invalid: choose one of {tuple(METHODS)}")
    return METHODS[method].from_preset(preset, **overrides)


def _patch_sizes_for(patch_sizes, whole_image_patch, height, width) -> Tuple[int, ...]:
    side = min(int(height), int(width))
    sizes = {s for s in patch_sizes if s <= side}
    if whole_image_patch:
        sizes.add(side)
    if not sizes:
        raise ValueError(
            f"no patch size fits a {height}x{width} image: patch_sizes={patch_sizes} "
            "are all larger and whole_image_patch is False")
    return tuple(sorted(sizes))

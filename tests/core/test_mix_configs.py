"""AugMixConfig and PixMixConfig: the papers' presets, the engine knobs they stand for, and the same
named errors as IPMixConfig."""

import numpy as np
import pytest

from dali_ipmix import AugMixConfig, IPMixConfig, MixConfig, PixMixConfig
from dali_ipmix.config import AUGMIX_PAPER_SETTINGS, PIXMIX_PAPER_SETTINGS
from dali_ipmix.ops import AUGMIX_EXTRA_OPS, AUGMIX_OPS

AUGMIX_LIST = ("autocontrast_plain", "equalize", "posterize", "rotate", "solarize", "shear_x", "shear_y",
               "translate_x", "translate_y")


def test_presets_carry_the_papers_settings():
    inet, cifar = AugMixConfig.imagenet(), AugMixConfig.cifar()
    assert (inet.width, inet.depth, inet.severity, inet.alpha, inet.all_ops) == (3, None, 1.0, 1.0, False)
    assert (cifar.width, cifar.depth, cifar.severity) == (3, None, 3.0)
    assert inet.preset == "imagenet" and cifar.preset == "cifar" and inet.jsd
    p_inet, p_cifar = PixMixConfig.imagenet(), PixMixConfig.cifar()
    assert (p_inet.k, p_inet.beta, p_inet.severity) == (4, 4.0, 1.0)
    assert (p_cifar.k, p_cifar.beta, p_cifar.severity) == (4, 3.0, 3.0)
    assert set(AUGMIX_PAPER_SETTINGS) == set(PIXMIX_PAPER_SETTINGS) == {"imagenet", "cifar"}
    assert AugMixConfig.cifar(severity=5).preset == "cifar"
    assert PixMixConfig.imagenet().replace(k=2).preset == "imagenet"


def test_method_names_mixing_and_the_common_base():
    for cls, method, mixing in ((IPMixConfig, "ipmix", True), (AugMixConfig, "augmix", False),
                                (PixMixConfig, "pixmix", True)):
        config = cls()
        assert isinstance(config, MixConfig)
        assert (config.method, config.needs_mixing) == (method, mixing)


def test_op_lists_are_augmix_s():
    assert AUGMIX_OPS == AUGMIX_LIST
    assert AugMixConfig().op_names == AUGMIX_LIST == PixMixConfig().op_names
    assert AugMixConfig(all_ops=True).op_names == AUGMIX_LIST + ("color", "contrast", "brightness", "sharpness")
    assert AUGMIX_EXTRA_OPS == ("color", "contrast", "brightness", "sharpness")
    assert PixMixConfig(ops=("rotate",), all_ops=True).op_names == ("rotate",) + AUGMIX_EXTRA_OPS
    assert "autocontrast" not in AugMixConfig(all_ops=True).op_names   # IPMix's cutoff law is not AugMix's


def test_engines():
    e = AugMixConfig(width=4).engine
    assert (e.k, e.t, e.min_ops, e.chain_kinds, e.final_blend, e.chain_start) == (4, 3, 1, "image", True, False)
    e = AugMixConfig(depth=2).engine
    assert (e.t, e.min_ops) == (2, 2)
    e = PixMixConfig(k=5, beta=2.0).engine
    assert (e.k, e.t, e.min_ops, e.chain_kinds, e.pixel_ops, e.whole_image_only, e.final_blend,
            e.chain_start, e.source_from_image, e.beta) == (1, 5, 0, "patch", 2, True, False, True, True, 2.0)
    e = IPMixConfig.cifar().engine
    assert (e.k, e.t, e.min_ops, e.chain_kinds, e.pixel_ops, e.whole_image_only, e.final_blend,
            e.chain_start, e.source_from_image) == (3, 3, 0, "both", 4, False, True, False, False)


@pytest.mark.parametrize("cls, field, value, needle", [
    (AugMixConfig, "width", 0, "AugMixConfig.width=0"), (AugMixConfig, "width", 33, "must be <= 32"),
    (AugMixConfig, "depth", 0, "AugMixConfig.depth=0"), (AugMixConfig, "depth", 2.0, "or None"),
    (AugMixConfig, "alpha", 0.5, "only alpha == 1"), (AugMixConfig, "alpha", "1", "AugMixConfig.alpha='1'"),
    (AugMixConfig, "severity", 11, "allowed range is 1..10"), (AugMixConfig, "ops", ("blur",), "blur"),
    (AugMixConfig, "ops", (), "empty"), (AugMixConfig, "preset", "nope", "AugMixConfig.preset='nope'"),
    (PixMixConfig, "k", -1, "PixMixConfig.k=-1"), (PixMixConfig, "k", 33, "must be <= 32"),
    (PixMixConfig, "beta", 0, "beta must be > 0"), (PixMixConfig, "beta", float("nan"), "beta=nan"),
    (PixMixConfig, "severity", 0.5, "PixMixConfig.severity=0.5"),
])
def test_invalid_values_name_field_value_and_rule(cls, field, value, needle):
    with pytest.raises((ValueError, TypeError)) as err:
        cls(**{field: value})
    msg = str(err.value)
    assert needle in msg, msg
    assert any(w in msg for w in ("must", "allowed", "expected", "empty", "invalid", "only")), msg


@pytest.mark.parametrize("cls", [AugMixConfig, PixMixConfig])
@pytest.mark.parametrize("field", ["all_ops", "jsd"])
def test_flags_must_be_bool(cls, field):
    with pytest.raises(TypeError, match=f"{cls.__name__}.{field}='no' is invalid: expected True or False"):
        cls(**{field: "no"})


def test_alpha_rule_is_in_the_docstring_and_numpy_scalars_are_accepted():
    assert "alpha == 1" in AugMixConfig.__doc__
    c = AugMixConfig(width=np.int64(2), depth=np.int32(3), severity=np.float32(2), alpha=np.float64(1))
    assert (c.width, c.depth, c.severity, c.alpha) == (2, 3, 2.0, 1.0)
    assert all(type(v) in (int, float) for v in (c.width, c.depth, c.severity, c.alpha))
    assert PixMixConfig(k=np.int64(0)).k == 0


def test_unknown_preset_for_a_method_names_the_known_ones():
    with pytest.raises(ValueError, match="preset='tiny' is invalid for augmix"):
        AugMixConfig.from_preset("tiny")

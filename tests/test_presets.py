"""The preset records and shared constants: published values, registry rules, configs that keep their preset."""

import pytest

from dali_ipmix import IPMixConfig
from dali_ipmix.constants import IMAGENET_MEAN, IMAGENET_RESIZE, IMAGENET_STD
from dali_ipmix.presets import (PRESETS, PaddedCrop, Preset, RandomResizedCrop, ResizeCentreCrop, ResizeTo,
                                get_preset, register)


def test_constants_are_the_published_imagenet_numbers():
    assert IMAGENET_MEAN == (0.485, 0.456, 0.406) and IMAGENET_STD == (0.229, 0.224, 0.225)
    assert round(224 * IMAGENET_RESIZE) == 256


def test_the_paper_recipes():
    inet, cifar = PRESETS["imagenet"], PRESETS["cifar"]
    assert (inet.size, cifar.size) == (224, 32)
    assert inet.train_crop == RandomResizedCrop(area=(0.08, 1.0), aspect=(3 / 4, 4 / 3))
    assert isinstance(cifar.train_crop, PaddedCrop) and cifar.train_crop.pad_px(32) == 4
    assert (inet.mixing_side(224), cifar.mixing_side(32)) == (256, 36)
    assert inet.validation == ResizeCentreCrop(IMAGENET_RESIZE) and cifar.validation == ResizeTo()
    assert IPMixConfig.imagenet() == IPMixConfig(**inet.ipmix, preset="imagenet")
    assert IPMixConfig.cifar() == IPMixConfig(**cifar.ipmix, preset="cifar")


def test_configs_keep_their_preset():
    assert IPMixConfig.cifar(severity=5).preset == "cifar"
    assert IPMixConfig.cifar().replace(k=1).preset == "cifar"
    assert IPMixConfig().preset is None
    with pytest.raises(ValueError, match="preset='svhn'"):
        IPMixConfig(preset="svhn")


def test_registry_refuses_silent_overwrites_and_unknown_names():
    with pytest.raises(ValueError, match="already registered"):
        register(Preset("cifar", 32, {}, PaddedCrop(), 1.0, ResizeTo()))
    with pytest.raises(TypeError):
        register("cifar")
    with pytest.raises(ValueError, match="imagenet"):
        get_preset("svhn")
    with pytest.raises(TypeError):
        PRESETS["cifar"].ipmix["k"] = 5   # records are read-only

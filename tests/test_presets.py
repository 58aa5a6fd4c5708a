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


@pytest.mark.parametrize("decode", ["roi", "full"])
def test_random_resized_crop_decodes_the_region_or_the_whole_image(tmp_path, decode):
    """Both ways give size x size RGB crops whose areas follow the crop law: on an image whose pixels
    encode their column, a crop's width in source columns lies within what `area` and `aspect`
    allow (area 0.08..1 of the image, aspect 3/4..4/3, clipped to the image)."""
    import numpy as np
    from nvidia.dali import fn, pipeline_def
    from PIL import Image
    w, h = 250, 200
    columns = np.broadcast_to(np.linspace(0, 250, w).astype(np.uint8)[None, :, None], (h, w, 3))
    path = tmp_path / "columns.png"   # lossless: the column ramp survives encoding exactly
    Image.fromarray(np.ascontiguousarray(columns)).save(path)
    crop = RandomResizedCrop(decode=decode)

    @pipeline_def(batch_size=16, num_threads=1, device_id=None, seed=3)
    def pipe():
        encoded, _ = fn.readers.file(files=[str(path)] * 16)
        return crop.dali(encoded, 24, "cpu")
    p = pipe()
    p.build()
    widths = []
    for _ in range(4):
        (out,) = p.run()
        for t in out:
            a = np.array(t)
            assert a.shape == (24, 24, 3) and a.dtype == np.uint8
            widths.append((int(a[:, -1, 0].mean()) - int(a[:, 0, 0].mean())) / 250 * w)
    widths = np.array(widths)
    smallest = np.sqrt(0.08 * w * h * 3 / 4)   # narrowest crop the law allows
    assert widths.min() >= smallest * 0.8 and widths.max() <= w
    assert widths.std() > 10   # the crops differ


def test_random_resized_crop_refuses_an_unknown_decode():
    with pytest.raises(ValueError, match="decode='gpu' is invalid: use 'roi'"):
        RandomResizedCrop(decode="gpu")

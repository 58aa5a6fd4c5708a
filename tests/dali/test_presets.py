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


def _crop_pipeline(crop, encoded, params, size, extra=None, window=None):
    """A CPU pipeline: crop.dali of the encoded files with the given per-sample law parameters; with
    ``extra`` (a function of (encoded, params) DataNodes) its outputs follow."""
    import numpy as np
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(batch_size=len(encoded), num_threads=2, device_id=None, seed=3)
    def pipe():
        e = fn.external_source(source=lambda: encoded, batch=True)
        d = fn.external_source(source=lambda: np.ascontiguousarray(params), batch=True, dtype=types.FLOAT64)
        kw = {} if window is None else dict(window=window)
        return (crop.dali(e, size, "cpu", d, **kw), *(extra(e, d) if extra else ()))
    p = pipe()
    p.build()
    return [[np.array(t) for t in out] for out in p.run()]


def _encode(array, fmt="PNG"):
    import io
    import numpy as np
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, fmt)
    return np.frombuffer(buf.getvalue(), np.uint8)


@pytest.mark.parametrize("window", ["native", "python"])
def test_random_resized_crop_window_in_the_pipeline_is_the_host_rule(window):
    """The window the pipeline computes from the decoded shape (the plugin's IpmixCropWindow, or the
    host rule in a python_function where the plugin is not built) equals RandomResizedCrop.window on 68 shapes (2x2 to
    1000x10), including forced fallbacks (no attempt fits: centred crop clipped to the aspect range)."""
    import numpy as np
    from nvidia.dali import fn
    crop = RandomResizedCrop()
    if window == "native":
        pytest.importorskip("dali_ipmix.native").load()
    rng = np.random.default_rng(0)
    sizes = [(int(rng.integers(2, 400)), int(rng.integers(2, 400))) for _ in range(64)]
    sizes += [(1000, 10), (10, 1000), (3, 2), (2, 2)]
    encoded = [_encode(np.zeros((h, w, 3), np.uint8), "JPEG") for w, h in sizes]
    params = crop.law(rng.random((len(sizes), crop.draws)), 24)
    params[::7, :crop.attempts] = 1.0   # the whole area at an aspect != the image's: no attempt fits
    out = _crop_pipeline(crop, encoded, params, 24, window=window,
                         extra=lambda e, d: crop.window_nodes(fn.peek_image_shape(e), d, window))
    got = np.concatenate([np.stack(o) for o in out[1:]], axis=1).astype(int)   # x, y, w, h
    want = np.array([crop.window(params[i], h, w) for i, (w, h) in enumerate(sizes)])
    assert np.array_equal(got, want)
    centred = [(w - want[i, 2]) // 2 == want[i, 0] and (h - want[i, 3]) // 2 == want[i, 1]
               for i, (w, h) in enumerate(sizes)]
    assert sum(centred) >= 10   # the fallback branch ran
    assert all(o.shape == (24, 24, 3) for o in out[0])


def test_random_resized_crop_law_follows_torchvision():
    """Windows drawn by the law: area 8-100% of the image and aspect 3/4..4/3 whenever an attempt
    fits (all but rare fallbacks on a 250x200 image), anchors uniform over the positions left."""
    import numpy as np
    crop = RandomResizedCrop()
    params = crop.law(np.random.default_rng(1).random((4000, crop.draws)), 24)
    win = np.array([crop.window(p, 200, 250) for p in params])
    area = win[:, 2] * win[:, 3] / (250 * 200)
    w, h = win[:, 2], win[:, 3]   # rounded to whole pixels: the aspect within half a pixel
    assert area.min() >= 0.07 and area.max() <= 1.0 and 0.3 < area.mean() < 0.6
    assert ((w + 0.5) / (h - 0.5) >= 3 / 4).all() and ((w - 0.5) / (h + 0.5) <= 4 / 3).all()
    assert (win[:, 0] + win[:, 2] <= 250).all() and (win[:, 1] + win[:, 3] <= 200).all()
    slack = (250 - win[:, 2]) + 1   # x uniform on 0..W-w: its relative place is uniform on [0, 1)
    assert abs(np.mean(win[:, 0] / slack) - 0.5) < 0.03


@pytest.mark.parametrize("window", ["native", "python"])
@pytest.mark.parametrize("decode", ["roi", "full"])
def test_random_resized_crop_decodes_the_window_and_resizes_it(decode, window):
    """Both ways give the window of the host rule, resized: on a lossless picture, exactly DALI's
    resize of the window cut out in NumPy."""
    import numpy as np
    from nvidia.dali import fn, pipeline_def
    crop = RandomResizedCrop(decode=decode)
    rng = np.random.default_rng(2)
    picture = rng.integers(0, 256, (200, 250, 3), dtype=np.uint8)
    params = crop.law(rng.random((8, crop.draws)), 24)
    (out,) = _crop_pipeline(crop, [_encode(picture)] * 8, params, 24, window=window)
    windows = [crop.window(p, 200, 250) for p in params]
    cuts = [np.ascontiguousarray(picture[y:y + h, x:x + w]) for x, y, w, h in windows]
    assert len({(w, h) for _, _, w, h in windows}) > 4   # the crops differ

    @pipeline_def(batch_size=8, num_threads=1, device_id=None)
    def resized():
        return fn.resize(fn.external_source(source=lambda: cuts, batch=True, layout="HWC"),
                         resize_x=24, resize_y=24)
    p = resized()
    p.build()
    (want,) = p.run()
    for got, w in zip(out, want):
        assert np.array_equal(got, np.array(w))


def test_padded_crop_offsets_are_the_law_s():
    """PaddedCrop: offsets (y, x) in [-pad, pad] from the law, zero fill outside the image."""
    import numpy as np
    crop = PaddedCrop()
    assert crop.pad_px(32) == 4
    params = crop.law(np.array([[0.0, 0.999], [0.5, 0.5]]), 32)
    assert params.tolist() == [[-4.0, 4.0], [0.0, 0.0]]
    picture = np.random.default_rng(3).integers(1, 256, (32, 32, 3), dtype=np.uint8)
    (out,) = _crop_pipeline(crop, [_encode(picture)] * 2, params, 32)
    shifted = np.zeros_like(picture)
    shifted[4:, :28] = picture[:28, 4:]   # window starts 4 rows above and 4 columns right
    assert np.array_equal(out[0], shifted) and np.array_equal(out[1], picture)


def test_random_resized_crop_refuses_an_unknown_decode():
    with pytest.raises(ValueError, match="decode='gpu' is invalid: use 'roi'"):
        RandomResizedCrop(decode="gpu")


def test_crop_window_refuses_bad_inputs_naming_them():
    import numpy as np
    from nvidia.dali import fn, pipeline_def, types
    from dali_ipmix import native
    pytest.importorskip("dali_ipmix.native").load()
    with pytest.raises(ValueError, match="window='fast' is invalid"):
        RandomResizedCrop().dali(None, 24, "cpu", None, window="fast")

    def run(params, dtype, **kw):
        @pipeline_def(batch_size=2, num_threads=1, device_id=None)
        def pipe():
            shape = fn.external_source(source=lambda: [np.array([20, 30, 3])] * 2, batch=True,
                                       dtype=types.INT64)
            d = fn.external_source(source=lambda: params, batch=True, dtype=dtype)
            return tuple(fn.ipmix_crop_window(shape, d, **kw))
        p = pipe()
        p.build()
        return p.run()
    native.load()
    with pytest.raises(RuntimeError, match="input `params` must be float64"):
        run([np.zeros(4, np.float32)] * 2, types.FLOAT)
    with pytest.raises(RuntimeError, match="input `params` sample 1 has 5 values"):
        run([np.zeros(4), np.zeros(5)], types.FLOAT64)
    with pytest.raises(RuntimeError, match="`aspect_min`=2, `aspect_max`=1 are invalid: need 0 < aspect_min"):
        run([np.zeros(4)] * 2, types.FLOAT64, aspect_min=2.0, aspect_max=1.0)
    # one attempt, the whole area at aspect 1 on a 20 x 30 image: 24 x 24 does not fit, so the
    # fallback: width min(30, 20 * 4/3 rounded) = 27, full height, centred
    anchor, extent = run([np.array([1.0, 1.0, 0.0, 0.0])] * 2, types.FLOAT64)
    assert np.array(extent[0]).tolist() == [27, 20] and np.array(anchor[0]).tolist() == [1, 0]

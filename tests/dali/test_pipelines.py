"""training_pipeline / validation_pipeline on the CPU: outputs, presets, labels, determinism."""

import numpy as np
import pytest
import torch

from dali_ipmix import IPMixConfig
from dali_ipmix.constants import IMAGENET_MEAN, IMAGENET_STD
from dali_ipmix.iterator import IPMixIterator
from dali_ipmix.graphs import resolve_preset, training_pipeline, validation_pipeline

from dali_data import collect_epoch, decode_index, write_image

# Normalised range: (0 - mean) / std .. (1 - mean) / std over the three channels.
LO = min(-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD))
HI = max((1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD))


def first_batches(pipe, n=2):
    it = IPMixIterator(pipe)
    out = []
    for _, batch in zip(range(n), it):
        out.append(batch)
    return out


def flat(batch):
    (views, labels) = batch
    return [*views, labels] if isinstance(views, tuple) else [views, labels]


@pytest.mark.parametrize("preset,size,dtype", [
    ("imagenet", 16, "float32"), ("cifar", 16, "float32"), ("imagenet", 12, "float16")])
def test_training_outputs_are_finite_normalised_chw(dali_tree, dali_mixing, dali_cpu, preset, size, dtype):
    pipe = training_pipeline(dali_tree[0], mixing_root=dali_mixing, batch_size=4, preset=preset,
                             size=size, dtype=dtype, seed=1, **dali_cpu)
    assert pipe.source.output_names == ("clean", "view1", "view2", "label")
    assert pipe.source.classes == ("class_0", "class_1", "class_2")
    for (clean, v1, v2), labels in first_batches(pipe, 3):
        for x in (clean, v1, v2):
            assert x.shape == (4, 3, size, size)
            assert x.dtype == getattr(torch, dtype)
            assert torch.isfinite(x).all()
            assert x.min() >= LO - 1e-2 and x.max() <= HI + 1e-2
        assert labels.dtype == torch.int64 and set(labels.tolist()) <= {0, 1, 2}


@pytest.mark.parametrize("device", ["cpu", pytest.param("gpu", marks=pytest.mark.cupy)])
@pytest.mark.parametrize("backend, dtype", [("native", "float32"), ("native", "float16"),
                                            ("python", "float32")])
def test_fused_normalisation_gives_the_tensors_of_crop_mirror_normalize(
        dali_tree, dali_mixing, dali_cpu, backend, dtype, device):
    """The training pipeline normalises inside fn.ipmix (fused into the native operator on either
    device); the batches equal those of IPMix followed by the pipelines' own crop_mirror_normalize."""
    from dali_ipmix import native, graphs
    from dali_ipmix.sources import training_source
    if backend == "native" and not native.available():
        pytest.skip("native plugin not built")
    if device == "gpu" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    where = dali_cpu if device == "cpu" else dict(device="gpu", num_threads=2)
    kwargs = dict(mixing_root=dali_mixing, batch_size=5, preset="imagenet", size=16, dtype=dtype,
                  seed=7, backend=backend, **where)
    fused = first_batches(training_pipeline(dali_tree[0], **kwargs), 2)

    def unfused(*args, normalize, **kw):
        out = graphs.ipmix(*args, **kw)
        out = out if isinstance(out, tuple) else (out,)
        return tuple(graphs._normalize(o, normalize["dtype"]) for o in out)
    plain = first_batches(graphs.pipeline_for(training_source(dali_tree[0], **kwargs),
                                              lambda source: graphs.training_graph(source, unfused)), 2)
    for a, b in zip(fused, plain):
        for x, y in zip(flat(a), flat(b)):
            assert x.dtype == y.dtype and x.shape == y.shape
            torch.testing.assert_close(x, y, rtol=0, atol=1e-5)


def test_clean_view_is_the_cropped_image_and_labels_match_folders(dali_tree, dali_mixing, dali_cpu):
    pipe = training_pipeline(dali_tree[0], mixing_root=dali_mixing, batch_size=8, preset="imagenet",
                             size=16, seed=3, **dali_cpu)
    indices, labels = collect_epoch(IPMixIterator(pipe))
    assert sorted(indices) == list(range(21))
    assert labels == [dali_tree[1][i][1] for i in indices]


def test_cifar_preset_pads_with_zeros(dali_tree, dali_mixing, dali_cpu):
    pipe = training_pipeline(dali_tree[0], mixing_root=dali_mixing, batch_size=21, preset="cifar",
                             size=16, seed=0, **dali_cpu)
    (clean, _, _), _ = first_batches(pipe, 1)[0]
    black = torch.tensor([-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]).view(1, 3, 1, 1)
    is_black = (clean - black).abs().amax(1) < 0.02            # (N, H, W)
    assert is_black.any()                                     # padding shows up in some crops ...
    assert not is_black[:, 6:10, 6:10].any()                  # ... but never reaches the centre


def test_same_seed_same_batches_other_seed_differs(dali_tree, dali_mixing, dali_cpu):
    def run(seed):
        pipe = training_pipeline(dali_tree[0], mixing_root=dali_mixing, batch_size=4, preset="imagenet",
                                 size=16, seed=seed, **dali_cpu)
        return [t for b in first_batches(pipe, 3) for t in flat(b)]
    a, b, c = run(11), run(11), run(12)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert any(not torch.equal(x, y) for x, y in zip(a, c))


@pytest.mark.needs_core
def test_jsd_views_differ_from_each_other_and_from_clean(dali_tree, dali_mixing, dali_cpu):
    pipe = training_pipeline(dali_tree[0], mixing_root=dali_mixing, batch_size=8, preset="cifar",
                             size=16, seed=5, **dali_cpu)
    for (clean, v1, v2), _ in first_batches(pipe, 2):
        assert not torch.equal(v1, v2)
        assert not torch.equal(v1, clean) and not torch.equal(v2, clean)
        # over a batch, almost every sample is changed by at least one view
        changed = ((v1 - clean).abs().amax((1, 2, 3)) > 0) | ((v2 - clean).abs().amax((1, 2, 3)) > 0)
        assert changed.float().mean() >= 0.5


def test_non_jsd_config_has_one_image_output(dali_tree, dali_mixing, dali_cpu):
    pipe = training_pipeline(dali_tree[0], mixing_root=dali_mixing, batch_size=4,
                             config=IPMixConfig.imagenet(jsd=False), size=16, **dali_cpu)
    assert pipe.source.output_names == ("images", "label")
    assert pipe.source.preset == "imagenet"
    images, labels = first_batches(pipe, 1)[0]
    assert images.shape == (4, 3, 16, 16) and labels.shape == (4,)


def test_preset_follows_the_config_it_was_made_from():
    assert resolve_preset(None, None) == "imagenet"
    assert resolve_preset(None, IPMixConfig.cifar(jsd=False)) == "cifar"
    assert resolve_preset(None, IPMixConfig.imagenet()) == "imagenet"
    assert resolve_preset("cifar", IPMixConfig.imagenet(k=5)) == "cifar"
    # A config derived from a preset keeps it: overrides and replace() change IPMix, not the crop recipe.
    assert resolve_preset(None, IPMixConfig.cifar(k=5)) == "cifar"
    assert resolve_preset(None, IPMixConfig.cifar().replace(severity=5)) == "cifar"
    # A hand-built config names no preset: the pipeline does not guess one.
    with pytest.raises(ValueError, match="preset="):
        resolve_preset(None, IPMixConfig(k=5))
    with pytest.raises(ValueError, match="preset="):
        resolve_preset(None, IPMixConfig())


@pytest.fixture
def tiny_preset():
    """A preset registered by a user: one record, nothing else touched."""
    from dali_ipmix.presets import PRESETS, PaddedCrop, Preset, ResizeCentreCrop, register
    preset = register(Preset("tiny", size=12, ipmix=dict(PRESETS["cifar"].ipmix, k=2),
                             train_crop=PaddedCrop(pad=0.25), mix_resize=1.5,
                             validation=ResizeCentreCrop(ratio=2.0)))
    yield preset
    del PRESETS["tiny"]


def test_a_registered_preset_drives_both_pipelines(tmp_path, dali_tree, dali_mixing, dali_cpu, tiny_preset):
    config = IPMixConfig.from_preset("tiny")
    assert (config.preset, config.k, config.beta) == ("tiny", 2, 3.0)
    pipe = training_pipeline(dali_tree[0], mixing_root=dali_mixing, batch_size=4, preset="tiny", seed=1,
                             **dali_cpu)
    info = pipe.source
    assert (info.preset, info.size, info.config) == ("tiny", 12, config)
    (clean, _, _), _ = first_batches(pipe, 1)[0]
    assert clean.shape == (4, 3, 12, 12)
    pipe = training_pipeline(dali_tree[0], mixing_root=dali_mixing, batch_size=4, seed=1,
                             config=IPMixConfig.from_preset("tiny", jsd=False), **dali_cpu)
    assert (pipe.source.preset, pipe.source.size) == ("tiny", 12)
    # Its validation record: shorter side x2 (40x80 -> 24x48), centre 12x12 crop, columns 18..29 of
    # which 18..23 are red.
    img = np.zeros((40, 80, 3), np.uint8)
    img[:, :40, 0] = 255
    img[:, 40:, 2] = 255
    write_image(str(tmp_path / "c" / "a.png"), img)
    (images, _), = first_batches(validation_pipeline(str(tmp_path), batch_size=1, preset="tiny", **dali_cpu), 1)
    red = images[0, 0] > 1.5
    assert images.shape == (1, 3, 12, 12) and red[:, :5].all() and not red[:, 7:].any()


@pytest.mark.parametrize("preset", ["imagenet", "cifar"])
def test_validation_pipeline_is_deterministic_and_labelled(dali_tree, dali_cpu, preset):
    pipe = validation_pipeline(dali_tree[0], batch_size=7, preset=preset, size=16, **dali_cpu)
    assert pipe.source.output_names == ("images", "label")
    seen = []
    for images, labels in IPMixIterator(pipe):
        assert images.shape == (7, 3, 16, 16) and torch.isfinite(images).all()
        seen += [(decode_index(x), int(y)) for x, y in zip(images, labels)]
    assert seen == [(i, dali_tree[1][i][1]) for i in range(21)]


def test_imagenet_validation_is_resize_then_centre_crop(tmp_path, dali_cpu):
    # a 40x80 image: left half red, right half blue; resize shorter side to 16*256/224 = 18 gives
    # 18x36, the centre 16x16 crop straddles the boundary: half red, half blue.
    img = np.zeros((40, 80, 3), np.uint8)
    img[:, :40, 0] = 255
    img[:, 40:, 2] = 255
    write_image(str(tmp_path / "c" / "a.png"), img)
    (images, _), = first_batches(validation_pipeline(str(tmp_path), batch_size=1, size=16, **dali_cpu), 1)
    red = images[0, 0] > 1.5
    assert red[:, :7].all() and not red[:, 9:].any()


def test_file_list_mode(tmp_path, dali_tree, dali_mixing, dali_cpu):
    lines = [f"{dali_tree[1][i][0]} {5 - i % 3}" for i in range(0, 21, 2)]   # 11 files, labels 3..5
    (tmp_path / "list.txt").write_text("# path label\n" + "\n".join(lines) + "\n\n")
    pipe = training_pipeline(file_list=str(tmp_path / "list.txt"), mixing_root=dali_mixing,
                             batch_size=4, preset="cifar", size=16, seed=2, **dali_cpu)
    assert pipe.source.num_samples == 11 and len(pipe.source.classes) == 6
    indices, labels = collect_epoch(IPMixIterator(pipe))
    assert sorted(indices) == list(range(0, 21, 2))
    assert labels == [5 - i % 3 for i in indices]


def test_relative_file_list_paths(tmp_path, dali_tree, dali_mixing, dali_cpu):
    import os
    root = dali_tree[0]
    rel = [os.path.relpath(dali_tree[1][i][0], root) for i in range(3)]
    (tmp_path / "list.txt").write_text("\n".join(f"{p} {k}" for k, p in enumerate(rel)))
    pipe = validation_pipeline(root, file_list=str(tmp_path / "list.txt"), batch_size=3, preset="cifar",
                               size=16, **dali_cpu)
    (images, labels), = first_batches(pipe, 1)
    assert [decode_index(x) for x in images] == [0, 1, 2] and labels.tolist() == [0, 1, 2]


@pytest.mark.parametrize("kwargs,match", [
    (dict(preset="svhn"), "preset"), (dict(size=1), "size"), (dict(dtype="float64"), "dtype"),
    (dict(device="tpu"), "device"), (dict(batch_size=0), "batch_size"),
    (dict(config="imagenet"), "IPMixConfig"), (dict(validate="quick"), "validate"),
    (dict(on_bad_file="ignore"), "on_bad_file"), (dict(shard_id=2, num_shards=2), "shard_id"),
])
def test_bad_arguments_raise_clear_errors(dali_tree, dali_mixing, kwargs, match):
    args = dict(mixing_root=dali_mixing, batch_size=4, device="cpu", size=16)
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        training_pipeline(dali_tree[0], **args)


def test_more_shards_than_samples_is_an_error(tmp_path, dali_mixing):
    from dali_data import make_tree
    make_tree(tmp_path, per_class=(1, 1))
    with pytest.raises(ValueError, match="shards"):
        training_pipeline(str(tmp_path), mixing_root=dali_mixing, batch_size=2, device="cpu",
                          shard_id=0, num_shards=3)


@pytest.mark.cupy
def test_gpu_training_pipeline_yields_cuda_tensors(dali_tree, dali_mixing):
    cupy = pytest.importorskip("cupy")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    del cupy
    pipe = training_pipeline(dali_tree[0], mixing_root=dali_mixing, batch_size=4, preset="cifar",
                             size=16, seed=1, device="gpu", num_threads=2)
    indices, labels = [], []
    for (clean, v1, v2), y in IPMixIterator(pipe):
        assert clean.is_cuda and v1.is_cuda and v2.is_cuda and y.is_cuda
        assert torch.isfinite(v1).all() and v1.min() >= LO - 1e-2 and v1.max() <= HI + 1e-2
        indices += [decode_index(c) for c in clean]
        labels += y.tolist()
    assert sorted(indices) == list(range(21))
    assert labels == [dali_tree[1][i][1] for i in indices]


def test_gpu_pipelines_warn_about_cpu_decoded_mixing_sets():
    import warnings
    from dali_ipmix.mixing_cache import _warn_cpu_decoded as _warn_cpu_decoded_mixing
    with pytest.warns(UserWarning, match="2 of 3 mixing pictures in fr are not JPEG"):
        _warn_cpu_decoded_mixing(["fr/a.png", "fr/b.PNG", "fr/c.jpg"], "fr")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _warn_cpu_decoded_mixing(["fr/a.jpg", "fr/b.JPEG", "fr/c.png"], "fr")


def test_mixing_pictures_at_the_preset_side_skip_the_identity_resize(dali_tree, tmp_path):
    """Pictures whose shorter side already is the preset's mixing side are cropped without a resize
    (known from their headers): the same tensors as with the resize, which is then the identity."""
    from PIL import Image
    from dali_data import all_shorter_sides_equal
    # CIFAR preset at 32 px: mixing pictures Resize(36) + RandomCrop(32).
    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate([(36, 40), (50, 36), (36, 36)]):
        paths.append(str(tmp_path / f"m{i}.jpg"))
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(paths[-1], quality=95)
    assert all_shorter_sides_equal(paths, 36) and not all_shorter_sides_equal(paths, 35)
    assert not all_shorter_sides_equal(paths + [str(tmp_path / "missing.jpg")], 36)

    def first_batch(validate):
        pipe = training_pipeline(dali_tree[0], mixing_root=str(tmp_path), batch_size=4, preset="cifar",
                                 size=32, device="cpu", num_threads=1, seed=3, validate=validate)
        (clean, v1, v2), labels = next(iter(IPMixIterator(pipe)))
        return pipe.source, [t.numpy() for t in (clean, v1, v2, labels)]
    skipped, a = first_batch("header")
    resized, b = first_batch("none")
    assert skipped.mixing_resize is False and resized.mixing_resize is True
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("method", ["augmix", "pixmix"])
def test_augmix_and_pixmix_pipelines_agree_across_backends(dali_tree, dali_mixing, dali_cpu, method):
    """training_pipeline(config=AugMixConfig / PixMixConfig): the same keyed batches on the native and
    the python backend (within a grey level: float rounding), clean views equal, augmented views not
    the clean ones; AugMix reads no mixing pictures."""
    from dali_ipmix import AugMixConfig, PixMixConfig, native
    if not native.available():
        pytest.skip("native plugin not built")
    config = (AugMixConfig if method == "augmix" else PixMixConfig).cifar()
    mixing = None if method == "augmix" else dali_mixing
    batches = {}
    for backend in ("native", "python"):
        pipe = training_pipeline(dali_tree[0], mixing_root=mixing, batch_size=7, size=16, config=config,
                                 seed=11, backend=backend, **dali_cpu)
        assert pipe.source.preset == "cifar" and pipe.source.backend == backend
        assert bool(pipe.source.mixing_files) == (method == "pixmix")
        batches[backend] = [flat(b) for b in first_batches(pipe, 3)]
    grey = 1 / 255 / min(IMAGENET_STD) + 1e-4
    changed = 0
    for a, b in zip(batches["native"], batches["python"]):
        torch.testing.assert_close(a[0], b[0], rtol=0, atol=1e-5)     # clean
        assert torch.equal(a[3], b[3])                               # labels
        for x, y in zip(a[1:3], b[1:3]):
            assert (x - y).abs().le(grey).float().mean() >= 0.999
            changed += int((x - a[0]).abs().gt(grey).any(dim=(1, 2, 3)).sum())
    assert changed > 0.5 * 2 * 3 * 7   # most views are augmented


def test_mixing_root_must_match_the_method(dali_tree, dali_mixing, dali_cpu):
    from dali_ipmix import AugMixConfig, PixMixConfig
    with pytest.raises(ValueError, match="mixing_root=None is invalid for PixMixConfig"):
        training_pipeline(dali_tree[0], batch_size=4, config=PixMixConfig.cifar(), **dali_cpu)
    with pytest.raises(ValueError, match="mixing_root=.* is invalid for AugMixConfig: it mixes with no pictures"):
        training_pipeline(dali_tree[0], mixing_root=dali_mixing, batch_size=4, config=AugMixConfig.cifar(),
                          **dali_cpu)
    with pytest.raises(TypeError, match="config must be an IPMixConfig, AugMixConfig or PixMixConfig, got dict"):
        training_pipeline(dali_tree[0], mixing_root=dali_mixing, batch_size=4, config={"k": 3}, **dali_cpu)

"""The decoded mixing-picture cache: pictures as DALI's decoder gives them, fed without a copy, and a
training pipeline that gives the same tensors with and without it."""

import warnings

import numpy as np
import pytest
from PIL import Image

from dali_ipmix import IPMixConfig, IPMixIterator
from dali_ipmix import graphs, mixing_cache as cache_module
from dali_ipmix.epochs import EpochPlan, Feed
from dali_ipmix.files import header_sizes
from dali_ipmix.mixing_cache import MixingCache, decoded_shape, estimate_bytes
from dali_ipmix.graphs import training_pipeline


@pytest.fixture
def pictures(tmp_path):
    """JPEGs of three shapes (smooth, so that decoders agree closely) and their PIL decodes."""
    yy, xx = np.mgrid[0:1:1j * 64, 0:1:1j * 80]
    paths, arrays = [], []
    for i, (h, w) in enumerate([(40, 56), (64, 48), (50, 50)]):
        rgb = np.stack([xx[:h, :w], yy[:h, :w], (xx[:h, :w] + yy[:h, :w]) / 2], -1) * (200 + 20 * i)
        paths.append(str(tmp_path / f"p{i}.jpg"))
        Image.fromarray(rgb.astype(np.uint8)).save(paths[-1], quality=95)
        arrays.append(np.asarray(Image.open(paths[-1]).convert("RGB")))
    return paths, arrays


def test_unresized_pictures_are_the_decoded_files_as_read_only_views(pictures):
    paths, arrays = pictures
    cache = MixingCache.build(paths, side=None, num_threads=1)
    assert len(cache) == 3 and cache.nbytes == sum(a.nbytes for a in arrays)
    for got, want in zip(cache, arrays):
        assert got.shape == want.shape and got.dtype == np.uint8
        assert np.abs(got.astype(int) - want).max() <= 1     # libjpeg-turbo both; IDCT may differ by 1
        assert not got.flags.writeable
    # Views of one buffer, back to back (nothing is copied per batch).
    assert cache[1].__array_interface__["data"][0] - cache[0].__array_interface__["data"][0] == arrays[0].nbytes


def test_resized_pictures_have_the_shorter_side_and_the_estimated_size(pictures):
    paths, arrays = pictures
    cache = MixingCache.build(paths, side=36, num_threads=2)
    for got, want in zip(cache, arrays):
        assert min(got.shape[:2]) == 36
        assert got.shape == decoded_shape(want.shape[1], want.shape[0], 36)
        # Same picture: the resized one against PIL's resize of the same decode, within resampling error.
        ref = np.asarray(Image.fromarray(want).resize(got.shape[1::-1], Image.BILINEAR), dtype=float)
        assert np.abs(got - ref).mean() < 3
    assert estimate_bytes(header_sizes(paths), 36) == cache.nbytes
    assert estimate_bytes(header_sizes(paths + [paths[0] + ".missing"]), 36) is None


@pytest.mark.parametrize("expected", [None, 1, 10**6])
def test_pictures_decode_into_one_buffer_whatever_size_it_was_given(pictures, expected):
    """Too small a size (grown while decoding) or too large: the same pictures, back to back."""
    paths, arrays = pictures
    cache = MixingCache.build(paths * 3, side=None, num_threads=1, expected_bytes=expected)
    assert cache.nbytes == 3 * sum(a.nbytes for a in arrays) and len(cache) == 9
    for i, got in enumerate(cache):
        assert got.shape == arrays[i % 3].shape and np.abs(got.astype(int) - arrays[i % 3]).max() <= 1
    starts = [c.__array_interface__["data"][0] for c in cache]
    assert all(b - a == cache[i].nbytes for i, (a, b) in enumerate(zip(starts, starts[1:])))


def test_an_undecodable_picture_is_named_with_the_real_cause(pictures, tmp_path, monkeypatch):
    """Named alone (the batch's good pictures are not), with PIL's reason and DALI's cause, not
    DALI's last line "Current pipeline object is no longer valid."."""
    paths, _ = pictures
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(open(paths[0], "rb").read()[:200])
    with pytest.raises(ValueError) as err:
        MixingCache.build(paths + [str(bad)], side=None, num_threads=1)
    text = str(err.value)
    assert f"1 mixing picture(s) cannot be decoded: {bad}: corrupt image" in text, text
    assert "DALI said RuntimeError: nvidia.dali.fn.decoders.image: " in text, text
    assert "no longer valid" not in text and paths[0] not in text, text
    gone = str(tmp_path / "gone.png")
    with pytest.raises(ValueError, match=f"{gone}: file does not exist .*fn.io.file.read: .*Could not open"):
        MixingCache.build(paths + [gone], side=None, num_threads=1)
    # A failure no PIL check explains: the batch is named, with DALI's cause.
    import dali_ipmix.files as files
    monkeypatch.setattr(files, "find_bad_images", lambda batch, validate: [])
    with pytest.raises(ValueError, match=r"DALI failed on a batch of these mixing pictures: .*broken.jpg "
                                         r"\(RuntimeError: nvidia.dali.fn.decoders.image: .*\); they pass"):
        MixingCache.build(paths + [str(bad)], side=None, num_threads=1)


def test_dali_cause_keeps_the_operator_and_what_it_encountered():
    from dali_ipmix.mixing_cache import dali_cause
    text = ("Critical error in pipeline:\nError in CPU operator `nvidia.dali.fn.resize`,\nwhich was used "
            "in the pipeline definition with the following traceback:\n\n  File \"x.py\", line 1\n\n"
            "encountered:\n\nstd::bad_alloc\nCurrent pipeline object is no longer valid.\n"
            "Current pipeline object is no longer valid.")
    assert dali_cause(RuntimeError(text)) == "nvidia.dali.fn.resize: std::bad_alloc"
    assert dali_cause(RuntimeError("plain message\n")) == "plain message"


def test_side_is_checked():
    with pytest.raises(ValueError, match="side=0 is invalid: must be >= 1"):
        MixingCache.build(["a.png"], side=0)


def test_feed_hands_out_the_cached_pictures_of_the_drawn_mixing_files(pictures):
    from nvidia.dali.types import BatchInfo
    paths, _ = pictures
    cache = MixingCache.build(paths, side=None, num_threads=1)
    plan = EpochPlan(2, 1, 0, 1)
    feed = Feed(["a.jpg", "b.jpg"], [0, 1], paths, mixing_seed=5, mixing_cache=cache, plan=plan, start_epoch=2)
    plain = Feed(["a.jpg", "b.jpg"], [0, 1], paths, mixing_seed=5, plan=plan, start_epoch=2)
    for i in range(2):
        got, want = feed(BatchInfo(i, 0))[2], plain(BatchInfo(i, 0))[2]
        assert [g is cache[paths.index(bytes(w).decode())] for g, w in zip(got, want)] == [True] * len(got)
    with pytest.raises(ValueError, match="mixing_cache holds 3 pictures for 2 mixing files"):
        Feed(["a.jpg"], [0], paths[:2], mixing_seed=0, mixing_cache=cache)


def _batches(pipe, n=2):
    out = []
    for i, (views, labels) in enumerate(IPMixIterator(pipe)):
        out.append([v.cpu().numpy().copy() for v in views] + [labels.cpu().numpy().copy()])
        if i + 1 == n:
            return out


def test_cached_and_uncached_pipelines_give_the_same_tensors(dali_tree, dali_mixing):
    """Same mixing choice, same crops (explicit seeds), same decoder on the CPU: bit-identical views.
    (Views differ from the clean image, so a different picture or crop would show.)"""
    def make(cache):
        return training_pipeline(dali_tree[0], mixing_root=dali_mixing, batch_size=4, preset="imagenet",
                                 size=16, config=IPMixConfig.imagenet(), device="cpu", num_threads=2,
                                 seed=11, mixing_cache=cache)
    cached, uncached = make(True), make(False)
    assert cached.source.mixing_cache_bytes > 0 and uncached.source.mixing_cache_bytes == 0
    a, b = _batches(cached), _batches(uncached)
    assert any(not np.array_equal(batch[0], batch[1]) for batch in a)   # IPMix changed the views
    for x, y in zip(a, b):
        for u, v in zip(x, y):
            np.testing.assert_array_equal(u, v)


@pytest.mark.cupy
def test_gpu_pipelines_give_the_same_tensors_with_the_cache_in_host_or_device_memory(dali_tree, dali_mixing):
    import torch
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")

    def make(cache):
        return training_pipeline(dali_tree[0], mixing_root=dali_mixing, batch_size=4, preset="imagenet",
                                 size=16, device="gpu", num_threads=2, seed=11, mixing_cache=cache)
    device = make("device")
    assert device.source.mixing_cache_bytes > 0
    a, b = _batches(make(True), 3), _batches(device, 3)
    assert any(not np.array_equal(batch[0], batch[1]) for batch in a)
    for x, y in zip(a, b):
        for u, v in zip(x, y):
            np.testing.assert_array_equal(u, v)


def test_default_caches_up_to_the_limit_and_warns_above_it(dali_tree, dali_mixing, monkeypatch):
    def make(**kw):
        return training_pipeline(dali_tree[0], mixing_root=dali_mixing, batch_size=4, preset="cifar",
                                 device="cpu", num_threads=1, seed=0, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert make().source.mixing_cache_bytes > 0
        assert make(mixing_cache=False).source.mixing_cache_bytes == 0
    with monkeypatch.context() as m:   # a quarter of the available memory caps the default too
        m.setattr(cache_module.os, "sysconf", lambda name: {"SC_AVPHYS_PAGES": 100}.get(name, 1))
        with pytest.warns(UserWarning, match="up to 0.00 GiB: 4 GiB and at most a quarter"):
            assert make().source.mixing_cache_bytes == 0
    monkeypatch.setattr(cache_module, "MIXING_CACHE_MAX_BYTES", 100)
    with pytest.warns(UserWarning, match="decoded per sample, not cached .*mixing_cache=True"):
        assert make().source.mixing_cache_bytes == 0
    assert make(mixing_cache=True).source.mixing_cache_bytes > 100
    with pytest.raises(ValueError, match="mixing_cache='yes' is invalid"):
        make(mixing_cache="yes")
    with pytest.raises(ValueError, match="mixing_cache='device' needs device='gpu'"):
        make(mixing_cache="device")


class _FakeDeviceCache(list):
    device = "gpu"


@pytest.mark.parametrize("gpu_source_first", [False, True])
def test_a_device_cache_is_handed_out_by_the_second_source_batch_by_batch(gpu_source_first):
    """The GPU source gives the pictures of the batch the feed hands out for the same BatchInfo, and
    stops with it, whichever of the two DALI calls first (it keeps its sources in a set: on the H200
    the GPU source came first)."""
    from nvidia.dali.types import BatchInfo
    pictures = _FakeDeviceCache(f"picture {i}" for i in range(4))
    plan = EpochPlan(3, 2, 0, 1, shuffle_seed=1)
    feed = Feed(["a.jpg", "b.jpg", "c.jpg"], [0, 1, 2], [f"m{i}.jpg" for i in range(4)], mixing_seed=1,
                mixing_cache=pictures, plan=plan, start_epoch=3)
    plain = Feed(["a.jpg", "b.jpg", "c.jpg"], [0, 1, 2], [f"m{i}.jpg" for i in range(4)], mixing_seed=1,
                 plan=plan, start_epoch=3)

    def iteration(info):
        if gpu_source_first:
            gpu = feed.device_mixing(info)
            return feed(info), gpu
        first = feed(info)
        return first, feed.device_mixing(info)

    for dali_epoch in (0, 1):   # epochs 3 and 4
        for i in range(len(plan)):
            (paths, labels), gpu = iteration(BatchInfo(i, dali_epoch))
            want = plain(BatchInfo(i, dali_epoch))
            assert [bytes(p).decode() for p in paths] == [bytes(p).decode() for p in want[0]]
            assert labels.dtype == np.int32 and labels.tolist() == [["abc".index(bytes(p).decode()[0])]
                                                                    for p in paths]
            assert gpu == [f"picture {bytes(p).decode()[1]}" for p in want[2]]
        end = BatchInfo(len(plan), dali_epoch)
        for source in ((feed.device_mixing, feed) if gpu_source_first else (feed, feed.device_mixing)):
            with pytest.raises(StopIteration):
                source(end)
    feed.stop()                      # an epoch cut short: nothing left for either source
    for source in (feed, feed.device_mixing):
        with pytest.raises(StopIteration):
            source(BatchInfo(0, 2))
    with pytest.raises(RuntimeError, match="no mixing cache in GPU memory"):
        plain.device_mixing(BatchInfo(0, 0))


def test_a_two_source_pipeline_runs_whole_epochs(dali_tree, dali_mixing, monkeypatch):
    """The pipeline of mixing_cache='device' with its GPU source stood in for by a CPU one (no GPU
    here): three whole epochs, the same tensors as the host cache gives."""
    real_source = graphs.fn.external_source

    def cpu_source(*args, **kwargs):
        kwargs["device"] = "cpu"
        return real_source(*args, **kwargs)

    class HostPretendingDevice(cache_module.MixingCache):
        device = "gpu"

    def make(cache):
        return training_pipeline(dali_tree[0], mixing_root=dali_mixing, batch_size=4, preset="imagenet",
                                 size=16, device="cpu", num_threads=2, seed=5, mixing_cache=cache)
    want = [_batches(make(True), 6)]
    monkeypatch.setattr(graphs.fn, "external_source", cpu_source)
    monkeypatch.setattr(cache_module, "MixingCache", HostPretendingDevice)
    pipe = make(True)
    assert pipe.source.feed.on_device
    it = IPMixIterator(pipe)
    for epoch in range(3):
        got = [[v.numpy().copy() for v in views] + [labels.numpy().copy()] for views, labels in it]
        assert len(got) == len(it) == 6
        if epoch == 0:
            for x, y in zip(got, want[0]):
                for u, v in zip(x, y):
                    np.testing.assert_array_equal(u, v)


def test_a_cache_larger_than_memory_says_what_to_do():
    from dali_ipmix.mixing_cache import _host_buffer
    with pytest.raises(MemoryError, match="mixing cache: 1048576.00 GiB .*mixing_cache=False"):
        _host_buffer(2**50, False, 0)

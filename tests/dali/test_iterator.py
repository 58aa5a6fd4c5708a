"""IPMixIterator: exact epochs, last-batch policies, shards, torch.distributed defaults, the demo."""

import collections
import json
import math
import os

import numpy as np
import pytest
import torch

from dali_ipmix import IPMixConfig
from dali_ipmix.iterator import IPMixIterator, shard_defaults
from dali_ipmix.graphs import training_pipeline, validation_pipeline

from dali_data import collect_epoch, decode_index

N = 21   # samples in dali_tree


def train_iter(tree, mixing, cpu, policy="partial", **kw):
    kw = dict(dict(batch_size=4, preset="cifar", size=16, seed=7), **kw)
    return IPMixIterator(training_pipeline(tree[0], mixing_root=mixing, **cpu, **kw),
                         last_batch_policy=policy)


def test_every_sample_exactly_once_per_epoch_and_labels_match_folders(dali_tree, dali_mixing, dali_cpu):
    it = train_iter(dali_tree, dali_mixing, dali_cpu)
    orders = []
    for _ in range(3):
        indices, labels = collect_epoch(it)
        assert sorted(indices) == list(range(N))
        assert labels == [dali_tree[1][i][1] for i in indices]
        orders.append(indices)
    assert orders[0] != orders[1]   # a new permutation every epoch


@pytest.mark.parametrize("policy,batches,sizes", [
    ("partial", 6, [4, 4, 4, 4, 4, 1]),
    ("drop", 5, [4, 4, 4, 4, 4]),
    ("fill", 6, [4, 4, 4, 4, 4, 4]),
])
def test_len_and_last_batch_policy(dali_tree, dali_mixing, dali_cpu, policy, batches, sizes):
    it = train_iter(dali_tree, dali_mixing, dali_cpu, policy)
    assert len(it) == batches == math.ceil(N / 4) - (policy == "drop")
    for _ in range(2):   # and the same again in the next epoch
        got, seen = [], []
        for (clean, v1, v2), labels in it:
            assert clean.shape == v1.shape == v2.shape == (labels.shape[0], 3, 16, 16)
            assert labels.dtype == torch.int64 and labels.dim() == 1
            got.append(labels.shape[0])
            seen += [decode_index(c) for c in clean]
        assert got == sizes
        if policy != "fill":
            assert len(set(seen)) == len(seen)   # no repeats within an epoch
        else:
            assert set(seen) == set(range(N))


def test_two_shards_are_disjoint_and_complete_every_epoch(dali_tree, dali_mixing, dali_cpu):
    shards = [train_iter(dali_tree, dali_mixing, dali_cpu, shard_id=s, num_shards=2) for s in (0, 1)]
    for _ in range(2):
        a, b = (collect_epoch(it)[0] for it in shards)
        assert not set(a) & set(b)
        assert sorted(a + b) == list(range(N))


def test_non_jsd_yields_images_and_labels(dali_tree, dali_mixing, dali_cpu):
    it = train_iter(dali_tree, dali_mixing, dali_cpu, config=IPMixConfig.cifar(jsd=False))
    images, labels = next(iter(it))
    assert isinstance(images, torch.Tensor) and images.shape == (4, 3, 16, 16)
    assert labels.shape == (4,)


def test_validation_iterator_reads_files_in_order(dali_tree, dali_cpu):
    it = IPMixIterator(validation_pipeline(dali_tree[0], batch_size=5, preset="cifar", size=16, **dali_cpu))
    assert len(it) == 5
    for _ in range(2):
        indices, labels = [], []
        for images, y in it:
            indices += [decode_index(im) for im in images]
            labels += y.tolist()
        assert indices == list(range(N))
        assert labels == [dali_tree[1][i][1] for i in range(N)]


@pytest.fixture
def fake_dist(monkeypatch):
    """torch.distributed reporting rank 1 of 2."""
    import torch.distributed as dist
    monkeypatch.setattr(dist, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda group=None: 1)
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 2)


def test_shard_defaults_come_from_torch_distributed(fake_dist, dali_tree, dali_mixing, dali_cpu):
    assert shard_defaults() == (1, 2)
    assert shard_defaults(0, 4) == (0, 4)
    pipe = training_pipeline(dali_tree[0], mixing_root=dali_mixing, batch_size=4, preset="cifar",
                             size=16, seed=7, **dali_cpu)
    assert (pipe.source.shard_id, pipe.source.num_shards) == (1, 2)
    it = IPMixIterator(pipe)
    assert len(collect_epoch(it)[0]) in (N // 2, N // 2 + 1)


def test_shard_defaults_without_distributed_and_bad_values():
    assert shard_defaults() == (0, 1)
    for bad in [(2, 2), (-1, 2), (0, 0)]:
        with pytest.raises(ValueError, match="shard_id"):
            shard_defaults(*bad)


def test_iterator_rejects_bad_arguments(dali_tree, dali_mixing, dali_cpu):
    pipe = training_pipeline(dali_tree[0], mixing_root=dali_mixing, batch_size=4, preset="cifar",
                             size=16, **dali_cpu)
    with pytest.raises(ValueError, match="last_batch_policy"):
        IPMixIterator(pipe, last_batch_policy="pad")
    pipe.source = None   # a pipeline not made by dali_ipmix must name its outputs and reader
    with pytest.raises(ValueError, match="output_names"):
        IPMixIterator(pipe)
    with pytest.raises(ValueError, match="reader_name"):
        IPMixIterator(pipe, output_names=("clean", "view1", "view2", "label"))


def test_demo_runs_augmix_without_a_mixing_set(tmp_path, capsys):
    """``dali-ipmix demo --method augmix``: AugMix's paper setting, no fractal set generated."""
    from dali_ipmix.cli import main
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--device", "cpu", "--size", "32", "--per-class", "4",
                 "--batch-size", "8", "--steps", "2", "--quiet", "--method", "augmix"]) == 0
    log = capsys.readouterr().out
    assert "no mixing set: AugMixConfig mixes no pictures" in log and "AugMix pipeline on cpu" in log
    assert not (out / "demo_data" / "fractals").exists()
    assert json.load(open(out / "summary.json"))["method"] == "augmix"


def test_demo_runs_end_to_end(tmp_path):
    from dali_ipmix.demo import run_demo
    lines = []
    summary = run_demo(str(tmp_path / "demo"), device="cpu", size=32, per_class=4, n_fractals=4,
                       batch_size=8, steps=3, progress=False, log=lines.append)
    assert os.path.isfile(summary["preview"])
    from PIL import Image
    assert Image.open(summary["preview"]).size[1] == 3 * 32 + 2 * 2   # rows: clean, view1, view2
    assert summary["loss"] == "jsd" and summary["steps"] == 3
    assert summary["pipeline_images_per_s"] > 0 and summary["training_images_per_s"] > 0
    assert json.load(open(tmp_path / "demo" / "summary.json")) == summary
    assert any("images/s" in line for line in lines)
    # a second run in the same folder regenerates its own data; a foreign folder is never deleted
    run_demo(str(tmp_path / "demo"), device="cpu", size=32, per_class=4, n_fractals=4,
             batch_size=8, steps=1, progress=False, log=lines.append)
    os.makedirs(tmp_path / "other" / "demo_data")
    with pytest.raises(FileExistsError):
        run_demo(str(tmp_path / "other"), device="cpu", progress=False, log=lines.append)
    assert collections.Counter(os.listdir(tmp_path / "demo" / "demo_data")) == collections.Counter(
        [".dali_ipmix_demo", "train", "val", "fractals"])


# --------------------------------------------------------------------- uneven shards, empty batches
def _shard_epoch(it):
    """Batch sizes and sample indices of one epoch of a JSD iterator."""
    sizes, indices = [], []
    for (clean, _, _), y in it:
        sizes.append(y.numel())
        indices += [decode_index(c) for c in clean]
    return sizes, indices


@pytest.mark.parametrize("num_shards,batch_size", [(2, 1), (2, 4), (4, 5), (8, 3), (5, 16)])
def test_uneven_shards_never_yield_an_empty_batch_and_len_is_exact(dali_tree, dali_mixing, dali_cpu,
                                                                   num_shards, batch_size):
    shards = [train_iter(dali_tree, dali_mixing, dali_cpu, batch_size=batch_size, shard_id=s,
                         num_shards=num_shards) for s in range(num_shards)]
    for _ in range(2):
        seen = []
        for s, it in enumerate(shards):
            sizes, indices = _shard_epoch(it)
            assert 0 not in sizes and len(sizes) == len(it)
            assert len(indices) == it.num_samples == len(range(s, N, num_shards))
            seen += indices
        assert sorted(seen) == list(range(N))   # every sample exactly once over the shards


def test_validation_shards_are_exact_with_no_empty_batch(dali_tree, dali_cpu):
    got = []
    for s in range(2):
        it = IPMixIterator(validation_pipeline(dali_tree[0], batch_size=1, preset="cifar", size=16,
                                               shard_id=s, num_shards=2, **dali_cpu))
        batches = [decode_index(x) for images, _ in it for x in images]
        assert len(batches) == len(it) == it.num_samples and it.total_samples == N
        assert batches == list(range(s, N, 2))   # every second file of the listed order
        got += batches
    assert sorted(got) == list(range(N))


def test_drop_policy_gives_every_shard_the_same_number_of_full_batches(dali_tree, dali_mixing, dali_cpu):
    shards = [train_iter(dali_tree, dali_mixing, dali_cpu, "drop", batch_size=3, shard_id=s,
                         num_shards=4) for s in range(4)]
    seen = []
    for it in shards:
        sizes, indices = _shard_epoch(it)
        assert sizes == [3] and len(it) == 1   # 21 // 4 = 5 samples per shard: one full batch
        seen += indices
    assert len(set(seen)) == 12


# ----------------------------------------------------------------------------- seeds and resume
def test_seedless_shards_are_disjoint_and_augment_independently(dali_tree, dali_mixing, dali_cpu):
    shards = [train_iter(dali_tree, dali_mixing, dali_cpu, seed=None, shard_id=s, num_shards=2)
              for s in (0, 1)]
    for _ in range(2):
        a, b = (collect_epoch(it)[0] for it in shards)
        assert not set(a) & set(b) and sorted(a + b) == list(range(N))
    assert shards[0].source.augment_seed != shards[1].source.augment_seed
    # the order is that of seed=0, whatever process draws it
    assert collect_epoch(train_iter(dali_tree, dali_mixing, dali_cpu, seed=None))[0] == \
        collect_epoch(train_iter(dali_tree, dali_mixing, dali_cpu, seed=0))[0]


def _outputs(it):
    """One epoch of a JSD iterator as NumPy arrays: [((clean, view1, view2), labels), ...]."""
    return [(tuple(v.cpu().numpy().copy() for v in views), y.cpu().numpy().copy()) for views, y in it]


def _same(a, b):
    return len(a) == len(b) and all(
        all(np.array_equal(u, v) for u, v in zip(va, vb)) and np.array_equal(ya, yb)
        for (va, ya), (vb, yb) in zip(a, b))


@pytest.mark.parametrize("num_shards", [1, 2])
def test_start_epoch_replays_the_epoch_of_an_uninterrupted_run_bit_for_bit(dali_tree, dali_mixing,
                                                                           dali_cpu, num_shards):
    """Same samples in the same order, and the same crops, flips, mixing pictures and IPMix draws:
    every draw is keyed by (seed, epoch, position), not by how many batches ran before."""
    for s in range(num_shards):
        full = train_iter(dali_tree, dali_mixing, dali_cpu, shard_id=s, num_shards=num_shards)
        epochs = [_outputs(full) for _ in range(4)]
        resumed = train_iter(dali_tree, dali_mixing, dali_cpu, shard_id=s, num_shards=num_shards,
                             start_epoch=2)
        assert resumed.epoch == 2
        again = [_outputs(resumed) for _ in range(2)]
        assert _same(again[0], epochs[2]) and _same(again[1], epochs[3])
        assert not _same(epochs[0], epochs[2])


def test_start_epoch_rejects_bad_values(dali_tree, dali_mixing, dali_cpu):
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="start_epoch"):
            train_iter(dali_tree, dali_mixing, dali_cpu, start_epoch=bad)


# --------------------------------------------------------------------------- break, then loop again
def test_a_new_loop_after_break_is_a_fresh_full_epoch(dali_tree, dali_mixing, dali_cpu):
    it = train_iter(dali_tree, dali_mixing, dali_cpu)
    full = train_iter(dali_tree, dali_mixing, dali_cpu)
    expected = [collect_epoch(full)[0] for _ in range(3)]
    first = []
    for (clean, _, _), _ in it:
        first += [decode_index(c) for c in clean]
        break
    assert first == expected[0][:4]
    assert collect_epoch(it)[0] == expected[1]   # all 21 samples of the next epoch, not the rest
    assert it.epoch == 1
    # reset() in the middle of an epoch also abandons it
    next(iter(it))
    it.reset()
    assert collect_epoch(it)[0] == collect_epoch(full)[0]


def test_auto_reset_false_needs_reset_between_epochs(dali_tree, dali_mixing, dali_cpu):
    pipe = training_pipeline(dali_tree[0], mixing_root=dali_mixing, batch_size=4, preset="cifar",
                             size=16, seed=7, **dali_cpu)
    it = IPMixIterator(pipe, auto_reset=False)
    assert sorted(collect_epoch(it)[0]) == list(range(N))
    assert collect_epoch(it)[0] == []
    it.reset()
    assert sorted(collect_epoch(it)[0]) == list(range(N))


def test_sampler_and_dataset_attributes_explain_why_they_are_missing(dali_tree, dali_cpu):
    it = IPMixIterator(validation_pipeline(dali_tree[0], batch_size=4, preset="cifar", size=16, **dali_cpu))
    with pytest.raises(AttributeError, match="no 'sampler'.*exactly once"):
        it.sampler


def test_own_reader_pipeline_skips_dalis_empty_batch_and_drains_after_break(dali_tree, dali_cpu):
    """A pipeline with its own DALI reader: DALI pads the shorter shard with an empty batch."""
    from nvidia.dali import fn, pipeline_def, types

    files = [dali_tree[1][i][0] for i in range(N)]

    @pipeline_def(batch_size=2, num_threads=2, device_id=None)
    def pipe(shard):
        jpegs, labels = fn.readers.file(files=files, labels=list(range(N)), shard_id=shard, num_shards=2,
                                        pad_last_batch=True, name="r")
        images = fn.resize(fn.decoders.image(jpegs, output_type=types.RGB), resize_x=8, resize_y=8)
        return fn.crop_mirror_normalize(images, output_layout="CHW"), labels

    got = []
    for shard in (0, 1):
        it = IPMixIterator(pipe(shard), output_names=("images", "label"), reader_name="r")
        for _ in range(2):
            sizes = [y.numel() for _, y in it]
            assert 0 not in sizes and len(sizes) == len(it)
        labels = []
        for _, y in it:
            labels += y.tolist()
            break
        labels = [y.tolist() for _, y in it]   # a fresh epoch after the break
        got += [lab for b in labels for lab in b]
    assert sorted(got) == list(range(N))


@pytest.mark.parametrize("device", ["cpu", pytest.param("gpu", marks=pytest.mark.cupy)])
def test_batches_share_dalis_memory_and_stay_intact_while_held(dali_tree, dali_mixing, device):
    """On DALI's dynamic executor (its default) batches come without a copy, through DLPack: each keeps
    its memory, so a batch held across the next ones keeps its values, and they equal the copied
    batches of the same pipeline on the classic executor."""
    if device == "gpu" and not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")

    def make(**kw):
        return training_pipeline(dali_tree[0], mixing_root=dali_mixing, batch_size=4, device=device,
                                 num_threads=2, seed=9, preset="cifar", size=16, **kw)
    shared, copied = IPMixIterator(make()), IPMixIterator(make(exec_dynamic=False))
    assert not shared._epochs.copy and copied._epochs.copy
    held, snapshots = [], []
    for (clean, view1, view2), labels in shared:
        held.append((clean, view1, view2, labels))
        snapshots.append([t.clone() for t in held[-1]])
        assert all(t.device.type == ("cuda" if device == "gpu" else "cpu") for t in held[-1])
    assert len(held) == len(shared) > 3
    for batch, snapshot, ((clean, view1, view2), labels) in zip(held, snapshots, copied):
        for t, s, c in zip(batch, snapshot, (clean, view1, view2, labels)):
            assert torch.equal(t, s) and torch.equal(t, c)


# ------------------------------------------------------------------ the same batches in any layout
@pytest.fixture(scope="module")
def textured_tree(tmp_path_factory):
    """21 noise JPEGs of 21 sizes in 3 classes, and 5 mixing pictures: every crop shows."""
    from dali_data import make_mixing, write_image
    root = tmp_path_factory.mktemp("textured")
    rng = np.random.default_rng(0)
    for i in range(N):
        write_image(os.path.join(root, "data", f"c{i % 3}", f"{i:02d}.jpg"),
                    rng.integers(0, 256, (30 + i, 45 - i, 3), dtype=np.uint8), quality=90)
    make_mixing(os.path.join(root, "mix"))
    return str(root / "data"), str(root / "mix")


def _by_position(shards):
    """Per-shard epochs -> the samples in global position order (shard s holds s, s + n, ...)."""
    rows = [[(tuple(v[i] for v in views), y[i]) for views, y in epoch for i in range(len(y))]
            for epoch in shards]
    out = [None] * sum(map(len, rows))
    for s, r in enumerate(rows):
        out[s::len(rows)] = r
    return out


@pytest.mark.parametrize("device", ["cpu", pytest.param("gpu", marks=pytest.mark.cupy)])
@pytest.mark.parametrize("backend", ["native", "python"])
@pytest.mark.parametrize("preset", ["imagenet", "cifar"])
def test_a_seed_gives_the_same_samples_and_augmentations_in_every_shard_layout(textured_tree, device,
                                                                               backend, preset):
    """One process with batches of 6 on 2 threads, and 3 shards with batches of 2 on 1 thread: every
    position of every epoch holds the same sample with the same crop, flip, mixing picture and IPMix
    views (which positions a step covers: tests/dali/test_epochs.py)."""
    if device == "gpu" and not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    if backend == "native":
        pytest.importorskip("dali_ipmix.native").load()
    data, mix = textured_tree
    kw = dict(mixing_root=mix, preset=preset, size=24, seed=11, backend=backend, device=device)

    def epochs(num_shards, batch_size, threads):
        its = [IPMixIterator(training_pipeline(data, batch_size=batch_size, shard_id=s, num_shards=num_shards,
                                               num_threads=threads, **kw)) for s in range(num_shards)]
        return [[_outputs(it) for it in its] for _ in range(2)]

    one, three = epochs(1, 6, 2), epochs(3, 2, 1)
    for e in range(2):
        a, b = _by_position(one[e]), _by_position(three[e])
        assert len(a) == len(b) == N
        for (va, ya), (vb, yb) in zip(a, b):
            assert ya == yb and all(np.array_equal(u, v) for u, v in zip(va, vb))
    # and the draws really vary: views of one sample differ between epochs and between samples
    assert not np.array_equal(_by_position(one[0])[0][0][1], _by_position(one[1])[0][0][1])
    assert len({_by_position(one[0])[i][0][1].tobytes() for i in range(N)}) == N

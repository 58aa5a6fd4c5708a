"""The ready pipelines under DALI's own iterators and ``pipe.run()``, and IPMixIterator's epochs under
faults (an error in a batch, Ctrl-C, a second iterator, an abandoned ``next(iter(it))``)."""

import os
import shutil

import numpy as np
import pytest
import torch
from nvidia.dali.plugin.pytorch import DALIClassificationIterator, DALIGenericIterator

from dali_ipmix import IPMixConfig
from dali_ipmix.iterator import IPMixIterator
from dali_ipmix.graphs import training_pipeline, validation_pipeline

from dali_data import collect_epoch, decode_index, make_tree

N = 21   # samples in dali_tree


def make(tree, mixing, device="cpu", **kw):
    kw = dict(dict(batch_size=4, preset="cifar", size=16, seed=7, device=device, num_threads=2), **kw)
    return training_pipeline(tree, mixing_root=mixing, **kw)


def ipmix_epochs(pipe, epochs, **kw):
    """Epochs of IPMixIterator as lists of NumPy batches [clean, (view1, view2,) labels (N,)]."""
    it = IPMixIterator(pipe, **kw)
    out = []
    for _ in range(epochs):
        out.append([[t.cpu().numpy().copy() for t in (views if isinstance(views, tuple) else (views,))]
                    + [y.cpu().numpy().copy()] for views, y in it])
    return out


def dali_epochs(it, names, epochs):
    """The same from a DALI iterator (labels int32 (N, 1) -> (N,))."""
    out = []
    for _ in range(epochs):
        out.append([[b[0][n].cpu().numpy().copy() for n in names[:-1]]
                    + [b[0][names[-1]].cpu().numpy().reshape(-1).astype(np.int64)] for b in it])
    return out


def same(a, b):
    return len(a) == len(b) and all(len(x) == len(y) and all(
        len(u) == len(v) and all(np.array_equal(p, q) for p, q in zip(u, v)) for u, v in zip(x, y))
        for x, y in zip(a, b))


def indices(epoch):
    return [decode_index(c) for batch in epoch for c in batch[0]]


# ------------------------------------------------------------------------- DALI's own iterators
@pytest.mark.parametrize("device", ["cpu", pytest.param("gpu", marks=pytest.mark.cupy)])
@pytest.mark.parametrize("jsd", [True, False])
def test_dali_generic_iterator_reads_every_sample_once_and_the_batches_of_ipmix_iterator(
        dali_tree, dali_mixing, device, jsd):
    if device == "gpu" and not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    config = IPMixConfig.cifar(jsd=jsd)
    pipe = make(dali_tree[0], dali_mixing, device, config=config)
    names = list(pipe.source.output_names)
    assert (pipe.source.epoch_batches, pipe.source.epoch_size) == (6, N)
    got = dali_epochs(DALIGenericIterator([pipe], names, auto_reset=True), names, 3)
    want = ipmix_epochs(make(dali_tree[0], dali_mixing, device, config=config), 3)
    assert same(got, want)
    for epoch in got:   # non-JSD images are IPMix-ed: the labels show the samples (7 per class)
        if jsd:
            assert sorted(indices(epoch)) == list(range(N))
        assert sorted(np.concatenate([b[-1] for b in epoch]).tolist()) == [0] * 7 + [1] * 7 + [2] * 7
        assert [len(b[-1]) for b in epoch] == [4, 4, 4, 4, 4, 1]
    assert not same(got[:1], got[1:2])


@pytest.mark.filterwarnings("ignore:Please set `reader_name`")   # DALI's advice for its own readers
@pytest.mark.parametrize("policy", ["drop", "fill"])
def test_dali_classification_iterator_with_size_and_two_shards(dali_tree, dali_mixing, policy):
    """size=pipe.source.epoch_size with a pipeline of full batches ('drop' or 'fill'): DALI's len()
    and batches are IPMixIterator's, shard by shard."""
    config = IPMixConfig.cifar(jsd=False)
    for shard in (0, 1):
        kw = dict(config=config, shard_id=shard, num_shards=2, last_batch_policy=policy)
        pipe = make(dali_tree[0], dali_mixing, **kw)
        info = pipe.source
        assert info.epoch_size == info.epoch_batches * 4
        it = DALIClassificationIterator([pipe], size=info.epoch_size, auto_reset=True,
                                        last_batch_policy=IPMixIterator_policy(policy))
        assert len(it) == info.epoch_batches == (2 if policy == "drop" else 3)
        got = dali_epochs(it, ["data", "label"], 2)
        ref = IPMixIterator(make(dali_tree[0], dali_mixing, **kw))
        assert len(ref) == len(it)
        want = [[[x.numpy().copy(), y.numpy().copy()] for x, y in ref] for _ in range(2)]
        assert same(got, want)


def IPMixIterator_policy(name):
    from dali_ipmix.iterator import LAST_BATCH_POLICIES
    return LAST_BATCH_POLICIES[name]


def test_a_pipe_run_loop_reads_whole_epochs_and_start_epoch_replays(dali_tree, dali_mixing):
    config = IPMixConfig.cifar(jsd=False)
    pipe = make(dali_tree[0], dali_mixing, config=config, start_epoch=1)
    pipe.build()
    epochs = []
    for _ in range(2):
        batches = []
        while True:
            try:
                images, labels = pipe.run()
            except StopIteration:
                pipe.reset()
                break
            batches.append([np.array(images.as_tensor()), np.array(labels.as_tensor()).reshape(-1)])
        epochs.append(batches)
    want = ipmix_epochs(make(dali_tree[0], dali_mixing, config=config), 3)
    assert same(epochs, want[1:])


def test_validation_pipeline_under_dali_generic_iterator(dali_tree, dali_cpu):
    pipe = validation_pipeline(dali_tree[0], batch_size=5, preset="cifar", size=16, **dali_cpu)
    it = DALIGenericIterator([pipe], ["images", "label"], auto_reset=True)
    for _ in range(2):
        got = [decode_index(x) for b in it for x in b[0]["images"]]
        assert got == list(range(N))


# --------------------------------------------------------------------------- one iterator per pipeline
def test_a_second_iterator_on_a_pipeline_is_refused_and_the_first_stays_exact(dali_tree, dali_mixing):
    pipe = make(dali_tree[0], dali_mixing)
    first = IPMixIterator(pipe)
    with pytest.raises(RuntimeError, match="already driven by a IPMixIterator: one iterator per pipeline"):
        IPMixIterator(pipe)
    with pytest.raises(RuntimeError, match="one iterator per pipeline"):
        DALIGenericIterator([pipe], list(pipe.source.output_names))
    for _ in range(2):
        assert sorted(collect_epoch(first)[0]) == list(range(N))
    other = make(dali_tree[0], dali_mixing)
    dali = DALIGenericIterator([other], list(other.source.output_names), auto_reset=True)
    for second in (lambda: IPMixIterator(other),
                   lambda: DALIGenericIterator([other], list(other.source.output_names))):
        with pytest.raises(RuntimeError, match="already driven by a DALIGenericIterator"):
            second()
    assert sorted(decode_index(c) for b in dali for c in b[0]["clean"]) == list(range(N))
    del first
    IPMixIterator(pipe)   # the first one gone, another may take over


# ------------------------------------------------------------------------------------ faults
def _full(tree, mixing, epochs=3, **kw):
    return [collect_epoch(it)[0] for it in [IPMixIterator(make(tree, mixing, **kw))] for _ in range(epochs)]


def _fail_once(monkeypatch, pipe, exc, epoch_idx, iteration):
    """The feed raises ``exc`` once, for DALI's batch (epoch_idx, iteration)."""
    feed, real, fired = pipe.source.feed, pipe.source.feed.batch, []

    def batch(info):
        if (info.epoch_idx, info.iteration) == (epoch_idx, iteration) and not fired:
            fired.append(info)
            raise exc
        return real(info)
    monkeypatch.setattr(feed, "batch", batch)
    return fired


@pytest.mark.parametrize("exc", [RuntimeError("injected"), KeyboardInterrupt()], ids=["error", "ctrl-c"])
def test_an_epoch_cut_short_by_a_fault_mid_epoch_is_followed_by_full_epochs(monkeypatch, dali_tree,
                                                                          dali_mixing, exc):
    """A fault after some batches were handed out: the next loop reads the next epoch in full."""
    full = _full(dali_tree[0], dali_mixing)
    pipe = make(dali_tree[0], dali_mixing)
    fired = _fail_once(monkeypatch, pipe, exc, 0, 3)
    it = IPMixIterator(pipe)
    seen = []
    with pytest.raises(type(exc)):
        for (clean, _, _), _ in it:
            seen += [decode_index(c) for c in clean]
    assert fired and 0 < len(seen) < N and seen == full[0][:len(seen)]
    assert collect_epoch(it)[0] == full[1]
    assert collect_epoch(it)[0] == full[2]


@pytest.mark.parametrize("exc", [RuntimeError("injected"), KeyboardInterrupt()], ids=["error", "ctrl-c"])
def test_a_fault_at_an_epochs_start_replays_that_epoch_in_full(monkeypatch, dali_tree, dali_mixing, exc):
    """A fault before the epoch's first batch (while the iterator starts it): the next loop reads
    that same epoch from its start."""
    full = _full(dali_tree[0], dali_mixing)
    pipe = make(dali_tree[0], dali_mixing)
    it = IPMixIterator(pipe)
    assert collect_epoch(it)[0] == full[0]
    fired = _fail_once(monkeypatch, pipe, exc, 1, 0)   # DALI's second epoch: its first batch
    with pytest.raises(type(exc)):
        collect_epoch(it)
    assert fired
    assert collect_epoch(it)[0] == full[1]
    assert collect_epoch(it)[0] == full[2]


def test_a_file_missing_for_a_while_stops_one_loop_and_the_next_is_a_full_epoch(tmp_path, dali_mixing):
    tree = make_tree(tmp_path / "data")
    full = _full(str(tmp_path / "data"), dali_mixing, validate="none")
    it = IPMixIterator(make(str(tmp_path / "data"), dali_mixing, validate="none"))
    assert collect_epoch(it)[0] == full[0]
    path = tree[full[1][0]][0]          # the first sample of epoch 1
    shutil.move(path, path + ".away")
    with pytest.raises(RuntimeError, match=os.path.basename(path)):
        collect_epoch(it)
    shutil.move(path + ".away", path)
    assert collect_epoch(it)[0] == full[1]   # no batch was handed out: epoch 1 again, in full
    assert collect_epoch(it)[0] == full[2]


def test_an_abandoned_next_iter_and_set_epoch(dali_tree, dali_mixing):
    """A debugging next(iter(it)) before the loop: with set_epoch (as with DistributedSampler) the loop
    reads the epoch it names, so start_epoch replays bit for bit; without it the loop reads the next
    epoch in full, as after a break."""
    full = _full(dali_tree[0], dali_mixing, 4)
    it = IPMixIterator(make(dali_tree[0], dali_mixing, start_epoch=2))
    next(iter(it))
    it.set_epoch(2)
    assert collect_epoch(it)[0] == full[2] and it.epoch == 2
    it = IPMixIterator(make(dali_tree[0], dali_mixing))
    next(iter(it))
    assert collect_epoch(it)[0] == full[1]
    it.set_epoch(0)                      # any epoch, any time: it is read whole at the next loop
    next(iter(it))
    next(iter(it))
    it.set_epoch(3)
    assert collect_epoch(it)[0] == full[3]
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="epoch="):
            it.set_epoch(bad)


def test_a_drop_epoch_without_a_batch_warns_naming_the_numbers(dali_tree, dali_mixing):
    with pytest.warns(UserWarning, match=r"0 batches per epoch: 21 samples over 4 shard\(s\) leave 5 per "
                                         r"shard, fewer than batch_size=8"):
        it = IPMixIterator(make(dali_tree[0], dali_mixing, batch_size=8, shard_id=0, num_shards=4),
                           last_batch_policy="drop")
    assert len(it) == 0 and collect_epoch(it)[0] == []
    with pytest.warns(UserWarning, match="0 batches per epoch"):
        make(dali_tree[0], dali_mixing, batch_size=8, shard_id=1, num_shards=4, last_batch_policy="drop")


def test_pipeline_arguments_layout_and_policy_are_checked(dali_tree, dali_mixing):
    with pytest.raises(ValueError, match="layout='CHW' is invalid: use 'NCHW'"):
        make(dali_tree[0], dali_mixing, layout="CHW")
    with pytest.raises(ValueError, match="last_batch_policy='pad' is invalid"):
        make(dali_tree[0], dali_mixing, last_batch_policy="pad")


def test_a_real_ctrl_c_inside_dali_is_held_until_the_batch_is_done(monkeypatch, dali_tree, dali_mixing):
    """SIGINT arriving while DALI feeds and runs a batch (here from inside the feed) is raised as
    KeyboardInterrupt once DALI's call is over; the next loop is a full epoch."""
    import signal
    full = _full(dali_tree[0], dali_mixing)
    pipe = make(dali_tree[0], dali_mixing)
    feed, real, sent = pipe.source.feed, pipe.source.feed.batch, []

    def batch(info):
        out = real(info)   # the batch is computed; DALI is in the middle of its run
        if (info.epoch_idx, info.iteration) == (0, 3) and not sent:
            sent.append(info)
            signal.raise_signal(signal.SIGINT)
        return out
    monkeypatch.setattr(feed, "batch", batch)
    # Python's own Ctrl-C handling, as in a terminal: a process started in the background by a
    # non-interactive shell (`cmd &`) inherits SIGINT ignored, and then no Ctrl-C reaches it at all.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        it = IPMixIterator(pipe)
        with pytest.raises(KeyboardInterrupt):
            collect_epoch(it)
        assert sent
        assert collect_epoch(it)[0] == full[1]
        assert collect_epoch(it)[0] == full[2]
    finally:
        signal.signal(signal.SIGINT, previous)


# ------------------------------------------------------------------------------- channels last
@pytest.mark.parametrize("device", ["cpu", pytest.param("gpu", marks=pytest.mark.cupy)])
@pytest.mark.parametrize("backend", ["native", "python"])
def test_nhwc_layout_gives_the_nchw_batches_transposed(dali_tree, dali_mixing, device, backend):
    if device == "gpu" and not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    if backend == "native":
        pytest.importorskip("dali_ipmix.native").load()
    kw = dict(backend=backend, preset="imagenet")
    nchw = ipmix_epochs(make(dali_tree[0], dali_mixing, device, **kw), 1)[0]
    pipe = make(dali_tree[0], dali_mixing, device, layout="NHWC", **kw)
    assert pipe.source.layout == "NHWC"
    nhwc = ipmix_epochs(pipe, 1)[0]
    assert len(nhwc) == len(nchw) == 6
    for a, b in zip(nhwc, nchw):
        assert a[0].shape == (len(a[-1]), 16, 16, 3)
        for x, y in zip(a[:-1], b[:-1]):
            np.testing.assert_array_equal(x, y.transpose(0, 2, 3, 1))
        np.testing.assert_array_equal(a[-1], b[-1])
    val = [validation_pipeline(dali_tree[0], batch_size=7, preset="cifar", size=16, device=device,
                               num_threads=2, layout=layout) for layout in ("NCHW", "NHWC")]
    for (x, _), (y, _) in zip(IPMixIterator(val[0]), IPMixIterator(val[1])):
        torch.testing.assert_close(y, x.permute(0, 2, 3, 1), rtol=0, atol=0)


# ------------------------------------------------------------------------------ samples in memory
@pytest.fixture(scope="module")
def cifar_like(tmp_path_factory):
    """21 random 32x32 images with labels, in memory and as the PNG tree of the same pixels."""
    from dali_data import make_mixing, write_image
    root = tmp_path_factory.mktemp("arrays")
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (N, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(N) % 3
    for i in range(N):   # one folder per label, names in index order: the tree lists them as i
        write_image(os.path.join(root, "tree", f"c{labels[i]}", f"{i:02d}.png"), images[i])
    make_mixing(os.path.join(root, "mix"))
    order = sorted(range(N), key=lambda i: (labels[i], i))   # the tree's listed order
    return images[order], labels[order], str(root / "tree"), str(root / "mix")


@pytest.mark.parametrize("device", ["cpu", pytest.param("gpu", marks=pytest.mark.cupy)])
@pytest.mark.parametrize("preset", ["cifar", "imagenet"])
def test_samples_in_memory_give_the_batches_of_their_files_in_every_shard_layout(cifar_like, device, preset):
    if device == "gpu" and not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    images, labels, tree, mix = cifar_like
    kw = dict(mixing_root=mix, preset=preset, size=24, seed=5, device=device, num_threads=2)

    def epochs(num_shards, batch_size, **data):
        its = [IPMixIterator(training_pipeline(batch_size=batch_size, shard_id=s, num_shards=num_shards,
                                               **data, **kw)) for s in range(num_shards)]
        out = []
        for _ in range(2):
            rows = [[(tuple(v[i].cpu().numpy() for v in views), int(y[i])) for views, y in it
                     for i in range(len(y))] for it in its]
            whole = [None] * N
            for s, r in enumerate(rows):
                whole[s::num_shards] = r
            out.append(whole)
        return out

    files = epochs(1, 6, file_root=tree)
    for layout in [(1, 6), (3, 2)]:
        arrays = epochs(*layout, images=images, labels=labels)
        for a, b in zip(arrays, files):
            for (va, ya), (vb, yb) in zip(a, b):
                assert ya == yb and all(np.array_equal(u, v) for u, v in zip(va, vb))
    assert [y for _, y in files[0]] != [y for _, y in files[1]]
    val = [IPMixIterator(validation_pipeline(batch_size=5, preset="cifar", size=32, device=device,
                                             num_threads=2, **data))
           for data in (dict(images=images, labels=labels), dict(file_root=tree))]
    for (x, y), (u, v) in zip(*val):
        assert torch.equal(x, u) and torch.equal(y, v)


def test_samples_in_memory_are_checked_naming_the_argument(cifar_like, dali_tree):
    images, labels, _, mix = cifar_like
    kw = dict(mixing_root=mix, batch_size=4, preset="cifar", device="cpu")
    for bad, match in [(dict(images=images.astype(np.float32), labels=labels), r"images= is invalid: .*float32"),
                       (dict(images=images[..., 0], labels=labels), r"images= is invalid: .*\(21, 32, 32\)"),
                       (dict(images=list(images), labels=labels), "images= is invalid: .*got list"),
                       (dict(images=images, labels=labels[:5]), r"labels= is invalid: expected 21 integers"),
                       (dict(images=images, labels=labels * 0.5), "labels= is invalid: .*float64"),
                       (dict(images=images, labels=labels - 1), r"labels\[0\]=-1 is invalid"),
                       (dict(images=images), "images= and labels= go together"),
                       (dict(images=images, labels=labels, file_root=dali_tree[0]), "not both")]:
        with pytest.raises(ValueError, match=match):
            training_pipeline(**bad, **kw)
    with pytest.raises(ValueError, match="images= is invalid"):
        validation_pipeline(images=images[:, :, :, :2], labels=labels, batch_size=4, device="cpu")
    pipe = training_pipeline(images=images, labels=list(labels), **kw)
    assert pipe.source.files == () and pipe.source.num_samples == N
    assert len(pipe.source.classes) == 3

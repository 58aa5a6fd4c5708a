"""End-to-end runs of pipelines/train_imagenet.py and pipelines/train_cifar.py on the CPU, on tiny generated data.

Every run is a subprocess, as a user would start it (``python pipelines/...`` or ``torchrun``), with
1-2 torch threads per process to stay frugal on a 2-core machine.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dali_ipmix._scripts.cifar import convert_to_imagefolder
from script_data import SCRIPTS, load_script, make_cifar, make_imagefolder, make_mixing, run_script


def metrics(out_dir):
    return [json.loads(line) for line in (Path(out_dir) / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return {"inet": make_imagefolder(root / "inet", classes=4, train_per_class=4, val_per_class=2),
            "mix": make_mixing(root / "mix")}


# -------------------------------------------------------------------------------- CIFAR pickles
@pytest.mark.parametrize("kind", ["cifar-10", "cifar-100"])
def test_cifar_pickles_become_a_lossless_imagefolder(tmp_path, kind):
    folder, arrays = make_cifar(tmp_path, kind, train=24, test=8, classes=3)
    dst = convert_to_imagefolder(folder, tmp_path / "png")
    for split, (images, labels) in arrays.items():
        class_dirs = sorted((dst / split).iterdir())
        assert [p.name for p in class_dirs] == ["000_c0", "001_c1", "002_c2"]  # sorted order = label order
        for i, (img, lab) in enumerate(zip(images, labels)):
            np.testing.assert_array_equal(np.asarray(Image.open(class_dirs[lab] / f"{i:05d}.png")), img)
    stamp = (dst / "complete.json").stat().st_mtime_ns
    convert_to_imagefolder(folder, tmp_path / "png")  # second call: nothing rewritten
    assert (dst / "complete.json").stat().st_mtime_ns == stamp
    assert not list(tmp_path.glob("png.tmp*"))


# ---------------------------------------------------------------------------- smoke + resume
def test_imagenet_script_dali_jsd_checkpoint_and_resume(tmp_path, data):
    out = tmp_path / "run"
    common = [SCRIPTS / "train_imagenet.py", data["inet"], "--loader", "dali-ipmix", "--mixing-root", data["mix"],
              "--jsd", "--device", "cpu", "--arch", "resnet18", "--size", "32", "-b", "8", "-j", "1",
              "--output", out, "-p", "1"]
    log = run_script([*common, "--epochs", "1", "--seed", "3", "--dump-labels", tmp_path / "d1"])  # 2 steps
    assert "resumed" not in log and "mixing pictures cached (" in log
    ckpt = torch.load(out / "checkpoint.pth", map_location="cpu", weights_only=True)
    assert (ckpt["epoch"], ckpt["step"]) == (1, 2)
    assert (out / "model_best.pth").is_file()
    log = run_script([*common, "--epochs", "2", "--seed", "3", "--resume", out / "checkpoint.pth",
                      "--dump-labels", tmp_path / "d2"])
    assert "resumed from" in log and "epoch 1, step 2" in log
    # The resumed epoch 1 reads what an uninterrupted run reads in its epoch 1, not epoch 0 again.
    run_script([*common, "--epochs", "2", "--seed", "3", "--output", tmp_path / "full",
                "--dump-labels", tmp_path / "d3"])
    dumped = [json.loads((tmp_path / d / "rank0.json").read_text())["epochs"] for d in ("d1", "d2", "d3")]
    assert dumped[1] == [dumped[2][1]] and dumped[0] == [dumped[2][0]] and dumped[2][0] != dumped[2][1]
    rows = metrics(out)
    assert [r["epoch"] for r in rows] == [0, 1] and rows[-1]["step"] == 4
    assert all(np.isfinite(r["train_loss"]) and r["val_images"] == 8 and 0 <= r["acc1"] <= r["acc5"] <= 100
               for r in rows)
    assert torch.load(out / "checkpoint.pth", map_location="cpu", weights_only=True)["epoch"] == 2
    # -e scores the checkpoint on the validation folder only (no mixing set needed).
    log = run_script([SCRIPTS / "train_imagenet.py", data["inet"], "-e", "--resume", out / "checkpoint.pth",
                      "--device", "cpu", "--arch", "resnet18", "--size", "32", "-b", "3", "-j", "1"])
    result = json.loads([line for line in log.splitlines() if line.startswith('{"val_loss"')][-1])
    assert result["val_images"] == 8 and result["acc1"] == pytest.approx(rows[-1]["acc1"])


def test_imagenet_script_pytorch_loader_max_steps(tmp_path, data):
    out = tmp_path / "run"
    run_script([SCRIPTS / "train_imagenet.py", data["inet"], "--loader", "pytorch", "--device", "cpu",
                "--arch", "resnet18", "--size", "32", "-b", "4", "-j", "0", "--epochs", "3", "--max-steps", "3",
                "--output", out])
    (row,) = metrics(out)  # stopped after 3 of the 4 steps of epoch 0
    assert row["step"] == 3 and row["steps"] == 3
    # The cut epoch is not counted as done: --resume runs it again from its start.
    assert torch.load(out / "checkpoint.pth", map_location="cpu", weights_only=True)["epoch"] == 0


def test_cifar_script_defaults_jsd_checkpoint_and_resume(tmp_path, data):
    folder, _ = make_cifar(tmp_path, "cifar-10", train=32, test=8)
    out = tmp_path / "run"
    common = [SCRIPTS / "train_cifar.py", folder, "--mixing-root", data["mix"], "--device", "cpu",
              "--arch", "wrn-10-1", "-b", "16", "-j", "1", "--output", out]
    log = run_script([*common, "--epochs", "1", "--mixing-cache", "off"])
    assert "jsd True" in log  # the paper's recipe: JSD on by default
    assert "mixing pictures decoded per sample" in log
    assert "classes (from memory)" in log   # the pickles' arrays, no PNG tree
    assert not (folder.parent / "cifar-10-batches-py-imagefolder").exists()
    args = torch.load(out / "checkpoint.pth", map_location="cpu", weights_only=True)["args"]
    assert (args["lr"], args["momentum"], args["weight_decay"]) == (0.1, 0.9, 5e-4)
    run_script([*common, "--epochs", "2", "--resume", "auto"])
    assert [r["epoch"] for r in metrics(out)] == [0, 1]


def test_cifar_script_augmix_needs_no_mixing_set(tmp_path):
    folder, _ = make_cifar(tmp_path, "cifar-10", train=32, test=8)
    out = tmp_path / "run"
    log = run_script([SCRIPTS / "train_cifar.py", folder, "--method", "augmix", "--device", "cpu",
                      "--arch", "wrn-10-1", "-b", "16", "-j", "1", "--epochs", "1", "--output", out])
    assert "method augmix" in log and "jsd True" in log and "no mixing set" in log
    args = torch.load(out / "checkpoint.pth", map_location="cpu", weights_only=True)["args"]
    assert args["method"] == "augmix" and args["mixing_root"] is None
    (row,) = metrics(out)
    assert row["steps"] == 2 and np.isfinite(row["train_loss"])


def test_imagenet_script_pixmix_authors_recipe(tmp_path, data):
    """PixMix with its authors' recipe (cross-entropy on one view) from files, with a mixing set."""
    out = tmp_path / "run"
    log = run_script([SCRIPTS / "train_imagenet.py", data["inet"], "--method", "pixmix", "--no-jsd",
                      "--mixing-root", data["mix"], "--device", "cpu", "--arch", "resnet18", "--size", "32",
                      "-b", "8", "-j", "1", "--epochs", "1", "--max-steps", "1", "--output", out])
    assert "method pixmix" in log and "jsd False" in log and "mixing pictures cached (" in log
    (row,) = metrics(out)
    assert row["step"] == 1 and np.isfinite(row["train_loss"])


# ------------------------------------------------------------------------------------- torchrun
def test_torchrun_two_cpu_ranks_seedless_disjoint_shards_and_exact_validation(tmp_path, data):
    """No --seed (as pytorch/examples' default): each rank seeds its augmentation at random, yet the
    ranks share one sample order. 9 samples (one per class, so a label names a sample) over 2 ranks:
    shards of 4 and 5, 2 full steps of 2 each ('drop'); validation scores each of 9 images once."""
    root = make_imagefolder(tmp_path / "inet", classes=9, train_per_class=1, val_per_class=1)
    dump, out = tmp_path / "dump", tmp_path / "run"
    log = run_script([SCRIPTS / "train_imagenet.py", root, "--mixing-root", data["mix"], "--device", "cpu",
                      "--arch", "resnet18", "--size", "32", "-b", "2", "-j", "1", "--epochs", "2",
                      "--output", out, "--dump-labels", dump], torchrun=2)
    assert "2 process(es)" in log and "2 steps/epoch" in log
    seen = [json.loads((dump / f"rank{r}.json").read_text())["epochs"] for r in (0, 1)]
    orders = []
    for epoch in range(2):
        r0 = [lab for step in seen[0][epoch] for lab in step]
        r1 = [lab for step in seen[1][epoch] for lab in step]
        assert len(r0) == len(r1) == 4
        assert not set(r0) & set(r1) and set(r0 + r1) < set(range(9))
        orders.append(r0 + r1)
    assert orders[0] != orders[1]
    rows = metrics(out)  # rank 0 only writes, and validation covers the whole val folder once
    assert len(rows) == 2 and all(r["val_images"] == 9 and np.isfinite(r["val_loss"]) for r in rows)
    assert list(out.iterdir()) and not list(out.glob("*rank1*"))


# ------------------------------------------------------------------------------------- learning
@pytest.mark.slow
def test_cifar_training_loss_goes_down(tmp_path, data):
    folder, _ = make_cifar(tmp_path, "cifar-10", train=64, test=16)
    out = tmp_path / "run"
    run_script([SCRIPTS / "train_cifar.py", folder, "--mixing-root", data["mix"], "--device", "cpu",
                "--arch", "wrn-10-1", "-b", "16", "-j", "1", "--epochs", "5", "--lr", "0.05",
                "--output", out])
    losses = [r["train_loss"] for r in metrics(out)]
    assert len(losses) == 5 and all(np.isfinite(losses))
    # Epoch means are noisy at 4 steps each: compare the last two epochs' mean to the first epoch.
    assert np.mean(losses[-2:]) < 0.7 * losses[0], losses


# ------------------------------------------------------------------------------------- bad use
def _main(script, argv):
    with pytest.raises(SystemExit) as err:
        load_script(script).main([str(a) for a in argv])
    return str(err.value)


def test_bad_arguments_stop_with_a_message(tmp_path, data):
    base = ["--device", "cpu", "--output", tmp_path / "o"]
    assert "DATA/train" in _main("train_imagenet", [tmp_path / "nope", *base])
    assert "needs --mixing-root" in _main("train_imagenet", [data["inet"], "--arch", "resnet18", *base])
    assert "--method pixmix needs --mixing-root" in _main("train_imagenet", [data["inet"], "--arch", "resnet18",
                                                                              "--method", "pixmix", *base])
    assert "use --loader dali-ipmix" in _main("train_imagenet", [data["inet"], "--loader", "pytorch", "--method",
                                                                 "augmix", "--arch", "resnet18", *base])
    assert "needs --device cuda" in _main("train_imagenet", [data["inet"], "--arch", "resnet18", "--mixing-root",
                                                             data["mix"], "--mixing-cache", "device", *base])
    assert "dali-ipmix" in _main("train_imagenet", [data["inet"], "--loader", "pytorch", "--jsd", "--arch",
                                                    "resnet18", *base])
    assert "torchvision" in _main("train_imagenet", [data["inet"], "--arch", "resnet5000", *base])
    assert "no such file" in _main("train_imagenet", [data["inet"], "--arch", "resnet18", "--resume",
                                                      tmp_path / "missing.pth", *base])
    assert "6n+4" in _main("train_cifar", [tmp_path, "--arch", "wrn-41-4", *base])
    assert "cifar-10-batches-py" in _main("train_cifar", [tmp_path, *base])
    (tmp_path / "batches.meta").write_bytes(b"not a pickle")
    assert "batches.meta: not a readable CIFAR pickle" in _main("train_cifar", [tmp_path, *base])

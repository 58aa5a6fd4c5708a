"""Tiny generated training data, a subprocess runner and a script loader for the script tests.

End-to-end runs are subprocesses, as a user would start them (``python pipelines/...`` or
``torchrun``), with 1-2 torch threads per process to stay frugal on a 2-core machine.
"""

import os
import pickle
import runpy
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "pipelines"
# Distinct class colours plus noise: learnable in a few steps by a tiny network.
COLOURS = np.array([[220, 40, 40], [40, 200, 40], [40, 40, 220], [220, 220, 40],
                    [200, 40, 200], [40, 200, 200], [128, 128, 128], [250, 150, 50]])


def load_script(name):
    """The top-level names of ``pipelines/<name>.py`` (its ``main``, ``parse_args``, ...), run as a
    file by runpy: the scripts import only the package, so nothing is added to ``sys.path``."""
    return SimpleNamespace(**runpy.run_path(str(SCRIPTS / f"{name}.py"), run_name=f"script_{name}"))


def _image(rng, label, size):
    return np.clip(rng.normal(0, 25, (size, size, 3)) + COLOURS[label % len(COLOURS)], 0, 255).astype(np.uint8)


def make_imagefolder(root, classes, train_per_class, val_per_class, size=40, seed=0):
    """ROOT/{train,val}/classK/N.jpg; returns ROOT."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", train_per_class), ("val", val_per_class)):
        for c in range(classes):
            d = Path(root) / split / f"class{c:02d}"
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(_image(rng, c, size)).save(d / f"{i}.jpg", quality=90)
    return Path(root)


def make_mixing(root, n=8, size=48, seed=1):
    root = Path(root)
    root.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / f"m{i}.jpg")
    return root


def make_cifar(root, kind="cifar-10", train=64, test=16, classes=4, seed=2):
    """A tiny python-pickle CIFAR folder in the real layout; returns (folder, {split: (images, labels)})."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / ("cifar-10-batches-py" if kind == "cifar-10" else "cifar-100-python")
    folder.mkdir(parents=True)
    key = b"labels" if kind == "cifar-10" else b"fine_labels"
    arrays = {}

    def dump(name, n):
        labels = np.arange(n) % classes
        rng.shuffle(labels)
        images = np.stack([_image(rng, int(lab), 32) for lab in labels])
        arrays.setdefault("val" if name in ("test_batch", "test") else "train", []).append((images, labels))
        rows = images.transpose(0, 3, 1, 2).reshape(n, -1)  # CIFAR rows: R plane, G plane, B plane
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": rows, key: labels.tolist()}, f)

    names = [f"c{i}".encode() for i in range(classes)]
    if kind == "cifar-10":
        dump("data_batch_1", train // 2), dump("data_batch_2", train - train // 2), dump("test_batch", test)
        meta = ("batches.meta", {b"label_names": names})
    else:
        dump("train", train), dump("test", test)
        meta = ("meta", {b"fine_label_names": names, b"coarse_label_names": [b"x"]})
    with open(folder / meta[0], "wb") as f:
        pickle.dump(meta[1], f)
    return folder, {s: (np.concatenate([a for a, _ in v]), np.concatenate([b for _, b in v]))
                    for s, v in arrays.items()}


def run_script(args, *, torchrun=0, timeout=240):
    env = dict(os.environ, OMP_NUM_THREADS="1" if torchrun else "2", PYTHONUNBUFFERED="1")
    if torchrun:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(torchrun),
               "--standalone", *map(str, args)]
    else:
        cmd = [sys.executable, *map(str, args)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    return proc.stdout + proc.stderr

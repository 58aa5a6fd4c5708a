#!/usr/bin/env python
"""Train WRN-40-4 on CIFAR-10/100 with IPMix through DALI, with the paper's CIFAR recipe as defaults.

Defaults (the reference code's): 100 epochs, SGD momentum 0.9 nesterov, lr 0.1 with a per-step cosine
schedule, weight decay 5e-4, batch 128, JSD loss on (``--no-jsd`` for plain cross-entropy). DATA is
the python-pickle folder as distributed, ``cifar-10-batches-py`` (data_batch_1..5, test_batch,
batches.meta) or ``cifar-100-python`` (train, test, meta; fine labels).

How DALI is fed: the pickles are converted ONCE into a lossless PNG ImageFolder tree (``--cache-dir``,
default DATA-imagefolder next to DATA; folders ``000_airplane``, ... so that sorted folder order is
the label order) and then read by the same ``dali_ipmix.training_pipeline`` / ``validation_pipeline``
as ImageNet, with the CIFAR preset. Why not ``fn.external_source`` over the in-memory arrays:
  * the file reader already gives what the training loop relies on -- per-rank shards, shuffling,
    exact epochs and ``len()`` -- which an external source would have to re-implement per rank;
  * one pipeline definition serves both scripts, so the CIFAR path cannot drift from the tested one;
  * the cost is small: about 10 s and ~150 MB once, and decoding a 32x32 PNG is cheap next to IPMix.
PNG, not JPEG, so the network sees exactly the pickled pixels. Under torchrun the local rank 0 of
each node converts and the other ranks wait for it.

    python pipelines/train_cifar.py /data/cifar-10-batches-py --mixing-root /data/fractals-32
    torchrun --nproc_per_node 8 pipelines/train_cifar.py /data/cifar-100-python --mixing-root ... -b 16
"""

import argparse
import json
import os
import pickle
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch.nn as nn
import torch.nn.functional as F

import _common


# --------------------------------------------------------------------------------------- model
class _Block(nn.Module):
    """Pre-activation wide basic block: BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus a (projected) shortcut."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.bn1, self.bn2 = nn.BatchNorm2d(cin), nn.BatchNorm2d(cout)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = None if cin == cout and stride == 1 else nn.Conv2d(cin, cout, 1, stride, 0, bias=False)

    def forward(self, x):
        o = F.relu(self.bn1(x))
        y = self.conv2(F.relu(self.bn2(self.conv1(o))))
        # The projection takes the pre-activated input, as in Zagoruyko & Komodakis' code.
        return y + (x if self.shortcut is None else self.shortcut(o))


class WideResNet(nn.Module):
    """WRN-depth-widen (Zagoruyko & Komodakis 2016) for 32x32 inputs: (N, 3, H, W) -> (N, num_classes) logits."""

    def __init__(self, depth=40, widen=4, num_classes=10):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n+4, got {depth}")
        n, widths = (depth - 4) // 6, [16, 16 * widen, 32 * widen, 64 * widen]
        layers = [nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)]
        for g in range(3):
            layers += [_Block(widths[g] if i == 0 else widths[g + 1], widths[g + 1], (1 if g == 0 else 2) if i == 0 else 1)
                       for i in range(n)]
        self.features = nn.Sequential(*layers, nn.BatchNorm2d(widths[3]), nn.ReLU(inplace=True),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(widths[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.fc(self.features(x))


def build_model(arch: str):
    m = re.fullmatch(r"wrn-(\d+)-(\d+)", arch)
    if not m:
        raise SystemExit(f"--arch {arch!r}: expected wrn-DEPTH-WIDTH, e.g. wrn-40-4 (paper) or wrn-28-10")
    depth, widen = int(m[1]), int(m[2])
    if (depth - 4) % 6:
        raise SystemExit(f"--arch {arch!r}: the depth must be 6n+4 (10, 16, 22, 28, 40, ...)")
    return lambda num_classes: WideResNet(depth, widen, num_classes)


# ----------------------------------------------------------------------------- pickle -> folders
def _unpickle(path):
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="bytes")
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as err:
        raise SystemExit(f"{path}: not a readable CIFAR pickle ({err})") from None


def read_cifar(folder):
    """{'train': (images, labels), 'val': (...)}, class names. Images (N, 32, 32, 3) uint8 HWC RGB, labels (N,) int."""
    folder = Path(folder)
    if (folder / "batches.meta").is_file():  # CIFAR-10
        train_files, val_files = sorted(folder.glob("data_batch_*")), [folder / "test_batch"]
        names, key = _unpickle(folder / "batches.meta")[b"label_names"], b"labels"
    elif (folder / "meta").is_file():  # CIFAR-100
        train_files, val_files = [folder / "train"], [folder / "test"]
        names, key = _unpickle(folder / "meta")[b"fine_label_names"], b"fine_labels"
    else:
        raise SystemExit(f"{folder}: neither cifar-10-batches-py (batches.meta) nor cifar-100-python (meta)")
    splits = {}
    for split, files in (("train", train_files), ("val", val_files)):
        missing = [str(f) for f in files if not f.is_file()]
        if not files or missing:
            raise SystemExit(f"{folder}: missing {split} pickle(s) {missing or 'data_batch_*'}")
        batches = [_unpickle(f) for f in files]
        data = np.concatenate([np.asarray(b[b"data"], np.uint8) for b in batches])
        # Stored as rows of 3072 bytes: 1024 red, 1024 green, 1024 blue, each row-major 32x32.
        images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        labels = np.concatenate([np.asarray(b[key], np.int64) for b in batches])
        if len(labels) != len(images) or labels.min(initial=0) < 0 or labels.max(initial=0) >= len(names):
            raise SystemExit(f"{folder}: {split} pickles hold {len(images)} images and {len(labels)} labels "
                             f"in [{labels.min(initial=0)}, {labels.max(initial=0)}]; expected equal counts "
                             f"and labels in [0, {len(names)})")
        splits[split] = (images, labels)
    return splits, [n.decode() for n in names]


def convert_to_imagefolder(src, dst) -> Path:
    """Writes SRC's pickles as DST/{train,val}/{000_name,...}/NNNNN.png once; later calls only check DST."""
    from PIL import Image
    dst = Path(dst)
    if (dst / "complete.json").is_file():
        return dst
    splits, names = read_cifar(src)
    tmp = dst.with_name(dst.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    width = len(str(len(names) - 1))
    for split, (images, labels) in splits.items():
        dirs = [tmp / split / f"{i:0{max(width, 3)}d}_{n}" for i, n in enumerate(names)]
        for p in dirs:
            p.mkdir(parents=True)
        for i, (img, lab) in enumerate(zip(images, labels, strict=True)):
            Image.fromarray(img).save(dirs[lab] / f"{i:05d}.png", compress_level=1)
    (tmp / "complete.json").write_text(json.dumps({"source": str(Path(src).resolve()), "classes": len(names),
                                                   **{s: len(v[1]) for s, v in splits.items()}}))
    os.replace(tmp, dst)  # atomic: readers see no folder or a complete one
    return dst


def prepare_data(src, dst, local_rank: int, timeout_s: float = 3600) -> Path:
    """Local rank 0 converts; the other local ranks wait for its complete.json (no process group yet)."""
    if local_rank == 0:
        print(f"CIFAR: using {dst} (converting {src} once if needed)", flush=True)
        return convert_to_imagefolder(src, dst)
    deadline = time.monotonic() + timeout_s
    while not (Path(dst) / "complete.json").is_file():
        if time.monotonic() > deadline:
            sys.exit(f"waited {timeout_s:.0f} s for local rank 0 to convert {src} into {dst}")
        time.sleep(1)
    return Path(dst)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("data", help="cifar-10-batches-py or cifar-100-python folder")
    p.add_argument("-a", "--arch", default="wrn-40-4", help="wrn-DEPTH-WIDTH")
    p.add_argument("--cache-dir", help="where the PNG ImageFolder copy goes (default DATA-imagefolder)")
    _common.add_common_args(p, epochs=100, batch_size=128, lr=0.1, weight_decay=5e-4, jsd=True, print_freq=50)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    model_fn = build_model(args.arch)  # a bad --arch stops before any conversion work
    src = Path(args.data).resolve()
    cache = Path(args.cache_dir) if args.cache_dir else src.with_name(src.name + "-imagefolder")
    root = prepare_data(src, cache, int(os.environ.get("LOCAL_RANK", "0")))
    _common.run(args, model_fn, root / "train", root / "val", preset="cifar", size=32)


if __name__ == "__main__":
    main()

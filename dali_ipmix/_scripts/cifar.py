"""CIFAR-10/100 as distributed (python pickles): read into memory, or written once as a lossless PNG
ImageFolder tree.

:func:`read_cifar` gives the arrays that ``training_pipeline`` / ``validation_pipeline`` take as
``images=`` / ``labels=`` (what ``pipelines/train_cifar.py`` does). The tree
``DST/{train,val}/{000_name,...}/NNNNN.png`` (folder names sort in label order) is for loaders that
read files (the torchvision baseline); under torchrun the local rank 0 of each node converts and the
other ranks wait for it (:func:`prepare_data`).
"""

import json
import os
import pickle
import shutil
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["read_cifar", "convert_to_imagefolder", "prepare_data"]


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

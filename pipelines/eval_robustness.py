#!/usr/bin/env python
"""Robustness evaluation of a training-script checkpoint on CIFAR-10-C / CIFAR-100-C or ImageNet-C.

    python pipelines/eval_robustness.py runs/cifar/checkpoint.pth --cifar-c /data/CIFAR-10-C \\
        --clean /data/cifar-10-batches-py --json cifar10c.json
    python pipelines/eval_robustness.py runs/inet/checkpoint.pth --imagenet-c /data/ImageNet-C \\
        --clean /data/imagenet/val --json imagenetc.json

CIFAR-C (``--cifar-c DIR``): DIR holds ``<corruption>.npy`` (N, 32, 32, 3) uint8, severities 1..5 one
after the other (N/5 images each, 10,000 in the real sets), and ``labels.npy`` (N,). The arrays are fed
from memory with plain torch, normalised with the ImageNet mean/std exactly like the training
pipelines (``dali_ipmix.constants.IMAGENET_MEAN/STD``, which every preset uses). ``--clean``:
the python-pickle folder (cifar-10-batches-py / cifar-100-python); its test split is scored.

ImageNet-C (``--imagenet-c DIR``): ``DIR/<corruption>/<1..5>/<wnid>/*.JPEG``, already 224 x 224 and
centre-cropped; labels are the sorted wnid folders, which must be as many as the model's outputs (and
the same names as the training folder's classes, when ``args.data`` of the checkpoint is readable).
Each corruption/severity folder is read by ``dali_ipmix.validation_pipeline`` through
``IPMixIterator`` with the ``cifar`` preset at ``--size``: that preset's validation transform is a
resize to size x size, the identity for size x size inputs, so the images are only decoded and
normalised (the ``imagenet`` preset would resize the shorter side to 256 first). Images of another size
would be stretched, so the first image of every class folder is checked and a mismatch stops with an
error; ``--loader torchvision`` (ImageFolder + CenterCrop(size), Hendrycks' own transform) takes any
size. ``--clean``: an ImageNet val folder in ImageFolder layout (resize 256, centre crop 224).

Reported, as fractions (the table prints percent): top-1 error per corruption and severity, per
corruption (mean over severities) and the mean corruption error (plain mean over the 15 standard
corruptions); for ImageNet-C also CE per corruption and mCE, normalised by AlexNet's errors
(``dali_ipmix._scripts.robustness.ALEXNET_ERR``); the RMS calibration error (adaptive bins of 100 samples) of every set,
per corruption (mean over severities) and its mean over the 15; clean error and calibration with
``--clean``. Extra corruptions present (speckle_noise, gaussian_blur, spatter, saturate) are reported
apart and never enter a mean. A missing standard corruption is an error naming it; with
``--allow-missing`` it is listed as missing and the means cover the others (``complete``: false).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from dali_ipmix._scripts import robustness as R
from dali_ipmix.constants import IMAGENET_MEAN, IMAGENET_STD
from dali_ipmix.presets import IMAGENET, get_preset


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", help="checkpoint.pth of train_cifar.py / train_imagenet.py (or model_best.pth "
                                      "with --arch)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--cifar-c", metavar="DIR", help="CIFAR-10-C / CIFAR-100-C folder of .npy files")
    which.add_argument("--imagenet-c", metavar="DIR", help="ImageNet-C folder: CORRUPTION/SEVERITY/WNID/*.JPEG")
    p.add_argument("--clean", metavar="DIR", help="clean test data: CIFAR pickle folder, or ImageNet val folder")
    p.add_argument("-a", "--arch", help="model architecture (default: the checkpoint's args.arch)")
    p.add_argument("--allow-missing", action="store_true",
                   help="leave missing standard corruptions out of the means (and say so) instead of stopping")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("-b", "--batch-size", type=int, default=128)
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True,
                   help="float16 autocast (CUDA only)")
    p.add_argument("-j", "--workers", type=int, default=4, help="DALI threads / DataLoader workers (ImageNet-C)")
    p.add_argument("--loader", choices=("dali-ipmix", "torchvision"), default="dali-ipmix",
                   help="ImageNet-C reader: dali_ipmix.validation_pipeline, or torchvision ImageFolder")
    p.add_argument("--size", type=int, default=IMAGENET.size, help="ImageNet-C image edge in pixels")
    p.add_argument("--validate-files", choices=("header", "full", "none"), default="header",
                   help="dali-ipmix: check every ImageNet-C file before reading it (none: trust the data set)")
    p.add_argument("--json", metavar="OUT", help="write every number to this JSON file")
    args = p.parse_args(argv)
    if args.batch_size < 1:
        p.error("--batch-size must be >= 1")
    return args


# ------------------------------------------------------------------------------------ predictions
class Scorer:
    """Runs the model on batches and collects (confidence, correct) per set."""

    def __init__(self, model, device: torch.device, amp: bool, num_classes: int):
        self.model, self.device, self.num_classes = model, device, num_classes
        self.amp = amp and device.type == "cuda"

    @torch.no_grad()
    def __call__(self, batches) -> dict:
        conf, correct = [], []
        for x, y in batches:
            x, y = x.to(self.device, non_blocking=True), y.to(self.device).view(-1).long()
            with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
                logits = self.model(x).float()
            c, pred = logits.softmax(dim=1).max(dim=1)
            conf.append(c.cpu().numpy())
            correct.append((pred == y).cpu().numpy())
        if not conf:
            raise SystemExit("no images to score")
        return R.score(np.concatenate(conf), np.concatenate(correct))


def array_batches(images: np.ndarray, labels: np.ndarray, batch_size: int, device: torch.device):
    """(N, H, W, 3) uint8 in memory -> normalised NCHW float batches, as the DALI pipelines normalise."""
    mean = torch.tensor([255 * m for m in IMAGENET_MEAN], device=device).view(1, 3, 1, 1)
    std = torch.tensor([255 * s for s in IMAGENET_STD], device=device).view(1, 3, 1, 1)
    for i in range(0, len(images), batch_size):
        x = torch.from_numpy(np.array(images[i:i + batch_size])).to(device)  # a copy (the file is mmapped); uint8 over the bus
        x = (x.permute(0, 3, 1, 2).float() - mean) / std
        yield x, torch.from_numpy(np.asarray(labels[i:i + batch_size], np.int64))


# ---------------------------------------------------------------------------------------- CIFAR-C
def cifar_c_layout(root: Path, allow_missing: bool):
    """(labels, {corruption: path}, {extra: path}, missing) after checking DIR's files, before any model work."""
    if not root.is_dir():
        raise SystemExit(f"--cifar-c {root}: not a folder")
    if not (root / "labels.npy").is_file():
        raise SystemExit(f"--cifar-c {root}: no labels.npy")
    labels = np.load(root / "labels.npy")
    if labels.ndim != 1 or len(labels) == 0 or len(labels) % len(R.SEVERITIES) or labels.min() < 0:
        raise SystemExit(f"{root / 'labels.npy'}: expected (N,) class indices >= 0 with N a multiple of 5 "
                         f"(5 severities), got shape {labels.shape}")
    missing = [c for c in R.CORRUPTIONS if not (root / f"{c}.npy").is_file()]
    if missing and not allow_missing:
        raise SystemExit(f"--cifar-c {root}: missing corruption file(s) {', '.join(f'{c}.npy' for c in missing)} "
                         "(pass --allow-missing to leave them out of the mean)")
    std = {c: root / f"{c}.npy" for c in R.CORRUPTIONS if c not in missing}
    known = set(R.CORRUPTIONS) | {"labels"}
    extra = {p.stem: p for p in sorted(root.glob("*.npy")) if p.stem not in known}
    for c, path in {**std, **extra}.items():
        shape = np.load(path, mmap_mode="r").shape
        if shape != (len(labels), 32, 32, 3):
            raise SystemExit(f"{path}: shape {shape}, expected {(len(labels), 32, 32, 3)} "
                             "(N = len(labels.npy) images, 32x32 RGB)")
    return labels.astype(np.int64), std, extra, missing


def check_labels(labels: np.ndarray, num_classes: int, what: str):
    top = int(labels.max()) + 1
    if top != num_classes:
        raise SystemExit(f"{what}: labels span {top} classes but the model has {num_classes} outputs "
                         "(CIFAR-10 data with a CIFAR-100 model, or the reverse?)")


def eval_cifar(args, scorer: Scorer, device) -> dict:
    root = Path(args.cifar_c)
    labels, std, extra, missing = cifar_c_layout(root, args.allow_missing)
    check_labels(labels, scorer.num_classes, str(root / "labels.npy"))
    out = {"benchmark": "CIFAR-C", "data": str(root)}
    if args.clean:
        from dali_ipmix._scripts.cifar import read_cifar
        splits, _ = read_cifar(args.clean)
        images, clean_labels = splits["val"]
        check_labels(clean_labels, scorer.num_classes, f"--clean {args.clean}")
        out["clean"] = scorer(array_batches(images, clean_labels, args.batch_size, device))
        log_clean(out["clean"])
    per = len(labels) // len(R.SEVERITIES)

    def run(c, path):
        images, sets, start = np.load(path, mmap_mode="r"), [], time.perf_counter()
        for s in R.SEVERITIES:
            lo, hi = (s - 1) * per, s * per
            sets.append(scorer(array_batches(images[lo:hi], labels[lo:hi], args.batch_size, device)))
        return summarise_sets(c, sets, time.perf_counter() - start)

    out["corruptions"] = {c: run(c, p) for c, p in std.items()}
    out["extra_corruptions"] = {c: run(c, p) for c, p in extra.items()}
    return finish(out, missing)


# ------------------------------------------------------------------------------------- ImageNet-C
def imagenet_c_layout(root: Path, allow_missing: bool):
    """({corruption: [5 severity folders]}, {extra: ...}, missing), checked before any model work."""
    if not root.is_dir():
        raise SystemExit(f"--imagenet-c {root}: not a folder")

    def severities(c):
        dirs = [root / c / str(s) for s in R.SEVERITIES]
        absent = [str(d) for d in dirs if not d.is_dir()]
        if absent:
            raise SystemExit(f"--imagenet-c: corruption {c} lacks severity folder(s) {', '.join(absent)}")
        return dirs

    missing = [c for c in R.CORRUPTIONS if not (root / c).is_dir()]
    if missing and not allow_missing:
        raise SystemExit(f"--imagenet-c {root}: missing corruption folder(s) {', '.join(missing)} "
                         "(pass --allow-missing to leave them out of the mCE)")
    std = {c: severities(c) for c in R.CORRUPTIONS if c not in missing}
    extra = {p.name: severities(p.name) for p in sorted(root.iterdir())
             if p.is_dir() and p.name not in R.CORRUPTIONS and not p.name.startswith(".")}
    return std, extra, missing


class ClassCheck:
    """Every folder must hold the same classes, as many as the model's outputs (and the training classes)."""

    def __init__(self, num_classes: int, train_args: dict):
        self.num_classes, self.names = num_classes, None
        self.train = Path(str(train_args.get("data", ""))) / "train"
        self.train_names = (sorted(p.name for p in self.train.iterdir() if p.is_dir())
                            if train_args.get("data") and self.train.is_dir() else None)

    def __call__(self, folder, names):
        names = list(names)
        if len(names) != self.num_classes:
            raise SystemExit(f"{folder}: {len(names)} class folders but the model has {self.num_classes} "
                             "outputs; the evaluation classes must be the training classes")
        if self.train_names is not None and names != self.train_names:
            diff = sorted(set(names) ^ set(self.train_names))[:5]
            raise SystemExit(f"{folder}: class folders differ from the training classes in {self.train} "
                             f"(the checkpoint's args.data), e.g. {diff}")
        if self.names is not None and names != self.names:
            raise SystemExit(f"{folder}: class folders differ from those of the folders read before")
        self.names = names


def folder_batches(args, folder: Path, preset: str, device, classes: ClassCheck):
    """Batches of one ImageFolder tree: dali_ipmix.validation_pipeline + IPMixIterator, or torchvision."""
    size = args.size
    if args.loader == "torchvision":
        from torchvision import datasets, transforms as T
        # The corruption sets are pre-cropped: a centre crop (Hendrycks' transform) takes any size.
        crop = [T.CenterCrop(size)] if preset == "cifar" else get_preset(preset).validation.torchvision(size)
        ds = datasets.ImageFolder(folder, T.Compose([*crop, T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]))
        classes(folder, ds.classes)
        return torch.utils.data.DataLoader(ds, batch_size=args.batch_size, shuffle=False,
                                           num_workers=args.workers, pin_memory=device.type == "cuda")
    from PIL import Image
    from dali_ipmix.iterator import IPMixIterator
    from dali_ipmix.graphs import validation_pipeline
    gpu = device.type == "cuda"
    try:
        pipe = validation_pipeline(file_root=str(folder), batch_size=args.batch_size, preset=preset, size=size,
                                   device="gpu" if gpu else "cpu", device_id=device.index or 0 if gpu else None,
                                   num_threads=max(1, args.workers), shard_id=0, num_shards=1,
                                   validate=args.validate_files)
    except (ValueError, OSError) as err:
        raise SystemExit(f"{folder}: {err}") from None
    info = pipe.source
    classes(folder, info.classes)
    if preset == "cifar":  # resize-to-size is the identity only for size x size images: check each class's first
        first = {}
        for f, lab in zip(info.files, info.labels):
            first.setdefault(lab, f)
        for f in first.values():
            with Image.open(f) as im:
                if im.size != (size, size):
                    raise SystemExit(f"{f}: {im.size[0]}x{im.size[1]} pixels, expected {size}x{size} (ImageNet-C "
                                     "is pre-cropped to 224x224); use --size or --loader torchvision (centre crop)")
    return IPMixIterator(pipe, last_batch_policy="partial", auto_reset=False)


def eval_imagenet(args, scorer: Scorer, device, train_args) -> dict:
    root = Path(args.imagenet_c)
    std, extra, missing = imagenet_c_layout(root, args.allow_missing)
    classes = ClassCheck(scorer.num_classes, train_args)
    out = {"benchmark": "ImageNet-C", "data": str(root), "loader": args.loader, "size": args.size}
    if args.clean:
        out["clean"] = scorer(folder_batches(args, Path(args.clean), "imagenet", device, classes))
        log_clean(out["clean"])

    def run(c, dirs):
        start = time.perf_counter()
        sets = [scorer(folder_batches(args, d, "cifar", device, classes)) for d in dirs]
        return summarise_sets(c, sets, time.perf_counter() - start)

    out["corruptions"] = {c: run(c, d) for c, d in std.items()}
    out["extra_corruptions"] = {c: run(c, d) for c, d in extra.items()}
    errors = {c: r["errors"] for c, r in out["corruptions"].items()}
    for c, ce in R.corruption_errors(errors, R.ALEXNET_ERR).items():
        out["corruptions"][c].update(alexnet_error=R.ALEXNET_ERR[c], ce=ce)
    out["mce"] = R.mean_ce(errors) if errors else None
    out["alexnet_errors_source"] = R.ALEXNET_ERR_SOURCE
    return finish(out, missing)


# ------------------------------------------------------------------------------------- reporting
def log_clean(r):
    print(f"clean: error {100 * r['error']:.2f}%  rms calibration error {100 * r['rms_calibration_error']:.2f}%  "
          f"({r['images']} images)", flush=True)


def summarise_sets(name, sets, seconds) -> dict:
    errors = [s["error"] for s in sets]
    calib = [s["rms_calibration_error"] for s in sets]
    r = {"errors": errors, "error": float(np.mean(errors)), "rms_calibration_errors": calib,
         "rms_calibration_error": float(np.mean(calib)), "images_per_severity": [s["images"] for s in sets]}
    print(f"{name}: error {' '.join(f'{100 * e:.2f}' for e in errors)} -> mean {100 * r['error']:.2f}%, "
          f"rms calibration {100 * r['rms_calibration_error']:.2f}%  [{seconds:.1f} s]", flush=True)
    return r


def finish(out, missing) -> dict:
    used = list(out["corruptions"])
    out["missing_corruptions"] = missing
    out["complete"] = not missing
    out["corruptions_in_mean"] = used
    out["mean_corruption_error"] = float(np.mean([out["corruptions"][c]["error"] for c in used])) if used else None
    out["mean_rms_calibration_error"] = (float(np.mean([out["corruptions"][c]["rms_calibration_error"] for c in used]))
                                         if used else None)
    return out


def print_table(out):
    inet = out["benchmark"] == "ImageNet-C"
    head = f"{'corruption':<18}" + "".join(f"{'s' + str(s):>7}" for s in R.SEVERITIES) + f"{'mean':>8}"
    head += f"{'CE':>8}" if inet else ""
    print("\n" + head + f"{'RMS':>8}   (top-1 error %, RMS calibration error %)")

    def row(name, r):
        line = f"{name:<18}" + "".join(f"{100 * e:7.2f}" for e in r["errors"]) + f"{100 * r['error']:8.2f}"
        line += (f"{100 * r['ce']:8.2f}" if "ce" in r else f"{'':>8}") if inet else ""
        print(line + f"{100 * r['rms_calibration_error']:8.2f}")

    for c, r in out["corruptions"].items():
        row(c, r)
    n = len(out["corruptions_in_mean"])
    note = "" if out["complete"] else f" over {n} of 15 (missing: {', '.join(out['missing_corruptions'])})"
    if out["mean_corruption_error"] is not None:
        print(f"mean corruption error{note}: {100 * out['mean_corruption_error']:.2f}%   "
              f"mean RMS calibration error: {100 * out['mean_rms_calibration_error']:.2f}%")
    if inet and out["mce"] is not None:
        print(f"mCE (AlexNet-normalised){note}: {100 * out['mce']:.2f}%")
    if out["extra_corruptions"]:
        print("extra corruptions (not in the means):")
        for c, r in out["extra_corruptions"].items():
            row(c, r)
    if "clean" in out:
        print(f"clean error: {100 * out['clean']['error']:.2f}%   "
              f"clean RMS calibration error: {100 * out['clean']['rms_calibration_error']:.2f}%")


def main(argv=None):
    args = parse_args(argv)
    # Check the data layout first: a missing corruption stops before any model work.
    if args.cifar_c:
        cifar_c_layout(Path(args.cifar_c), args.allow_missing)
    else:
        imagenet_c_layout(Path(args.imagenet_c), args.allow_missing)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but no CUDA GPU is visible; pass --device cpu")
    device = torch.device("cuda", torch.cuda.current_device()) if args.device == "cuda" else torch.device("cpu")
    model, info = R.load_model(args.checkpoint, args.arch, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    print(f"{args.checkpoint}: {info['arch']}, {info['num_classes']} classes, epoch {info['epoch']}, on {device}",
          flush=True)
    scorer = Scorer(model, device, args.amp, info["num_classes"])
    out = eval_cifar(args, scorer, device) if args.cifar_c else eval_imagenet(args, scorer, device, info["args"])
    out = {"checkpoint": str(args.checkpoint), "arch": info["arch"], "num_classes": info["num_classes"],
           "epoch": info["epoch"], **out}
    print_table(out)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
        print(f"wrote {args.json}")
    return out


if __name__ == "__main__":
    main()

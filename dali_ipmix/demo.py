"""The end-to-end demo: a small labelled photo set, a fractal mixing set, the IPMix pipeline (or
AugMix's, PixMix's: ``--method``), a preview grid and a few training steps of a small CNN through
:class:`IPMixIterator`.

    dali-ipmix demo [--out out/demo] [--device cpu|gpu] [--size 128] [--steps 60] [--method ipmix]

Writes under ``OUT``: ``demo_data/{train,val,fractals}`` (the generated data), ``preview.png`` (rows:
clean, view 1, view 2 of the first samples of a batch) and ``summary.json`` (the printed numbers).
The photos are scikit-image's sample images (``skimage.data``), one class per photo, varied by random
crops, flips and scales. On 2 CPU cores the defaults take well under a minute.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from typing import Optional

import numpy as np

from .config import method_config
from .constants import IMAGENET_MEAN, IMAGENET_STD, SAMPLE_PHOTOS
from .fractals import write_fractal_set
from .iterator import IPMixIterator
from .photos import sample_photo
from .graphs import training_pipeline, validation_pipeline
from .presets import get_preset

__all__ = ["run_demo", "make_photo_dataset", "preview_grid"]

PHOTOS = SAMPLE_PHOTOS[:4]                 # one class per photo
_MARKER = ".dali_ipmix_demo"   # only folders carrying it are ever deleted by the demo


def make_photo_dataset(root, per_class: int, size: int, seed: int) -> None:
    """An ImageFolder tree ``root/<photo>/<i>.jpg``: ``per_class`` random crops (a third to all of the
    shorter side), random flips, resized to ``size``..``1.5 size`` pixels square, JPEG quality 90."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    for name in PHOTOS:
        src = sample_photo(name)
        os.makedirs(os.path.join(root, name), exist_ok=True)
        h, w = src.shape[:2]
        for i in range(per_class):
            side = int(rng.integers(min(h, w) // 3, min(h, w) + 1))
            y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            crop = Image.fromarray(src[y:y + side, x:x + side])
            if rng.random() < 0.5:
                crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
            out = int(rng.integers(size, size * 3 // 2 + 1))
            crop.resize((out, out), Image.BILINEAR).save(os.path.join(root, name, f"{i:03d}.jpg"),
                                                        quality=90)


def _denormalize(chw):
    """Normalised (3, H, W) tensor -> (H, W, 3) uint8."""
    x = chw.float().cpu().numpy().transpose(1, 2, 0)
    x = (x * np.array(IMAGENET_STD) + np.array(IMAGENET_MEAN)) * 255
    return (x + 0.5).clip(0, 255).astype(np.uint8)


def preview_grid(path, rows, columns: int = 8, gap: int = 2) -> None:
    """Writes a PNG with one row per batch in ``rows`` (normalised NCHW tensors), ``columns`` samples."""
    from PIL import Image
    n = min(columns, rows[0].shape[0])
    h, w = rows[0].shape[2:]
    grid = np.full((len(rows) * (h + gap) - gap, n * (w + gap) - gap, 3), 255, np.uint8)
    for r, batch in enumerate(rows):
        for c in range(n):
            grid[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = _denormalize(batch[c])
    Image.fromarray(grid).save(path)


def _small_cnn(num_classes):
    import torch.nn as nn
    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True)]
    return nn.Sequential(*block(3, 16), *block(16, 32), *block(32, 64), *block(64, 64),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes))


def _loss_fn():
    """The package's JSD loss (spec: CE + 12 x Jensen-Shannon); plain cross-entropy if it is missing."""
    try:
        from .losses import jsd_loss
        return jsd_loss, "jsd"
    except ImportError:   # keeps the demo usable on a core without the loss
        import torch.nn.functional as F
        return (lambda clean, v1, v2, y: F.cross_entropy(clean, y)), "cross-entropy (clean view)"


def _prepare_dirs(out_dir):
    data_dir = os.path.join(out_dir, "demo_data")
    if os.path.exists(data_dir):
        if not os.path.exists(os.path.join(data_dir, _MARKER)):
            raise FileExistsError(f"{data_dir!r} exists and was not made by the demo; "
                                  "choose another --out")
        shutil.rmtree(data_dir)   # regenerated every run so that old files never mix in
    os.makedirs(data_dir)
    open(os.path.join(data_dir, _MARKER), "w").close()
    return data_dir


def run_demo(out_dir: str = "out/demo", *, device: Optional[str] = None, size: int = 128,
             per_class: int = 48, n_fractals: int = 64, batch_size: int = 16, steps: int = 60,
             seed: int = 0, num_threads: Optional[int] = None, progress: bool = True,
             method: str = "ipmix", log=print) -> dict:
    """Runs the demo (see the module docstring); returns the summary it prints and saves.

    Args:
        out_dir: output folder (created).
        device: ``"cpu"`` or ``"gpu"``; default GPU when CUDA is available.
        size: training resolution in pixels (ImageNet preset scaled to it).
        per_class: training images per class (4 classes); validation gets a quarter as many.
        n_fractals: pictures in the generated mixing set.
        batch_size, steps: training batches of ``batch_size`` samples (each sample in 3 views).
        seed: seeds data generation, pipeline and model.
        method: ``"ipmix"`` (default), ``"augmix"`` (no mixing set is made) or ``"pixmix"``: the
            method's ImageNet paper setting (:func:`dali_ipmix.config.method_config`), JSD views.
    """
    import torch
    from tqdm import tqdm

    if per_class * len(PHOTOS) < batch_size or steps < 1:
        raise ValueError(f"need per_class * {len(PHOTOS)} >= batch_size and steps >= 1, got "
                         f"per_class={per_class}, batch_size={batch_size}, steps={steps}")
    config = method_config(method, "imagenet")
    t_start = time.perf_counter()
    os.makedirs(out_dir, exist_ok=True)
    data_dir = _prepare_dirs(out_dir)
    train_dir, val_dir, mix_dir = (os.path.join(data_dir, d) for d in ("train", "val", "fractals"))
    log(f"[1/5] photo data set: {len(PHOTOS)} classes x {per_class} images -> {train_dir}")
    make_photo_dataset(train_dir, per_class, size, seed)
    make_photo_dataset(val_dir, max(2, per_class // 4), size, seed + 1)
    if config.needs_mixing:
        log(f"[2/5] fractal mixing set: {n_fractals} pictures -> {mix_dir}")
        # At the preset's mixing side, so the pipeline crops them without a resize.
        write_fractal_set(mix_dir, n_fractals, size=max(8, get_preset("imagenet").mixing_side(size)),
                          seed=seed, progress=progress)
    else:
        mix_dir = None
        log(f"[2/5] no mixing set: {type(config).__name__} mixes no pictures")

    device = device or ("gpu" if torch.cuda.is_available() else "cpu")
    torch_device = torch.device("cuda" if device == "gpu" else "cpu")
    pipe = training_pipeline(train_dir, mixing_root=mix_dir, batch_size=batch_size, config=config,
                             size=size, device=device, num_threads=num_threads, seed=seed)
    train = IPMixIterator(pipe, last_batch_policy="drop")
    info = pipe.source
    pictures = ("no mixing pictures" if not info.mixing_files else "mixing pictures "
                + ("cached" if info.mixing_cache_bytes else "decoded per sample"))
    log(f"[3/5] {type(config).__name__[:-6]} pipeline on {device} ({info.backend} operator, {pictures}): "
        f"{info.num_samples} samples, {len(train)} batches/epoch, {size}x{size}, JSD views")

    # Data-only pass: how fast the pipeline alone produces samples (all three views).
    t0, seen = time.perf_counter(), 0
    for i, ((clean, v1, v2), labels) in enumerate(train):
        if i == 0:
            preview_path = os.path.join(out_dir, "preview.png")
            preview_grid(preview_path, [clean, v1, v2])
        seen += labels.numel()
    pipeline_ips = seen / (time.perf_counter() - t0)
    log(f"[4/5] preview (rows: clean, view 1, view 2) -> {preview_path}; "
        f"pipeline alone: {pipeline_ips:.1f} images/s")

    torch.manual_seed(seed)
    model = _small_cnn(len(PHOTOS)).to(torch_device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    loss_fn, loss_name = _loss_fn()
    losses, t0, seen, step = [], time.perf_counter(), 0, 0
    with tqdm(total=steps, desc=f"[5/5] training ({loss_name})", unit="step", disable=not progress) as bar:
        while step < steps:
            for (clean, v1, v2), labels in train:
                # One forward pass over the three views, as the reference code does.
                logits = model(torch.cat([clean, v1, v2]).float()).split(labels.numel())
                loss = loss_fn(*logits, labels)
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(loss.item())
                seen += labels.numel()
                step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.3f}", img_s=f"{seen / (time.perf_counter() - t0):.0f}")
                if step >= steps:
                    break
    train_ips = seen / (time.perf_counter() - t0)

    val = IPMixIterator(validation_pipeline(val_dir, batch_size=batch_size, preset="imagenet", size=size,
                                            device=device, num_threads=num_threads))
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for images, labels in val:
            correct += int((model(images.float()).argmax(1) == labels).sum())
            total += labels.numel()
    summary = dict(method=method, device=device, size=size, samples=pipe.source.num_samples, steps=steps,
                   batch_size=batch_size, loss=loss_name, first_loss=losses[0], last_loss=losses[-1],
                   pipeline_images_per_s=round(pipeline_ips, 1),
                   training_images_per_s=round(train_ips, 1), val_accuracy=correct / max(total, 1),
                   preview=preview_path, seconds=round(time.perf_counter() - t_start, 1))
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    log(f"done in {summary['seconds']} s: loss {losses[0]:.3f} -> {losses[-1]:.3f}, "
        f"pipeline {pipeline_ips:.1f} images/s, training {train_ips:.1f} images/s, "
        f"val accuracy {summary['val_accuracy']:.2f} ({total} images, {len(PHOTOS)} classes)")
    return summary

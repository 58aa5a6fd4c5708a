"""The benchmark scripts' data and environment: generated JPEG and fractal sets, cached on disk, the
``--data``/``--gen-*`` options that choose them, the GPU/CuPy check and an endless batch source.

Generated data (no ``--data``): ``--gen-count`` JPEGs of about ``--gen-size`` (default 400x350, about
100 KB each at quality 95: sample-photo crops plus film-grain noise so they compress like camera
photos) in :data:`GEN_CLASSES` class folders; no ``--mixing``: ``--gen-mixing-count`` fractals. Both
are made once into ``--cache-dir`` and reused. The CIFAR rows take samples in memory instead
(:func:`memory_samples`: a CIFAR pickle folder, or generated CIFAR-like arrays) and have a plain DALI
baseline of their own (:func:`plain_memory_pipeline`). :class:`PILIPMixDataset` is the paper's
per-image loader every benchmark compares against (for AugMix and PixMix: the ports of their authors'
per-image code, :mod:`dali_ipmix.reference`).
"""

from __future__ import annotations

import argparse
import os
import platform
import gc
import json
import shutil
import time
import traceback
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from ..constants import IMAGENET_MEAN, IMAGENET_STD, SAMPLE_PHOTOS
from ..photos import sample_photo

__all__ = ["GEN_CLASSES", "GEN_NOISE", "CIFAR_CLASSES", "log", "make_jpeg_set", "prepare_data",
           "prepare_mixing", "add_data_args", "environment", "endless", "timed_batches",
           "plain_dali_pipeline", "cifar_like_arrays", "memory_samples", "NpyImages",
           "plain_memory_pipeline", "PILIPMixDataset", "reference_view", "versions", "error_note", "check_floors", "run_guarded", "finish_row", "text_table", "dump_json", "list_arg"]

GEN_CLASSES = 4
GEN_NOISE = 15.0        # grey levels (std) of the added grain: brings 400x350 q95 JPEGs to ~100 KB
CIFAR_CLASSES = 10      # labels of the generated CIFAR-like samples


def log(*msg):
    print("[bench]", *msg, flush=True)


def _make_jpeg(job):
    """Writes one generated JPEG; ``job = (path, index, (width, height), quality, seed)``."""
    from PIL import Image
    path, i, (width, height), quality, seed = job
    rng = np.random.default_rng([seed, i])
    src = sample_photo(SAMPLE_PHOTOS[i % len(SAMPLE_PHOTOS)])
    # Jitter the output size by +-5% so that batches hold several shapes, as real data does.
    w = max(8, int(width * rng.uniform(0.95, 1.05)))
    h = max(8, int(height * rng.uniform(0.95, 1.05)))
    # A random crop of 60..100% of the photo's extent keeps a variety of content and detail.
    ch = int(src.shape[0] * rng.uniform(0.6, 1.0))
    cw = int(src.shape[1] * rng.uniform(0.6, 1.0))
    y, x = rng.integers(0, src.shape[0] - ch + 1), rng.integers(0, src.shape[1] - cw + 1)
    img = Image.fromarray(src[y:y + ch, x:x + cw]).resize((w, h), Image.BILINEAR)
    noisy = np.asarray(img, np.float32) + rng.normal(0.0, GEN_NOISE, (h, w, 3)).astype(np.float32)
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(path, "JPEG", quality=quality)
    return os.path.getsize(path)


def make_jpeg_set(out_dir, count, size, quality=95, seed=0, workers=None):
    """Writes ``count`` JPEGs in ``GEN_CLASSES`` class folders under ``out_dir`` (ImageFolder layout).

    ``size`` is (width, height) in pixels. Returns the mean file size in bytes. Generation runs in a
    process pool (its cost per image: ``docs/performance.md``).
    """
    jobs = []
    for i in range(count):
        folder = os.path.join(out_dir, f"class_{i % GEN_CLASSES}")
        os.makedirs(folder, exist_ok=True)
        jobs.append((os.path.join(folder, f"img_{i:05d}.jpg"), i, size, quality, seed))
    workers = max(1, min(workers or os.cpu_count() or 1, (count + 63) // 64))
    if workers == 1:
        sizes = [_make_jpeg(j) for j in jobs]
    else:
        with ProcessPoolExecutor(workers) as pool:
            sizes = list(pool.map(_make_jpeg, jobs, chunksize=32))
    return float(np.mean(sizes))


def _cached(path, build):
    """Runs ``build(path)`` once: a ``.done`` marker makes later runs reuse the folder."""
    marker = os.path.join(path, ".done")
    if not os.path.exists(marker):
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path)
        build(path)
        open(marker, "w").close()
    return path


def prepare_data(args):
    """``(data_root, mixing_root)``: the given folders, else generated ones in ``args.cache_dir``."""
    data_root = args.data
    if data_root is None:
        w, h = args.gen_size
        name = f"jpeg_{args.gen_count}_{w}x{h}_q{args.gen_quality}"
        data_root = os.path.join(args.cache_dir, name)
        if not os.path.exists(os.path.join(data_root, ".done")):
            log(f"generating {args.gen_count} JPEGs of about {w}x{h} in {data_root} (once)")
        _cached(data_root, lambda p: make_jpeg_set(p, args.gen_count, (w, h), args.gen_quality))
    return data_root, prepare_mixing(args)


def prepare_mixing(args):
    """``args.mixing``, else the generated fractal set in ``args.cache_dir`` (made once)."""
    mixing_root = args.mixing
    if mixing_root is None:
        from ..fractals import write_fractal_set
        n, s = args.gen_mixing_count, args.gen_mixing_size
        mixing_root = os.path.join(args.cache_dir, f"fractals_{n}_{s}_jpeg")
        if not os.path.exists(os.path.join(mixing_root, ".done")):
            log(f"generating {n} fractal mixing pictures of {s}x{s} in {mixing_root} (once)")
        _cached(mixing_root, lambda p: write_fractal_set(p, n, size=s, seed=0, progress=False))
    return mixing_root


def _size_pair(text):
    try:
        w, h = (int(v) for v in text.lower().split("x"))
        assert w >= 8 and h >= 8
        return w, h
    except Exception:
        raise argparse.ArgumentTypeError(f"{text!r}: expected WIDTHxHEIGHT, each >= 8") from None


def add_data_args(ap):
    """The data options: --data, --mixing, --cache-dir, --gen-*."""
    a = ap.add_argument
    a("--data", help="ImageFolder tree of JPEGs (default: generated, see --gen-*)")
    a("--mixing", help="folder of mixing pictures (default: generated fractals)")
    a("--cache-dir", default=os.path.join("out", "bench_data"), help="where generated data is kept")
    a("--gen-count", type=int, default=1024, help="generated JPEGs (default 1024)")
    a("--gen-size", type=_size_pair, default=(400, 350), help="generated JPEG size WxH, +-5%% (default 400x350)")
    a("--gen-quality", type=int, default=95, help="generated JPEG quality (default 95: ~100 KB at 400x350)")
    a("--gen-mixing-count", type=int, default=64, help="generated fractal mixing pictures (default 64)")
    a("--gen-mixing-size", type=int, default=256, help="their side in pixels (default 256)")
    return ap


def environment():
    """What the GPU rows need: ``{"gpu": name or None, "cupy": version or None, "why_no_gpu": str}``."""
    env = {"gpu": None, "cupy": None, "why_no_gpu": ""}
    try:
        import torch
        if torch.cuda.is_available():
            env["gpu"] = torch.cuda.get_device_name(0)
        else:
            env["why_no_gpu"] = "no CUDA GPU (torch.cuda.is_available() is False)"
    except Exception as err:   # a broken CUDA install means: no GPU
        env["why_no_gpu"] = f"no usable CUDA ({type(err).__name__}: {err})"
    try:
        import cupy
        cupy.cuda.runtime.getDeviceCount()
        env["cupy"] = cupy.__version__
    except Exception as err:
        env["why_no_cupy"] = f"no usable CuPy ({type(err).__name__}: {err})"
    return env


def endless(iterator, count):
    """``next_batch`` over an auto-resetting iterator: restarts once at an epoch end; ``count(batch)``
    gives the samples in a batch."""
    def next_batch():
        try:
            return count(next(iterator))
        except StopIteration:   # epoch end; auto_reset has rewound the iterator
            return count(next(iterator))
    return next_batch


def _pipeline(batch, threads, seed, device):
    """An empty DALI pipeline (prefetch 2) on the current CUDA device for ``device="gpu"``."""
    from nvidia.dali.pipeline import Pipeline

    device_id = None
    if device == "gpu":
        import torch
        device_id = torch.cuda.current_device()
    return Pipeline(batch_size=batch, num_threads=threads, seed=seed, device_id=device_id, prefetch_queue_depth=2)


def plain_dali_pipeline(files, labels, batch, size, device, threads, decode="full", seed=0, dtype="float32",
                        layout="CHW"):
    """The plain ResNet-50-style DALI training pipeline (no IPMix): outputs ``images`` (N, 3, size,
    size) normalised (``layout="HWC"``: (N, size, size, 3); ``dtype`` float32 or float16) and ``label``
    int32 (N, 1), on ``device``. ``decode="full"`` decodes whole images then random_resized_crop;
    ``"fused"`` uses decoders.image_random_crop + resize."""
    from nvidia.dali import fn, types

    pipe = _pipeline(batch, threads, seed, device)
    with pipe:
        # Same reader settings as dali_ipmix.training_pipeline, so that reading costs the same.
        jpegs, lab = fn.readers.file(files=list(files), labels=list(labels), shuffle_after_epoch=True,
                                     pad_last_batch=True, name="Reader")
        decoder = "mixed" if device == "gpu" else "cpu"
        if decode == "fused":
            # What dali_ipmix.training_pipeline does: decode only the random crop's region, then resize.
            images = fn.decoders.image_random_crop(jpegs, device=decoder, output_type=types.RGB,
                                                   random_area=[0.08, 1.0], random_aspect_ratio=[3 / 4, 4 / 3])
            images = fn.resize(images, resize_x=size, resize_y=size)
        else:
            images = fn.decoders.image(jpegs, device=decoder, output_type=types.RGB)
            images = fn.random_resized_crop(images, size=[size, size])
        images = _flip_normalize(images, dtype, layout)
        pipe.set_outputs(images, lab.gpu() if device == "gpu" else lab)
    return pipe


def _flip_normalize(images, dtype, layout):
    """Random horizontal flip and ImageNet normalisation in one ``crop_mirror_normalize``."""
    from nvidia.dali import fn, types
    return fn.crop_mirror_normalize(
        images, dtype=types.FLOAT16 if dtype == "float16" else types.FLOAT, output_layout=layout,
        mirror=fn.random.coin_flip(probability=0.5),
        mean=[255 * m for m in IMAGENET_MEAN], std=[255 * s for s in IMAGENET_STD])


# ------------------------------------------------------------------------------ the benchmarks' rows
def versions():
    """The versions a benchmark table names: Python, DALI, torch, CuPy (None where missing)."""
    out = {"python": platform.python_version()}
    for name, mod in (("dali", "nvidia.dali"), ("torch", "torch"), ("cupy", "cupy")):
        try:
            out[name] = __import__(mod, fromlist=["_"]).__version__
        except Exception:
            out[name] = None
    return out


def error_note(err, limit=600):
    """A one-line note that keeps the cause: DALI's "Critical error in pipeline:" is only the first
    line of a message whose last lines name the operator and the Python error."""
    lines = [line.strip() for line in f"{type(err).__name__}: {err}".splitlines() if line.strip()]
    note = lines[0] if len(lines) <= 1 else lines[0] + " ... " + " | ".join(lines[-3:])
    return note[:limit]


def check_floors(ap, args, at_least_one=(), at_least_zero=()):
    """``ap.error`` for the first option below its floor (``--batch-size must be >= 1``)."""
    for names, low in ((at_least_one, 1), (at_least_zero, 0)):
        for name in names:
            if getattr(args, name) < low:
                ap.error(f"--{name.replace('_', '-')} must be >= {low}")


def run_guarded(row, label, measure, cleanup=None):
    """``measure()`` -> ``(samples, seconds)``, or None when it raised: one broken row must not stop the
    others, so the row is marked ``status="error"`` with :func:`error_note` and the traceback printed.
    Either way ``cleanup()`` (when given) then ``gc.collect()`` run, which frees the DALI pipeline,
    its device memory and a loader's workers before the next row."""
    try:
        return measure()
    except Exception as err:
        row.update(status="error", note=error_note(err))
        log(f"{label}: FAILED")
        traceback.print_exc()
        return None
    finally:
        gc.collect()
        if cleanup:
            cleanup()


def text_table(cols, rows, cells):
    """A benchmark table as text: ``cols`` are (title, width) pairs; ``cells(row, num)`` gives a row's
    cells as text, ``num(key, digits)`` one of its numbers (``-`` when missing); a row that is not ok
    ends with its status and note."""
    lines = [" | ".join(f"{c:>{w}s}" for c, w in cols), "-+-".join("-" * w for _, w in cols)]
    for r in rows:
        def num(key, digits, r=r):
            v = r.get(key)
            return "-" if v is None else f"{v:.{digits}f}"
        line = " | ".join(f"{c:>{w}s}" for c, (_, w) in zip(cells(r, num), cols))
        if r["status"] != "ok":
            line += f"   {r['status']}: {r.get('note', '')}"
        lines.append(line)
    return "\n".join(lines)


def dump_json(path, data):
    """``data`` as JSON at ``path`` (its folder made); nothing when ``path`` is None."""
    if not path:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f, indent=2, default=str)


def list_arg(choices, what=""):
    """An argparse ``type``: a comma-separated list of ``choices`` (``unknown <what>[...]`` otherwise)."""
    def parse(text):
        items = [t.strip() for t in text.split(",") if t.strip()]
        bad = [t for t in items if t not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"unknown {what}{bad}: choose from {','.join(choices)}")
        return items
    return parse


def finish_row(row, samples, seconds, **extra):
    """Marks ``row`` ok with its samples, seconds, samples/s and images/s (3 images a sample in JSD mode)."""
    per_sample = 3 if row["jsd"] else 1
    row.update(status="ok", **extra, samples=int(samples), seconds=round(seconds, 4),
               samples_per_s=samples / seconds, images_per_s=per_sample * samples / seconds)


#: The ImageNet mean / std on the 0..1 scale (every preset normalises with them).
MEAN, STD = IMAGENET_MEAN, IMAGENET_STD


def reference_view(method):
    """The per-image PIL function of ``method`` (a config's ``method``): ``view(image, mixing, config,
    rng)`` -> float32 HWC 0..255 (:mod:`dali_ipmix.reference`)."""
    from .. import reference
    views = {"ipmix": reference.ipmix_reference, "augmix": reference.augmix_reference,
             "pixmix": reference.pixmix_reference}
    if method not in views:
        raise ValueError(f"method={method!r} has no per-image reference: choose one of {tuple(views)}")
    return views[method]


class PILIPMixDataset:
    """The paper's loader, per image: PIL decode, the preset's training crop (ImageNet:
    RandomResizedCrop(size); CIFAR: RandomCrop(size, padding=4)) + flip, a random mixing picture
    Resize(the preset's mixing side: size * 256/224, CIFAR 36/32) + RandomCrop(size), the views of the
    config's method with its per-image PIL reference (IPMix: ``ipmix_reference``; AugMix and PixMix:
    the ports of their authors' per-image code, ``augmix_reference`` / ``pixmix_reference``; AugMix
    reads no mixing picture, as its authors' loader), then CHW float32 normalised with the ImageNet
    mean/std. Item: ``(image or (clean, v1, v2), label)``.

    ``files``: the JPEGs; or ``images``: samples in memory (a uint8 (N, H, W, 3) array, or an
    :class:`NpyImages` that each worker maps from disk) instead, ``files`` None. A map-style torch
    Dataset (``__getitem__``/``__len__``); the numpy Generator is made per worker process, seeded from
    torch's per-worker seed, so that workers draw different augmentations.
    """

    def __init__(self, files, labels, mixing_files, size, config, preset="imagenet", images=None):
        from torchvision import transforms as T
        from ..presets import get_preset
        preset = get_preset(preset) if isinstance(preset, str) else preset
        self.files = None if files is None else list(files)
        self.images, self.labels, self.mixing_files = images, list(labels), list(mixing_files)
        self.config = config
        self.crop = T.Compose([*preset.train_crop.torchvision(size), T.RandomHorizontalFlip()])
        self.mix = T.Compose([T.Resize(preset.mixing_side(size)), T.RandomCrop(size)])
        self._rng, self._pid = None, None

    def __len__(self):
        return len(self.labels)

    def _generator(self):
        if self._pid != os.getpid():
            import torch
            self._rng, self._pid = np.random.default_rng(torch.initial_seed() % 2 ** 63), os.getpid()
        return self._rng

    @staticmethod
    def _to_tensor(hwc):
        """HWC float or uint8 on 0..255 -> CHW float32 tensor, ImageNet-normalised."""
        import torch
        x = torch.from_numpy(np.ascontiguousarray(hwc, np.float32)).permute(2, 0, 1).div_(255)
        return x.sub_(torch.tensor(MEAN).view(3, 1, 1)).div_(torch.tensor(STD).view(3, 1, 1))

    def __getitem__(self, i):
        from PIL import Image
        view = reference_view(getattr(self.config, "method", "ipmix"))
        rng = self._generator()
        if self.files is None:
            image = np.asarray(self.crop(Image.fromarray(np.asarray(self.images[i]))))
        else:
            with Image.open(self.files[i]) as im:
                image = np.asarray(self.crop(im.convert("RGB")))
        mixing = None
        if getattr(self.config, "needs_mixing", True):
            with Image.open(self.mixing_files[rng.integers(len(self.mixing_files))]) as im:
                mixing = np.asarray(self.mix(im.convert("RGB")))
        if self.config.jsd:
            views = (image, view(image, mixing, self.config, rng), view(image, mixing, self.config, rng))
            return tuple(self._to_tensor(v) for v in views), self.labels[i]
        return self._to_tensor(view(image, mixing, self.config, rng)), self.labels[i]


# ------------------------------------------------------------------------- samples in memory (CIFAR)
def cifar_like_arrays(count, seed=0, size=32):
    """``count`` CIFAR-like samples in memory: ``(images uint8 (count, size, size, 3), labels int64
    (count,))``, labels ``i % CIFAR_CLASSES``. Each image is a random ``size x size`` window of one of
    the sample photos scaled down to a shorter side of 1-3 times ``size``, plus film grain (so that
    samples differ the way photos do)."""
    from PIL import Image
    rng = np.random.default_rng([seed, count])
    scaled = []
    for name in SAMPLE_PHOTOS:
        photo = Image.fromarray(sample_photo(name))
        for side in (size, 2 * size, 3 * size):
            w, h = photo.size
            f = side / min(w, h)
            scaled.append(np.asarray(photo.resize((max(size, round(w * f)), max(size, round(h * f))),
                                                  Image.BILINEAR)))
    pick = rng.integers(len(scaled), size=count)
    images = np.empty((count, size, size, 3), np.uint8)
    for i, k in enumerate(pick):
        src = scaled[k]
        y, x = rng.integers(src.shape[0] - size + 1), rng.integers(src.shape[1] - size + 1)
        images[i] = src[y:y + size, x:x + size]
    grain = rng.integers(-6, 7, images.shape, dtype=np.int16)
    images = np.clip(images + grain, 0, 255).astype(np.uint8)
    return images, np.arange(count, dtype=np.int64) % CIFAR_CLASSES


class NpyImages:
    """An ``.npy`` array opened read-only (memory-mapped) on first use in each process: what a
    DataLoader worker gets instead of a pickled copy of the whole array (forkserver workers)."""

    def __init__(self, path):
        self.path, self._array = os.fspath(path), None

    def __getstate__(self):
        return {"path": self.path, "_array": None}

    @property
    def array(self):
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")
        return self._array

    def __len__(self):
        return len(self.array)

    def __getitem__(self, i):
        return self.array[i]


def memory_samples(data, cache_dir, count, seed=0):
    """Samples in memory for the CIFAR rows: ``(images, labels, npy_path, description)``.

    ``data``: a CIFAR pickle folder (``cifar-10-batches-py`` / ``cifar-100-python``; its training
    split, read by :func:`dali_ipmix._scripts.cifar.read_cifar`, as ``train_cifar.py`` reads it), or
    None for ``count`` generated CIFAR-like samples (:func:`cifar_like_arrays`). The images are also
    written once to ``npy_path`` in ``cache_dir`` (for loaders whose worker processes map them)."""
    if data is not None:
        from .cifar import read_cifar
        splits, names = read_cifar(data)
        images, labels = splits["train"]
        what = f"{data}: {len(images)} training images of CIFAR ({len(names)} classes)"
        tag = "cifar_" + "".join(c if c.isalnum() else "_" for c in os.path.abspath(data))[-60:]
    else:
        what = f"{count} generated CIFAR-like images of 32x32 in memory ({CIFAR_CLASSES} classes)"
        tag = f"cifar_like_{count}_s{seed}"
        path = os.path.join(cache_dir, tag + ".npy")
        if os.path.exists(path):   # made by an earlier run: the same pixels (deterministic)
            images = np.load(path)
            return images, np.arange(len(images), dtype=np.int64) % CIFAR_CLASSES, path, what
        log(f"generating {count} CIFAR-like images of 32x32 in {path} (once)")
        images, labels = cifar_like_arrays(count, seed)
    os.makedirs(cache_dir, exist_ok=True)
    path = os.path.join(cache_dir, tag + ".npy")
    if not os.path.exists(path):
        tmp = f"{path}.{os.getpid()}.tmp.npy"
        np.save(tmp, np.ascontiguousarray(images))
        os.replace(tmp, path)
    return np.ascontiguousarray(images), np.asarray(labels, np.int64), path, what


class _MemoryBatches:
    """``external_source`` callback of :func:`plain_memory_pipeline`: batch after batch of a new
    random permutation per pass over the samples (images as per-sample HWC views, labels int32
    (N, 1)), endless."""

    def __init__(self, images, labels, batch, seed):
        self.images, self.labels = images, np.asarray(labels, np.int32).reshape(-1, 1)
        self.batch, self.rng = batch, np.random.default_rng(seed)
        self.order, self.pos = np.empty(0, np.int64), 0

    def __call__(self):
        if self.pos + self.batch > len(self.order):
            rest = self.order[self.pos:]
            self.order = np.concatenate([rest, self.rng.permutation(len(self.images))])
            while len(self.order) < self.batch:
                self.order = np.concatenate([self.order, self.rng.permutation(len(self.images))])
            self.pos = 0
        idx = self.order[self.pos:self.pos + self.batch]
        self.pos += self.batch
        return [self.images[i] for i in idx], self.labels[idx]


def plain_memory_pipeline(images, labels, batch, size, device, threads, preset="cifar", seed=0,
                          dtype="float32", layout="CHW"):
    """Plain DALI from samples in memory, no IPMix: the crop of ``preset`` (CIFAR: resize to ``size``,
    pad by 1/8 and a random ``size x size`` window, the very operators of ``training_pipeline``'s
    crop), a random horizontal flip and the ImageNet normalisation (``crop_mirror_normalize``).
    Images (uint8 (N, H, W, 3)) come through an ``external_source`` as a batch of per-sample views, in
    a new random order every pass (endless: drive it with ``DALIGenericIterator`` without a size).
    Outputs ``images`` (N, 3, size, size) (``layout="HWC"``: channels last) ``dtype``, ``label`` int32
    (N, 1), on ``device``."""
    from nvidia.dali import fn, types
    from ..presets import PaddedCrop, get_preset

    crop = get_preset(preset).train_crop
    if not isinstance(crop, PaddedCrop):
        raise ValueError(f"plain_memory_pipeline: preset {preset!r} has a {type(crop).__name__} crop; "
                         "only padded-crop presets (cifar) are built here")
    pipe = _pipeline(batch, threads, seed, device)
    with pipe:
        src, lab = fn.external_source(source=_MemoryBatches(images, labels, batch, seed), num_outputs=2,
                                      batch=True, dtype=[types.UINT8, types.INT32], layout=["HWC", None])
        pad = crop.pad_px(size)
        offsets = fn.random.uniform(values=[float(v) for v in range(-pad, pad + 1)], shape=[2])
        out = crop.dali(src, size, device, offsets, decoded=True)
        pipe.set_outputs(_flip_normalize(out, dtype, layout), lab.gpu() if device == "gpu" else lab)
    return pipe


def timed_batches(next_batch, warmup, batches, sync=None):
    """Runs ``warmup`` then ``batches`` calls of ``next_batch()`` (which returns the samples in the
    batch it fetched); returns ``(samples, seconds)`` of the timed part, wall clock."""
    for _ in range(warmup):
        next_batch()
    if sync:
        sync()
    start = time.perf_counter()
    samples = sum(next_batch() for _ in range(batches))
    if sync:
        sync()
    return samples, time.perf_counter() - start

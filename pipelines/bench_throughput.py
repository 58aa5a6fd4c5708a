#!/usr/bin/env python
"""Loader throughput, side by side in one run on the same data: plain DALI vs dali-ipmix vs the paper's
per-image PIL loader, for IPMix and (``--methods``) AugMix and PixMix. ``--preset imagenet`` (default): JPEG files, random-resized-crop + flip, mixing
picture resize 256/224 + crop, 224 px. ``--preset cifar``: the CIFAR row set, samples in memory (see
below), pad-4 random crop + flip, mixing picture resize 36/32 + crop, 32 px.

Rows (``--rows``, comma-separated; default all):

    dali-gpu    plain DALI ResNet-50 input pipeline, no IPMix: readers.file, decoders.image (mixed),
                random_resized_crop, crop_mirror_normalize (random flip, CHW float32)
    ipmix-gpu   dali_ipmix.training_pipeline(device="gpu") (CuPy IPMix), read through IPMixIterator
    dali-cpu    the plain pipeline on the CPU (decoders.image on the CPU)
                (``--plain-decode fused``: decoders.image_random_crop + resize instead, the way
                dali-ipmix's own pipeline decodes, for a like-for-like and faster baseline)
    ipmix-cpu   dali_ipmix.training_pipeline(device="cpu") (NumPy IPMix)
    ipmix-native-gpu, ipmix-native-cpu
                the same pipelines with the native DALI operator (fn.ipmix(backend="native"): the C++
                plugin, built by scripts/setup.sh); the ipmix-gpu/-cpu rows keep backend="python"
    pil         torch DataLoader with --workers processes, per image: PIL decode, torchvision
                RandomResizedCrop + flip, mixing picture Resize + RandomCrop, dali_ipmix.reference.
                ipmix_reference per view, to tensor + normalise

Methods (``--methods``, comma-separated from ipmix,augmix,pixmix; default ipmix): every ipmix-* and
pil row runs once per method, with the method's paper setting for the preset (``IPMixConfig`` /
``AugMixConfig`` / ``PixMixConfig.from_preset``). IPMix rows keep the names above; the others are named
after their method: ``augmix-native-cpu-jsd``, ``pixmix-gpu``, ..., and ``augmix-pil-jsd`` /
``pixmix-pil``, the per-image loader running the port of the authors' per-image code
(``dali_ipmix.reference.augmix_reference`` / ``pixmix_reference``; AugMix reads no mixing picture, in
the pipeline as in the loader). The plain DALI rows run once.

CIFAR row set (``--preset cifar``): every row reads the same samples in memory (uint8 (N, 32, 32, 3)):
the CIFAR pickle folder ``--data`` (``cifar-10-batches-py`` / ``cifar-100-python``, its training split,
read as ``train_cifar.py`` reads it), else ``--cifar-count`` generated CIFAR-like images (default
50,000, the size of CIFAR's training set). The dali rows are then plain DALI from memory
(``external_source`` of random batches of the array, the CIFAR preset's crop operators: resize to 32,
pad 4, random 32 x 32 window; random flip and normalisation in ``crop_mirror_normalize``; no IPMix);
the ipmix rows ``training_pipeline(images=, labels=, preset="cifar")``, as ``train_cifar.py`` feeds
it; the pil rows the same per-image loader on the arrays (each worker maps them from an ``.npy`` copy
in ``--cache-dir``), with the CIFAR preset's torchvision crop (``RandomCrop(32, padding=4)``), flip and
mixing picture ``Resize(36)`` + ``RandomCrop(32)``, IPMix with the CIFAR setting. ``--batch-size 128``
is the paper's CIFAR batch.

The IPMix rows come as ``-jsd`` (clean + 2 views per sample) and/or plain (1 view) per ``--jsd``.
Units: ``samples/s`` = JPEGs consumed per second (one sample = one training example; in JSD mode its
clean image and two views); ``images/s`` = output images per second (3 x samples/s in JSD mode). Ratios
(``x dali-gpu``, ``x dali-cpu``, ``x pil``) divide samples/s, the rate a training loop sees, by that of
the plain DALI GPU / CPU row and of the PIL row of the same method with the same JSD mode.

Timing: wall clock around ``--batches`` whole batches after warm-up batches (``--warmup``; GPU rows
``--gpu-warmup``, since CuPy compiles its kernels in the first batches), with torch.cuda.synchronize()
before and after on the GPU. The PIL row warms up at least one batch per worker and times a multiple of
the worker count, so that every worker is in its steady state. GPU rows run at ``--batch-size``
(default 256); CPU rows (DALI CPU, PIL) at ``--cpu-batch-size`` (default 32, so that a CPU row takes
seconds, not minutes, on a small machine; pass 256 for a like-for-like batch). Without a CUDA GPU (or
without CuPy for ipmix-gpu) the GPU rows are skipped and marked so. A failing row prints its error; the
others still run.

    python pipelines/bench_throughput.py                               # generated data, all rows
    python pipelines/bench_throughput.py --data train/ --mixing fractals/ --jsd on --json out.json
    python pipelines/bench_throughput.py --rows dali-gpu,ipmix-gpu,pil --cpu-batch-size 256 --workers 16
    python pipelines/bench_throughput.py --preset cifar --batch-size 128 --cpu-batch-size 128   # CIFAR rows
    python pipelines/bench_throughput.py --rows dali-cpu,ipmix-native-cpu,pil --jsd on --methods ipmix,augmix,pixmix

Generated data (no ``--data``): ``--gen-count`` JPEGs of about ``--gen-size`` (default 400x350, about
100 KB each at quality 95: scikit-image sample photos, random crops, plus film-grain noise so they
compress like camera photos), in 4 class folders; no ``--mixing``: ``--gen-mixing-count`` fractals. Both
are made once into ``--cache-dir`` and reused.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys

import numpy as np

from dali_ipmix.config import METHODS as config_methods, method_config as config_of
from dali_ipmix.presets import get_preset
from dali_ipmix._scripts.benchdata import (NpyImages, PILIPMixDataset, add_data_args, check_floors, dump_json,
                                           endless, environment, finish_row, list_arg, log, memory_samples,
                                           plain_dali_pipeline, plain_memory_pipeline, prepare_data,
                                           prepare_mixing, run_guarded, text_table, timed_batches, versions)

ROW_KINDS = ("dali-gpu", "ipmix-native-gpu", "ipmix-gpu", "dali-cpu", "ipmix-native-cpu", "ipmix-cpu",
             "pil")
PRESET_NAMES = ("imagenet", "cifar")
METHODS = tuple(config_methods)


def method_config(method, preset, jsd):
    """The paper setting of ``method`` for ``preset``, with ``jsd``."""
    return config_of(method, preset, jsd=jsd)


def row_name(kind, method, jsd):
    """``kind`` with the method in it (IPMix and the plain rows keep theirs), ``-jsd`` in JSD mode:
    ``augmix-native-cpu-jsd``, ``pixmix-pil``, ``ipmix-cpu``, ``dali-cpu``."""
    if method is None or method == "ipmix":
        base = kind
    elif kind == "pil":
        base = f"{method}-pil"
    else:
        base = method + kind[len("ipmix"):]
    return base + ("-jsd" if jsd else "")


# ------------------------------------------------------------------------------------------- data
@functools.lru_cache(maxsize=None)
def describe_data(files):
    """Count, mean file size (KB) and mean width x height of (up to 64 of) ``files``, for the log."""
    from PIL import Image
    sample = files[:: max(1, len(files) // 64)]
    dims = np.array([Image.open(f).size for f in sample], float)
    kb = np.mean([os.path.getsize(f) for f in sample]) / 1000
    return dict(count=len(files), mean_kb=round(float(kb), 1), mean_width=int(round(dims[:, 0].mean())),
                mean_height=int(round(dims[:, 1].mean())))


# ----------------------------------------------------------------------------------------- rows
def plan_rows(args):
    """The rows to run, in table order: dicts with name, kind, method (None for plain DALI), device,
    jsd, batch."""
    jsd_modes = {"on": (True,), "off": (False,), "both": (True, False)}[args.jsd]
    rows = []
    for kind in ROW_KINDS:
        if kind not in args.rows:
            continue
        device = "gpu" if kind.endswith("-gpu") else "cpu"
        batch = args.batch_size if device == "gpu" else args.cpu_batch_size
        plain = kind.startswith("dali")
        for method in (None,) if plain else args.methods:
            for jsd in (False,) if plain else jsd_modes:
                rows.append(dict(name=row_name(kind, method, jsd), kind=kind, method=method, device=device,
                                 jsd=jsd, batch=batch, status="pending"))
    return rows


def skip_reason(row, env):
    """Why ``row`` cannot run here, or '' if it can."""
    if row["device"] == "gpu" and env["gpu"] is None:
        return env["why_no_gpu"]
    if row["kind"] == "ipmix-gpu" and env["cupy"] is None:
        return env.get("why_no_cupy", "no CuPy")
    if row["kind"].startswith("ipmix-native"):
        from dali_ipmix import native
        if not native.available():
            return "native DALI plugin not built (run ./scripts/setup.sh)"
    return ""


def run_plain_dali(row, ctx):
    from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy
    if ctx["preset"] == "cifar":   # from memory, endless: no reader, no epochs
        pipe = plain_memory_pipeline(ctx["images"], ctx["labels"], row["batch"], ctx["size"], row["device"],
                                     ctx["threads"], preset="cifar")
        it = DALIGenericIterator([pipe], ["images", "label"])
        try:
            return _measure_iterator(row, ctx, endless(it, lambda out: out[0]["label"].shape[0]))
        finally:
            del it, pipe
    pipe = plain_dali_pipeline(ctx["files"].files, ctx["files"].labels, row["batch"], ctx["size"],
                               row["device"], ctx["threads"], ctx["plain_decode"])
    it = DALIGenericIterator([pipe], ["images", "label"], reader_name="Reader",
                             last_batch_policy=LastBatchPolicy.FILL, auto_reset=True)
    try:
        return _measure_iterator(row, ctx, endless(it, lambda out: out[0]["label"].shape[0]))
    finally:
        del it, pipe


def run_ipmix(row, ctx):
    from dali_ipmix.iterator import IPMixIterator
    from dali_ipmix.graphs import training_pipeline
    backend = "native" if row["kind"].startswith("ipmix-native") else "python"
    pipe = _ipmix_pipeline(row, ctx, training_pipeline, backend)
    it = IPMixIterator(pipe, last_batch_policy="fill")
    try:
        return _measure_iterator(row, ctx, endless(it, lambda out: out[1].shape[0]))
    finally:
        del it, pipe


def _ipmix_pipeline(row, ctx, training_pipeline, backend):
    preset = ctx["preset"]
    data = dict(images=ctx["images"], labels=ctx["labels"]) if preset == "cifar" else \
        dict(file_root=ctx["data_root"])
    config = method_config(row["method"], preset, row["jsd"])
    return training_pipeline(**data, mixing_root=ctx["mixing_root"] if config.needs_mixing else None,
                             batch_size=row["batch"], preset=preset, size=ctx["size"], config=config,
                             device=row["device"], num_threads=ctx["threads"], seed=0, backend=backend)


def _measure_iterator(row, ctx, next_batch):
    sync = None
    if row["device"] == "gpu":
        import torch
        sync = torch.cuda.synchronize
    warmup = ctx["gpu_warmup"] if row["device"] == "gpu" else ctx["warmup"]
    return timed_batches(next_batch, warmup, ctx["batches"], sync)


def run_pil(row, ctx):
    from torch.utils.data import DataLoader, RandomSampler
    from dali_ipmix.files import list_mixing_images
    workers = ctx["workers"]
    # Every worker must have delivered a batch before timing starts, and the timed batches must be a
    # multiple of the worker count: else the timing catches batches prepared during warm-up.
    per_round = max(1, workers)
    warmup = max(ctx["warmup"], per_round)
    batches = -(-ctx["batches"] // per_round) * per_round
    if batches != ctx["batches"]:
        log(f"{row['name']}: timing {batches} batches (a multiple of {per_round} workers)")
    config = method_config(row["method"], ctx["preset"], row["jsd"])
    mixing = list_mixing_images(ctx["mixing_root"], validate="none") if config.needs_mixing else []
    if ctx["preset"] == "cifar":   # the workers map the arrays from the .npy copy: no pickled copy each
        ds = PILIPMixDataset(None, ctx["labels"], mixing, ctx["size"], config, "cifar",
                             images=NpyImages(ctx["npy_path"]))
    else:
        ds = PILIPMixDataset(ctx["files"].files, ctx["files"].labels, mixing, ctx["size"], config)
    # Sampling with replacement gives one long epoch: no worker restarts inside the timing.
    total = (warmup + batches + 2 * per_round) * row["batch"]
    loader = DataLoader(ds, batch_size=row["batch"], num_workers=workers, drop_last=True,
                        sampler=RandomSampler(ds, replacement=True, num_samples=total),
                        prefetch_factor=2 if workers else None,
                        multiprocessing_context="forkserver" if workers else None)
    it = iter(loader)
    try:
        return timed_batches(lambda: next(it)[1].shape[0], warmup, batches)
    finally:
        del it   # shuts the workers down


RUNNERS = {"dali-gpu": run_plain_dali, "dali-cpu": run_plain_dali, "ipmix-gpu": run_ipmix,
           "ipmix-cpu": run_ipmix, "ipmix-native-gpu": run_ipmix, "ipmix-native-cpu": run_ipmix,
           "pil": run_pil}
# Execution order: GPU rows first (device time is scarce; a failure shows early). The PIL loader's
# workers start with "forkserver", so no worker is forked from a process with CUDA or DALI threads.
RUN_ORDER = ("dali-gpu", "ipmix-native-gpu", "ipmix-gpu", "dali-cpu", "ipmix-native-cpu", "ipmix-cpu",
             "pil")


def run_row(row, ctx, env):
    """Fills ``row`` in place: status ok/skipped/error, samples/s, images/s (or the error)."""
    reason = skip_reason(row, env)
    if reason:
        row.update(status="skipped", note=reason)
        log(f"{row['name']}: skipped ({reason})")
        return
    log(f"{row['name']}: batch {row['batch']}, running...")
    result = run_guarded(row, row["name"], lambda: RUNNERS[row["kind"]](row, ctx))
    if result is None:
        return
    samples, seconds = result
    finish_row(row, samples, seconds)
    log(f"{row['name']}: {row['samples_per_s']:.1f} samples/s ({samples} samples in {seconds:.2f} s)")


def add_ratios(rows):
    """Adds ``x_dali_gpu``, ``x_dali_cpu``, ``x_pil``: samples/s over the baseline row's (or None)."""
    rate = {r["name"]: r.get("samples_per_s") for r in rows if r["status"] == "ok"}
    for r in rows:
        own = r.get("samples_per_s")
        pil = row_name("pil", r.get("method"), r["jsd"])
        for col, base in (("x_dali_gpu", "dali-gpu"), ("x_dali_cpu", "dali-cpu"), ("x_pil", pil)):
            r[col] = own / rate[base] if own and rate.get(base) else None


#: Targets of the JSD rows: (row, ratio column, baseline row, goal).
TARGETS = (("ipmix-gpu-jsd", "x_dali_gpu", "dali-gpu", 0.8), ("ipmix-gpu-jsd", "x_pil", "pil-jsd", 30.0),
           ("ipmix-native-gpu-jsd", "x_dali_gpu", "dali-gpu", 0.9),
           ("ipmix-native-cpu-jsd", "x_dali_cpu", "dali-cpu", 0.4),
           ("ipmix-native-cpu-jsd", "x_pil", "pil-jsd", 3.0))


def targets(rows, preset="imagenet"):
    """The targets of the JSD rows, where both rows of a ratio ran: list of text lines (the ImageNet
    row set's; the CIFAR row set has none of its own)."""
    if preset != "imagenet":
        return []
    by = {r["name"]: r for r in rows}
    out = []
    for name, col, base, goal in TARGETS:
        r = by.get(name)
        if r and r["status"] == "ok" and r.get(col) is not None:
            verdict = "met" if r[col] >= goal else "NOT met"
            out.append(f"target {name} >= {goal:g} x {base}: {r[col]:.2f} x ({verdict})")
    return out


def format_table(rows):
    """The table as text: one line per row, numbers in samples/s, images/s and ratios."""
    cols = [("row", 21), ("device", 6), ("jsd", 4), ("batch", 5), ("samples/s", 10), ("images/s", 10),
            ("x dali-gpu", 10), ("x dali-cpu", 10), ("x pil", 8)]
    return text_table(cols, rows, lambda r, num: [
        r["name"], r["device"], "on" if r["jsd"] else "off", str(r["batch"]), num("samples_per_s", 1),
        num("images_per_s", 1), num("x_dali_gpu", 3), num("x_dali_cpu", 3), num("x_pil", 2)])


def write_json(path, meta, rows):
    """The table so far (and the run's settings) as JSON at ``path`` (nothing when ``path`` is None)."""
    dump_json(path, {"meta": meta, "rows": rows, "targets": targets(rows, meta.get("preset", "imagenet"))})


# ------------------------------------------------------------------------------------------- CLI
def build_parser():
    cores = os.cpu_count() or 1
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = ap.add_argument
    a("--rows", type=list_arg(ROW_KINDS, "row(s) "), default=list(ROW_KINDS), help=f"comma-separated, from {','.join(ROW_KINDS)}")
    a("--jsd", choices=("on", "off", "both"), default="both", help="IPMix/PIL rows with JSD on, off or both")
    a("--methods", type=list_arg(METHODS, "method(s) "), default=["ipmix"],
      help=f"comma-separated, from {','.join(METHODS)}: the ipmix-* and pil rows run once per method "
           "(default ipmix)")
    a("--batch-size", type=int, default=256, help="samples per batch on the GPU rows (default 256)")
    a("--cpu-batch-size", type=int, default=32,
      help="samples per batch on the CPU rows, DALI CPU and PIL (default 32: CPU IPMix runs at tens of "
           "samples/s per core, so a 256 batch would take minutes on a small machine)")
    a("--preset", choices=PRESET_NAMES, default="imagenet",
      help="imagenet: JPEG files, 224 px (default); cifar: the CIFAR row set, samples in memory, 32 px")
    a("--size", type=int, default=None, help="output height = width in pixels (default: the preset's, 224 / 32)")
    a("--cifar-count", type=int, default=50000,
      help="--preset cifar without --data: generated CIFAR-like samples in memory (default 50000)")
    a("--workers", type=int, default=cores,
      help=f"DataLoader workers of the PIL row and DALI threads of every row (default all cores: {cores})")
    a("--batches", type=int, default=20, help="timed batches per row (default 20)")
    a("--warmup", type=int, default=3, help="untimed batches before timing, CPU rows (default 3)")
    a("--gpu-warmup", type=int, default=50,
      help="untimed batches before timing, GPU rows (default 50: CuPy compiles kernels in the first ones)")
    a("--plain-decode", choices=("full", "fused"), default="full",
      help="plain DALI rows: full = decoders.image + random_resized_crop (default); fused = "
           "decoders.image_random_crop + resize: region decoding, as dali-ipmix's own pipeline does with its keyed window (a faster baseline)")
    a("--json", help="also write the table (and the run's settings) to this JSON file")
    add_data_args(ap)
    return ap


def _check_args(ap, args):
    if args.size is None:
        args.size = get_preset(args.preset).size
    check_floors(ap, args, ("batch_size", "cpu_batch_size", "size", "batches", "gen_count", "gen_mixing_count",
                            "cifar_count"), ("workers", "warmup", "gpu_warmup"))


def main(argv=None):
    ap = build_parser()
    args = ap.parse_args(argv)
    _check_args(ap, args)
    env = environment()
    log("versions:", " ".join(f"{k} {v}" for k, v in versions().items()), f"| cores {os.cpu_count()}")
    log("GPU:", env["gpu"] or f"none - GPU rows will be skipped: {env['why_no_gpu']}")
    ctx = dict(preset=args.preset, size=args.size, threads=max(1, args.workers), workers=args.workers,
               batches=args.batches, warmup=args.warmup, gpu_warmup=args.gpu_warmup,
               plain_decode=args.plain_decode)
    if args.preset == "cifar":
        images, labels, npy_path, what = memory_samples(args.data, args.cache_dir, args.cifar_count)
        data_root, mixing_root = args.data, prepare_mixing(args)
        data_info = dict(count=len(images), height=images.shape[1], width=images.shape[2], source=what)
        log(f"data: {what}; mixing: {mixing_root}")
        ctx.update(images=images, labels=labels, npy_path=npy_path)
    else:
        data_root, mixing_root = prepare_data(args)
        from dali_ipmix.files import list_image_folder
        files = list_image_folder(data_root, validate="none")
        data_info = describe_data(files.files)
        log(f"data: {data_root}: {data_info['count']} files, mean {data_info['mean_kb']} KB, about "
            f"{data_info['mean_width']}x{data_info['mean_height']}; mixing: {mixing_root}")
        ctx.update(data_root=data_root, files=files)
    ctx.update(mixing_root=mixing_root)
    rows = plan_rows(args)
    meta = dict(vars(args), data=data_root, mixing=mixing_root, data_info=data_info, gpu=env["gpu"],
                cores=os.cpu_count(), versions=versions(), command=" ".join(sys.argv))
    for kind in RUN_ORDER:
        for row in rows:
            if row["kind"] == kind:
                run_row(row, ctx, env)
                add_ratios(rows)
                write_json(args.json, meta, rows)   # after each row: a killed run keeps what it measured

    print()
    source = "JPEGs/s" if args.preset == "imagenet" else "training samples/s (from memory)"
    print(f"throughput at {args.size} px, {args.preset} preset; samples/s = {source} (a JSD sample is "
          f"clean + 2 views), images/s = output images/s; ratios on samples/s")
    print(format_table(rows))
    for line in targets(rows, args.preset):
        print(line)
    if env["gpu"] is None:
        print(f"GPU rows skipped: {env['why_no_gpu']}")
    if args.json:
        log(f"wrote {args.json}")
    return 0 if all(r["status"] != "error" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

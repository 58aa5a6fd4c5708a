#!/usr/bin/env python
"""End to end: how fast does a model train when IPMix + JSD feeds it, against data that costs nothing?

For each model, the training step rate (samples/s over ``--steps`` timed steps after ``--warmup``
untimed ones, wall clock, the device synchronised at both ends) of one and the same step: SGD
(nesterov momentum), float16 autocast + GradScaler and channels_last on CUDA (as
``pipelines/train_imagenet.py`` / ``train_cifar.py`` train), cross-entropy, or with JSD the model on
the (3N, 3, H, W) batch of (clean, view 1, view 2) and the JSD loss, fed by:

    synthetic, synthetic-jsd  random tensors made once, already on the device (channels_last, float16
                              under AMP): the ceiling of the plain / the JSD step
    dali                      plain DALI, no IPMix, cross-entropy step. resnet50: readers.file, mixed
                              decode, random_resized_crop, flip, normalise (the benchmarks' plain
                              pipeline); wrn: the same samples in memory through an external_source,
                              the CIFAR preset's crop (pad 4, random 32 x 32), flip, normalise
    ipmix-native-jsd          dali_ipmix.training_pipeline (JSD, native operator) through IPMixIterator
    ipmix-python-jsd          the same with backend="python" (the python_function backend; CuPy on a GPU)
    pil-jsd                   the paper's per-image loader (PIL decode and crop, PIL IPMix per view,
                              benchdata.PILIPMixDataset) in a torch DataLoader with ``--workers``
                              processes, pinned memory, copied to the device each step

The DALI rows run on the step's device (GPU pipelines on CUDA, CPU pipelines on the CPU) and hand out
channels_last batches without a copy (``layout="NHWC"``, float16 under AMP, then ``permute``), as a
training script should use them. Models: ``resnet50`` (torchvision, 1,000 classes) at
``--imagenet-size`` px (224) on the ImageNet preset (JPEG files), and ``wrn-40-4`` (the paper's
CIFAR model) at 32 px on the CIFAR preset (samples in memory, as ``train_cifar.py`` feeds them).
``--tiny`` replaces both by a WRN-10-1 (a few thousand weights): the CPU smoke run the tests make.

Table: per model and feed, samples/s (a JSD sample is its clean image plus two views: three images
through the model), images/s through the model, ``x ceiling`` (samples/s over the synthetic row of
the same step: ``synthetic`` for the dali row, ``synthetic-jsd`` for the JSD rows) and ``x pil-jsd``.
The pil row warms up at least one batch per worker and times whole rounds of the workers (steps
rounded up to a multiple of ``--workers``), as bench_throughput's pil row does. A failing row prints
its error; the others still run. ``--json`` is rewritten after every row.

Data: ``--data`` (an ImageFolder tree of JPEGs for resnet50) / ``--cifar-data`` (a CIFAR pickle
folder for wrn) or generated ones (the benchmarks' JPEG set and ``--cifar-count`` CIFAR-like arrays)
in ``--cache-dir``; ``--mixing`` or generated fractals. The JPEG list is repeated so that one epoch
covers warm-up and timing (an epoch's end would cost a pipeline refill that a real epoch of a
million images does not pay at every 10th step).

    python pipelines/bench_training.py                                    # both models, every feed
    python pipelines/bench_training.py --models wrn-40-4 --feeds synthetic,ipmix-native --steps 50
    python pipelines/bench_training.py --tiny --device cpu --steps 2 --warmup 1 --batch-size 4   # smoke
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile

from dali_ipmix._scripts.benchdata import (NpyImages, PILIPMixDataset, add_data_args, check_floors, dump_json,
                                           finish_row, list_arg, log, memory_samples, plain_dali_pipeline,
                                           plain_memory_pipeline, prepare_data, prepare_mixing, run_guarded,
                                           text_table, timed_batches, versions)

MODELS = ("resnet50", "wrn-40-4")
#: --feeds name -> the rows it makes (feed, jsd step)
FEEDS = {"synthetic": (("synthetic", False), ("synthetic", True)), "dali": (("dali", False),),
         "ipmix-native": (("ipmix-native", True),), "ipmix-python": (("ipmix-python", True),),
         "pil": (("pil", True),)}
#: model -> the preset of its data, crops and IPMix setting
MODEL_PRESET = {"resnet50": "imagenet", "wrn-40-4": "cifar"}
#: The issue's end-to-end targets on a lent H100/H200 (not --tiny): (model, row, column, goal).
TARGETS = (("resnet50", "ipmix-native-jsd", "x_ceiling", 0.95), ("wrn-40-4", "ipmix-native-jsd", "x_ceiling", 0.85),
           ("resnet50", "ipmix-native-jsd", "x_pil", 2.0), ("wrn-40-4", "ipmix-native-jsd", "x_pil", 2.0))
JSD_WEIGHT = 12.0   # the training scripts' default


# ------------------------------------------------------------------------------------------ model
def build_model(name, tiny, num_classes):
    from dali_ipmix._scripts.models import WideResNet, model_builder
    if tiny:
        return WideResNet(10, 1, num_classes)
    return model_builder(name)(num_classes)


class Trainer:
    """One model, its optimizer and scaler, and the training step of the training scripts."""

    def __init__(self, name, tiny, num_classes, device):
        import torch
        self.torch, self.device = torch, device
        self.cuda = device.type == "cuda"
        self.amp = self.cuda
        model = build_model(name, tiny, num_classes).to(device)
        if self.cuda:
            torch.backends.cudnn.benchmark = True
            model = model.to(memory_format=torch.channels_last)
        self.model = model.train()
        self.opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4, nesterov=True)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)

    @property
    def dtype(self):
        return self.torch.float16 if self.amp else self.torch.float32

    def prepare(self, x):
        """A batch (or JSD triple) as the step takes it: on the device, channels_last on CUDA."""
        torch = self.torch
        if isinstance(x, (tuple, list)):
            return tuple(self.prepare(t) for t in x)
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.cuda else x

    def step(self, x, y, jsd):
        import torch.nn.functional as F
        from dali_ipmix.losses import jsd_loss
        torch = self.torch
        y = y.to(self.device, non_blocking=True).view(-1).long()
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
            if jsd:
                both = torch.cat(x)
                if self.cuda:
                    both = both.contiguous(memory_format=torch.channels_last)
                loss = jsd_loss(*self.model(both).chunk(3), y, weight=JSD_WEIGHT)
            else:
                loss = F.cross_entropy(self.model(x), y)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        return y.numel()


# ------------------------------------------------------------------------------------------ feeds
def nhwc(t):
    """A (N, H, W, 3) batch as an NCHW view in channels_last memory (no copy); NCHW passes through."""
    return t.permute(0, 3, 1, 2) if t.dim() == 4 and t.shape[-1] == 3 and t.shape[1] != 3 else t


def synthetic_batches(trainer, batch, size, jsd, classes):
    torch = trainer.torch
    gen = torch.Generator(device="cpu").manual_seed(0)

    def image():
        return trainer.prepare(torch.randn(batch, 3, size, size, generator=gen).to(trainer.dtype))
    x = (image(), image(), image()) if jsd else image()
    y = torch.randint(0, classes, (batch,), generator=gen).to(trainer.device)
    return lambda: (x, y), None


def dali_batches(trainer, ctx, batch):
    from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy
    device, layout, dtype = _dali_form(trainer)
    if ctx["preset"] == "cifar":
        pipe = plain_memory_pipeline(ctx["images"], ctx["labels"], batch, ctx["size"], device, ctx["threads"],
                                     preset="cifar", dtype=dtype, layout=layout[1:])
        it = DALIGenericIterator([pipe], ["images", "label"])
    else:
        pipe = plain_dali_pipeline(ctx["files"], ctx["file_labels"], batch, ctx["size"], device, ctx["threads"],
                                   decode=ctx["plain_decode"], dtype=dtype, layout=layout[1:])
        it = DALIGenericIterator([pipe], ["images", "label"], reader_name="Reader",
                                 last_batch_policy=LastBatchPolicy.DROP, auto_reset=True)

    def get(out):
        return nhwc(out[0]["images"]), out[0]["label"]
    return _endless(it, get), (it, pipe)


def ipmix_batches(trainer, ctx, batch, backend):
    from dali_ipmix import IPMixConfig
    from dali_ipmix.iterator import IPMixIterator
    from dali_ipmix.graphs import training_pipeline
    device, layout, dtype = _dali_form(trainer)
    preset = ctx["preset"]
    data = dict(images=ctx["images"], labels=ctx["labels"]) if preset == "cifar" else \
        dict(file_list=ctx["file_list"])
    pipe = training_pipeline(**data, mixing_root=ctx["mixing_root"], batch_size=batch, preset=preset,
                             size=ctx["size"], config=IPMixConfig.from_preset(preset, jsd=True),
                             device=device, num_threads=ctx["threads"], seed=0, backend=backend,
                             dtype=dtype, layout=layout, validate="none", last_batch_policy="drop")
    it = IPMixIterator(pipe, last_batch_policy="drop")

    def get(out):
        (clean, v1, v2), y = out
        return (nhwc(clean), nhwc(v1), nhwc(v2)), y
    return _endless(it, get), (it, pipe)


def pil_batches(trainer, ctx, batch, total_steps):
    from torch.utils.data import DataLoader, RandomSampler
    from dali_ipmix import IPMixConfig
    from dali_ipmix.files import list_mixing_images
    mixing = list_mixing_images(ctx["mixing_root"], validate="none")
    config = IPMixConfig.from_preset(ctx["preset"], jsd=True)
    if ctx["preset"] == "cifar":
        ds = PILIPMixDataset(None, ctx["labels"], mixing, ctx["size"], config, "cifar",
                             images=NpyImages(ctx["npy_path"]))
    else:
        ds = PILIPMixDataset(ctx["files"], ctx["file_labels"], mixing, ctx["size"], config)
    workers = ctx["workers"]
    # Sampling with replacement: one long epoch, no worker restarts inside the timing.
    sampler = RandomSampler(ds, replacement=True, num_samples=(total_steps + 2 * max(1, workers)) * batch)
    loader = DataLoader(ds, batch_size=batch, num_workers=workers, drop_last=True, sampler=sampler,
                        pin_memory=trainer.cuda, prefetch_factor=2 if workers else None,
                        multiprocessing_context="forkserver" if workers else None)
    it = iter(loader)

    return lambda: next(it), (it, loader)


def _dali_form(trainer):
    """(DALI device, image layout, dtype) of the DALI rows for ``trainer``'s step."""
    if trainer.cuda:
        return "gpu", "NHWC", "float16"
    return "cpu", "NCHW", "float32"


def _endless(it, get):
    def next_batch():
        try:
            return get(next(it))
        except StopIteration:   # an epoch's end (auto_reset): the next epoch
            return get(next(it))
    return next_batch


# ------------------------------------------------------------------------------------------- rows
def plan_rows(args):
    rows = []
    for model in args.models:
        for feed in args.feeds:
            for kind, jsd in FEEDS[feed]:
                name = kind + ("-jsd" if jsd else "")
                rows.append(dict(model=model, name=name, feed=kind, jsd=jsd, status="pending"))
    return rows


def skip_reason(row, env):
    if row["feed"] == "ipmix-native":
        from dali_ipmix import native
        if not native.available():
            return "native DALI plugin not built (run ./scripts/setup.sh)"
    if row["feed"] == "ipmix-python" and env["device"].type == "cuda" and env["cupy"] is None:
        return env.get("why_no_cupy", "no CuPy")
    return ""


def measure(trainer, next_batch, jsd, warmup, steps):
    """(samples, seconds) of ``steps`` training steps after ``warmup`` ones, each on a new batch."""
    def one():
        x, y = next_batch()
        return trainer.step(trainer.prepare(x), y, jsd)
    return timed_batches(one, warmup, steps, trainer.torch.cuda.synchronize if trainer.cuda else None)


def run_row(row, trainer, ctx, args, env):
    reason = skip_reason(row, env)
    if reason:
        row.update(status="skipped", note=reason)
        log(f"{row['model']} {row['name']}: skipped ({reason})")
        return
    batch, warmup, steps = args.batch_size, args.warmup, args.steps
    if row["feed"] == "pil" and args.workers > 1:
        # Each worker makes whole batches, so they arrive in rounds of one per worker: every worker
        # must have delivered before timing starts, and the timed steps must be whole rounds (as in
        # bench_throughput's pil row), else the timing catches batches made during the warm-up.
        warmup = max(warmup, args.workers)
        steps = -(-steps // args.workers) * args.workers
    log(f"{row['model']} {row['name']}: batch {batch}, {warmup} + {steps} steps...")
    label = f"{row['model']} {row['name']}"

    def run():
        if row["feed"] == "synthetic":
            next_batch, _keep = synthetic_batches(trainer, batch, ctx["size"], row["jsd"], ctx["classes"])
        elif row["feed"] == "dali":
            next_batch, _keep = dali_batches(trainer, ctx, batch)
        elif row["feed"] in ("ipmix-native", "ipmix-python"):
            next_batch, _keep = ipmix_batches(trainer, ctx, batch, row["feed"].split("-")[1])
        else:
            next_batch, _keep = pil_batches(trainer, ctx, batch, warmup + steps)
        # returning drops the iterator, the pipeline and the loader's workers (_keep holds them till then)
        return measure(trainer, next_batch, row["jsd"], warmup, steps)

    result = run_guarded(row, label, run, trainer.torch.cuda.empty_cache if trainer.cuda else None)
    if result is None:
        return
    samples, seconds = result
    finish_row(row, samples, seconds, batch=batch, steps=steps, warmup=warmup)
    log(f"{row['model']} {row['name']}: {row['samples_per_s']:.1f} samples/s "
        f"({samples} samples in {seconds:.2f} s)")


def add_ratios(rows):
    """``x_ceiling``: samples/s over the synthetic row of the same model and step; ``x_pil``: over
    the model's pil-jsd row (JSD rows only)."""
    rate = {(r["model"], r["name"]): r.get("samples_per_s") for r in rows if r["status"] == "ok"}
    for r in rows:
        own = r.get("samples_per_s")
        ceiling = rate.get((r["model"], "synthetic-jsd" if r["jsd"] else "synthetic"))
        pil = rate.get((r["model"], "pil-jsd")) if r["jsd"] else None
        r["x_ceiling"] = own / ceiling if own and ceiling else None
        r["x_pil"] = own / pil if own and pil else None


def targets(rows, tiny):
    if tiny:
        return []
    by = {(r["model"], r["name"]): r for r in rows}
    out = []
    for model, name, col, goal in TARGETS:
        r = by.get((model, name))
        if r and r["status"] == "ok" and r.get(col) is not None:
            what = "the synthetic ceiling" if col == "x_ceiling" else "pil-jsd"
            out.append(f"target {model} {name} >= {goal:g} x {what}: {r[col]:.2f} x "
                       f"({'met' if r[col] >= goal else 'NOT met'})")
    return out


def format_table(rows, sizes, tiny=False):
    """The table as text; with ``tiny`` the model column says which slot the WRN-10-1 stands in for."""
    cols = [("model", 15 if tiny else 9), ("px", 4), ("feed", 17), ("step", 4), ("batch", 5), ("samples/s", 10),
            ("images/s", 10), ("x ceiling", 9), ("x pil-jsd", 9)]
    cols.insert(5, ("steps", 5))
    return text_table(cols, rows, lambda r, num: [
        r["model"] + (" (tiny)" if tiny else ""), str(sizes[r["model"]]), r["name"], "jsd" if r["jsd"] else "ce",
        str(r.get("batch", "-")), str(r.get("steps", "-")), num("samples_per_s", 1), num("images_per_s", 1),
        num("x_ceiling", 3), num("x_pil", 2)])


def write_json(path, meta, rows, tiny):
    dump_json(path, {"meta": meta, "rows": rows, "targets": targets(rows, tiny)})


# ------------------------------------------------------------------------------------------- data
def model_context(model, args, tmp):
    """What the rows of ``model`` read: preset, size, data, mixing set, classes."""
    preset = MODEL_PRESET[model]
    ctx = dict(preset=preset, threads=max(1, args.workers), workers=args.workers, plain_decode=args.plain_decode)
    total = (args.warmup + args.steps + 8) * args.batch_size
    if preset == "cifar":
        images, labels, npy_path, what = memory_samples(args.cifar_data, args.cache_dir, args.cifar_count)
        ctx.update(size=32, images=images, labels=labels, npy_path=npy_path, mixing_root=prepare_mixing(args),
                   classes=int(labels.max()) + 1, what=what)
    else:
        from dali_ipmix.files import list_image_folder
        data_root, mixing_root = prepare_data(args)
        found = list_image_folder(data_root, validate="none")
        repeat = -(-total // len(found.files))   # one epoch covers warm-up and timing
        files, labels = list(found.files) * repeat, list(found.labels) * repeat
        file_list = os.path.join(tmp, "files.txt")
        with open(file_list, "w") as f:
            f.writelines(f"{p} {lab}\n" for p, lab in zip(files, labels))
        ctx.update(size=args.imagenet_size, files=files, file_labels=labels, file_list=file_list,
                   mixing_root=mixing_root, classes=1000,
                   what=f"{data_root}: {len(found.files)} JPEGs, listed {repeat} times")
    if args.tiny:
        ctx["classes"] = 10
    return ctx


# -------------------------------------------------------------------------------------------- CLI
def build_parser():
    import torch
    cores = os.cpu_count() or 1
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = ap.add_argument
    a("--models", type=list_arg(MODELS), default=list(MODELS), help=f"comma-separated, from {','.join(MODELS)}")
    a("--feeds", type=list_arg(tuple(FEEDS)), default=list(FEEDS),
      help=f"comma-separated, from {','.join(FEEDS)} (synthetic makes both ceilings)")
    a("--steps", type=int, default=50, help="timed training steps per row (default 50; the table wants >= 30)")
    a("--warmup", type=int, default=20, help="untimed steps before timing (default 20: cuDNN autotuning, "
                                             "DALI's first batches, the loader's workers)")
    a("-b", "--batch-size", type=int, default=128, help="samples per step, both models (default 128; a JSD "
                                                        "step puts 3x as many images through the model)")
    a("--workers", type=int, default=cores,
      help=f"DataLoader workers of the pil row and DALI threads of the DALI rows (default all cores: {cores})")
    a("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    a("--tiny", action="store_true", help="a WRN-10-1 for both models: the CPU smoke run, not a measurement")
    a("--imagenet-size", type=int, default=224, help="resnet50's input edge in pixels (default 224)")
    a("--cifar-data", help="CIFAR pickle folder for wrn-40-4 (default: generated CIFAR-like samples)")
    a("--cifar-count", type=int, default=50000, help="generated CIFAR-like samples (default 50000)")
    a("--plain-decode", choices=("full", "fused"), default="full",
      help="resnet50's dali row: full = decoders.image + random_resized_crop (default, as bench_throughput); "
           "fused = decoders.image_random_crop + resize (region decoding, as dali-ipmix decodes)")
    a("--json", help="also write the table (and the run's settings) here")
    return add_data_args(ap)


def main(argv=None):
    ap = build_parser()
    args = ap.parse_args(argv)
    check_floors(ap, args, ("steps", "batch_size", "imagenet_size", "cifar_count", "gen_count", "gen_mixing_count"),
                 ("warmup", "workers"))
    import torch
    from dali_ipmix._scripts.benchdata import environment
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda but no CUDA GPU is visible; pass --device cpu")
    device = torch.device("cuda", torch.cuda.current_device()) if args.device == "cuda" else torch.device("cpu")
    env = dict(environment(), device=device)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    log("versions:", " ".join(f"{k} {v}" for k, v in versions().items()), f"| cores {os.cpu_count()}")
    log(f"device: {gpu or 'cpu'}; AMP + channels_last: {device.type == 'cuda'}; "
        f"models: {'WRN-10-1 (--tiny)' if args.tiny else ', '.join(args.models)}")
    if args.steps < 30:
        log(f"{args.steps} timed steps: fewer than the 30 a table row needs (a smoke run)")
    rows = plan_rows(args)
    meta = dict(vars(args), device=str(device), gpu=gpu, cores=os.cpu_count(), versions=versions(),
                command=" ".join(sys.argv), data={})
    sizes = {}
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            ctx = model_context(model, args, tmp)
            sizes[model] = ctx["size"]
            meta["data"][model] = dict(what=ctx["what"], mixing=ctx["mixing_root"], size=ctx["size"])
            log(f"{model}: {ctx['what']}; mixing: {ctx['mixing_root']}")
            trainer = Trainer(model, args.tiny, ctx["classes"], device)
            for row in rows:
                if row["model"] == model:
                    run_row(row, trainer, ctx, args, env)
                    add_ratios(rows)
                    write_json(args.json, meta, rows, args.tiny)
            del trainer
            gc.collect()
    print()
    print(f"training step rate on {gpu or 'the CPU'} ({'AMP, channels_last' if device.type == 'cuda' else 'float32'}"
          f"{', tiny model WRN-10-1' if args.tiny else ''}), {args.steps} timed steps after {args.warmup} "
          f"(pil rows: whole rounds of the {args.workers} workers); "
          f"samples/s (a JSD sample = clean + 2 views: 3 images through the model); x ceiling = over the "
          f"synthetic row of the same step")
    print(format_table(rows, sizes, args.tiny))
    for line in targets(rows, args.tiny):
        print(line)
    if args.json:
        log(f"wrote {args.json}")
    return 0 if all(r["status"] != "error" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

"""What ``pipelines/train_imagenet.py`` and ``train_cifar.py`` share: CLI, DDP setup, loaders, the loop, checkpoints.

Both scripts train an image classifier from an ImageFolder-style ``train``/``val`` pair of folders (one
sub-folder per class, labels in sorted folder order). They differ only in how they get there (CIFAR
converts its pickles once), the model, the preset ("imagenet" or "cifar") and the defaults.
``--method`` picks the augmentation of the family the pipeline runs (IPMix, AugMix or PixMix), each
with its paper's setting for the preset; AugMix reads no mixing set.

Conventions: ``--batch-size`` is per process (global batch = batch size x world size; scale ``--lr``
with it). With ``--jsd`` a batch is ``((clean, view1, view2), labels)``, three ``(N, 3, H, W)`` float
tensors normalised by the ImageNet mean/std, and the model sees them as one ``(3N, 3, H, W)`` batch (as
the reference code does, so BatchNorm statistics cover all three). The learning rate follows a
per-step cosine computed from (epoch, step), so a checkpoint needs no scheduler state.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
from pathlib import Path

import torch
import torch.distributed as torch_dist
import torch.nn.functional as F

from ..config import METHODS, method_config as paper_config
from ..constants import IMAGENET_MEAN, IMAGENET_STD
from ..losses import jsd_loss
from ..presets import get_preset
from . import checkpoints
from .checkpoints import plain_args


# ----------------------------------------------------------------------------------------- CLI
def add_common_args(parser: argparse.ArgumentParser, **defaults) -> argparse.ArgumentParser:
    """Adds the options both scripts take; ``defaults`` overrides their default values by dest name."""
    a = parser.add_argument
    a("--loader", choices=("dali-ipmix", "pytorch"), default="dali-ipmix",
      help="dali-ipmix: the DALI IPMix pipeline; pytorch: torchvision ImageFolder + standard transforms")
    a("--method", choices=tuple(METHODS), default="ipmix",
      help="dali-ipmix: the augmentation, with its paper's setting for the preset (ipmix: IPMix; augmix: "
           "AugMix, no mixing set; pixmix: PixMix)")
    a("--mixing-root", help="folder of mixing pictures (e.g. `dali-ipmix fractals DIR`); needed by "
                            "dali-ipmix with --method ipmix or pixmix")
    a("--mixing-cache", choices=("auto", "host", "device", "off"), default="auto",
      help="dali-ipmix: decode the mixing pictures once and keep them in memory (auto: in host memory "
           "up to 4 GiB decoded; host: any size; device: in GPU memory; off: decode one per sample)")
    a("--validate-files", choices=("header", "full", "none"), default="header",
      help="dali-ipmix: check every image file before training (none: trust a known-good data set)")
    a("--jsd", action=argparse.BooleanOptionalAction, default=False,
      help="train on (clean, view1, view2) with the JSD consistency loss")
    a("--jsd-weight", type=float, default=12.0, help="weight of the consistency term")
    a("--epochs", type=int, default=90)
    a("-b", "--batch-size", type=int, default=256, help="samples per process and step")
    a("--lr", type=float, default=0.1, help="peak learning rate (for the global batch)")
    a("--warmup-epochs", type=float, default=0.0, help="linear warm-up before the cosine decay")
    a("--momentum", type=float, default=0.9)
    a("--wd", "--weight-decay", dest="weight_decay", type=float, default=1e-4)
    a("-j", "--workers", type=int, default=4, help="DALI threads or DataLoader workers per process")
    a("--seed", type=int, default=None,
      help="reproducible run (order, augmentation, initial weights); without it the sample order is "
           "seed 0's on every rank (disjoint shards) and the augmentation is random per rank")
    a("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    a("--amp", action=argparse.BooleanOptionalAction, default=True, help="float16 autocast (CUDA only)")
    a("--channels-last", action=argparse.BooleanOptionalAction, default=True,
      help="NHWC memory format for the model and inputs (CUDA only)")
    a("--output", default="runs/train", help="checkpoints and metrics.jsonl go here (rank 0)")
    a("--resume", default="", help="checkpoint to resume from ('auto' = OUTPUT/checkpoint.pth if present)")
    a("-e", "--evaluate", action="store_true",
      help="only evaluate (the --resume checkpoint) on the validation folder; needs no mixing set")
    a("--max-steps", type=int, default=0, help="stop after this many training steps in all (smoke runs)")
    a("-p", "--print-freq", type=int, default=50)
    a("--dump-labels", default="", help="debug: each rank writes the labels it trained on to DIR/rank{R}.json")
    parser.set_defaults(**defaults)
    return parser


def _pipeline_summary(loader) -> str:
    """``", IPMix backend B, mixing pictures cached (X MiB)"`` for a dali-ipmix loader (``", no mixing
    set"`` for a method that reads none), else ``""``."""
    source = getattr(loader, "source", None)   # an IPMixIterator's PipelineSource
    if source is None or source.backend is None:
        return ""
    config = source.config
    if config is not None and not config.needs_mixing:
        return f", IPMix backend {source.backend}, no mixing set"
    cache = (f"cached ({source.mixing_cache_bytes / 2**20:.1f} MiB)" if source.mixing_cache_bytes
             else "decoded per sample")
    return f", IPMix backend {source.backend}, mixing pictures {cache}"


def method_config(args, preset: str):
    """The config of ``--method`` for ``preset`` (the paper's setting), with ``--jsd``."""
    return paper_config(args.method, preset, jsd=args.jsd)


#: --mixing-cache -> training_pipeline(mixing_cache=...)
MIXING_CACHE_CHOICES = {"auto": None, "host": True, "device": "device", "off": False}


# ------------------------------------------------------------------------------------ processes
@dataclasses.dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str) -> Dist:
    """Reads torchrun's RANK / WORLD_SIZE / LOCAL_RANK; joins the group (nccl on CUDA, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda but no CUDA GPU is visible; pass --device cpu")
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world > 1:
        torch_dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Dist(rank, world, local_rank, dev)


def log(d: Dist, *msg):
    if d.main:
        print(*msg, flush=True)


def all_sum(d: Dist, values) -> list:
    """Sums a list of numbers over all ranks (float64)."""
    t = torch.tensor(values, dtype=torch.float64, device=d.device)
    if d.world > 1:
        torch_dist.all_reduce(t)
    return t.tolist()


# ----------------------------------------------------------------------------------------- data
def class_names(folder) -> list:
    names = sorted(p.name for p in Path(folder).iterdir() if p.is_dir())
    if not names:
        raise SystemExit(f"{folder}: no class sub-folders (expected ImageFolder layout: {folder}/CLASS/IMAGE)")
    return names


def make_loaders(args, d: Dist, train_dir, val_dir, preset: str, size: int, start_epoch: int = 0,
                 arrays=None):
    """(train, val) iterables of ``(images, labels)`` / ``((clean, v1, v2), labels)`` batches, one shard per rank.

    ``preset``: a :mod:`dali_ipmix.presets` name; both loaders follow its record (training crop +
    flip, validation transform). ``size``: training crop edge in pixels. ``arrays``: ``{"train":
    (images, labels), "val": (...)}`` in memory (uint8 (N, H, W, 3)) instead of the folders (the
    dali-ipmix loader only).
    """
    if args.loader == "pytorch":
        return _torch_loaders(args, d, train_dir, val_dir, preset, size)
    from ..iterator import IPMixIterator
    from ..graphs import training_pipeline, validation_pipeline
    config = method_config(args, preset)
    if not args.mixing_root and not args.evaluate and config.needs_mixing:
        raise SystemExit(f"--loader dali-ipmix --method {args.method} needs --mixing-root (a folder of "
                         "mixing pictures)")
    gpu = d.device.type == "cuda"
    if args.mixing_cache == "device" and not gpu:
        raise SystemExit("--mixing-cache device keeps the mixing pictures in GPU memory: it needs --device cuda")
    common = dict(batch_size=args.batch_size, preset=preset, size=size, device="gpu" if gpu else "cpu",
                  device_id=d.local_rank if gpu else None, num_threads=args.workers,
                  shard_id=d.rank, num_shards=d.world,
                  # Under AMP the first conv runs in float16 anyway: halve the batch's memory traffic.
                  dtype="float16" if gpu and args.amp else "float32",
                  # The same seed (or None) on every rank: the pipeline derives one shared sample order
                  # from it (seed 0's for None), which keeps the shards disjoint, and keys every
                  # sample's augmentation by (seed, epoch, position): the same on any number of ranks.
                  seed=args.seed, validate=args.validate_files)
    def data(split, folder):
        if arrays is None:
            return dict(file_root=str(folder))
        return dict(images=arrays[split][0], labels=arrays[split][1])
    val = validation_pipeline(**data("val", val_dir), **common)
    # partial: each validation image is scored exactly once; drop: every rank runs the same number of
    # full training steps, which DDP needs.
    val = IPMixIterator(val, last_batch_policy="partial")
    if args.evaluate:
        return None, val
    # start_epoch: a resumed run reads the samples an uninterrupted one reads in that epoch.
    mixing_root = args.mixing_root if config.needs_mixing else None   # AugMix reads none
    train = training_pipeline(**data("train", train_dir), mixing_root=mixing_root, config=config,
                              start_epoch=start_epoch,
                              mixing_cache=MIXING_CACHE_CHOICES[args.mixing_cache], **common)
    return IPMixIterator(train, last_batch_policy="drop"), val


def _torch_loaders(args, d: Dist, train_dir, val_dir, preset, size):
    from torchvision import datasets, transforms as T
    if args.jsd:
        raise SystemExit("--jsd needs IPMix views: use --loader dali-ipmix")
    if args.method != "ipmix":
        raise SystemExit(f"--method {args.method} runs in the DALI pipeline: use --loader dali-ipmix "
                         "(--loader pytorch applies no augmentation of the family)")
    recipe = get_preset(preset)
    norm = [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    train_tf = T.Compose([*recipe.train_crop.torchvision(size), T.RandomHorizontalFlip(), *norm])
    val_tf = T.Compose([*recipe.validation.torchvision(size), *norm])
    train_ds, val_ds = datasets.ImageFolder(train_dir, train_tf), datasets.ImageFolder(val_dir, val_tf)
    sampler = torch.utils.data.DistributedSampler(
        train_ds, d.world, d.rank, shuffle=True, seed=args.seed or 0, drop_last=True) if d.world > 1 else None
    # Validation: a strided, unpadded shard so every image counts exactly once over all ranks.
    val_ds = torch.utils.data.Subset(val_ds, range(d.rank, len(val_ds), d.world))
    kw = dict(batch_size=args.batch_size, num_workers=args.workers, pin_memory=d.device.type == "cuda",
              persistent_workers=args.workers > 0)
    train = torch.utils.data.DataLoader(train_ds, shuffle=sampler is None, sampler=sampler, drop_last=True, **kw)
    return train, torch.utils.data.DataLoader(val_ds, shuffle=False, **kw)


def _to(d: Dist, x, channels_last: bool):
    if isinstance(x, (tuple, list)):
        return type(x)(_to(d, t, channels_last) for t in x)
    x = x.to(d.device, non_blocking=True)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


# ------------------------------------------------------------------------------------ training
def cosine_lr(args, epoch: int, step: int, steps_per_epoch: int) -> float:
    """Learning rate at ``step`` of ``epoch``: linear warm-up, then cosine from ``args.lr`` to 0."""
    t = epoch + step / max(steps_per_epoch, 1)
    if t < args.warmup_epochs:
        return args.lr * t / args.warmup_epochs
    frac = (t - args.warmup_epochs) / max(args.epochs - args.warmup_epochs, 1e-8)
    return 0.5 * args.lr * (1 + math.cos(math.pi * min(frac, 1.0)))


def train_one_epoch(args, d: Dist, state, loader, epoch: int, dump=None) -> dict:
    """One pass over this rank's shard; returns {"train_loss", "steps", "samples_per_s"} (over all ranks)."""
    model, opt, scaler = state["model"], state["optimizer"], state["scaler"]
    model.train()
    n_steps, steps, images, start = len(loader), 0, 0, time.perf_counter()
    loss_sum = torch.zeros((), device=d.device)  # summed on the device: no GPU sync per step
    cl = args.channels_last and d.device.type == "cuda"
    for i, (x, y) in enumerate(loader):
        if args.max_steps and state["step"] >= args.max_steps:
            break
        x, y = _to(d, x, cl), y.to(d.device, non_blocking=True).view(-1).long()
        if dump is not None:
            dump.append(y.tolist())
        for g in opt.param_groups:
            g["lr"] = cosine_lr(args, epoch, i, n_steps)
        with torch.autocast(d.device.type, dtype=torch.float16, enabled=state["amp"]):
            if args.jsd:
                logits = model(torch.cat(x)).chunk(3)
                loss = jsd_loss(*logits, y, weight=args.jsd_weight)
            else:
                loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        state["step"] += 1
        steps, loss_sum, images = steps + 1, loss_sum + loss.detach().float(), images + y.numel()
        if d.main and (i % args.print_freq == 0 or i == n_steps - 1):
            log(d, f"epoch {epoch} [{i + 1}/{n_steps}] loss {loss.item():.4f} lr {opt.param_groups[0]['lr']:.5f}")
    total_loss, total_steps, total_images = all_sum(d, [loss_sum.item(), steps, images])
    return {"train_loss": total_loss / max(total_steps, 1), "steps": steps,
            "samples_per_s": total_images / (time.perf_counter() - start)}


@torch.no_grad()
def evaluate(args, d: Dist, model, loader, amp: bool) -> dict:
    """Top-1 / top-5 accuracy (%) and mean cross-entropy over the whole validation folder (all ranks)."""
    model.eval()
    cl = args.channels_last and d.device.type == "cuda"
    sums = [0.0, 0.0, 0.0, 0.0]  # loss sum, top-1 hits, top-5 hits, images
    for x, y in loader:
        if isinstance(x, (tuple, list)):  # a JSD-mode iterator: evaluate the clean images
            x = x[0]
        x, y = _to(d, x, cl), y.to(d.device).view(-1).long()
        with torch.autocast(d.device.type, dtype=torch.float16, enabled=amp):
            logits = model(x).float()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = top == y[:, None]
        sums = [s + v for s, v in zip(sums, (F.cross_entropy(logits, y, reduction="sum").item(),
                                             hits[:, :1].sum().item(), hits.sum().item(), y.numel()))]
    loss, top1, top5, n = all_sum(d, sums)
    return {"val_loss": loss / max(n, 1), "acc1": 100 * top1 / max(n, 1), "acc5": 100 * top5 / max(n, 1),
            "val_images": int(n)}


# ---------------------------------------------------------------------------------- the driver
def run(args, build_model, train_dir, val_dir, preset: str, size: int, arrays=None, names=None):
    """Trains ``build_model(num_classes)`` on ``train_dir`` and validates on ``val_dir`` every epoch;
    or on ``arrays`` (``{"train": (images, labels), "val": ...}``, class ``names``) from memory."""
    d = setup_distributed(args.device)
    if args.seed is not None:  # DDP broadcasts rank 0's initial weights anyway
        torch.manual_seed(args.seed)
    if arrays is None:
        names = class_names(train_dir)
        if class_names(val_dir) != names:
            raise SystemExit(f"{val_dir} and {train_dir} have different class folders")
    model = build_model(len(names)).to(d.device)
    cuda = d.device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
        if args.channels_last:
            model = model.to(memory_format=torch.channels_last)
    # No weight decay on BatchNorm / bias parameters would be a recipe change; the reference decays all.
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                          weight_decay=args.weight_decay, nesterov=True)
    amp = args.amp and cuda
    state = {"model": model, "optimizer": opt, "scaler": torch.amp.GradScaler("cuda", enabled=amp),
             "amp": amp, "epoch": 0, "step": 0, "best_acc1": 0.0}
    out = Path(args.output)
    resume = str(out / "checkpoint.pth") if args.resume == "auto" else args.resume
    if resume and Path(resume).is_file():
        load_checkpoint(resume, state, d)
        log(d, f"resumed from {resume}: epoch {state['epoch']}, step {state['step']}")
    elif args.resume and args.resume != "auto":
        raise SystemExit(f"--resume {resume}: no such file")
    if d.world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[d.local_rank] if cuda else None)
    state["model"] = model
    train_loader, val_loader = make_loaders(args, d, train_dir, val_dir, preset, size, state["epoch"], arrays)
    if args.evaluate:
        log(d, json.dumps(evaluate(args, d, model, val_loader, amp)))
        return state
    _check_equal_lengths(d, train_loader)
    log(d, f"{preset}: {len(names)} classes{' (from memory)' if arrays is not None else ''}, {d.world} "
           f"process(es) on {d.device}, loader {args.loader}, "
           + (f"method {args.method}, " if args.loader == "dali-ipmix" else "")
           + f"jsd {args.jsd}, {len(train_loader)} steps/epoch of {args.batch_size} per process"
           + _pipeline_summary(train_loader))
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
    dumps = []
    for epoch in range(state["epoch"], args.epochs):
        if hasattr(getattr(train_loader, "sampler", None), "set_epoch"):
            train_loader.sampler.set_epoch(epoch)
        dumps.append([])
        stats = train_one_epoch(args, d, state, train_loader, epoch, dumps[-1] if args.dump_labels else None)
        stats.update(evaluate(args, d, model, val_loader, amp))
        stopped = bool(args.max_steps) and state["step"] >= args.max_steps
        complete = stats["steps"] == len(train_loader) or not stopped
        # An epoch cut short by --max-steps is run again from its start after --resume.
        state["epoch"] = epoch + 1 if complete else epoch
        state["best_acc1"] = max(state["best_acc1"], stats["acc1"])
        stats.update(epoch=epoch, step=state["step"], lr=opt.param_groups[0]["lr"])
        log(d, json.dumps(stats))
        if d.main:
            with open(out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(stats) + "\n")
            save_checkpoint(out, state, args, is_best=stats["acc1"] >= state["best_acc1"])
        if stopped:
            break
    if args.dump_labels:
        Path(args.dump_labels).mkdir(parents=True, exist_ok=True)
        (Path(args.dump_labels) / f"rank{d.rank}.json").write_text(
            json.dumps({"rank": d.rank, "world": d.world, "epochs": dumps}))
    if d.world > 1:
        torch_dist.destroy_process_group()
    return state


def _check_equal_lengths(d: Dist, loader):
    """DDP needs the same number of steps on every rank, or the all-reduce of the longer rank hangs."""
    lengths = [0] * d.world
    lengths[d.rank] = len(loader)
    lengths = [int(n) for n in all_sum(d, lengths)]  # every rank sees every length: one decision for all
    if len(set(lengths)) > 1:
        raise SystemExit(f"steps per epoch differ between ranks ({lengths}); use drop-last batching")
    if lengths[0] == 0:
        raise SystemExit("the training shard is smaller than one batch: lower --batch-size")


# --------------------------------------------------------------------------------- checkpoints
def save_checkpoint(out: Path, state, args, is_best: bool):
    """Writes OUTPUT/checkpoint.pth atomically (and model_best.pth); rank 0 only."""
    model = state["model"].module if hasattr(state["model"], "module") else state["model"]
    ckpt = {"epoch": state["epoch"], "step": state["step"], "best_acc1": state["best_acc1"],
            "model": model.state_dict(), "optimizer": state["optimizer"].state_dict(),
            "scaler": state["scaler"].state_dict(), "args": plain_args(args)}
    tmp = out / "checkpoint.pth.tmp"
    torch.save(ckpt, tmp)
    os.replace(tmp, out / "checkpoint.pth")  # never leave a half-written checkpoint behind
    if is_best:
        torch.save({"model": ckpt["model"], "epoch": ckpt["epoch"], "acc1": state["best_acc1"]},
                   out / "model_best.pth")


def load_checkpoint(path, state, d: Dist):
    """Resumes ``state`` from ``path`` (loaded with ``weights_only=True``: see :mod:`.checkpoints`)."""
    ckpt = checkpoints.load(path, map_location=d.device)
    state["model"].load_state_dict(ckpt["model"])
    state["optimizer"].load_state_dict(ckpt["optimizer"])
    state["scaler"].load_state_dict(ckpt["scaler"])
    for k in ("epoch", "step", "best_acc1"):
        state[k] = ckpt[k]

#!/usr/bin/env python
"""Does device memory stay flat over many batches of the dali-ipmix GPU pipeline?

Runs ``training_pipeline(device="gpu")`` (ImageNet preset, JSD on by default) through ``IPMixIterator``
for ``--batches`` batches (default 1000) and, every ``--interval`` batches, prints memory in MiB:

    device     used memory of the whole GPU, from torch.cuda.mem_get_info() (total - free): what DALI's
               pools, CuPy's pool, torch's caching allocator and the CUDA context hold together
    smi        the same from nvidia-smi (memory.used), when nvidia-smi is there
    torch      torch.cuda.memory_allocated / memory_reserved (the iterator's output tensors)
    cupy       CuPy's default memory pool, used_bytes / total_bytes (IPMix's work arrays)
    rss        this process's resident host memory (VmRSS)

Verdict: after ``--warmup`` batches (pools grow to their working size, CuPy compiles kernels), the
growth = max over the last quarter of the samples - max over the first quarter, for the device (on the
CPU: rss). ``flat`` if growth <= ``--tolerance-mib`` (default 64 MiB), else ``GROWS``; ``inconclusive``
with fewer than 4 samples after warm-up. ``--max-seconds`` stops early (and says so), to fit a time
budget. Exit status 0 when flat, 1 otherwise. Without a GPU (or with ``--device cpu``) it runs the CPU
pipeline and checks host memory (rss) instead, which also makes the script testable on a CPU machine.

    python pipelines/gpu_memory_check.py --batches 1000 --json out/memory.json
    python pipelines/gpu_memory_check.py --device cpu --batches 20 --batch-size 8 --size 64 --interval 2 --warmup 4
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from dali_ipmix._scripts.benchdata import add_data_args, check_floors, endless, environment, log, prepare_data
from dali_ipmix.presets import IMAGENET

MIB = 2 ** 20


def _rss_mib():
    """Resident set size of this process in MiB (Linux /proc), or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _smi_mib(index=0):
    """nvidia-smi's memory.used of GPU ``index`` in MiB, or None (no nvidia-smi, or it failed)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits",
                              "-i", str(index)], capture_output=True, text=True, timeout=20)
        return float(out.stdout.strip().splitlines()[0]) if out.returncode == 0 else None
    except Exception:
        return None


def probe(device):
    """One memory sample, MiB per metric (None where unavailable); synchronises the GPU first so
    that in-flight work has allocated what it will."""
    sample = {"rss": _rss_mib()}
    if device != "gpu":
        return sample
    import torch
    torch.cuda.synchronize()
    free, total = torch.cuda.mem_get_info()
    sample.update(device=(total - free) / MIB, smi=_smi_mib(torch.cuda.current_device()),
                  torch_alloc=torch.cuda.memory_allocated() / MIB,
                  torch_reserved=torch.cuda.memory_reserved() / MIB)
    try:
        import cupy
        pool = cupy.get_default_memory_pool()
        sample.update(cupy_used=pool.used_bytes() / MIB, cupy_total=pool.total_bytes() / MIB)
    except Exception:
        sample.update(cupy_used=None, cupy_total=None)
    return sample


def growth(samples, key, warmup):
    """``(growth MiB or None, post-warm-up sample count)`` for metric ``key``: max of the last quarter
    of the post-warm-up samples minus max of the first quarter (maxima: pools step up and down)."""
    values = [s[key] for s in samples if s["batch"] >= warmup and s.get(key) is not None]
    if len(values) < 4:
        return None, len(values)
    q = max(1, len(values) // 4)
    return max(values[-q:]) - max(values[:q]), len(values)


def verdict(samples, key, warmup, tolerance):
    g, n = growth(samples, key, warmup)
    if g is None:
        return dict(metric=key, verdict="inconclusive", growth_mib=None, samples=n)
    return dict(metric=key, verdict="flat" if g <= tolerance else "GROWS", growth_mib=round(g, 1),
                samples=n)


def _fmt(v):
    return "-" if v is None else f"{v:.0f}"


def run(args, device):
    """Runs the pipeline, sampling memory; returns ``(samples, batches_done, seconds, stopped_early)``."""
    from dali_ipmix import IPMixConfig
    from dali_ipmix.iterator import IPMixIterator
    from dali_ipmix.graphs import training_pipeline

    data_root, mixing_root = prepare_data(args)
    pipe = training_pipeline(data_root, mixing_root=mixing_root, batch_size=args.batch_size,
                             preset=IMAGENET.name, size=args.size, config=IPMixConfig.imagenet(jsd=args.jsd),
                             device=device, num_threads=args.threads, seed=0)
    it = IPMixIterator(pipe, last_batch_policy="fill")
    next_batch = endless(it, lambda out: out[1].shape[0])
    keys = ("device", "smi", "torch_alloc", "torch_reserved", "cupy_used", "cupy_total", "rss")
    keys = keys if device == "gpu" else ("rss",)
    print(f"{'batch':>6s} {'s':>7s} {'samples/s':>9s} " + " ".join(f"{k:>14s}" for k in keys)
          + "   (MiB)", flush=True)
    samples, start, done, stopped = [], time.perf_counter(), 0, False
    last_t, last_n, seen = start, 0, 0
    for b in range(1, args.batches + 1):
        seen += next_batch()
        done = b
        out_of_time = args.max_seconds and time.perf_counter() - start > args.max_seconds
        if b == 1 or b % args.interval == 0 or b == args.batches or out_of_time:
            s = dict(probe(device), batch=b, seconds=round(time.perf_counter() - start, 2))
            # The first batch was prefetched while the pipeline was built: no rate for it.
            rate = "-" if b == 1 else f"{(seen - last_n) / max(1e-9, time.perf_counter() - last_t):.0f}"
            last_t, last_n = time.perf_counter(), seen
            samples.append(s)
            print(f"{b:>6d} {s['seconds']:>7.1f} {rate:>9s} " + " ".join(f"{_fmt(s.get(k)):>14s}" for k in keys),
                  flush=True)
        if out_of_time:
            stopped = b < args.batches
            break
    seconds = time.perf_counter() - start
    del it, pipe
    return samples, done, seconds, stopped


def build_parser():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = ap.add_argument
    a("--batches", type=int, default=1000, help="batches to run (default 1000)")
    a("--batch-size", type=int, default=256, help="samples per batch (default 256)")
    a("--size", type=int, default=IMAGENET.size, help="output height = width in pixels (default: the ImageNet preset's)")
    a("--jsd", action=argparse.BooleanOptionalAction, default=True, help="JSD mode (default on)")
    a("--interval", type=int, default=50, help="batches between memory samples (default 50)")
    a("--warmup", type=int, default=100,
      help="batches left out of the verdict (default 100): pools grow and kernels compile first")
    a("--tolerance-mib", type=float, default=64.0, help="allowed growth in MiB (default 64)")
    a("--max-seconds", type=float, default=0, help="stop after this many seconds (default 0: no limit)")
    a("--device", choices=("auto", "gpu", "cpu"), default="auto",
      help="auto: the GPU when there is one, else the CPU pipeline (checks host memory only)")
    a("--threads", type=int, default=min(8, os.cpu_count() or 1), help="DALI CPU threads (default min(8, cores))")
    a("--json", help="also write the samples and the verdict to this JSON file")
    return add_data_args(ap)


def main(argv=None):
    ap = build_parser()
    args = ap.parse_args(argv)
    check_floors(ap, args, ("batches", "batch_size", "size", "interval", "threads"))
    env = environment()
    device = args.device if args.device != "auto" else ("gpu" if env["gpu"] else "cpu")
    if device == "gpu" and env["gpu"] is None:
        ap.error(f"--device gpu: {env['why_no_gpu']}")
    log(f"memory check on {env['gpu'] if device == 'gpu' else 'the CPU (no GPU: host memory only)'}: "
        f"{args.batches} batches of {args.batch_size} at {args.size} px, JSD {'on' if args.jsd else 'off'}")
    samples, done, seconds, stopped = run(args, device)
    if stopped:
        log(f"stopped early after {done} of {args.batches} batches ({seconds:.0f} s > --max-seconds)")
    key = "device" if device == "gpu" else "rss"
    main_v = verdict(samples, key, args.warmup, args.tolerance_mib)
    others = [verdict(samples, k, args.warmup, args.tolerance_mib)
              for k in ("smi", "cupy_total", "torch_reserved", "rss") if k != key and device == "gpu"]
    print()
    for v in [main_v] + others:
        print(f"{v['metric']:>15s}: {v['verdict']:<12s} growth {_fmt(v['growth_mib'])} MiB over "
              f"{v['samples']} samples after batch {args.warmup} (tolerance {args.tolerance_mib:g} MiB)")
    print(f"VERDICT: memory ({key}) {main_v['verdict']} over {done} batches, {seconds:.0f} s, "
          f"{done * args.batch_size / seconds:.0f} samples/s")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(dict(settings=vars(args), device=device, gpu=env["gpu"], batches_done=done,
                           seconds=round(seconds, 2), stopped_early=stopped, verdict=main_v,
                           other_metrics=others, samples=samples), f, indent=2, default=str)
        log(f"wrote {args.json}")
    return 0 if main_v["verdict"] == "flat" else 1


if __name__ == "__main__":
    sys.exit(main())

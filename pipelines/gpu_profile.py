#!/usr/bin/env python
"""Where the IPMix training pipeline's time goes: the same pipeline in variants, timed in one run.

Each variant changes one thing against the JSD training pipeline of ``training_pipeline`` (ImageNet
preset, 224 px, mixing pictures cached decoded in host memory) on the given data: the cache in GPU
memory (``mixing_cache="device"``); mixing pictures decoded per sample (``mixing_cache=False``), then
also from a PNG copy of the set (PNG is decoded on the CPU even by DALI's mixed decoder, JPEG on the
GPU); IPMix's own work (``k=1, t=0``: the operator only mixes the clean image with itself); JSD off
(one view); the backend (native operator vs the python_function route); and a ceiling without mixing
pictures at all (the IPMix node replaced by normalisation only, so DALI prunes the mixing pictures'
read and decode: what any way of supplying mixing pictures faster could reach). Rows are samples/s
after warm-up, wall clock with a device sync, batch ``--batch-size``; ``--variants`` picks some.

    python pipelines/gpu_profile.py --data DIR --mixing DIR [--device gpu] [--batches 30] [--variants cached,ceiling]
"""

import argparse
import os
import time
import warnings



KEYS = ("cached", "device", "per-sample", "png", "k1t0", "ceiling", "nojsd", "python")


def png_copy(src_dir, out_dir):
    """The pictures of ``src_dir`` re-encoded as PNG files in ``out_dir`` (once); returns out_dir."""
    from PIL import Image
    os.makedirs(out_dir, exist_ok=True)
    for name in sorted(os.listdir(src_dir)):
        target = os.path.join(out_dir, os.path.splitext(name)[0] + ".png")
        if name.lower().endswith((".png", ".jpg", ".jpeg")) and not os.path.exists(target):
            Image.open(os.path.join(src_dir, name)).convert("RGB").save(target)
    return out_dir


def without_mixing(make):
    """``make`` with ``fn.ipmix`` replaced by normalisation of the clean image (per output view): the
    mixing pictures then feed no output, and DALI leaves their read and decode out of the graph."""
    def build():
        from dali_ipmix import fn as ipx_fn, pipelines
        real = pipelines.ipmix

        def clean_only(images, mixing, *, config, normalize, **_):
            out = ipx_fn.normalize_node(images, ipx_fn.normalize_args(normalize))
            return (out, out, out) if config.jsd else out
        pipelines.ipmix = clean_only
        try:
            return make()
        finally:
            pipelines.ipmix = real
    return build


def time_pipeline(make, batches, warmup, device):
    from dali_ipmix.iterator import IPMixIterator
    it = IPMixIterator(make(), last_batch_policy="fill")
    sync = (lambda: __import__("torch").cuda.synchronize()) if device == "gpu" else (lambda: None)
    stream = iter(it)

    def next_batch():
        nonlocal stream
        try:
            return next(stream)
        except StopIteration:
            stream = iter(it)
            return next(stream)

    for _ in range(warmup):
        next_batch()
    sync()
    start = time.perf_counter()
    samples = sum(next_batch()[1].shape[0] for _ in range(batches))
    sync()
    return samples / (time.perf_counter() - start)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="ImageFolder tree of JPEGs")
    ap.add_argument("--mixing", required=True, help="folder of mixing pictures (JPEG, e.g. dali-ipmix fractals)")
    ap.add_argument("--device", default="gpu", choices=("gpu", "cpu"))
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--batches", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--variants", default="all",
                    help="comma-separated keys of the variants to run (default: all): " + ", ".join(KEYS))
    args = ap.parse_args(argv)

    from dali_ipmix import IPMixConfig
    from dali_ipmix.pipelines import training_pipeline
    keys = KEYS if args.variants == "all" else [k.strip() for k in args.variants.split(",")]
    unknown = [k for k in keys if k not in KEYS]
    if unknown:
        ap.error(f"--variants: unknown {unknown}; choose from {', '.join(KEYS)}")
    mixing = args.mixing
    mixing_png = png_copy(mixing, mixing.rstrip("/") + "_png") if "png" in keys else None

    def variant(mixing, config, backend, cache=None):
        return lambda: training_pipeline(args.data, mixing_root=mixing, batch_size=args.batch_size,
                                         preset="imagenet", size=224, config=config, device=args.device,
                                         num_threads=args.threads, seed=0, backend=backend,
                                         mixing_cache=cache)
    jsd, light = IPMixConfig.imagenet(), IPMixConfig.imagenet(k=1, t=0)
    variants = {
        "cached": ("native jsd", variant(mixing, jsd, "native")),
        "device": ("native jsd, cache in GPU memory", variant(mixing, jsd, "native", cache="device")),
        "per-sample": ("native jsd, decoded per sample", variant(mixing, jsd, "native", cache=False)),
        "png": ("  the same, PNG copy", variant(mixing_png, jsd, "native", cache=False)),
        "k1t0": ("native jsd k=1 t=0", variant(mixing, light, "native")),
        "ceiling": ("jsd outputs, no mixing pictures", without_mixing(variant(mixing, jsd, "native"))),
        "nojsd": ("native no jsd", variant(mixing, IPMixConfig.imagenet(jsd=False), "native")),
        "python": ("python jsd", variant(mixing, jsd, "python")),
    }
    variants = [variants[k] for k in keys]
    rows = []
    for name, make in variants:
        try:
            warnings.simplefilter("ignore")   # the PNG variant's format warning is the point of it
            rate = time_pipeline(make, args.batches, args.warmup, args.device)
            rows.append((name, f"{rate:10.0f}"))
        except Exception as err:   # one broken variant must not hide the others
            lines = str(err).strip().splitlines() or [""]
            rows.append((name, f"error: {type(err).__name__}: {lines[-1][:160]}"))
        print(f"[profile] {name}: {rows[-1][1].strip()}", flush=True)
    print(f"\nsamples/s, batch {args.batch_size}, {args.batches} timed batches, device {args.device}")
    for name, value in rows:
        print(f"  {name:<32s} {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python
"""Where the IPMix training pipeline's time goes: the same pipeline in variants, timed in one run.

The rows, all timed in this one process: plain DALI (the benchmarks' plain pipeline through DALI's own
iterator: the baseline the ratios are taken against; also with the training pipeline's way of
decoding, ``decoders.image_random_crop`` + resize) and the JSD training pipeline of
``training_pipeline`` (ImageNet preset, 224 px, mixing pictures cached decoded in host memory) in
variants that each change one thing: whole images decoded, then cropped (``RandomResizedCrop(decode=
"full")``, as plain DALI does) instead of decoding the crop's region only; a prefetch queue of
three batches instead of two; the normalisation as separate ``crop_mirror_normalize`` nodes after
the operator instead of fused into it; the cache in GPU memory (``mixing_cache="device"``); mixing
pictures decoded per sample (``mixing_cache=False``), then also from a PNG copy of the set (PNG is
decoded on the CPU even by DALI's mixed decoder, JPEG on the GPU); IPMix's own work (``k=1, t=0``: the
operator only mixes the clean image with itself); ceilings without mixing pictures at all (the IPMix
node replaced by normalisation only, so DALI prunes the mixing pictures' read and decode: what any
way of supplying mixing pictures faster could reach), with three outputs and with one (against plain
DALI: the cost of the Python file feed); JSD off (one view); the python_function backend. Two more
rows time the input stage alone, on the CPU, no decoding: the training pipeline's feed (paths,
labels and cached mixing pictures through ``external_source``, files read by ``fn.io.file.read``)
against plain DALI's ``fn.readers.file``. Rows are samples/s after warm-up, wall clock with a device
sync, batch ``--batch-size``; ``--variants`` picks.

    python pipelines/gpu_profile.py --data DIR --mixing DIR [--device gpu] [--batches 30] [--variants plain,cached,ceiling]
"""

import argparse
import os
import warnings



KEYS = ("plain", "plain-fused", "cached", "full-decode", "prefetch3", "unfused", "device", "per-sample", "png", "k1t0", "ceiling",
        "ceiling1", "nojsd", "python", "read-feed", "read-reader")


def png_copy(src_dir, out_dir):
    """The pictures of ``src_dir`` re-encoded as PNG files in ``out_dir`` (once); returns out_dir."""
    from PIL import Image
    os.makedirs(out_dir, exist_ok=True)
    for name in sorted(os.listdir(src_dir)):
        target = os.path.join(out_dir, os.path.splitext(name)[0] + ".png")
        if name.lower().endswith((".png", ".jpg", ".jpeg")) and not os.path.exists(target):
            Image.open(os.path.join(src_dir, name)).convert("RGB").save(target)
    return out_dir


def with_ipmix(kwargs, replace):
    """A maker of the training pipeline of ``kwargs`` whose graph has ``replace(fn.ipmix)`` (a
    function with ``fn.ipmix``'s signature) in place of the IPMix node
    (:func:`dali_ipmix.graphs.training_graph`'s ``augment``)."""
    def build():
        from dali_ipmix import graphs
        from dali_ipmix.sources import training_source
        augment = replace(graphs.ipmix)
        return graphs.pipeline_for(training_source(**kwargs),
                                   lambda source: graphs.training_graph(source, augment))
    return build


def without_mixing(kwargs):
    """The pipeline with ``fn.ipmix`` replaced by normalisation of the clean image (per output view):
    the mixing pictures then feed no output, and DALI leaves their read and decode out of the graph."""
    from dali_ipmix import fn as ipx_fn

    def clean_only(real):
        def ipmix(images, mixing, *, config, normalize, **_):
            out = ipx_fn.normalize_node(images, ipx_fn.normalize_args(normalize))
            return (out, out, out) if config.jsd else out
        return ipmix
    return with_ipmix(kwargs, clean_only)


def normalised_after(kwargs):
    """The pipeline with the normalisation taken out of ``fn.ipmix`` and done by one
    ``crop_mirror_normalize`` per output after it (the GPU pipeline before the operator fused it)."""
    from dali_ipmix import fn as ipx_fn

    def unfused(real):
        def ipmix(*args, normalize, **kwargs):
            out = real(*args, **kwargs)
            norm = ipx_fn.normalize_args(normalize)
            return tuple(ipx_fn.normalize_node(o, norm) for o in out) if isinstance(out, tuple) \
                else ipx_fn.normalize_node(out, norm)
        return ipmix
    return with_ipmix(kwargs, unfused)


def rate(next_batch, batches, warmup, device):
    """samples/s of ``batches`` calls of ``next_batch()`` (samples in the batch it fetched) after
    ``warmup`` calls; wall clock, the device synchronised at both ends."""
    from dali_ipmix._scripts.benchdata import timed_batches
    sync = (lambda: __import__("torch").cuda.synchronize()) if device == "gpu" else None
    samples, seconds = timed_batches(next_batch, warmup, batches, sync)
    return samples / seconds


def ipmix_batches(make):
    """``next_batch`` over an IPMixIterator of the pipeline ``make()`` builds (epochs roll over)."""
    from dali_ipmix._scripts.benchdata import endless
    from dali_ipmix.iterator import IPMixIterator
    return endless(IPMixIterator(make(), last_batch_policy="fill"), lambda out: out[1].shape[0])


def plain_batches(data, batch_size, device, threads, decode="full"):
    """``next_batch`` over the plain DALI pipeline of the benchmarks (full decode, random resized crop,
    flip, normalise; no IPMix) through DALI's own PyTorch iterator: the baseline, in this process.
    ``decode="fused"``: decoders.image_random_crop + resize instead: region decoding, as the training
    pipeline does (it decodes its keyed window with decoders.image_slice)."""
    from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy
    from dali_ipmix._scripts.benchdata import endless, plain_dali_pipeline
    from dali_ipmix.files import list_image_folder
    files = list_image_folder(data, validate="none")
    pipe = plain_dali_pipeline(files.files, files.labels, batch_size, 224, device, threads, decode=decode)
    it = DALIGenericIterator([pipe], ["images", "label"], reader_name="Reader",
                             last_batch_policy=LastBatchPolicy.FILL, auto_reset=True)
    return endless(it, lambda out: out[0]["label"].shape[0])


def read_batches(data, mixing, batch_size, threads, feed, count):
    """``next_batch`` of a CPU pipeline that only reads the data files (no decoding): through the
    training pipeline's feed (``feed=True``: paths, labels and the decoded mixing set as
    ``training_pipeline`` hands them to ``external_source``, files read with ``fn.io.file.read``), or
    with ``fn.readers.file`` as plain DALI reads them. ``count``: the calls it will get."""
    from nvidia.dali import fn
    from nvidia.dali.pipeline import Pipeline
    from dali_ipmix import graphs
    from dali_ipmix.epochs import EpochPlan, Feed
    from dali_ipmix.files import list_image_folder, list_mixing_images
    from dali_ipmix.mixing_cache import MixingCache
    files = list_image_folder(data, validate="none")
    pipe = Pipeline(batch_size=batch_size, num_threads=threads, device_id=None, seed=0)
    if not feed:
        with pipe:
            jpegs, labels = fn.readers.file(files=list(files.files), labels=list(files.labels),
                                            shuffle_after_epoch=True, pad_last_batch=True)
            pipe.set_outputs(jpegs.shape(), labels)
        pipe.build()
        return lambda: (pipe.run(), batch_size)[1]
    mix_files = list_mixing_images(mixing, validate="none")
    plan = EpochPlan(len(files), batch_size, 0, 1, "fill", shuffle_seed=1)
    source = Feed(files.files, files.labels, mix_files, 3, mixing_cache=MixingCache.build(mix_files, 256, threads),
                  plan=plan)
    with pipe:
        paths, labels, pictures = graphs.feed_nodes(source, mixing=True)
        pipe.set_outputs(graphs.read_files(paths).shape(), labels, pictures.shape())

    def next_batch():   # the feed ends each epoch; the next one starts after the reset
        try:
            pipe.run()
        except StopIteration:
            pipe.reset()
            pipe.run()
        source.taken()
        return batch_size
    pipe.build()
    return next_batch


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
    from dali_ipmix.graphs import training_pipeline
    keys = KEYS if args.variants == "all" else [k.strip() for k in args.variants.split(",")]
    unknown = [k for k in keys if k not in KEYS]
    if unknown:
        ap.error(f"--variants: unknown {unknown}; choose from {', '.join(KEYS)}")
    mixing = args.mixing
    mixing_png = png_copy(mixing, mixing.rstrip("/") + "_png") if "png" in keys else None

    if "full-decode" in keys:
        import dataclasses
        from dali_ipmix import presets
        presets.register(dataclasses.replace(presets.IMAGENET, name="imagenet-full-decode",
                                             train_crop=presets.RandomResizedCrop(decode="full")),
                         replace=True)

    def arguments(mixing, config, backend, cache=None, preset="imagenet", prefetch=2):
        return dict(file_root=args.data, mixing_root=mixing, batch_size=args.batch_size, preset=preset,
                    size=224, config=config, device=args.device, num_threads=args.threads, seed=0,
                    backend=backend, mixing_cache=cache, prefetch_queue_depth=prefetch)

    def variant(*a, **kw):
        return lambda: ipmix_batches(lambda: training_pipeline(**arguments(*a, **kw)))

    def changed(how, *a, **kw):   # the graph with its IPMix node replaced (how: the two above)
        return lambda: ipmix_batches(how(arguments(*a, **kw)))
    jsd, light = IPMixConfig.imagenet(), IPMixConfig.imagenet(k=1, t=0)
    one = IPMixConfig.imagenet(jsd=False)
    variants = {
        "plain": ("plain DALI", lambda: plain_batches(args.data, args.batch_size, args.device,
                                                                 args.threads)),
        "plain-fused": ("  the same, decoded as ours", lambda: plain_batches(
            args.data, args.batch_size, args.device, args.threads, decode="fused")),
        "cached": ("native jsd", variant(mixing, jsd, "native")),
        "full-decode": ("  whole images decoded, then cropped", variant(mixing, jsd, "native",
                                                                       preset="imagenet-full-decode")),
        "prefetch3": ("  prefetch queue of 3 batches", variant(mixing, jsd, "native", prefetch=3)),
        "unfused": ("  normalised after the operator", changed(normalised_after, mixing, jsd, "native")),
        "device": ("native jsd, cache in GPU memory", variant(mixing, jsd, "native", cache="device")),
        "per-sample": ("native jsd, decoded per sample", variant(mixing, jsd, "native", cache=False)),
        "png": ("  the same, PNG copy", variant(mixing_png, jsd, "native", cache=False)),
        "k1t0": ("native jsd k=1 t=0", variant(mixing, light, "native")),
        "ceiling": ("jsd outputs, no mixing pictures", changed(without_mixing, mixing, jsd, "native")),
        "ceiling1": ("  one output, no mixing pictures", changed(without_mixing, mixing, one, "native")),
        "nojsd": ("native no jsd", variant(mixing, one, "native")),
        "python": ("python jsd", variant(mixing, jsd, "python")),
        "read-feed": ("input only: our feed + file read", lambda: read_batches(
            args.data, mixing, args.batch_size, args.threads, True, args.warmup + args.batches)),
        "read-reader": ("input only: fn.readers.file", lambda: read_batches(
            args.data, mixing, args.batch_size, args.threads, False, args.warmup + args.batches)),
    }
    variants = [variants[k] for k in keys]
    rows = []
    for name, batches in variants:
        try:
            warnings.simplefilter("ignore")   # the PNG variant's format warning is the point of it
            rows.append((name, rate(batches(), args.batches, args.warmup, args.device)))
        except Exception as err:   # one broken variant must not hide the others
            lines = str(err).strip().splitlines() or [""]
            rows.append((name, f"error: {type(err).__name__}: {lines[-1][:160]}"))
        value = rows[-1][1]
        print(f"[profile] {name}: {value if isinstance(value, str) else f'{value:.0f}'}", flush=True)
    base = dict(rows).get(variants[0][0]) if keys[0] == "plain" else None
    base = base if isinstance(base, float) else None
    print(f"\nsamples/s, batch {args.batch_size}, {args.batches} timed batches, device {args.device}"
          + (", x plain DALI in this run" if base else ""))
    for name, value in rows:
        if isinstance(value, str):
            print(f"  {name:<34s} {value}")
        else:
            print(f"  {name:<34s} {value:10.0f}" + (f"  {value / base:5.2f}x" if base else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The ready pipelines' DALI graphs: IPMix training and plain validation, ImageNet or CIFAR preset.

``training_pipeline(...)`` is :func:`dali_ipmix.sources.training_source` (arguments checked, data
listed, mixing set prepared, feed made: a :class:`~dali_ipmix.sources.PipelineSource`), an
:class:`IPMixPipeline` that owns it (``pipe.source``), and :func:`training_graph` built on it;
``validation_pipeline`` likewise with :func:`validation_graph`. Build a graph of your own on a source
the same way (``augment=`` replaces the IPMix node).

Output layout: images as NCHW ``float32`` (or ``float16``), RGB, normalised with the ImageNet mean and
standard deviation (``(x / 255 - mean) / std``, so values lie in about [-2.12, 2.64]); labels as int32
of shape (N, 1) (the iterator turns them into int64 (N,)). Inside, images are HWC uint8 up to IPMix.

Presets (``preset=``) are records in :mod:`dali_ipmix.presets` (the table is in ``docs/dali.md``):
each gives the default ``size`` and ``config``, the training crop, the mixing-picture preparation and
the validation transform. Both pipelines take ``preset=None`` to mean: the preset ``config`` was made
from (``config.preset``), else the default preset (ImageNet) when there is no config. A config built
by hand (``config.preset is None``) needs ``preset=`` (:func:`dali_ipmix.sources.resolve_preset`).

Every input file is listed and checked in Python before the pipeline is built (see
:mod:`dali_ipmix.files`), so bad data stops early with an error naming the file or folder.
"""

from __future__ import annotations

import sys
from typing import Callable, Optional, Union

import numpy as np
from nvidia.dali import fn, types
from nvidia.dali.pipeline import Pipeline

from .config import MixConfig
from .constants import IMAGENET_MEAN, IMAGENET_STD
from .epochs import claim_pipeline
from .fn import ipmix, normalize_args, normalize_node
from .presets import PRESETS, Preset, decoder_device
from .sources import LAYOUTS, PipelineSource, resolve_preset, training_source, validation_source

__all__ = ["training_pipeline", "validation_pipeline", "training_graph", "validation_graph", "pipeline_for",
           "IPMixPipeline", "feed_nodes", "read_files", "resolve_preset", "PRESETS", "IMAGENET_MEAN",
           "IMAGENET_STD"]


class IPMixPipeline(Pipeline):
    """The ready pipelines' ``Pipeline``: a DALI pipeline like any other, made for a
    :class:`~dali_ipmix.sources.PipelineSource` (``pipe.source``: batch size, threads, device, seed
    and prefetch queue come from it; ``pipeline_kwargs`` go to DALI's ``Pipeline``), which refuses a
    second iterator. The first iterator made on it (an :class:`IPMixIterator` or one of DALI's
    framework iterators) drives it for as long as it lives; another one, while it does, is an error
    (two drivers would share one stream of batches, each reading part of every epoch). A DALI
    iterator is recognised when its constructor first touches the pipeline (DALI's API-type check,
    before it builds or runs it)."""

    def __init__(self, source: PipelineSource, **pipeline_kwargs):
        super().__init__(batch_size=source.batch_size, num_threads=source.num_threads,
                         device_id=source.device_id, seed=source.pipeline_seed,
                         prefetch_queue_depth=source.prefetch_queue_depth, **pipeline_kwargs)
        self.source = source

    def _check_api_type_scope(self, type):
        # DALI's framework iterators enter this scope in their constructor, before anything else.
        caller = sys._getframe(1)
        if caller.f_code.co_name == "__init__":
            from nvidia.dali.plugin.base_iterator import _DaliBaseIterator
            driver = caller.f_locals.get("self")
            if isinstance(driver, _DaliBaseIterator):
                claim_pipeline(self, driver)
        return super()._check_api_type_scope(type)


def normalization(dtype, layout="NCHW"):
    """The pipelines' normalisation as ``fn.ipmix``'s ``normalize``: ImageNet mean/std on the 0..255
    scale, ``dtype``, CHW (``layout="NCHW"``) or HWC (``"NHWC"``) per sample."""
    return dict(mean=[255 * m for m in IMAGENET_MEAN], std=[255 * s for s in IMAGENET_STD],
                layout=LAYOUTS[layout], dtype=dtype)


def _normalize(images, dtype, crop=None, layout="NCHW"):
    """HWC (uint8 or float 0..255) -> CHW (or HWC) ``dtype``, ImageNet mean/std; optional centre crop
    (h, w)."""
    extra = {} if crop is None else dict(crop=crop, crop_pos_x=0.5, crop_pos_y=0.5)
    return normalize_node(images, normalize_args(normalization(dtype, layout)), **extra)


def _train_crop(jpegs, preset: Preset, size, device, draws, decoded: bool = False):
    """Decoded, cropped (the preset's recipe), flipped training images: HWC uint8 size x size, with
    the crop and the flip of each sample from its keyed ``draws`` (:class:`keys.SampleDraws`' outputs
    by name). ``decoded``: ``jpegs`` are HWC uint8 images already (in-memory samples)."""
    extra = dict(decoded=True) if decoded else {}
    images = preset.train_crop.dali(jpegs, size, device, draws["crop"], **extra)
    return fn.flip(images, horizontal=draws["flip"])


def read_files(paths):
    """File contents of each path (uint8 1-D). Plain reads, no memory map: a file changed or removed
    under a running job then gives an error naming it, never a SIGBUS, and on network file systems
    (where data sets live) a map buys nothing."""
    return fn.io.file.read(paths, dont_use_mmap=True)


def feed_nodes(feed, mixing: bool):
    """The pipeline's inputs from ``feed``: encoded paths (or with ``feed.images`` the images, HWC
    uint8), labels int32 (N, 1) [, mixing paths, or the decoded mixing pictures (HWC uint8) when the
    feed has a cache: from a second, GPU source when the cache is in GPU memory] [, with
    ``feed.draws`` a dict of the keyed draws by name (``feed.draws.outputs``)]. Each source is
    called with DALI's ``BatchInfo`` (``batch_info=True``), from which the feed computes the batch.
    Taken without a copy: the feed's arrays live as long as it (a batch's own ones while DALI may read
    them) and never change."""
    dtypes = [types.UINT8, types.INT32] + ([types.UINT8] if mixing and not feed.on_device else [])
    layout = ["HWC" if feed.images is not None else None, None]
    layout += (["HWC" if feed.mixing_cache is not None else None] if len(dtypes) == 3 else [])
    n = len(dtypes)
    if feed.draws is not None:
        dtypes += [types.to_dali_type(np.dtype(t)) for t in feed.draws.outputs.values()]
        layout += [None] * len(feed.draws.outputs)
    out = fn.external_source(source=feed, num_outputs=len(dtypes), batch=True, batch_info=True,
                             no_copy=True, dtype=dtypes, layout=layout)
    out, draws = tuple(out[:n]), out[n:]
    if mixing and feed.on_device:   # the same BatchInfo as the feed's call (Feed.device_mixing)
        out += (fn.external_source(source=feed.device_mixing, batch=True, batch_info=True, device="gpu",
                                   no_copy=True, dtype=types.UINT8, layout="HWC"),)
    return out + ((dict(zip(feed.draws.outputs, draws)),) if feed.draws is not None else ())


def _mixing_pictures(mixing, preset: Preset, size, device, draws, resize: bool = True,
                     cached: bool = False):
    """The mixing picture of each sample: HWC uint8 size x size, prepared as the preset says.

    ``mixing``: the feed's mixing paths, or with ``cached`` the pictures already decoded and resized
    (:class:`MixingCache`), which then only travel to the device. ``resize=False`` when every picture
    already has the preset's shorter side (checked from the headers): the resize is then the identity
    (as PIL's, which returns a copy) and DALI's resampling pass, a quarter of a CPU pipeline's time,
    is left out. The crop's anchor comes from the keyed ``draws``, so cached and uncached graphs take
    the same crops."""
    if cached:
        mixing = mixing.gpu() if device == "gpu" else mixing   # .gpu() of GPU data is itself
    else:
        mixing = fn.decoders.image(read_files(mixing), device=decoder_device(device), output_type=types.RGB)
        if resize:
            mixing = fn.resize(mixing, resize_shorter=preset.mixing_side(size))
    return fn.crop(mixing, crop=(size, size), crop_pos_x=draws["mixing_x"], crop_pos_y=draws["mixing_y"])


def training_graph(source: PipelineSource, augment: Optional[Callable] = None):
    """The training graph on ``source`` (call it inside ``with pipe:``); returns the output nodes,
    ``source.output_names`` in order. ``augment``: the IPMix node, a function with
    :func:`dali_ipmix.fn.ipmix`'s signature (default ``fn.ipmix``), e.g. to time a variant."""
    augment = ipmix if augment is None else augment
    recipe, size, device, feed = source.recipe, source.size, source.device, source.feed
    mixed = bool(source.mixing_files)
    nodes = feed_nodes(feed, mixing=mixed)
    paths, labels, draws = nodes[0], nodes[1], nodes[-1]
    if feed.images is None:
        images = _train_crop(read_files(paths), recipe, size, device, draws)
    else:
        images = _train_crop(paths, recipe, size, device, draws, decoded=True)
    if mixed:
        mixing = _mixing_pictures(nodes[2], recipe, size, device, draws, resize=source.mixing.resize,
                                  cached=source.mixing.cache is not None)
    else:   # a method without mixing pictures: the operator's second input is not read
        mixing = images
    # Normalised by fn.ipmix: in the native operator's final mix (no pass of its own), else by
    # crop_mirror_normalize after it; the same values either way.
    views = augment(images, mixing, config=source.config, keys=draws["ipmix_keys"], device=device,
                    num_threads=source.num_threads, backend=source.backend,
                    normalize=normalization(source.dtype, source.layout))
    views = views if source.jsd else (views,)
    return (*views, labels.gpu() if device == "gpu" else labels)


def validation_graph(source: PipelineSource):
    """The evaluation graph on ``source`` (inside ``with pipe:``): the preset's validation transform,
    normalised; returns ``(images, label)`` nodes."""
    feed, device = source.feed, source.device
    data, labels = feed_nodes(feed, mixing=False)
    if feed.images is None:
        decoded = fn.decoders.image(read_files(data), device=decoder_device(device), output_type=types.RGB)
    else:
        decoded = data.gpu() if device == "gpu" else data
    decoded, crop = source.recipe.validation.dali(decoded, source.size)
    out = _normalize(decoded, source.dtype, crop=crop, layout=source.layout)
    return out, labels.gpu() if device == "gpu" else labels


def pipeline_for(source: PipelineSource, graph: Callable, **pipeline_kwargs) -> IPMixPipeline:
    """An :class:`IPMixPipeline` owning ``source`` with the outputs of ``graph(source)``."""
    pipe = IPMixPipeline(source, **pipeline_kwargs)
    with pipe:
        pipe.set_outputs(*graph(source))
    return pipe


def training_pipeline(file_root=None, file_list=None, *, mixing_root=None, batch_size: int,
                      images: Optional[np.ndarray] = None, labels=None,
                      preset: Optional[str] = None, size: Optional[int] = None,
                      config: Optional[MixConfig] = None, device: Optional[str] = None,
                      device_id: Optional[int] = None, num_threads: Optional[int] = None,
                      seed: Optional[int] = None, shard_id: Optional[int] = None,
                      num_shards: Optional[int] = None, dtype: str = "float32",
                      validate: str = "header", on_bad_file: str = "error",
                      prefetch_queue_depth: int = 2, start_epoch: int = 0,
                      backend: Optional[str] = None, mixing_cache: Union[None, bool, str] = None,
                      last_batch_policy: str = "partial", layout: str = "NCHW",
                      **pipeline_kwargs) -> Pipeline:
    """An IPMix (or AugMix, PixMix) training pipeline (not yet built; the iterator that drives it builds it):
    :func:`dali_ipmix.sources.training_source` of the arguments, :func:`training_graph` on it.

    Args:
        file_root: ImageFolder tree (one sub-folder per class; labels in sorted folder order), or the
            folder that ``file_list`` paths are relative to.
        file_list: text file of ``<path> <label>`` lines, instead of a tree.
        images, labels: samples in memory instead of files (e.g. CIFAR from its pickles): a NumPy
            uint8 array (N, H, W, 3) of RGB images and N integer labels. No files, no decoding; the
            same crops (on the arrays), keyed augmentation, epochs and shards as files.
            ``pipe.source.files`` is empty and the classes are numbered.
        mixing_root: folder of mixing pictures (e.g. ``dali-ipmix fractals``), searched recursively;
            ``None`` only for a config that mixes with no pictures (``config.needs_mixing`` false).
        batch_size: samples per batch (per shard).
        preset: name of a :mod:`dali_ipmix.presets` record (``"imagenet"``, ``"cifar"``, ...): crop
            recipe, mixing-picture preparation and default ``size``/``config``; ``None``: the one
            ``config`` was made from, else the default preset (see the module docstring).
        size: output height = width in pixels (default: the preset's, 224 / 32).
        config: the augmentation: :class:`IPMixConfig` (default ``IPMixConfig.from_preset(preset)``),
            :class:`AugMixConfig` (no mixing pictures: ``mixing_root=None``) or :class:`PixMixConfig`.
        device: ``"gpu"`` (mixed decoding, CuPy IPMix) or ``"cpu"``; default GPU when CUDA is present.
        device_id: GPU index (default ``torch.cuda.current_device()``); ignored on the CPU.
        num_threads: DALI CPU threads (default min(8, cores)); on the CPU IPMix uses as many.
        backend: IPMix backend of :func:`dali_ipmix.fn.ipmix`: ``"native"`` (the DALI plugin),
            ``"python"``, or ``None``: native when built (``pipe.source.backend`` says which runs).
        mixing_cache: decode the mixing pictures once, when the pipeline is made, and keep them in
            host memory (:class:`dali_ipmix.mixing_cache.MixingCache`; page-locked on the GPU) instead
            of decoding one per sample: ``None`` (default) when they take at most
            ``constants.MIXING_CACHE_MAX_BYTES`` (4 GiB: about 21,000 pictures at 256 px) decoded
            and a quarter of the host memory available when the pipeline is made,
            else per sample with a warning; ``True`` always; ``"device"`` in GPU memory (GPU pipelines:
            no per-batch copy from the host); ``False`` never. Same pictures, mixing
            choice and crops either way (a GPU pipeline's cache is decoded on the CPU: within a grey
            level of the GPU decoder's); ``pipe.source.mixing_cache_bytes`` says what is held.
        seed: makes the run reproducible (sample order, mixing pictures, crops, IPMix draws; the same in
            any shard layout, batch split and thread count). ``None``:
            the sample order of ``seed=0`` (so that ranks that each pass ``None`` still read disjoint
            shards) with augmentation seeded at random per process.
        shard_id, num_shards: this process's shard; default from ``torch.distributed`` when initialised
            (rank, world size), else 0 and 1. Each epoch the shards are disjoint and cover the data
            (see :mod:`dali_ipmix.epochs` for the split and the last-batch policies).
        dtype: ``"float32"`` or ``"float16"`` for the image outputs.
        validate: file check before building: ``"header"`` (default), ``"full"`` (decode every file
            with PIL), ``"none"``; see :func:`dali_ipmix.files.check_image`. With several shards and
            ``on_bad_file="error"`` each shard checks a disjoint 1/num_shards of the data files (all
            shards together check all of them); mixing pictures are checked by every shard.
        on_bad_file: ``"error"`` (default: raise naming every bad file) or ``"skip"`` (warn per file;
            every shard then checks every file, so that all keep the same file list).
        prefetch_queue_depth, pipeline_kwargs: passed to ``nvidia.dali.Pipeline``.
        start_epoch: the epoch the first pass reads, for ``--resume``: what an uninterrupted run with
            the same seed reads in its epoch ``start_epoch``, bit for bit (samples, order, crops,
            flips, mixing pictures, IPMix draws: every draw is keyed by (seed, epoch, position), see
            :mod:`dali_ipmix.keys`; so is the augmentation in any shard layout).
        last_batch_policy: the epochs the pipeline runs when a DALI iterator or ``pipe.run()`` drives
            it: ``"partial"`` (default), ``"drop"`` or ``"fill"`` (:data:`dali_ipmix.epochs.POLICIES`);
            :class:`IPMixIterator`'s own ``last_batch_policy`` replaces it.
        layout: ``"NCHW"`` (default) or ``"NHWC"`` (channels last) image outputs.

    The pipeline drives itself: its source computes each batch from DALI's ``BatchInfo`` (epoch
    ``start_epoch + epoch_idx``, see :class:`dali_ipmix.epochs.Feed`) and ends every epoch itself,
    so :class:`IPMixIterator`, ``DALIGenericIterator([pipe], names, auto_reset=True)`` (optionally
    ``size=pipe.source.epoch_size`` with a ``"drop"`` or ``"fill"`` pipeline) and a
    ``pipe.run()`` loop with ``pipe.reset()`` at each ``StopIteration`` all read the same batches.
    One iterator per pipeline.

    Returns:
        A ``Pipeline`` with outputs ``(clean, view1, view2, label)`` when ``config.jsd`` else
        ``(images, label)``; images (N, 3, size, size) normalised (NHWC: (N, size, size, 3)), labels
        int32 (N, 1). What it reads, and how, is ``pipe.source`` (:class:`~dali_ipmix.sources.PipelineSource`:
        files, classes, epoch plan, output names, ...).
    """
    arguments = dict(locals())
    pipeline_kwargs = arguments.pop("pipeline_kwargs")
    return pipeline_for(training_source(**arguments), training_graph, **pipeline_kwargs)


def validation_pipeline(file_root=None, file_list=None, *, batch_size: int,
                        images: Optional[np.ndarray] = None, labels=None, preset: Optional[str] = None,
                        size: Optional[int] = None, device: Optional[str] = None,
                        device_id: Optional[int] = None, num_threads: Optional[int] = None,
                        seed: Optional[int] = None, shard_id: Optional[int] = None,
                        num_shards: Optional[int] = None, dtype: str = "float32",
                        validate: str = "header", on_bad_file: str = "error",
                        prefetch_queue_depth: int = 2, last_batch_policy: str = "partial",
                        layout: str = "NCHW", **pipeline_kwargs) -> Pipeline:
    """An evaluation pipeline: files in listed order, no augmentation, outputs ``(images, label)``.

    The transform is the preset's ``validation`` record (``preset=None``: the default preset, as for
    :func:`training_pipeline` without a config). ImageNet preset: resize the shorter side to
    ``round(size * 256 / 224)``, centre crop ``size``; CIFAR preset: resize to ``size x size`` (identity
    for inputs of that size). Same normalisation and arguments as :func:`training_pipeline` (``seed``
    only seeds DALI; nothing here is random). Shard
    ``s`` of ``n`` reads the files ``s, s + n, s + 2n, ...`` of the listed order, so with
    ``last_batch_policy="partial"`` (the default, here and in the iterators) every file is scored
    exactly once over all shards. Driven by any iterator, as :func:`training_pipeline`; ``images``
    / ``labels``: samples in memory, as there.
    """
    arguments = dict(locals())
    pipeline_kwargs = arguments.pop("pipeline_kwargs")
    return pipeline_for(validation_source(**arguments), validation_graph, **pipeline_kwargs)

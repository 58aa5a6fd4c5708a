"""Ready-made DALI pipelines: IPMix training and plain validation, ImageNet or CIFAR preset.

Output layout: images as NCHW ``float32`` (or ``float16``), RGB, normalised with the ImageNet mean and
standard deviation (``(x / 255 - mean) / std``, so values lie in about [-2.12, 2.64]); labels as int32
of shape (N, 1) (the iterator turns them into int64 (N,)). Inside, images are HWC uint8 up to IPMix.

Presets (``preset=``) are records in :mod:`dali_ipmix.presets` (the table is in ``docs/dali.md``):
each gives the default ``size`` and ``config``, the training crop, the mixing-picture preparation and
the validation transform. Both pipelines take ``preset=None`` to mean: the preset ``config`` was made
from (``config.preset``, set by ``IPMixConfig.from_preset`` / ``.imagenet()`` / ``.cifar()`` and kept
by ``config.replace``), else the default preset (``presets.DEFAULT_PRESET``, ImageNet) when there is
no config. A config built by hand (``config.preset is None``) needs ``preset=``: the crop recipe and
the IPMix parameters are independent choices, and the pipeline never guesses one from the other.

Every input file is listed and checked in Python before the pipeline is built (see
:mod:`dali_ipmix.files`), so bad data stops early with an error naming the file or folder.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import warnings
from typing import Optional, Sequence, Tuple, Union

import numpy as np
from nvidia.dali import fn, types
from nvidia.dali.pipeline import Pipeline

from . import checks
from .config import IPMixConfig
from .constants import IMAGENET_MEAN, IMAGENET_STD
from .epochs import POLICIES, EpochPlan, Feed, claim_pipeline, empty_epoch_warning, shard_defaults
from .files import (LabelledFiles, header_sizes, list_image_folder, list_mixing_images, read_file_list,
                    shorter_sides_equal)
from .fn import ipmix, normalize_args, normalize_node
from .keys import SampleDraws
from .mixing_cache import MIXING_CACHE_MAX_BYTES, MixingCache, estimate_bytes
from .presets import DEFAULT_PRESET, PRESETS, Preset, decoder_device, get_preset

__all__ = ["training_pipeline", "validation_pipeline", "resolve_preset", "PipelineInfo", "PRESETS",
           "IMAGENET_MEAN", "IMAGENET_STD", "IPMixPipeline"]


@dataclasses.dataclass(frozen=True)
class PipelineInfo:
    """What :class:`IPMixIterator` needs to know about a pipeline; attached as ``pipe.ipmix_info``."""
    output_names: Tuple[str, ...]   # names of the pipeline outputs, in order
    reader_name: Optional[str]      # always None: no DALI reader (the feed is an external_source);
                                    # DALI iterators take size=epoch_size or nothing (see docs/dali.md)
    jsd: bool
    num_samples: int                # samples in the whole data set (all shards)
    classes: Sequence[str]          # class name of each label (tuple, or NumberedClasses for lists)
    files: Tuple[str, ...]          # data files in reader order (before shuffling), absolute paths
    labels: Tuple[int, ...]
    mixing_files: Tuple[str, ...]   # mixing pictures (empty for validation pipelines)
    shard_id: int
    num_shards: int
    device: str
    size: int
    dtype: str
    preset: str
    config: Optional[IPMixConfig]   # None for validation pipelines
    seed: Optional[int]             # as given (None: order of seed 0, random augmentation)
    batch_size: int = 1
    shuffle_seed: Optional[int] = None   # None: listed order every epoch (validation)
    augment_seed: int = 0           # the root every per-sample draw is keyed from (random for seed=None)
    start_epoch: int = 0            # the first epoch this pipeline reads
    backend: Optional[str] = None   # fn.ipmix backend the training pipeline runs: "native" or "python"
    mixing_resize: bool = True      # False: every mixing picture already has the preset's shorter side
    mixing_cache_bytes: int = 0     # decoded mixing pictures held in memory (0: decoded per batch)
    last_batch_policy: str = "partial"   # the epochs the pipeline runs by itself (epochs.POLICIES)
    epoch_batches: int = 0          # batches of this shard per epoch under that policy
    epoch_size: int = 0             # samples of this shard per epoch (fill's repeats included)
    layout: str = "NCHW"            # image outputs: "NCHW" or "NHWC"


def resolve_preset(preset: Optional[str], config: Optional[IPMixConfig]) -> str:
    """The preset name to use: ``preset`` if given, else ``config.preset``, else the default preset
    when there is no config (see the module doc); a hand-built config without ``preset=`` is an error."""
    if preset is None:
        preset = DEFAULT_PRESET if config is None else config.preset
        if preset is None:
            raise ValueError("preset=None but the config was built by hand (config.preset is None): pass "
                             f"preset= (one of {tuple(PRESETS)}) to choose the crop recipe, or make the "
                             "config with IPMixConfig.from_preset(name, ...)")
    return get_preset(preset).name


def _check_common(preset: Preset, size, device, dtype, batch_size):
    size = checks.integer("size", preset.size if size is None else size, 2, note=" (output is size x size)")
    if device is None:
        device = "gpu" if _cuda_available() else "cpu"
    if device not in ("cpu", "gpu"):
        raise ValueError(f"device={device!r} is invalid: use 'cpu' or 'gpu'")
    if device == "gpu" and not _cuda_available():
        raise RuntimeError("device='gpu' but PyTorch sees no CUDA GPU; use device='cpu'")
    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype={dtype!r} is invalid: use 'float32' or 'float16'")
    checks.integer("batch_size", batch_size, 1)
    return size, device


def _check_integers(seed, num_threads, device_id, prefetch_queue_depth, start_epoch=0):
    """The pipelines' other integer arguments, checked (:mod:`dali_ipmix.checks`) and as ``int``
    (``prefetch_queue_depth`` may also be DALI's dict of the CPU and GPU queue sizes)."""
    queue = prefetch_queue_depth if isinstance(prefetch_queue_depth, dict) else \
        checks.integer("prefetch_queue_depth", prefetch_queue_depth, 1)
    return (checks.optional_integer("seed", seed, 0, checks.INT64_MAX),
            checks.optional_integer("num_threads", num_threads, 0, note=" (0 or None: min(8, cores))"),
            checks.optional_integer("device_id", device_id, 0), queue,
            checks.integer("start_epoch", start_epoch, 0, checks.INT64_MAX))


def _cuda_available():
    try:
        import torch
        return torch.cuda.is_available()
    except Exception:   # a broken CUDA install means: no GPU
        return False


@dataclasses.dataclass(frozen=True)
class ArraySamples:
    """In-memory samples (``images=``, ``labels=``): what :class:`LabelledFiles` is for files, with no
    files. ``images``: C-contiguous uint8 (N, H, W, 3)."""
    images: np.ndarray
    labels: Tuple[int, ...]
    classes: Sequence[str]
    files: Tuple[str, ...] = ()

    def __len__(self):
        return len(self.labels)


def _array_samples(images, labels, file_root, file_list) -> ArraySamples:
    """``images`` / ``labels`` checked, naming the argument, the value and the rule."""
    from .files import NumberedClasses
    if file_root is not None or file_list is not None:
        raise ValueError("give images= and labels= (samples in memory) or file_root / file_list (files), "
                         "not both")
    if images is None or labels is None:
        raise ValueError(f"images= and labels= go together: got images={'None' if images is None else '...'} "
                         f"and labels={'None' if labels is None else '...'}")
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 or \
            images.shape[3] != 3:
        what = (f"dtype {images.dtype}, shape {images.shape}" if isinstance(images, np.ndarray)
                else type(images).__name__)
        raise ValueError(f"images= is invalid: expected a NumPy uint8 array of shape (N, H, W, 3) (RGB, one "
                         f"HWC image per sample), got {what}")
    if images.shape[0] < 1 or images.shape[1] < 2 or images.shape[2] < 2:
        raise ValueError(f"images= of shape {images.shape} is invalid: need at least one image of at least "
                         "2 x 2 pixels")
    lab = np.asarray(labels)
    if lab.dtype.kind not in "iu" or lab.ndim != 1 or len(lab) != len(images):
        raise ValueError(f"labels= is invalid: expected {len(images)} integers (one per image, a 1-D integer "
                         f"array or list), got dtype {lab.dtype}, shape {lab.shape}")
    bad = np.flatnonzero((lab < 0) | (lab > np.iinfo(np.int32).max))
    if len(bad):
        raise ValueError(f"labels[{bad[0]}]={lab[bad[0]]} is invalid: labels are integers 0..2147483647")
    return ArraySamples(np.ascontiguousarray(images), tuple(int(v) for v in lab),
                        NumberedClasses(int(lab.max()) + 1))


def _samples(images, labels, file_root, file_list, validate, on_bad_file, shard_id, num_shards,
             shorter_side=None):
    """The data set: in-memory samples (``images`` / ``labels``) or listed and checked files
    (``shorter_side``: what the preset resizes them to, see :func:`dali_ipmix.files.check_image`)."""
    if images is not None or labels is not None:
        data = _array_samples(images, labels, file_root, file_list)
    else:
        data = _data_files(file_root, file_list, validate, on_bad_file, (shard_id, num_shards), shorter_side)
    if len(data) < num_shards:
        raise ValueError(f"{len(data)} samples cannot be split into {num_shards} shards")
    return data


def _data_files(file_root, file_list, validate, on_bad_file, share, shorter_side=None) -> LabelledFiles:
    if file_list is not None:
        return read_file_list(file_list, file_root, validate, on_bad_file, share, shorter_side=shorter_side)
    if file_root is None:
        raise ValueError("give file_root (an ImageFolder tree) or file_list (a '<path> <label>' file)")
    return list_image_folder(file_root, validate, on_bad_file, share, shorter_side=shorter_side)


def _seeds(seed, shard_id, start_epoch=0):
    """The augmentation seed and independent 31-bit seeds for each random consumer, from the user's seed.

    ``keys`` is the root of every per-sample draw (crop, flip, mixing picture and its crop, IPMix;
    :mod:`dali_ipmix.keys`: one stream each), keyed by (root, epoch, position): it ignores the
    shard and the start epoch, so a sample's augmentation is the same in any shard layout and after
    a resume. The shuffle seed ignores the shard too, so that all shards agree on one global order
    per epoch (which is what makes the shards disjoint). ``seed=None`` orders the samples as
    ``seed=0`` does (whatever each rank passes, as DistributedSampler does) and draws the
    augmentation seed at random per process. ``pipeline`` only seeds DALI itself (no random
    operator of the training graph uses it).
    """
    augment = seed
    if augment is None:
        augment = int(np.random.SeedSequence().generate_state(1)[0] & 0x7FFFFFFF)

    def derive(root, *key):
        return int(np.random.SeedSequence([root, *key]).generate_state(1)[0] & 0x7FFFFFFF)

    return augment, dict(pipeline=derive(augment, 1, shard_id, start_epoch),
                         shuffle=derive(0 if seed is None else seed, 2),
                         keys=derive(augment, 4))


class IPMixPipeline(Pipeline):
    """The ready pipelines' ``Pipeline``: a DALI pipeline like any other, which refuses a second
    iterator. The first iterator made on it (an :class:`IPMixIterator` or one of DALI's framework
    iterators) drives it for as long as it
    lives; another one, while it does, is an error (two drivers would share one stream of batches,
    each reading part of every epoch). A DALI iterator is recognised when its constructor first
    touches the pipeline (DALI's API-type check, before it builds or runs it)."""

    def _check_api_type_scope(self, type):
        # DALI's framework iterators enter this scope in their constructor, before anything else.
        caller = sys._getframe(1)
        if caller.f_code.co_name == "__init__":
            from nvidia.dali.plugin.base_iterator import _DaliBaseIterator
            driver = caller.f_locals.get("self")
            if isinstance(driver, _DaliBaseIterator):
                claim_pipeline(self, driver)
        return super()._check_api_type_scope(type)


def _new_pipeline(batch_size, num_threads, device, device_id, seed, prefetch_queue_depth, kwargs):
    if device == "gpu" and device_id is None:
        import torch
        device_id = torch.cuda.current_device()
    return IPMixPipeline(batch_size=int(batch_size), num_threads=num_threads or min(8, os.cpu_count() or 1),
                         device_id=device_id if device == "gpu" else None, seed=seed,
                         prefetch_queue_depth=prefetch_queue_depth, **kwargs)


#: ``layout=`` of the ready pipelines -> the per-sample layout of ``fn.crop_mirror_normalize``.
LAYOUTS = {"NCHW": "CHW", "NHWC": "HWC"}


def _check_layout(layout):
    if not isinstance(layout, str) or layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r} is invalid: use 'NCHW' (channels first, the default) or "
                         "'NHWC' (channels last)")
    return layout


def _check_policy(policy):
    if not isinstance(policy, str) or policy not in POLICIES:
        raise ValueError(f"last_batch_policy={policy!r} is invalid: choose one of {POLICIES}")
    return policy


def _queue_depth(prefetch_queue_depth) -> int:
    """The deepest of DALI's queues (an int, or a dict of the CPU and GPU queues)."""
    if isinstance(prefetch_queue_depth, dict):
        return max(int(v) for v in prefetch_queue_depth.values())
    return int(prefetch_queue_depth)


def _normalization(dtype, layout="NCHW"):
    """The pipelines' normalisation as ``fn.ipmix``'s ``normalize``: ImageNet mean/std on the 0..255
    scale, ``dtype``, CHW (``layout="NCHW"``) or HWC (``"NHWC"``) per sample."""
    return dict(mean=[255 * m for m in IMAGENET_MEAN], std=[255 * s for s in IMAGENET_STD],
                layout=LAYOUTS[layout], dtype=dtype)


def _normalize(images, dtype, crop=None, layout="NCHW"):
    """HWC (uint8 or float 0..255) -> CHW (or HWC) ``dtype``, ImageNet mean/std; optional centre crop
    (h, w)."""
    extra = {} if crop is None else dict(crop=crop, crop_pos_x=0.5, crop_pos_y=0.5)
    return normalize_node(images, normalize_args(_normalization(dtype, layout)), **extra)


def _train_crop(jpegs, preset: Preset, size, device, draws, decoded: bool = False):
    """Decoded, cropped (the preset's recipe), flipped training images: HWC uint8 size x size, with
    the crop and the flip of each sample from its keyed ``draws`` (:class:`keys.SampleDraws`' outputs
    by name). ``decoded``: ``jpegs`` are HWC uint8 images already (in-memory samples)."""
    extra = dict(decoded=True) if decoded else {}
    images = preset.train_crop.dali(jpegs, size, device, draws["crop"], **extra)
    return fn.flip(images, horizontal=draws["flip"])


def _read(paths):
    """File contents of each path (uint8 1-D). Plain reads, no memory map: a file changed or removed
    under a running job then gives an error naming it, never a SIGBUS, and on network file systems
    (where data sets live) a map buys nothing."""
    return fn.io.file.read(paths, dont_use_mmap=True)


def _sources(feed, mixing: bool):
    """The pipeline's inputs from ``feed``: encoded paths (or with ``feed.images`` the images, HWC
    uint8), labels int32 (N, 1) [, mixing paths, or the decoded mixing pictures (HWC uint8) when the
    feed has a cache: from a second, GPU source when the cache is in GPU memory] [, with
    ``feed.draws`` a dict of the keyed draws by name (``SampleDraws.OUTPUTS``)]. Each source is
    called with DALI's ``BatchInfo`` (``batch_info=True``), from which the feed computes the batch.
    Taken without a copy: the feed's arrays live as long as it (a batch's own ones while DALI may read
    them) and never change."""
    dtypes = [types.UINT8, types.INT32] + ([types.UINT8] if mixing and not feed.on_device else [])
    layout = ["HWC" if feed.images is not None else None, None]
    layout += (["HWC" if feed.mixing_cache is not None else None] if len(dtypes) == 3 else [])
    n = len(dtypes)
    if feed.draws is not None:
        dtypes += [types.to_dali_type(np.dtype(t)) for t in feed.draws.OUTPUTS.values()]
        layout += [None] * len(feed.draws.OUTPUTS)
    out = fn.external_source(source=feed, num_outputs=len(dtypes), batch=True, batch_info=True,
                             no_copy=True, dtype=dtypes, layout=layout)
    out, draws = tuple(out[:n]), out[n:]
    if mixing and feed.on_device:   # the same BatchInfo as the feed's call (Feed.device_mixing)
        out += (fn.external_source(source=feed.device_mixing, batch=True, batch_info=True, device="gpu",
                                   no_copy=True, dtype=types.UINT8, layout="HWC"),)
    return out + ((dict(zip(feed.draws.OUTPUTS, draws)),) if feed.draws is not None else ())



#: Mixing-set formats DALI's mixed decoder decodes on the GPU; the rest (PNG, ...) go to CPU threads.
GPU_DECODED = (".jpg", ".jpeg", ".jpe")


def _warn_cpu_decoded_mixing(mix_files, mixing_root):
    """Warns once per pipeline when most mixing pictures will be decoded on the CPU in a GPU pipeline
    (every sample decodes one; ``docs/performance.md`` has the measured cost)."""
    cpu = sum(not f.lower().endswith(GPU_DECODED) for f in mix_files)
    if cpu * 2 > len(mix_files):
        warnings.warn(f"{cpu} of {len(mix_files)} mixing pictures in {mixing_root} are not JPEG: DALI "
                      f"decodes them on the CPU even in a GPU pipeline, which can halve its throughput. "
                      f"Re-encode them as JPEG (quality 95), e.g. write fractals with "
                      f"'dali-ipmix fractals OUT -n N' (JPEG by default).", stacklevel=3)


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
        mixing = fn.decoders.image(_read(mixing), device=decoder_device(device), output_type=types.RGB)
        if resize:
            mixing = fn.resize(mixing, resize_shorter=preset.mixing_side(size))
    return fn.crop(mixing, crop=(size, size), crop_pos_x=draws["mixing_x"], crop_pos_y=draws["mixing_y"])


def _default_cache_limit() -> int:
    """Bytes ``mixing_cache=None`` may hold: ``MIXING_CACHE_MAX_BYTES``, and no more than a quarter of
    the host memory available now (several ranks on one node each hold a cache)."""
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):   # not reported here: the fixed limit alone
        return MIXING_CACHE_MAX_BYTES
    return min(MIXING_CACHE_MAX_BYTES, available // 4)


def _mixing_cache(files, sizes, side, mixing_cache, num_threads, device, device_id):
    """The decoded mixing set as ``mixing_cache`` asks (see :func:`training_pipeline`), or None;
    ``sizes``: the files' header sizes (None: not read)."""
    if not (mixing_cache is None or isinstance(mixing_cache, bool) or
            (isinstance(mixing_cache, str) and mixing_cache == "device")):
        raise ValueError(f"mixing_cache={mixing_cache!r} is invalid: use None (cache in host memory when "
                         f"the decoded set takes at most {MIXING_CACHE_MAX_BYTES / 2**30:g} GiB), True "
                         "(host memory, any size), 'device' (GPU memory) or False (decode per sample)")
    if mixing_cache == "device" and device != "gpu":
        raise ValueError("mixing_cache='device' needs device='gpu' (it keeps the pictures in GPU memory)")
    if mixing_cache is False:
        return None
    need = estimate_bytes(sizes or header_sizes(files), side)
    if mixing_cache is None:
        limit = _default_cache_limit()
        if need is None or need > limit:
            why = "some headers could not be read" if need is None else f"{need / 2**30:.2f} GiB"
            warnings.warn(f"mixing pictures decoded per sample, not cached ({len(files)} pictures, {why}; "
                          f"the default cache holds up to {limit / 2**30:.2f} GiB: "
                          f"{MIXING_CACHE_MAX_BYTES / 2**30:g} GiB and at most a quarter of the memory "
                          "available now): pass mixing_cache=True to cache them anyway, or False to "
                          "silence this", stacklevel=3)
            return None
    cache = MixingCache.build(files, side, num_threads, pin=device == "gpu", expected_bytes=need)
    if mixing_cache == "device":
        import torch
        return cache.to_device(torch.cuda.current_device() if device_id is None else device_id)
    return cache


def training_pipeline(file_root=None, file_list=None, *, mixing_root, batch_size: int,
                      images: Optional[np.ndarray] = None, labels=None,
                      preset: Optional[str] = None, size: Optional[int] = None,
                      config: Optional[IPMixConfig] = None, device: Optional[str] = None,
                      device_id: Optional[int] = None, num_threads: Optional[int] = None,
                      seed: Optional[int] = None, shard_id: Optional[int] = None,
                      num_shards: Optional[int] = None, dtype: str = "float32",
                      validate: str = "header", on_bad_file: str = "error",
                      prefetch_queue_depth: int = 2, start_epoch: int = 0,
                      backend: Optional[str] = None, mixing_cache: Union[None, bool, str] = None,
                      last_batch_policy: str = "partial", layout: str = "NCHW",
                      **pipeline_kwargs) -> Pipeline:
    """An IPMix training pipeline (not yet built; the iterator that drives it builds it).

    Args:
        file_root: ImageFolder tree (one sub-folder per class; labels in sorted folder order), or the
            folder that ``file_list`` paths are relative to.
        file_list: text file of ``<path> <label>`` lines, instead of a tree.
        images, labels: samples in memory instead of files (e.g. CIFAR from its pickles): a NumPy
            uint8 array (N, H, W, 3) of RGB images and N integer labels. No files, no decoding; the
            same crops (on the arrays), keyed augmentation, epochs and shards as files.
            ``ipmix_info.files`` is empty and the classes are numbered.
        mixing_root: folder of mixing pictures (e.g. ``dali-ipmix fractals``), searched recursively.
        batch_size: samples per batch (per shard).
        preset: name of a :mod:`dali_ipmix.presets` record (``"imagenet"``, ``"cifar"``, ...): crop
            recipe, mixing-picture preparation and default ``size``/``config``; ``None``: the one
            ``config`` was made from, else the default preset (see the module docstring).
        size: output height = width in pixels (default: the preset's, 224 / 32).
        config: :class:`IPMixConfig` (default ``IPMixConfig.from_preset(preset)``).
        device: ``"gpu"`` (mixed decoding, CuPy IPMix) or ``"cpu"``; default GPU when CUDA is present.
        device_id: GPU index (default ``torch.cuda.current_device()``); ignored on the CPU.
        num_threads: DALI CPU threads (default min(8, cores)); on the CPU IPMix uses as many.
        backend: IPMix backend of :func:`dali_ipmix.fn.ipmix`: ``"native"`` (the DALI plugin),
            ``"python"``, or ``None``: native when built (``pipe.ipmix_info.backend`` says which ran).
        mixing_cache: decode the mixing pictures once, when the pipeline is made, and keep them in
            host memory (:class:`dali_ipmix.mixing_cache.MixingCache`; page-locked on the GPU) instead
            of decoding one per sample: ``None`` (default) when they take at most
            ``constants.MIXING_CACHE_MAX_BYTES`` (4 GiB: about 21,000 pictures at 256 px) decoded
            and a quarter of the host memory available when the pipeline is made,
            else per sample with a warning; ``True`` always; ``"device"`` in GPU memory (GPU pipelines:
            no per-batch copy from the host); ``False`` never. Same pictures, mixing
            choice and crops either way (a GPU pipeline's cache is decoded on the CPU: within a grey
            level of the GPU decoder's); ``pipe.ipmix_info.mixing_cache_bytes`` says what is held.
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
    ``size=pipe.ipmix_info.epoch_size`` with a ``"drop"`` or ``"fill"`` pipeline) and a
    ``pipe.run()`` loop with ``pipe.reset()`` at each ``StopIteration`` all read the same batches.
    One iterator per pipeline.

    Returns:
        A ``Pipeline`` with outputs ``(clean, view1, view2, label)`` when ``config.jsd`` else
        ``(images, label)``; images (N, 3, size, size) normalised (NHWC: (N, size, size, 3)), labels
        int32 (N, 1). Metadata in ``pipe.ipmix_info`` (:class:`PipelineInfo`).
    """
    if config is not None and not isinstance(config, IPMixConfig):
        raise TypeError(f"config must be an IPMixConfig, got {type(config).__name__}")
    recipe = get_preset(resolve_preset(preset, config))
    size, device = _check_common(recipe, size, device, dtype, batch_size)
    seed, num_threads, device_id, prefetch_queue_depth, start_epoch = _check_integers(
        seed, num_threads, device_id, prefetch_queue_depth, start_epoch)
    layout, last_batch_policy = _check_layout(layout), _check_policy(last_batch_policy)
    config = recipe.config() if config is None else config
    shard_id, num_shards = shard_defaults(shard_id, num_shards)
    data = _samples(images, labels, file_root, file_list, validate, on_bad_file, shard_id, num_shards)
    mix_files = list_mixing_images(mixing_root, validate, on_bad_file, shorter_side=recipe.mixing_side(size))
    # Pictures already at the preset's shorter side need no resize (known only where headers are read).
    sizes = None if validate == "none" else header_sizes(mix_files)
    mixing_resize = sizes is None or not shorter_sides_equal(sizes, recipe.mixing_side(size))
    num_threads = num_threads or min(8, os.cpu_count() or 1)
    cache = _mixing_cache(mix_files, sizes, recipe.mixing_side(size) if mixing_resize else None,
                          mixing_cache, num_threads, device, device_id)
    if device == "gpu" and cache is None:
        _warn_cpu_decoded_mixing(mix_files, mixing_root)
    augment_seed, seeds = _seeds(seed, shard_id, start_epoch)
    crop = recipe.train_crop
    draws = SampleDraws(seeds["keys"], crop.draws, lambda u: crop.law(u, size))
    plan = EpochPlan(len(data), batch_size, shard_id, num_shards, last_batch_policy, seeds["shuffle"])
    feed = Feed(data.files, data.labels, mix_files, seeds["keys"], mixing_cache=cache, draws=draws,
                plan=plan, start_epoch=start_epoch, keep=_queue_depth(prefetch_queue_depth) + 2,
                images=getattr(data, "images", None))

    pipe = _new_pipeline(batch_size, num_threads, device, device_id, seeds["pipeline"],
                         prefetch_queue_depth, pipeline_kwargs)
    with pipe:
        paths, labels, mix_paths, draws = _sources(feed, mixing=True)
        if feed.images is None:
            images = _train_crop(_read(paths), recipe, size, device, draws)
        else:
            images = _train_crop(paths, recipe, size, device, draws, decoded=True)
        mixing = _mixing_pictures(mix_paths, recipe, size, device, draws, resize=mixing_resize,
                                  cached=cache is not None)
        from . import native
        backend = native.default_backend(device) if backend is None else backend
        # Normalised by fn.ipmix: in the native operator's final mix (no pass of its own), else by
        # crop_mirror_normalize after it; the same values either way.
        views = ipmix(images, mixing, config=config, keys=draws["ipmix_keys"], device=device,
                      num_threads=pipe.num_threads, backend=backend,
                      normalize=_normalization(dtype, layout))
        views = views if config.jsd else (views,)
        labels = labels.gpu() if device == "gpu" else labels
        pipe.set_outputs(*views, labels)
    names = ("clean", "view1", "view2", "label") if config.jsd else ("images", "label")
    pipe.ipmix_info = _info(names, config.jsd, data, mix_files, shard_id, num_shards, device, size,
                            dtype, recipe.name, config, seed, batch_size, seeds["shuffle"], augment_seed,
                            start_epoch)
    pipe.ipmix_info = dataclasses.replace(pipe.ipmix_info, backend=backend, mixing_resize=mixing_resize,
                                          mixing_cache_bytes=0 if cache is None else cache.nbytes,
                                          layout=layout, **epoch_fields(plan))
    pipe.ipmix_feed = feed
    _warn_empty(plan)
    return pipe


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
    recipe = get_preset(resolve_preset(preset, None))
    size, device = _check_common(recipe, size, device, dtype, batch_size)
    seed, num_threads, device_id, prefetch_queue_depth, _ = _check_integers(
        seed, num_threads, device_id, prefetch_queue_depth)
    layout, last_batch_policy = _check_layout(layout), _check_policy(last_batch_policy)
    shard_id, num_shards = shard_defaults(shard_id, num_shards)
    data = _samples(images, labels, file_root, file_list, validate, on_bad_file, shard_id, num_shards,
                    recipe.validation.resized_shorter(size))
    seed = 0 if seed is None else seed
    plan = EpochPlan(len(data), batch_size, shard_id, num_shards, last_batch_policy, None)
    feed = Feed(data.files, data.labels, plan=plan, keep=_queue_depth(prefetch_queue_depth) + 2,
                images=getattr(data, "images", None))
    pipe = _new_pipeline(batch_size, num_threads, device, device_id, seed, prefetch_queue_depth,
                         pipeline_kwargs)
    with pipe:
        source, label_node = _sources(feed, mixing=False)
        if feed.images is None:
            decoded = fn.decoders.image(_read(source), device=decoder_device(device), output_type=types.RGB)
        else:
            decoded = source.gpu() if device == "gpu" else source
        decoded, crop = recipe.validation.dali(decoded, size)
        out = _normalize(decoded, dtype, crop=crop, layout=layout)
        pipe.set_outputs(out, label_node.gpu() if device == "gpu" else label_node)
    pipe.ipmix_info = _info(("images", "label"), False, data, (), shard_id, num_shards, device, size,
                            dtype, recipe.name, None, seed, batch_size, None, seed, 0)
    pipe.ipmix_info = dataclasses.replace(pipe.ipmix_info, layout=layout, **epoch_fields(plan))
    pipe.ipmix_feed = feed
    _warn_empty(plan)
    return pipe


def epoch_fields(plan: EpochPlan) -> dict:
    """:class:`PipelineInfo`'s epoch fields for ``plan``: its policy, batches and samples per epoch."""
    return dict(last_batch_policy=plan.policy, epoch_batches=len(plan),
                epoch_size=len(plan.positions(0)))


def _warn_empty(plan: EpochPlan):
    message = empty_epoch_warning(plan)
    if message:
        warnings.warn(message, stacklevel=3)


def _info(names, jsd, data, mix_files, shard_id, num_shards, device, size, dtype, preset, config,
          seed, batch_size, shuffle_seed, augment_seed, start_epoch):
    return PipelineInfo(output_names=names, reader_name=None, jsd=jsd, num_samples=len(data),
                        classes=data.classes, files=data.files, labels=data.labels,
                        mixing_files=tuple(mix_files), shard_id=shard_id,
                        num_shards=num_shards, device=device, size=size, dtype=dtype, preset=preset,
                        config=config, seed=seed, batch_size=int(batch_size),
                        shuffle_seed=shuffle_seed, augment_seed=augment_seed, start_epoch=start_epoch)

"""What a ready pipeline reads, decided before its graph is built: :class:`PipelineSource`.

A source holds the samples (checked files, or arrays in memory), the epoch plan (shard and last-batch
policy included), the keyed per-sample draws, the mixing set (files, resize, decoded cache) and the
:class:`~dali_ipmix.epochs.Feed` that hands each batch to DALI; plus the settings the graph is built
with (preset, size, device, dtype, layout, augmentation config, backend). :func:`training_source` and
:func:`validation_source` resolve and check the arguments of the ready pipelines into one;
:mod:`dali_ipmix.graphs` builds the DALI graph on it, and the pipeline owns it (``pipe.source``),
where every iterator finds it. Nothing here builds DALI nodes.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from typing import Optional, Sequence, Tuple, Union

import numpy as np

from . import checks
from .config import MixConfig
from .epochs import POLICIES, EpochPlan, Feed, empty_epoch_warning, shard_defaults
from .files import LabelledFiles, list_image_folder, read_file_list
from .keys import SampleDraws
from .mixing_cache import MixingSet, prepare_mixing_set
from .presets import DEFAULT_PRESET, PRESETS, Preset, get_preset

__all__ = ["PipelineSource", "ArraySamples", "training_source", "validation_source", "resolve_preset",
           "LAYOUTS"]

#: ``layout=`` of the ready pipelines -> the per-sample layout of their normalised images.
LAYOUTS = {"NCHW": "CHW", "NHWC": "HWC"}


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


@dataclasses.dataclass
class PipelineSource:
    """Everything a ready pipeline reads and is built with (see the module docstring).

    The epoch fields (``last_batch_policy``, ``epoch_batches``, ``epoch_size``) follow the feed's
    plan: an iterator that drives the pipeline with another last-batch policy sets it with
    :meth:`use_policy`, and they say what it reads.
    """
    samples: Union[LabelledFiles, ArraySamples]
    feed: Feed
    recipe: Preset                  # the preset record: crops, mixing-picture preparation, validation
    size: int
    device: str
    dtype: str
    layout: str
    num_threads: int
    device_id: Optional[int]
    prefetch_queue_depth: Union[int, dict]
    pipeline_seed: int              # seeds DALI itself (no random operator of the graphs uses it)
    seed: Optional[int]             # as given (None: order of seed 0, random augmentation)
    config: Optional[MixConfig] = None     # None: a validation source (no augmentation)
    augment_seed: int = 0           # the root every per-sample draw is keyed from
    start_epoch: int = 0            # the first epoch the pipeline reads
    backend: Optional[str] = None   # fn.ipmix backend of the training graph: "native" or "python"
    mixing: MixingSet = MixingSet()

    # ------------------------------------------------------------------ what the pipeline reads
    @property
    def preset(self) -> str:
        """The preset's name."""
        return self.recipe.name

    @property
    def plan(self) -> EpochPlan:
        return self.feed.plan

    @property
    def jsd(self) -> bool:
        return bool(self.config is not None and self.config.jsd)

    @property
    def output_names(self) -> Tuple[str, ...]:
        """Names of the pipeline's outputs, in order."""
        return ("clean", "view1", "view2", "label") if self.jsd else ("images", "label")

    @property
    def num_samples(self) -> int:
        """Samples in the whole data set (all shards)."""
        return len(self.samples)

    @property
    def classes(self) -> Sequence[str]:
        """Class name of each label (numbered for lists and arrays)."""
        return self.samples.classes

    @property
    def files(self) -> Tuple[str, ...]:
        """Data files in listed order (before shuffling), absolute paths; empty for arrays."""
        return self.samples.files

    @property
    def labels(self) -> Tuple[int, ...]:
        return self.samples.labels

    @property
    def images(self) -> Optional[np.ndarray]:
        """The in-memory samples (None for files)."""
        return getattr(self.samples, "images", None)

    @property
    def mixing_files(self) -> Tuple[str, ...]:
        return self.mixing.files

    @property
    def mixing_resize(self) -> bool:
        """False: every mixing picture already has the preset's shorter side (no resize node)."""
        return self.mixing.resize

    @property
    def mixing_cache_bytes(self) -> int:
        """Decoded mixing pictures held in memory (0: decoded per sample)."""
        return self.mixing.nbytes

    @property
    def shard_id(self) -> int:
        return self.plan.shard_id

    @property
    def num_shards(self) -> int:
        return self.plan.num_shards

    @property
    def batch_size(self) -> int:
        return self.plan.batch_size

    @property
    def shuffle_seed(self) -> Optional[int]:
        """None: the listed order every epoch (validation)."""
        return self.plan.shuffle_seed

    @property
    def last_batch_policy(self) -> str:
        return self.plan.policy

    @property
    def epoch_batches(self) -> int:
        """Batches of this shard per epoch under the policy."""
        return len(self.plan)

    @property
    def epoch_size(self) -> int:
        """Samples of this shard per epoch (``fill``'s repeats included)."""
        return len(self.plan.positions(0))

    def use_policy(self, policy: str) -> EpochPlan:
        """Plans the epochs with last-batch policy ``policy`` from the next batch on (the driver's
        choice); returns the plan."""
        policy = check_policy(policy)
        if self.plan.policy != policy:
            plan = self.plan
            self.feed.set_plan(EpochPlan(plan.num_samples, plan.batch_size, plan.shard_id,
                                         plan.num_shards, policy, plan.shuffle_seed))
        return self.plan


# ---------------------------------------------------------------------------- arguments

def resolve_preset(preset: Optional[str], config: Optional[MixConfig]) -> str:
    """The preset name to use: ``preset`` if given, else ``config.preset``, else the default preset
    when there is no config; a hand-built config without ``preset=`` is an error (the crop recipe and
    the augmentation parameters are independent choices, and the pipeline never guesses one from the
    other)."""
    if preset is None:
        preset = DEFAULT_PRESET if config is None else config.preset
        if preset is None:
            raise ValueError("preset=None but the config was built by hand (config.preset is None): pass "
                             f"preset= (one of {tuple(PRESETS)}) to choose the crop recipe, or make the "
                             "config with its class's from_preset(name, ...) (e.g. IPMixConfig.from_preset)")
    return get_preset(preset).name


def check_policy(policy):
    if not isinstance(policy, str) or policy not in POLICIES:
        raise ValueError(f"last_batch_policy={policy!r} is invalid: choose one of {POLICIES}")
    return policy


def _check_layout(layout):
    if not isinstance(layout, str) or layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r} is invalid: use 'NCHW' (channels first, the default) or "
                         "'NHWC' (channels last)")
    return layout


def _cuda_available():
    try:
        import torch
        return torch.cuda.is_available()
    except Exception:   # a broken CUDA install (or no torch) means: no GPU
        return False


def _common(preset: Preset, size, device, dtype, batch_size, seed, num_threads, device_id,
            prefetch_queue_depth, start_epoch, layout, last_batch_policy, shard_id, num_shards):
    """The arguments every ready pipeline takes, checked (:mod:`dali_ipmix.checks`), with defaults
    filled in: a dict of them."""
    size = checks.integer("size", preset.size if size is None else size, 2, note=" (output is size x size)")
    if device is None:
        device = "gpu" if _cuda_available() else "cpu"
    if device not in ("cpu", "gpu"):
        raise ValueError(f"device={device!r} is invalid: use 'cpu' or 'gpu'")
    if device == "gpu" and not _cuda_available():
        raise RuntimeError("device='gpu' but PyTorch sees no CUDA GPU; use device='cpu'")
    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype={dtype!r} is invalid: use 'float32' or 'float16'")
    queue = prefetch_queue_depth if isinstance(prefetch_queue_depth, dict) else \
        checks.integer("prefetch_queue_depth", prefetch_queue_depth, 1)
    threads = checks.optional_integer("num_threads", num_threads, 0, note=" (0 or None: min(8, cores))")
    device_id = checks.optional_integer("device_id", device_id, 0)
    if device == "gpu" and device_id is None:
        import torch
        device_id = torch.cuda.current_device()
    shard_id, num_shards = shard_defaults(shard_id, num_shards)
    return dict(size=size, device=device, dtype=dtype, batch_size=checks.integer("batch_size", batch_size, 1),
                seed=checks.optional_integer("seed", seed, 0, checks.INT64_MAX),
                num_threads=threads or min(8, os.cpu_count() or 1),
                device_id=device_id if device == "gpu" else None, prefetch_queue_depth=queue,
                start_epoch=checks.integer("start_epoch", start_epoch, 0, checks.INT64_MAX),
                layout=_check_layout(layout), policy=check_policy(last_batch_policy),
                shard_id=shard_id, num_shards=num_shards)


def _queue_depth(prefetch_queue_depth) -> int:
    """The deepest of DALI's queues (an int, or a dict of the CPU and GPU queues)."""
    if isinstance(prefetch_queue_depth, dict):
        return max(int(v) for v in prefetch_queue_depth.values())
    return int(prefetch_queue_depth)


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
    elif file_list is not None:
        data = read_file_list(file_list, file_root, validate, on_bad_file, (shard_id, num_shards),
                              shorter_side=shorter_side)
    elif file_root is None:
        raise ValueError("give file_root (an ImageFolder tree) or file_list (a '<path> <label>' file)")
    else:
        data = list_image_folder(file_root, validate, on_bad_file, (shard_id, num_shards),
                                 shorter_side=shorter_side)
    if len(data) < num_shards:
        raise ValueError(f"{len(data)} samples cannot be split into {num_shards} shards")
    return data


def _seeds(seed, shard_id, start_epoch=0):
    """The augmentation seed and independent 31-bit seeds for each random consumer, from the user's seed.

    ``keys`` is the root of every per-sample draw (crop, flip, mixing picture and its crop, IPMix;
    :mod:`dali_ipmix.keys`: one stream each), keyed by (root, epoch, position): it ignores the
    shard and the start epoch, so a sample's augmentation is the same in any shard layout and after
    a resume. The shuffle seed ignores the shard too, so that all shards agree on one global order
    per epoch (which is what makes the shards disjoint). ``seed=None`` orders the samples as
    ``seed=0`` does (whatever each rank passes, as DistributedSampler does) and draws the
    augmentation seed at random per process. ``pipeline`` only seeds DALI itself.
    """
    augment = seed
    if augment is None:
        augment = int(np.random.SeedSequence().generate_state(1)[0] & 0x7FFFFFFF)

    def derive(root, *key):
        return int(np.random.SeedSequence([root, *key]).generate_state(1)[0] & 0x7FFFFFFF)

    return augment, dict(pipeline=derive(augment, 1, shard_id, start_epoch),
                         shuffle=derive(0 if seed is None else seed, 2),
                         keys=derive(augment, 4))


def _warn_empty(plan: EpochPlan):
    message = empty_epoch_warning(plan)
    if message:
        warnings.warn(message, stacklevel=4)


# ---------------------------------------------------------------------------- the two sources

def training_source(file_root=None, file_list=None, *, mixing_root=None, batch_size: int,
                    images: Optional[np.ndarray] = None, labels=None, preset: Optional[str] = None,
                    size: Optional[int] = None, config: Optional[MixConfig] = None,
                    device: Optional[str] = None, device_id: Optional[int] = None,
                    num_threads: Optional[int] = None, seed: Optional[int] = None,
                    shard_id: Optional[int] = None, num_shards: Optional[int] = None,
                    dtype: str = "float32", validate: str = "header", on_bad_file: str = "error",
                    prefetch_queue_depth=2, start_epoch: int = 0, backend: Optional[str] = None,
                    mixing_cache: Union[None, bool, str] = None, last_batch_policy: str = "partial",
                    layout: str = "NCHW") -> PipelineSource:
    """The source of a training pipeline: the arguments of
    :func:`dali_ipmix.graphs.training_pipeline` (documented there; DALI's ``Pipeline`` keywords
    excepted), checked, with the data listed, the mixing set prepared (and cached) and the feed made.
    :func:`dali_ipmix.graphs.training_graph` builds the graph on it."""
    if config is not None and not isinstance(config, MixConfig):
        raise TypeError(f"config must be an IPMixConfig, AugMixConfig or PixMixConfig, got "
                        f"{type(config).__name__}")
    recipe = get_preset(resolve_preset(preset, config))
    a = _common(recipe, size, device, dtype, batch_size, seed, num_threads, device_id,
                prefetch_queue_depth, start_epoch, layout, last_batch_policy, shard_id, num_shards)
    config = recipe.config() if config is None else config
    data = _samples(images, labels, file_root, file_list, validate, on_bad_file, a["shard_id"],
                    a["num_shards"])
    if mixing_root is None and config.needs_mixing:
        raise ValueError(f"mixing_root=None is invalid for {type(config).__name__}: it mixes every image "
                         "with a picture of a mixing set; give mixing_root= (a folder of pictures, e.g. "
                         "'dali-ipmix fractals')")
    if mixing_root is not None and not config.needs_mixing:
        raise ValueError(f"mixing_root={mixing_root!r} is invalid for {type(config).__name__}: it mixes "
                         "with no pictures; leave mixing_root=None")
    side = recipe.mixing_side(a["size"])
    mixing = MixingSet(side=side) if mixing_root is None else prepare_mixing_set(
        mixing_root, side, validate=validate, on_bad_file=on_bad_file, mixing_cache=mixing_cache,
        num_threads=a["num_threads"], device=a["device"], device_id=a["device_id"])
    augment_seed, seeds = _seeds(a["seed"], a["shard_id"], a["start_epoch"])
    crop = recipe.train_crop
    size_ = a["size"]
    draws = SampleDraws(seeds["keys"], crop.draws, lambda u: crop.law(u, size_), mixing=bool(mixing.files))
    plan = EpochPlan(len(data), a["batch_size"], a["shard_id"], a["num_shards"], a["policy"],
                     seeds["shuffle"])
    feed = Feed(data.files, data.labels, mixing.files, seeds["keys"], mixing_cache=mixing.cache,
                draws=draws, plan=plan, start_epoch=a["start_epoch"],
                keep=_queue_depth(a["prefetch_queue_depth"]) + 2, images=getattr(data, "images", None))
    if backend is None:
        from . import native
        backend = native.default_backend(a["device"])
    _warn_empty(plan)
    return PipelineSource(samples=data, feed=feed, recipe=recipe, size=a["size"], device=a["device"],
                          dtype=a["dtype"], layout=a["layout"], num_threads=a["num_threads"],
                          device_id=a["device_id"], prefetch_queue_depth=a["prefetch_queue_depth"],
                          pipeline_seed=seeds["pipeline"], seed=a["seed"], config=config,
                          augment_seed=augment_seed, start_epoch=a["start_epoch"], backend=backend,
                          mixing=mixing)


def validation_source(file_root=None, file_list=None, *, batch_size: int,
                      images: Optional[np.ndarray] = None, labels=None, preset: Optional[str] = None,
                      size: Optional[int] = None, device: Optional[str] = None,
                      device_id: Optional[int] = None, num_threads: Optional[int] = None,
                      seed: Optional[int] = None, shard_id: Optional[int] = None,
                      num_shards: Optional[int] = None, dtype: str = "float32",
                      validate: str = "header", on_bad_file: str = "error", prefetch_queue_depth=2,
                      last_batch_policy: str = "partial", layout: str = "NCHW") -> PipelineSource:
    """The source of an evaluation pipeline: the arguments of
    :func:`dali_ipmix.graphs.validation_pipeline` (documented there), checked, the files listed in
    order (no shuffling, no augmentation), the feed made."""
    recipe = get_preset(resolve_preset(preset, None))
    a = _common(recipe, size, device, dtype, batch_size, seed, num_threads, device_id,
                prefetch_queue_depth, 0, layout, last_batch_policy, shard_id, num_shards)
    data = _samples(images, labels, file_root, file_list, validate, on_bad_file, a["shard_id"],
                    a["num_shards"], recipe.validation.resized_shorter(a["size"]))
    seed = 0 if a["seed"] is None else a["seed"]
    plan = EpochPlan(len(data), a["batch_size"], a["shard_id"], a["num_shards"], a["policy"], None)
    feed = Feed(data.files, data.labels, plan=plan, keep=_queue_depth(a["prefetch_queue_depth"]) + 2,
                images=getattr(data, "images", None))
    _warn_empty(plan)
    return PipelineSource(samples=data, feed=feed, recipe=recipe, size=a["size"], device=a["device"],
                          dtype=a["dtype"], layout=a["layout"], num_threads=a["num_threads"],
                          device_id=a["device_id"], prefetch_queue_depth=a["prefetch_queue_depth"],
                          pipeline_seed=seed, seed=seed, augment_seed=seed)

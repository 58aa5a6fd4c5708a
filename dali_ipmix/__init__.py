"""dali-ipmix: IPMix (NeurIPS 2023) as an NVIDIA DALI pipeline for PyTorch.

Core (arrays in, arrays out; NumPy or CuPy; imports neither DALI nor torch):
    IPMixConfig, AugMixConfig, PixMixConfig    the three methods of one engine (MixConfig: their base)
    augment_batch (= ipmix_batch), IPMixPlan, draw_plan, execute_plan
DALI and PyTorch (loaded on first use; the iterator and the loss need the ``torch`` extra):
    fn.ipmix                                   the DALI operator
    training_pipeline, validation_pipeline     ready pipelines (ImageNet / CIFAR presets)
    IPMixIterator                              DALIGenericIterator for PyTorch, JSD-aware
    jsd_loss, JSDLoss                          the Jensen-Shannon consistency loss (function, module)
    write_fractal_set, render_fractals         a procedural fractal mixing set
    BadImageError                              raised for unreadable input files
"""

import importlib
from importlib import metadata as _metadata

try:   # the version lives in pyproject.toml only
    __version__ = _metadata.version("dali-ipmix")
except _metadata.PackageNotFoundError:   # a source folder on sys.path, never installed
    __version__ = "0+unknown"

from .config import AugMixConfig, IPMixConfig, MixConfig, PixMixConfig
from .plan import IPMixPlan, draw_plan
from .execute import execute_plan
from .augment import augment_batch, ipmix_batch

_LAZY = {
    "fn": (".fn", None),
    "training_pipeline": (".graphs", "training_pipeline"),
    "validation_pipeline": (".graphs", "validation_pipeline"),
    "PipelineSource": (".sources", "PipelineSource"),
    "IPMixIterator": (".iterator", "IPMixIterator"),
    "jsd_loss": (".losses", "jsd_loss"),
    "JSDLoss": (".losses", "JSDLoss"),
    "write_fractal_set": (".fractals", "write_fractal_set"),
    "render_fractals": (".fractals", "render_fractals"),
    "BadImageError": (".files", "BadImageError"),
}

__all__ = ["IPMixConfig", "AugMixConfig", "PixMixConfig", "MixConfig", "IPMixPlan", "draw_plan",
           "execute_plan", "augment_batch", "ipmix_batch", "__version__",
           *_LAZY]


def __getattr__(name):
    # DALI and torch take seconds to import; users of the array core should not pay for them.
    if name not in _LAZY:
        raise AttributeError(f"module 'dali_ipmix' has no attribute {name!r}")
    module_name, attr = _LAZY[name]
    try:
        module = importlib.import_module(module_name, __name__)
    except ImportError as err:   # an optional extra (torch for the iterator and the loss) is missing
        from .extras import extra_error
        raise extra_error(err, f"dali_ipmix.{name}") from None
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))

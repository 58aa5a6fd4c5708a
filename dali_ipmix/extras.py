"""The optional extras: their modules imported with an error that names the extra to install, and a
progress bar that is tqdm's when the ``torch`` extra brought it (plain lines on stderr otherwise).

The core, ``fn.ipmix``, the pipelines and the CLI's ``fractals`` need only DALI, NumPy and Pillow;
``torch`` (IPMixIterator, the JSD loss, the training scripts), ``demo`` (scikit-image's sample photos)
and ``gpu`` (CuPy) are extras of the package."""

from __future__ import annotations

import importlib
import sys
import time

__all__ = ["EXTRAS", "require", "progress_bar"]

#: Each optional top-level module: ``(its distribution, the extra that brings it)``.
EXTRAS = {"torch": ("PyTorch", "torch"), "torchvision": ("torchvision", "torch"), "tqdm": ("tqdm", "torch"),
          "skimage": ("scikit-image", "demo"), "cupy": ("CuPy", "gpu"), "cupyx": ("CuPy", "gpu")}


def missing_extra(err: ImportError):
    """The extra whose module ``err`` reports missing, or None when it is not one of ours."""
    name = (getattr(err, "name", None) or "").split(".")[0]
    return EXTRAS.get(name, (None, None))[1]


def extra_error(err: ImportError, what: str) -> ImportError:
    """``err`` (a missing optional module) as an ImportError that says what needs it and which extra
    brings it; other import errors come back unchanged."""
    extra = missing_extra(err)
    if extra is None:
        return err
    package = EXTRAS[err.name.split(".")[0]][0]
    return ModuleNotFoundError(f"{what} needs {package}, which is not installed: pip install "
                               f"'dali-ipmix[{extra}]'", name=err.name)


def require(module: str, what: str):
    """Imports ``module``; a missing one raises ImportError naming ``what`` needs it and the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise extra_error(err, what) from None


class _Lines:
    """tqdm's interface as far as the package uses it: a line on stderr every few seconds and at the end."""

    def __init__(self, total, desc, unit, disable, every=5.0):
        self.total, self.desc, self.unit, self.disable, self.every = total, desc, unit, disable, every
        self.n, self._shown = 0, time.monotonic()

    def update(self, n=1):
        self.n += n
        if not self.disable and time.monotonic() - self._shown >= self.every:
            self._show()

    def _show(self):
        self._shown = time.monotonic()
        print(f"{self.desc}: {self.n}/{self.total} {self.unit}", file=sys.stderr, flush=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if not self.disable and exc[0] is None:
            self._show()
        return False


def progress_bar(total: int, desc: str, unit: str, disable: bool = False, **tqdm_args):
    """A context-managed progress bar with ``update(n)``: tqdm's when installed."""
    try:
        from tqdm import tqdm
    except ImportError:
        return _Lines(total, desc, unit, disable)
    return tqdm(total=total, desc=desc, unit=unit, disable=disable, file=sys.stderr, **tqdm_args)

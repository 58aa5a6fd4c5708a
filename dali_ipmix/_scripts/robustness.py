"""What ``pipelines/eval_robustness.py`` computes, as plain functions: metrics, the AlexNet table, model loading.

Conventions: errors and calibration errors are fractions in [0, 1] (not percent); a "set" is one
corruption at one severity; severities are 1..5.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from . import checkpoints
from .models import model_builder

# The 15 corruptions of CIFAR-10-C / CIFAR-100-C / ImageNet-C that the mean corruption error and mCE
# average over (Hendrycks & Dietterich 2019), in the usual table order.
CORRUPTIONS = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
               "motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness", "contrast",
               "elastic_transform", "pixelate", "jpeg_compression")
# The held-out extra corruptions that the data sets also ship; reported, never in a mean.
EXTRA_CORRUPTIONS = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
SEVERITIES = (1, 2, 3, 4, 5)

# AlexNet's ImageNet-C top-1 error per corruption, averaged over the 5 severities (fractions), as
# published by Hendrycks & Dietterich (2019). Copied digit for digit from the AugMix reference code,
# https://github.com/google-research/augmix/blob/master/imagenet.py (ALEXNET_ERR, commit 202cf4c;
# its comment: "Raw AlexNet errors taken from https://github.com/hendrycks/robustness").
ALEXNET_ERR_SOURCE = "https://github.com/google-research/augmix/blob/master/imagenet.py (ALEXNET_ERR)"
ALEXNET_ERR = dict(zip(CORRUPTIONS, (
    0.886428, 0.894468, 0.922640, 0.819880, 0.826268, 0.785948, 0.798360,
    0.866816, 0.826572, 0.819324, 0.564592, 0.853204, 0.646056, 0.717840,
    0.606500)))


# -------------------------------------------------------------------------------------- metrics
def rms_calibration_error(confidence, correct, bin_size: int = 100) -> float:
    """RMS calibration error with adaptive binning (Hendrycks et al.): sqrt(sum_b |B_b|/n (acc_b - conf_b)^2).

    The samples are sorted by confidence and cut into ``n // bin_size`` bins of ``bin_size`` samples
    each, the last bin taking the remainder (one bin when n < bin_size). ``confidence``: the top
    softmax probability of each sample; ``correct``: whether its top-1 prediction was right.

    Unlike hendrycks/outlier-exposure ``calibration_tools.calib_err`` (whose loop ``range(len(bins) - 1)``
    leaves the last, most confident bin out), every bin counts, as the formula says.
    """
    conf = np.asarray(confidence, np.float64).reshape(-1)
    corr = np.asarray(correct, np.float64).reshape(-1)
    if conf.shape != corr.shape:
        raise ValueError(f"confidence and correct differ in length ({conf.size} vs {corr.size})")
    n = conf.size
    if n == 0:
        raise ValueError("no samples")
    if bin_size < 1:
        raise ValueError(f"bin_size={bin_size} must be >= 1")
    order = np.argsort(conf, kind="stable")
    conf, corr = conf[order], corr[order]
    edges = [i * bin_size for i in range(max(n // bin_size, 1))] + [n]
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        total += (hi - lo) / n * (corr[lo:hi].mean() - conf[lo:hi].mean()) ** 2
    return float(np.sqrt(total))


def score(confidence, correct) -> dict:
    """Top-1 error and RMS calibration error of one set of predictions."""
    correct = np.asarray(correct, bool)
    return {"error": float(1.0 - correct.mean()), "rms_calibration_error": rms_calibration_error(confidence, correct),
            "images": int(correct.size)}


def corruption_errors(errors: Mapping[str, Sequence[float]], reference: Mapping[str, float]) -> dict:
    """Each corruption's CE: (sum over severities of error) / (sum over severities of the reference's).

    ``reference`` holds the reference model's error averaged over the 5 severities (as ALEXNET_ERR
    does), so the denominator is 5 x that value: CE_c = mean_s(E_s,c) / reference_c.
    """
    out = {}
    for c, errs in errors.items():
        if c not in reference:
            raise KeyError(f"no reference error for corruption {c!r}")
        if len(errs) != len(SEVERITIES):
            raise ValueError(f"{c}: expected {len(SEVERITIES)} severity errors, got {len(errs)}")
        out[c] = float(np.sum(errs) / (len(errs) * reference[c]))
    return out


def mean_ce(errors: Mapping[str, Sequence[float]], reference: Mapping[str, float] = ALEXNET_ERR) -> float:
    """mCE: the plain mean over the given corruptions of :func:`corruption_errors` (a fraction; x100 for %)."""
    ces = corruption_errors(errors, reference)
    if not ces:
        raise ValueError("no corruptions to average")
    return float(np.mean(list(ces.values())))


# ------------------------------------------------------------------------------------- the model
def _strip_prefixes(state: Mapping[str, torch.Tensor]) -> dict:
    """Drops DDP's ``module.`` (and torch.compile's ``_orig_mod.``) key prefixes."""
    out = {}
    for k, v in state.items():
        for prefix in ("module.", "_orig_mod."):
            while k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def _num_classes(build, state) -> int:
    """The output size the weights were trained with: the shape of the entries that change with it."""
    try:
        with torch.device("meta"):   # no memory, no initialisation cost
            probes = [build(n).state_dict() for n in (2, 3)]
    except Exception:
        probes = [build(n).state_dict() for n in (2, 3)]
    keys = [k for k, v in probes[0].items() if k in probes[1] and v.shape != probes[1][k].shape]
    sizes = {int(state[k].shape[0]) for k in keys if k in state and state[k].dim() > 0}
    if len(sizes) != 1:
        raise SystemExit(f"cannot tell the number of classes from the checkpoint (classifier entries "
                         f"{keys} hold sizes {sorted(sizes)}); is --arch right?")
    return sizes.pop()


def load_model(path, arch: str | None = None, device="cpu"):
    """The model a training-script checkpoint holds, in eval mode on ``device``, and facts about it.

    ``path``: ``checkpoint.pth`` (weights + ``args``, whose ``arch`` names the model) or
    ``model_best.pth`` / a bare state dict (weights only: give ``arch``). Returns ``(model, info)`` with
    info = {"arch", "num_classes", "args" (the training arguments, {} if unknown), "epoch"}.
    """
    path = Path(path)
    if not path.is_file():
        raise SystemExit(f"{path}: no such checkpoint file")
    ckpt = checkpoints.load(path)   # weights_only: a file that needs more is refused, naming it
    if isinstance(ckpt, dict) and isinstance(ckpt.get("model"), Mapping):
        state, saved = ckpt["model"], ckpt.get("args") or {}
    elif isinstance(ckpt, dict) and ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        state, saved = ckpt, {}
    else:
        raise SystemExit(f"{path}: not a checkpoint of the training scripts (no 'model' state dict)")
    arch = arch or saved.get("arch")
    if not arch:
        raise SystemExit(f"{path} does not say which architecture it holds (model_best.pth keeps only the "
                         "weights): pass --arch, e.g. --arch wrn-40-4 or --arch resnet50")
    state = _strip_prefixes(state)
    build = model_builder(arch)
    n = _num_classes(build, state)
    model = build(n)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise SystemExit(f"{path}: the weights do not fit --arch {arch} with {n} classes:\n{err}") from None
    info = {"arch": arch, "num_classes": n, "args": dict(saved),
            "epoch": ckpt.get("epoch") if isinstance(ckpt, dict) else None}
    return model.eval().to(device), info

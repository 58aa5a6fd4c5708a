"""scikit-image's sample photos (:data:`~dali_ipmix.constants.SAMPLE_PHOTOS`) as RGB arrays: the
demo's classes, the benchmarks' generated JPEGs and the tests' images come from them."""

from __future__ import annotations

import functools

import numpy as np

from .constants import SAMPLE_PHOTOS

__all__ = ["sample_photo", "SAMPLE_PHOTOS"]


@functools.lru_cache(maxsize=None)
def sample_photo(name: str) -> np.ndarray:
    """Photo ``name`` of ``skimage.data`` as (H, W, 3) uint8 RGB (grey ones stacked to 3 channels).

    The astronaut stands in when this scikit-image lacks ``name`` (or would download it). Cached per
    process, read-only: decoding the large ones takes ~50 ms. ImportError names the package to install.
    """
    from .extras import require
    data = require("skimage.data", "the sample photos (scikit-image's)")
    try:
        img = np.asarray(getattr(data, name)())
    except Exception:   # older/newer scikit-image without that photo, or one it would download
        img = np.asarray(data.astronaut())
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    img = np.ascontiguousarray(img[..., :3])
    img.flags.writeable = False   # shared by every caller through the cache
    return img

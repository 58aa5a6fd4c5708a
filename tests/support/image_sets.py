"""Test images: scikit-image's sample photos plus synthetic extremes, as (N, H, W, 3) uint8 HWC."""

import numpy as np

from dali_ipmix.constants import SAMPLE_PHOTOS
from dali_ipmix.photos import sample_photo

PHOTO_NAMES = SAMPLE_PHOTOS[:4]


def photos(height, width, count=None):
    """Crops of the sample photos, cycled to ``count`` images."""
    srcs = [sample_photo(n) for n in PHOTO_NAMES]
    count = count or len(srcs)
    out = []
    for i in range(count):
        src = srcs[i % len(srcs)]
        y, x = (7 * i) % (src.shape[0] - height), (13 * i) % (src.shape[1] - width)
        out.append(src[y:y + height, x:x + width])
    return np.stack(out)


def extremes(height, width, seed=0):
    """Black, white, uniform noise and a few-level image: the inputs most likely to break an op."""
    rng = np.random.default_rng(seed)
    return np.stack([
        np.zeros((height, width, 3), np.uint8),
        np.full((height, width, 3), 255, np.uint8),
        rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
        (rng.integers(0, 4, (height, width, 3)) * 85).astype(np.uint8),
        np.full((height, width, 3), 128, np.uint8),
    ])


def structured(n, h, w, seed=0):
    """n (h, w, 3) uint8 images with structure (gradients + noise), so every op changes something."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    out = []
    for i in range(n):
        base = np.stack([(xx * (3 + i) + yy) % 256, (yy * 2 + i * 40) % 256, (xx + yy * 5) % 256], -1)
        out.append(np.clip(base + rng.integers(-30, 30, (h, w, 3)), 0, 255).astype(np.uint8))
    return out

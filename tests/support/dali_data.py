"""Tiny on-disk data sets for the DALI tests (pipelines, iterator, bad inputs).

Every data image is one solid colour that encodes its index, so a sample can be recognised after
cropping, flipping, resizing and normalisation: :func:`decode_index` reads the centre pixel of a
clean (not IPMix-ed) normalised CHW image back to the index.
"""

import os

import numpy as np
from PIL import Image

from dali_ipmix.constants import IMAGENET_MEAN, IMAGENET_STD

MEAN, STD = np.array(IMAGENET_MEAN), np.array(IMAGENET_STD)
_LEVELS, _STEP, _BASE = 5, 52, 24       # colour levels per channel: 24, 76, ..., 232


def index_colour(i):
    """The RGB colour that encodes sample index ``i`` (0 <= i < 125)."""
    return (_BASE + _STEP * (i % _LEVELS), _BASE + _STEP * ((i // _LEVELS) % _LEVELS),
            _BASE + _STEP * (i // _LEVELS ** 2))


def decode_index(chw):
    """Sample index of a clean normalised (3, H, W) tensor or array, from its centre pixel."""
    x = np.asarray(chw.float().cpu() if hasattr(chw, "cpu") else chw, dtype=np.float64)
    rgb = (x[:, x.shape[1] // 2, x.shape[2] // 2] * STD + MEAN) * 255
    level = np.rint((rgb - _BASE) / _STEP).astype(int)
    return int(level[0] + _LEVELS * level[1] + _LEVELS ** 2 * level[2])


def write_image(path, array, **save_kw):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path, **save_kw)
    return str(path)


def make_tree(root, per_class=(7, 7, 7), hw=(20, 24), ext="jpg", start=0):
    """An ImageFolder tree ``root/class_<k>/img_<i>.<ext>`` of solid colour-coded images.

    Returns ``{index: (path, label)}``; indices run from ``start`` over all classes in order.
    """
    out, i = {}, start
    for label, count in enumerate(per_class):
        for _ in range(count):
            img = np.empty((*hw, 3), np.uint8)
            img[:] = index_colour(i)
            path = write_image(os.path.join(root, f"class_{label}", f"img_{i:03d}.{ext}"), img,
                               **({"quality": 95} if ext == "jpg" else {}))
            out[i] = (path, label)
            i += 1
    return out


def make_mixing(root, n=5, seed=0, hw=(30, 40)):
    """``n`` random-noise PNG mixing pictures of varied sizes in ``root`` and a sub-folder."""
    rng = np.random.default_rng(seed)
    paths = []
    for k in range(n):
        h, w = hw[0] + 3 * k, hw[1] - 2 * k
        sub = "deeper" if k % 2 else ""
        paths.append(write_image(os.path.join(root, sub, f"mix_{k}.png"),
                                 rng.integers(0, 256, (h, w, 3), dtype=np.uint8)))
    return paths


def collect_epoch(iterator):
    """One epoch of a JSD iterator: (sample indices from the clean view, labels), in order."""
    indices, labels = [], []
    for (clean, _, _), y in iterator:
        indices += [decode_index(c) for c in clean]
        labels += y.tolist()
    return indices, labels


def all_shorter_sides_equal(paths, side, num_workers=8):
    """Whether every image's shorter side is ``side`` pixels, from the headers."""
    from dali_ipmix.files import header_sizes, shorter_sides_equal
    return shorter_sides_equal(header_sizes(paths, num_workers), side)


def split_table(table, config):
    """A table output ((N, W) uint32) as ``(steps, mixw)``: (N * k * T, 26) uint32 rows (T = max(t, 1),
    plus one with a chain start) and (N, 1 + k) float32, the layout of ``table.pack_plan``."""
    from dali_ipmix.table import STEP_FIELDS
    table = np.asarray(table, np.uint32)
    e = config.engine
    rows = e.k * (max(e.t, 1) + int(e.chain_start)) * len(STEP_FIELDS)
    steps = table[:, :rows].reshape(-1, len(STEP_FIELDS))
    return steps, np.ascontiguousarray(table[:, rows:]).view(np.float32)

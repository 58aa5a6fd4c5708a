"""ipmix_batch: the public batched entry point (validate inputs, draw a plan, execute it)."""
# TEMPORARY STUB while the core lands: returns the images unchanged as float32.
import numpy as np


def ipmix_batch(images, mixing, config, rng):
    """(N, H, W, 3) uint8 images and mixing pictures -> (N, H, W, 3) float32 on the 0..255 scale."""
    return images.astype(np.float32)

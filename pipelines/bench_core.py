#!/usr/bin/env python
"""Throughput of the core augmentation, side by side in one run on the same images:
``ipmix_batch`` on NumPy (one process, batched) versus the per-image PIL reference (one process, a
loop, as the paper's DataLoader does per worker), at 224 px (ImageNet preset) and 32 px (CIFAR preset).
On a machine with CuPy and a GPU a CuPy column is added. Speeds are images/s of one IPMix view;
``numpy_mt`` is the NumPy backend with ``num_threads`` (``--threads``, default one per core).

    python pipelines/bench_core.py [--batch-size 64] [--batches 3] [--json out.json]
"""

import argparse
import json
import time

import numpy as np
from skimage import data

from dali_ipmix import IPMixConfig, ipmix_batch
from dali_ipmix.reference import ipmix_reference

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field")


def sample_images(n, size, seed):
    """Random crops of scikit-image's sample photos resized to ``size``: (n, size, size, 3) uint8."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        src = getattr(data, PHOTOS[i % len(PHOTOS)])()
        side = int(rng.integers(min(src.shape[:2]) // 2, min(src.shape[:2]) + 1))
        y, x = rng.integers(0, src.shape[0] - side + 1), rng.integers(0, src.shape[1] - side + 1)
        crop = Image.fromarray(src[y:y + side, x:x + side]).resize((size, size), Image.BILINEAR)
        out.append(np.asarray(crop))
    return np.stack(out)


def timed(fn, repeats):
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def cupy_or_none():
    try:
        import cupy
        cupy.cuda.runtime.getDeviceCount()
        return cupy
    except Exception:
        return None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--batches", type=int, default=3, help="timed batches per row (after a warm-up)")
    ap.add_argument("--threads", type=int, default=0,
                    help="threads of the extra NumPy column (default 0: one per core; the PIL "
                         "reference and the first NumPy column use one thread)")
    ap.add_argument("--json", help="also write the table to this JSON file")
    args = ap.parse_args(argv)
    cupy = cupy_or_none()
    rows = []
    for preset, size in (("imagenet", 224), ("cifar", 32)):
        cfg = getattr(IPMixConfig, preset)()
        n = args.batch_size
        x, z = sample_images(n, size, 0), sample_images(n, size, 1)
        rng = np.random.default_rng(0)
        t_np = timed(lambda: ipmix_batch(x, z, cfg, rng), args.batches)
        t_mt = timed(lambda: ipmix_batch(x, z, cfg, rng, num_threads=args.threads), args.batches)
        t_pil = timed(lambda: [ipmix_reference(x[i], z[i], cfg, rng) for i in range(n)], args.batches)
        row = {"preset": preset, "size": size, "batch": n,
               "numpy_img_s": n / t_np, "numpy_mt_img_s": n / t_mt, "pil_img_s": n / t_pil,
               "numpy_over_pil": t_pil / t_np}
        if cupy is not None:
            dx, dz = cupy.asarray(x), cupy.asarray(z)
            def run_gpu():
                ipmix_batch(dx, dz, cfg, rng)
                cupy.cuda.get_current_stream().synchronize()
            t_cp = timed(run_gpu, args.batches)
            row.update(cupy_img_s=n / t_cp, cupy_over_pil=t_pil / t_cp)
        rows.append(row)
        print(f"[bench] {preset} {size}px done", flush=True)

    cols = ["preset", "size", "batch", "numpy_img_s", "numpy_mt_img_s", "pil_img_s", "numpy_over_pil"]
    cols += ["cupy_img_s", "cupy_over_pil"] if cupy is not None else []
    print(" | ".join(f"{c:>14s}" for c in cols))
    for row in rows:
        print(" | ".join(f"{row[c]:>14.1f}" if isinstance(row[c], float) else f"{row[c]!s:>14s}" for c in cols))
    if cupy is None:
        print("(no CuPy/GPU here: CuPy rows skipped)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()

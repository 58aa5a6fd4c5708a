#!/usr/bin/env python
"""Throughput of the core augmentation, side by side in one run on the same images:
``ipmix_batch`` on NumPy (one process, batched) versus the per-image PIL reference (one process, a
loop, as the paper's DataLoader does per worker), at 224 px (ImageNet preset) and 32 px (CIFAR preset).
On a machine with CuPy and a GPU two columns are added: ``cuda`` (the compiled core replayed from
the plan table, the GPU default) and ``cupy_arrays`` (the array executor's calls on CuPy). Speeds are
images/s of one IPMix view; ``numpy_mt`` is the NumPy executor with ``num_threads`` (``--threads``,
default one per core).

``--host-profile`` instead measures the CUDA executor's host side without a GPU (a recording stand-in
for the device, ``dali_ipmix._scripts.profile``): N=256, 224 px, ImageNet preset, JSD; it prints
``host_ms_per_jsd_batch`` (plan drawing included), ``launches_per_view`` and ``host_syncs_per_batch``.

    python pipelines/bench_core.py [--batch-size 64] [--batches 3] [--json out.json]
    python pipelines/bench_core.py --host-profile [--json host.json]
"""

import argparse
import json
import time

import numpy as np

from dali_ipmix import IPMixConfig, ipmix_batch
from dali_ipmix.constants import SAMPLE_PHOTOS
from dali_ipmix.photos import sample_photo
from dali_ipmix.presets import PRESETS
from dali_ipmix.reference import ipmix_reference


def sample_images(n, size, seed):
    """Random crops of scikit-image's sample photos resized to ``size``: (n, size, size, 3) uint8."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        src = sample_photo(SAMPLE_PHOTOS[i % len(SAMPLE_PHOTOS)])
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
    ap.add_argument("--host-profile", action="store_true",
                    help="measure the CUDA executor's host side against a recording device (no GPU needed)")
    args = ap.parse_args(argv)
    if args.host_profile:
        return host_profile_main(args)
    cupy = cupy_or_none()
    rows = []
    for preset, size in ((p.name, p.size) for p in PRESETS.values()):
        cfg = IPMixConfig.from_preset(preset)
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
            def run_arrays():
                ipmix_batch(dx, dz, cfg, rng, executor="arrays")
                cupy.cuda.get_current_stream().synchronize()
            t_cp = timed(run_gpu, args.batches)
            t_ca = timed(run_arrays, args.batches)
            row.update(cuda_img_s=n / t_cp, cuda_over_pil=t_pil / t_cp, cupy_arrays_img_s=n / t_ca,
                       cuda_over_cupy_arrays=t_ca / t_cp)
        rows.append(row)
        print(f"[bench] {preset} {size}px done", flush=True)

    cols = ["preset", "size", "batch", "numpy_img_s", "numpy_mt_img_s", "pil_img_s", "numpy_over_pil"]
    cols += ["cuda_img_s", "cuda_over_pil", "cupy_arrays_img_s", "cuda_over_cupy_arrays"] if cupy is not None else []
    print(" | ".join(f"{c:>14s}" for c in cols))  # noqa: E501
    for row in rows:
        print(" | ".join(f"{row[c]:>14.1f}" if isinstance(row[c], float) else f"{row[c]!s:>14s}" for c in cols))
    if cupy is None:
        print("(no CuPy/GPU here: CuPy rows skipped)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


def host_profile_main(args):
    from dali_ipmix._scripts.profile import host_profile
    result = host_profile(batch_size=256, size=PRESETS["imagenet"].size, config=IPMixConfig.imagenet(jsd=True),
                          batches=max(args.batches, 20))
    for key in ("host_ms_per_jsd_batch", "launches_per_view", "host_syncs_per_batch"):
        print(f"{key:<24s} {result[key]}")
    print(f"(N={result['batch_size']}, {result['size']} px, ImageNet preset, JSD; median of "
          f"{max(args.batches, 20)} batches; table {result['table_bytes_per_view']} bytes per view in "
          f"{result['uploads_per_view']} upload)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    main()

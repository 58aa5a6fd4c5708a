"""The ``dali-ipmix`` command line.

    dali-ipmix fractals OUT_DIR -n N [--size S] [--seed K] [--format jpeg|png] [--quiet]
    dali-ipmix demo [--out out/demo] [--device cpu|gpu] [--size 128] [--steps 60] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence


def _positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dali-ipmix", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    fr = sub.add_parser("fractals", help="write a procedural fractal mixing set (JPEG or PNG files)")
    fr.add_argument("out_dir", metavar="OUT_DIR", help="folder to write fractal_00000.jpg ... into")
    fr.add_argument("-n", type=_positive, required=True, help="number of pictures")
    fr.add_argument("--size", type=_positive, default=256, help="edge length in pixels (default 256)")
    fr.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    fr.add_argument("--format", choices=("jpeg", "png"), default="jpeg",
                    help="jpeg (default, quality 95: decoded on the GPU in GPU pipelines) or png "
                         "(lossless, but decoded on the CPU even in GPU pipelines)")
    fr.add_argument("--quiet", action="store_true", help="no progress bar")

    demo = sub.add_parser("demo", help="run the end-to-end demo (data, pipeline, preview, training)")
    demo.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    demo.add_argument("--device", choices=("cpu", "gpu"), default=None,
                      help="default: gpu when CUDA is available, else cpu")
    demo.add_argument("--size", type=_positive, default=128, help="training resolution (default 128)")
    demo.add_argument("--steps", type=_positive, default=60, help="training steps (default 60)")
    demo.add_argument("--batch-size", type=_positive, default=16, help="samples per batch (default 16)")
    demo.add_argument("--per-class", type=_positive, default=48, help="images per class (default 48)")
    demo.add_argument("--threads", type=_positive, default=None, help="DALI CPU threads")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    from .config import METHODS
    demo.add_argument("--method", choices=tuple(METHODS), default="ipmix",
                      help="the augmentation (default ipmix; augmix needs no mixing set)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``dali-ipmix`` console script; returns the process exit code."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "fractals":
            from .fractals import write_fractal_set
            paths = write_fractal_set(args.out_dir, args.n, size=args.size, seed=args.seed,
                                      progress=not args.quiet, file_format=args.format)
            print(f"wrote {len(paths)} fractal pictures ({args.size}x{args.size} {args.format.upper()}) "
                  f"to {args.out_dir}")
        else:
            from .demo import run_demo
            run_demo(args.out, device=args.device, size=args.size, steps=args.steps,
                     batch_size=args.batch_size, per_class=args.per_class, seed=args.seed,
                     num_threads=args.threads, progress=not args.quiet, method=args.method)
    except (ValueError, OSError, ImportError, RuntimeError) as err:
        print(f"dali-ipmix {args.command}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

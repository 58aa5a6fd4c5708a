#!/usr/bin/env python
"""Train a torchvision classifier on ImageNet (or any ImageFolder tree) with IPMix through DALI.

In the style of PyTorch's examples/imagenet: ``DATA/train`` and ``DATA/val`` hold one sub-folder per
class; ``--arch`` picks a torchvision model (default resnet50, randomly initialised); SGD with nesterov
momentum, per-step cosine learning rate, AMP (float16 autocast) and channels_last on CUDA, a checkpoint
every epoch (``--resume``), top-1/top-5 on ``DATA/val`` every epoch.

``--loader dali-ipmix`` (default) feeds the model from ``dali_ipmix.training_pipeline`` (decode,
random-resized-crop 224 + flip, IPMix with the paper's ImageNet setting, normalise) through
``IPMixIterator``; ``--loader pytorch`` uses torchvision's ImageFolder with the standard transforms and
no IPMix (the baseline). ``--jsd`` trains on (clean, view1, view2) with the JSD consistency loss, as
the paper's ImageNet runs do (ResNet-50, 180 epochs). ``--method augmix|pixmix`` runs AugMix or PixMix
with their authors' ImageNet settings in the same pipeline (AugMix needs no ``--mixing-root``).

One GPU::

    python pipelines/train_imagenet.py /data/imagenet --mixing-root /data/fractals --jsd -b 64

Eight GPUs (one process each, each reading its own shard; logs and checkpoints from rank 0)::

    torchrun --nproc_per_node 8 pipelines/train_imagenet.py /data/imagenet --mixing-root /data/fractals \\
        --jsd -b 32 --lr 0.1

``--batch-size`` is per process; with ``--jsd`` each sample is three images on the GPU.
"""

import argparse
import sys
from pathlib import Path

from dali_ipmix._scripts import training
from dali_ipmix._scripts.models import torchvision_model
from dali_ipmix.presets import IMAGENET


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("data", help="folder holding train/ and val/ in ImageFolder layout")
    p.add_argument("-a", "--arch", default="resnet50", help="a torchvision.models classification model name")
    p.add_argument("--size", type=int, default=IMAGENET.size, help="training / validation crop edge in pixels")
    training.add_common_args(p, epochs=180, batch_size=64, lr=0.1, weight_decay=1e-4, print_freq=100)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    root = Path(args.data)
    for sub in ("train", "val"):
        if not (root / sub).is_dir():
            sys.exit(f"{root / sub}: not a folder (expected DATA/train and DATA/val in ImageFolder layout)")
    training.run(args, torchvision_model(args.arch), root / "train", root / "val", preset=IMAGENET.name,
                 size=args.size)


if __name__ == "__main__":
    main()

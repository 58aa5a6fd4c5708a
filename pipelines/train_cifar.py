#!/usr/bin/env python
"""Train WRN-40-4 on CIFAR-10/100 with IPMix through DALI, with the paper's CIFAR recipe as defaults.

Defaults (the reference code's): 100 epochs, SGD momentum 0.9 nesterov, lr 0.1 with a per-step cosine
schedule, weight decay 5e-4, batch 128, JSD loss on (``--no-jsd`` for plain cross-entropy). DATA is
the python-pickle folder as distributed, ``cifar-10-batches-py`` (data_batch_1..5, test_batch,
batches.meta) or ``cifar-100-python`` (train, test, meta; fine labels).

How DALI is fed: the pickles are converted ONCE into a lossless PNG ImageFolder tree (``--cache-dir``,
default DATA-imagefolder next to DATA; folders ``000_airplane``, ... so that sorted folder order is
the label order) and then read by the same ``dali_ipmix.training_pipeline`` / ``validation_pipeline``
as ImageNet, with the CIFAR preset. Why not ``fn.external_source`` over the in-memory arrays:
  * the file reader already gives what the training loop relies on -- per-rank shards, shuffling,
    exact epochs and ``len()`` -- which an external source would have to re-implement per rank;
  * one pipeline definition serves both scripts, so the CIFAR path cannot drift from the tested one;
  * the cost is small: about 10 s and ~150 MB once, and decoding a 32x32 PNG is cheap next to IPMix.
PNG, not JPEG, so the network sees exactly the pickled pixels. Under torchrun the local rank 0 of
each node converts and the other ranks wait for it.

    python pipelines/train_cifar.py /data/cifar-10-batches-py --mixing-root /data/fractals-32
    torchrun --nproc_per_node 8 pipelines/train_cifar.py /data/cifar-100-python --mixing-root ... -b 16
"""

import argparse
import os
from pathlib import Path

from dali_ipmix._scripts import training
from dali_ipmix._scripts.cifar import prepare_data
from dali_ipmix._scripts.models import wide_resnet
from dali_ipmix.presets import CIFAR


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("data", help="cifar-10-batches-py or cifar-100-python folder")
    p.add_argument("-a", "--arch", default="wrn-40-4", help="wrn-DEPTH-WIDTH")
    p.add_argument("--cache-dir", help="where the PNG ImageFolder copy goes (default DATA-imagefolder)")
    training.add_common_args(p, epochs=100, batch_size=128, lr=0.1, weight_decay=5e-4, jsd=True, print_freq=50)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    model_fn = wide_resnet(args.arch)  # a bad --arch stops before any conversion work
    src = Path(args.data).resolve()
    cache = Path(args.cache_dir) if args.cache_dir else src.with_name(src.name + "-imagefolder")
    root = prepare_data(src, cache, int(os.environ.get("LOCAL_RANK", "0")))
    training.run(args, model_fn, root / "train", root / "val", preset=CIFAR.name, size=CIFAR.size)


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Train WRN-40-4 on CIFAR-10/100 with IPMix through DALI, with the paper's CIFAR recipe as defaults.

``--method augmix|pixmix`` trains with AugMix or PixMix instead (their authors' CIFAR settings, the
same pipeline; AugMix needs no ``--mixing-root``; PixMix's authors train with ``--no-jsd``).

Defaults (the reference code's): 100 epochs, SGD momentum 0.9 nesterov, lr 0.1 with a per-step cosine
schedule, weight decay 5e-4, batch 128, JSD loss on (``--no-jsd`` for plain cross-entropy). DATA is
the python-pickle folder as distributed, ``cifar-10-batches-py`` (data_batch_1..5, test_batch,
batches.meta) or ``cifar-100-python`` (train, test, meta; fine labels).

How DALI is fed: every rank reads the pickles into memory (uint8 (N, 32, 32, 3) arrays and labels)
and hands them to ``dali_ipmix.training_pipeline`` / ``validation_pipeline`` (``images=``,
``labels=``) with the CIFAR preset: no files, no decoding; the same shards, epochs, crops and keyed
augmentation as files (the PNG tree of the same pixels gives the same batches). ``--loader
pytorch`` (the torchvision baseline) reads a lossless PNG ImageFolder tree instead, converted ONCE
from the pickles (``--cache-dir``, default DATA-imagefolder next to DATA; under torchrun the local
rank 0 of each node converts and the other ranks wait for it).

    python pipelines/train_cifar.py /data/cifar-10-batches-py --mixing-root /data/fractals-32
    torchrun --nproc_per_node 8 pipelines/train_cifar.py /data/cifar-100-python --mixing-root ... -b 16
    python pipelines/train_cifar.py /data/cifar-10-batches-py --method augmix
"""

import argparse
import os
from pathlib import Path

from dali_ipmix._scripts import training
from dali_ipmix._scripts.cifar import prepare_data, read_cifar
from dali_ipmix._scripts.models import wide_resnet
from dali_ipmix.presets import CIFAR


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("data", help="cifar-10-batches-py or cifar-100-python folder")
    p.add_argument("-a", "--arch", default="wrn-40-4", help="wrn-DEPTH-WIDTH")
    p.add_argument("--cache-dir", help="--loader pytorch: where the PNG ImageFolder copy goes "
                                       "(default DATA-imagefolder)")
    training.add_common_args(p, epochs=100, batch_size=128, lr=0.1, weight_decay=5e-4, jsd=True, print_freq=50)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    model_fn = wide_resnet(args.arch)  # a bad --arch stops before any conversion work
    src = Path(args.data).resolve()
    if args.loader == "dali-ipmix":   # from memory: no files, no decoding
        arrays, names = read_cifar(src)
        training.run(args, model_fn, None, None, preset=CIFAR.name, size=CIFAR.size, arrays=arrays, names=names)
        return
    cache = Path(args.cache_dir) if args.cache_dir else src.with_name(src.name + "-imagefolder")
    root = prepare_data(src, cache, int(os.environ.get("LOCAL_RANK", "0")))
    training.run(args, model_fn, root / "train", root / "val", preset=CIFAR.name, size=CIFAR.size)


if __name__ == "__main__":
    main()

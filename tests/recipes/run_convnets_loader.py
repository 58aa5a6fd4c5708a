"""Drive the patched DeepLearningExamples ConvNets ``get_dali_train_loader`` (recipe 2 of
``docs/training.md``) as its ``main.py`` / ``training.py`` do, with a tiny model and ``JSDLoss``.

Run by ``tests/scripts/test_recipes.py`` (single process, and under ``torchrun --nproc_per_node 2``, gloo):

    python run_convnets_loader.py CONVNETS_DIR DATA MIXING OUT_PREFIX [--jsd] [--epochs 2] [--batch-size 4]

``CONVNETS_DIR`` holds the patched ``image_classification/dataloaders.py`` (its other imports are
stubbed by the test). For every epoch it writes, per rank, the sample indices of the clean images
(read back from the colour-coded images of ``tests/support/dali_data.py``), the labels and the batch counts to
``OUT_PREFIX.<rank>.json``.
"""

import argparse
import json
import os
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "support"))
from dali_data import decode_index  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("convnets")
    ap.add_argument("data")
    ap.add_argument("mixing")
    ap.add_argument("out")
    ap.add_argument("--jsd", action="store_true")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--classes", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0

    sys.path.insert(0, args.convnets)
    from image_classification.dataloaders import DATA_BACKEND_CHOICES, get_dali_train_loader
    from dali_ipmix import JSDLoss
    assert "dali-cpu" in DATA_BACKEND_CHOICES, DATA_BACKEND_CHOICES

    # As main.py: get_train_loader = get_dali_train_loader(True, args.mixing_root, args.jsd), then
    # get_train_loader(data, image_size, batch_size, num_classes, mixup > 0, ..., start_epoch=...).
    get_train_loader = get_dali_train_loader(True, args.mixing, args.jsd)
    loader, loader_len = get_train_loader(args.data, 16, args.batch_size, args.classes, False,
                                          interpolation="bilinear", augmentation=None, start_epoch=0,
                                          workers=1, _worker_init_fn=None,
                                          memory_format=torch.contiguous_format, prefetch_factor=2)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(8, args.classes))
    criterion = JSDLoss() if args.jsd else torch.nn.CrossEntropyLoss()   # main.py's choice
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    epochs = []
    for _ in range(args.epochs):
        indices, labels, rows, losses = [], [], [], []
        for input, target in loader:   # training.py's train(): loss(model(input), target)
            assert input.dtype == torch.float32 and target.dtype == torch.int64, (input.dtype, target.dtype)
            assert input.shape[1:] == (3, 16, 16), input.shape
            n = target.shape[0]
            loss = criterion(model(input), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            assert torch.isfinite(loss), loss
            indices += [decode_index(x) for x in input[:n]]   # the clean images come first
            labels += target.tolist()
            rows.append([input.shape[0], n])
            losses.append(loss.item())
        epochs.append(dict(indices=indices, labels=labels, rows=rows, losses=losses))
    with open(f"{args.out}.{rank}.json", "w") as f:
        json.dump(dict(rank=rank, loader_len=loader_len, epochs=epochs), f)
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()

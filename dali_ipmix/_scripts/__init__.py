"""What the scripts in ``pipelines/`` share, so that no script imports another: not public API.

    training     CLI options, DDP setup, loaders (DALI or torchvision, both from the preset record),
                 the training loop, evaluation, checkpoints (train_imagenet.py, train_cifar.py)
    models       the training scripts' models by ``--arch`` name (WRN-D-W or a torchvision model)
    cifar        CIFAR python pickles -> a lossless PNG ImageFolder tree
    robustness   corruption metrics, AlexNet's ImageNet-C errors, checkpoint loading (eval_robustness.py)
    checkpoints  checkpoint files: plain values written, loaded with weights_only=True (both)
    benchdata    generated benchmark data (JPEGs, fractals, CIFAR-like samples in memory), the plain
                 DALI baselines, the paper's per-image PIL loader, the GPU environment
                 (bench_throughput.py, bench_training.py, gpu_memory_check.py)

These modules import torch (and torchvision where a model or transform is built); the package's
core does not import them.
"""

"""The training scripts' models, by ``--arch`` name: ``wrn-DEPTH-WIDTH`` (a Wide ResNet for 32 x 32
inputs, the paper's CIFAR model) or any torchvision classification model (``resnet50``, ...).

Every builder returns ``num_classes -> nn.Module`` (randomly initialised); models map
(N, 3, H, W) float images to (N, num_classes) logits.
"""

import re

import torch.nn as nn
import torch.nn.functional as F

__all__ = ["WideResNet", "wide_resnet", "torchvision_model", "model_builder"]


class _Block(nn.Module):
    """Pre-activation wide basic block: BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus a (projected) shortcut."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.bn1, self.bn2 = nn.BatchNorm2d(cin), nn.BatchNorm2d(cout)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = None if cin == cout and stride == 1 else nn.Conv2d(cin, cout, 1, stride, 0, bias=False)

    def forward(self, x):
        o = F.relu(self.bn1(x))
        y = self.conv2(F.relu(self.bn2(self.conv1(o))))
        # The projection takes the pre-activated input, as in Zagoruyko & Komodakis' code.
        return y + (x if self.shortcut is None else self.shortcut(o))


class WideResNet(nn.Module):
    """WRN-depth-widen (Zagoruyko & Komodakis 2016) for 32x32 inputs: (N, 3, H, W) -> (N, num_classes) logits."""

    def __init__(self, depth=40, widen=4, num_classes=10):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n+4, got {depth}")
        n, widths = (depth - 4) // 6, [16, 16 * widen, 32 * widen, 64 * widen]
        layers = [nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)]
        for g in range(3):
            layers += [_Block(widths[g] if i == 0 else widths[g + 1], widths[g + 1], (1 if g == 0 else 2) if i == 0 else 1)
                       for i in range(n)]
        self.features = nn.Sequential(*layers, nn.BatchNorm2d(widths[3]), nn.ReLU(inplace=True),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(widths[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.fc(self.features(x))


def wide_resnet(arch: str):
    """``num_classes -> WideResNet`` for ``arch`` = ``wrn-DEPTH-WIDTH`` (SystemExit naming the rule otherwise)."""
    m = re.fullmatch(r"wrn-(\d+)-(\d+)", arch)
    if not m:
        raise SystemExit(f"--arch {arch!r}: expected wrn-DEPTH-WIDTH, e.g. wrn-40-4 (paper) or wrn-28-10")
    depth, widen = int(m[1]), int(m[2])
    if (depth - 4) % 6:
        raise SystemExit(f"--arch {arch!r}: the depth must be 6n+4 (10, 16, 22, 28, 40, ...)")
    return lambda num_classes: WideResNet(depth, widen, num_classes)


def torchvision_model(arch: str):
    """``num_classes -> model`` for a torchvision classification model name (SystemExit otherwise)."""
    import torchvision
    names = torchvision.models.list_models(module=torchvision.models)
    if arch not in names:
        raise SystemExit(f"--arch {arch!r} is not a torchvision classification model; try one of "
                         f"{', '.join(n for n in names if n.startswith('res'))}, ...")
    return lambda num_classes: torchvision.models.get_model(arch, weights=None, num_classes=num_classes)


def model_builder(arch: str):
    """``num_classes -> nn.Module`` the way the training scripts build ``arch``."""
    return wide_resnet(arch) if re.fullmatch(r"wrn-\d+-\d+", arch) else torchvision_model(arch)

"""A user's own model, loaded by ``package.module:factory`` (``tests._user_models:mixed_cnn``).

It mixes what real CNNs combine: a ResNeXt-style bottleneck (grouped 3x3 conv, residual add), a
depthwise-separable block with a squeeze-excitation gate, and two branches joined by concatenation.
"""

from __future__ import annotations

import torch
import torch.nn as nn


def _cbr(cin: int, cout: int, k: int = 3, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.act = nn.ReLU()
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.fc2(self.act(self.fc1(self.pool(x)))))


class MixedNet(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 16) -> None:
        super().__init__()
        w = width
        self.stem = _cbr(in_channels, w)
        # ResNeXt bottleneck: 1x1 -> grouped 3x3 (4 groups) -> 1x1, added to its input
        self.reduce = _cbr(w, 2 * w, 1)
        self.grouped = _cbr(2 * w, 2 * w, 3, groups=4)
        self.expand = _cbr(2 * w, w, 1, act=False)
        self.relu = nn.ReLU()
        # depthwise-separable with a squeeze-excitation gate
        self.dw = _cbr(w, w, 3, groups=w)
        self.se = SqueezeExcite(w, w // 4)
        self.pw = _cbr(w, 2 * w, 1)
        # two branches joined by concatenation
        self.branch_a = _cbr(2 * w, w, 3)
        self.branch_b = _cbr(2 * w, w // 2, 1)
        self.mix = _cbr(w + w // 2, 2 * w, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.relu(x + self.expand(self.grouped(self.reduce(x))))
        x = self.pw(self.se(self.dw(x)))
        x = self.mix(torch.cat([self.branch_a(x), self.branch_b(x)], 1))
        return self.fc(self.pool(x).flatten(1))


def mixed_cnn(num_classes: int = 10, in_channels: int = 3, width: int = 16) -> nn.Module:
    """Factory in the ``package.module:factory`` form amc loads."""
    return MixedNet(num_classes=num_classes, in_channels=in_channels, width=width)

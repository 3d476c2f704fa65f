"""Tiny in-file models for engine tests (each has ``example_inputs()``)."""

from __future__ import annotations

import torch
import torch.nn as nn


class TinyDenseNet(nn.Module):
    """DenseNet-style: every block's output is concatenated to its input."""

    def __init__(self, num_classes: int = 10, growth: int = 6) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(8)
        self.relu0 = nn.ReLU()
        self.block1 = nn.Sequential(nn.Conv2d(8, growth, 3, padding=1, bias=False), nn.BatchNorm2d(growth), nn.ReLU())
        self.block2 = nn.Sequential(nn.Conv2d(8 + growth, growth, 3, padding=1, bias=False), nn.BatchNorm2d(growth),
                                    nn.ReLU())
        self.trans = nn.Conv2d(8 + 2 * growth, 12, 1, bias=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(12, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu0(self.bn0(self.stem(x)))
        x = torch.cat([x, self.block1(x)], 1)
        x = torch.cat([x, self.block2(x)], 1)
        return self.fc(self.pool(self.trans(x)).flatten(1))

    @staticmethod
    def example_inputs() -> torch.Tensor:
        return torch.randn(2, 3, 16, 16)


class TinyGrouped(nn.Module):
    """A grouped (non-depthwise) conv between two plain ones, and a depthwise-separable pair."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.g = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pw = nn.Conv2d(8, 16, 1)
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.c1(x))
        x = self.act(self.g(x))
        x = self.act(self.pw(self.act(self.dw(x))))
        return self.fc(self.pool(x).flatten(1))

    @staticmethod
    def example_inputs() -> torch.Tensor:
        return torch.randn(2, 3, 16, 16)

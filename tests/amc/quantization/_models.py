"""Tiny in-file models for the quantization tests (each has ``example_inputs()``)."""

from __future__ import annotations

import torch
import torch.nn as nn

LAYERS = ["conv1", "conv2", "fc"]


class TinyCNN(nn.Module):
    """8x8 single-channel inputs (sklearn digits). ``fc`` is defined first but runs last."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.fc = nn.Linear(2 * width * 4 * 4, 10)
        self.conv1 = nn.Conv2d(1, width, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(2 * width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(x.flatten(1))

    @staticmethod
    def example_inputs(batch: int = 2) -> torch.Tensor:
        return torch.randn(batch, 1, 8, 8, generator=torch.Generator().manual_seed(0))


class MLP(nn.Module):
    """Fashion-MNIST-sized MLP: 136k weights."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(784, 160)
        self.fc2 = nn.Linear(160, 64)
        self.fc3 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.fc1(x.flatten(1)))
        return self.fc3(torch.relu(self.fc2(x)))

    @staticmethod
    def example_inputs(batch: int = 2) -> torch.Tensor:
        return torch.randn(batch, 1, 28, 28, generator=torch.Generator().manual_seed(0))


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy in percent."""
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean()) * 100

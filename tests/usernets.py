"""Model builders "of a user", importable as ``usernets:NAME`` by ``--model`` in tests (pytest puts
tests/ on sys.path): good ones and ones dalkit must refuse with a message that says what is missing."""

from __future__ import annotations

import math

import torch
from torch import nn


def sequential(num_classes: int, input_shape: tuple[int, ...], hidden: int = 32) -> nn.Module:
    """Flatten -> Linear -> ReLU -> Dropout -> Linear: the README's plain classifier."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), hidden), nn.ReLU(), nn.Dropout(0.3),
                         nn.Linear(hidden, num_classes))


class Net(nn.Module):
    """A user class with named layers (fc1 is the classifier)."""

    def __init__(self, num_classes: int = 10, in_features: int = 64) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(in_features, 24), nn.BatchNorm1d(24), nn.ReLU())
        self.fc1 = nn.Linear(24, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc1(self.body(x))


class _FrozenNorm(Net):
    """Fine-tuning's habit: ``train()`` keeps the normalisation in eval mode (its statistics frozen)."""

    def train(self, mode: bool = True) -> _FrozenNorm:
        super().train(mode)
        self.body[2].eval()
        return self


def frozen_norm(num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    return _FrozenNorm(num_classes, math.prod(input_shape))


def no_linear(num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """A classifier ending in a 1x1 convolution and pooling: no nn.Linear at all."""
    return nn.Sequential(nn.Conv2d(input_shape[0], num_classes, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())


class _VectorOut(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1)).sum(1)  # [B], not [B, C]


def vector_output(num_classes: int) -> nn.Module:
    return _VectorOut(num_classes)


def softmax_output(num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """Probabilities, not logits: the output is not the final nn.Linear's."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes), nn.Softmax(dim=1))


def wrong_classes(input_shape: tuple[int, ...]) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), 3))


a_module_instance = nn.Linear(64, 10)  # not a builder: every round must train a fresh model

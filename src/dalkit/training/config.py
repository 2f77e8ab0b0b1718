"""Training configuration."""

from __future__ import annotations

from dataclasses import dataclass

from dalkit.checks import check_field_types, short
from dalkit.errors import ConfigError

CLASS_BALANCE = ("off", "one-batch", "always")


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser, schedule and batching for one round of training.

    The paper's recipes: MNIST — Adam, lr 1e-3, batch 96, 50 epochs; CIFAR/SVHN — SGD lr 0.1,
    momentum 0.9, weight decay 5e-4, batch 128, 200 epochs, lr x0.1 at 80 % of the epochs.

    Attributes:
        epochs: passes over the labeled set per round.
        batch_size: minibatch size.
        optimizer: "adam" or "sgd".
        lr, momentum, weight_decay: optimiser settings.
        lr_decay_at: fraction of the epochs after which the lr is multiplied by 0.1 (None: constant).
        min_steps: lower bound on optimiser steps per round, so tiny labeled sets still train
            (0 disables it; epochs are then exact).
        crop_padding: random-crop padding (0 = no crop); hflip: random horizontal flips.
        eval_batch_size: batch size for inference.
        class_balance: weight each sample's cross-entropy by 1 / (n_c + 1e-5), n_c its class's count
            in the labeled set, and sum (the DM2 baselines' code): "off" (default), "one-batch" (only
            while the labeled set fits in one batch, as that code does) or "always".  The supervised
            and adversarial recipes honour it; loss prediction and the SSL recipes do not (the
            reference applies it to neither).
    """

    epochs: int = 50
    batch_size: int = 96
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_decay_at: float | None = None
    min_steps: int = 0
    crop_padding: int = 0
    hflip: bool = False
    eval_batch_size: int = 1024
    class_balance: str = "off"

    def __post_init__(self) -> None:
        check_field_types(self, "train.")
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"train.{name} must be positive, got {getattr(self, name)}")
        if self.optimizer not in ("adam", "sgd"):
            raise ConfigError(f"train.optimizer must be 'adam' or 'sgd', got {short(self.optimizer)}")
        if not self.lr > 0:
            raise ConfigError(f"train.lr must be positive, got {self.lr}")
        for name in ("weight_decay", "min_steps", "crop_padding"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if self.class_balance not in CLASS_BALANCE:
            raise ConfigError(f"train.class_balance must be one of {', '.join(CLASS_BALANCE)}, "
                              f"got {short(self.class_balance)}")
        if self.lr_decay_at is not None and not 0 < self.lr_decay_at <= 1:
            raise ConfigError(f"train.lr_decay_at must lie in (0, 1], got {self.lr_decay_at}")

    @staticmethod
    def for_family(family: str) -> TrainConfig:
        """The paper's recipe for a dataset family ("digits" or "natural")."""
        if family == "natural":
            return TrainConfig(epochs=200, batch_size=128, optimizer="sgd", lr=0.1, momentum=0.9,
                               weight_decay=5e-4, lr_decay_at=0.8, crop_padding=4, hflip=True)
        return TrainConfig(epochs=50, batch_size=96, optimizer="adam", lr=1e-3)

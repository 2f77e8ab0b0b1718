"""The one training loop.  Recipes differ only in the step function they hand to :func:`fit`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from dalkit.data.augment import augment_batch
from dalkit.data.dataset import to_float
from dalkit.training.config import TrainConfig


@dataclass
class Batch:
    """One minibatch handed to a step function.

    Attributes:
        x: float inputs in [0, 1], [B, C, H, W] (augmented).
        y: labels [B].
        x_adv: adversarial counterparts [B, C, H, W] or None; rows where ``paired`` is False are unused.
        paired: bool [B], True where the sample has an adversarial counterpart.
        epoch, epochs: this batch's epoch (0-based) and the round's number of epochs (schedules inside a
            recipe, e.g. loss prediction detaching its features after 60 % of the epochs).
    """

    x: Tensor
    y: Tensor
    x_adv: Tensor | None = None
    paired: Tensor | None = None
    epoch: int = 0
    epochs: int = 1


@dataclass
class TrainSet:
    """The labeled training data of a round.

    Attributes:
        images: uint8 [M, C, H, W]; labels: [M].
        adv_images: float [M, C, H, W] counterparts (rows without one are ignored) or None.
        paired: bool [M] or None.
    """

    images: Tensor
    labels: Tensor
    adv_images: Tensor | None = None
    paired: Tensor | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])


StepFn = Callable[[nn.Module, Batch], Tensor]
"""A step function maps (model, batch) to the scalar loss to minimise."""


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def fit(
    model: nn.Module,
    data: TrainSet,
    step: StepFn,
    cfg: TrainConfig,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
    progress: bool = False,
    desc: str = "train",
) -> dict[str, float]:
    """Train ``model`` on ``data`` with the loss given by ``step``.

    Batches are slices of a seeded ``randperm``; crop/flip augmentation runs on the whole batch
    (an adversarial counterpart gets the same crop and flip as its original).

    Args:
        model: the model (moved to ``device`` by the caller).
        data: labeled images (+ optional adversarial pairs).
        step: ``step(model, batch) -> loss``.
        cfg: optimiser and schedule.
        generator: seeded CPU generator for shuffling and augmentation.
        progress: show a tqdm bar over epochs.
    Returns:
        {"loss": mean loss of the last epoch, "steps": optimiser steps taken}.
    """
    n = len(data)
    if n == 0:
        raise ValueError("cannot train on an empty labeled set")
    opt = make_optimizer(model, cfg)
    steps_per_epoch = max(1, -(-n // cfg.batch_size))
    epochs = max(cfg.epochs, -(-cfg.min_steps // steps_per_epoch)) if cfg.min_steps else cfg.epochs
    sched = None
    if cfg.lr_decay_at is not None:
        milestone = max(1, int(round(cfg.lr_decay_at * epochs))) * steps_per_epoch
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[milestone], gamma=0.1)
    images = data.images.to(device)
    labels = data.labels.to(device)
    adv = data.adv_images.to(device) if data.adv_images is not None else None
    paired = data.paired.to(device) if data.paired is not None else None
    augment = cfg.crop_padding > 0 or cfg.hflip
    model.train()
    last_loss, steps = 0.0, 0
    for epoch in tqdm(range(epochs), desc=desc, disable=not progress, leave=False):
        perm = torch.randperm(n, generator=generator).to(device)
        total, count = 0.0, 0
        for start in range(0, n, cfg.batch_size):
            idx = perm[start:start + cfg.batch_size]
            x = to_float(images[idx])
            x_adv = adv[idx] if adv is not None else None
            if augment:
                if x_adv is not None:  # identical crop/flip for both halves of a pair
                    both = augment_batch(torch.cat([x, x_adv], 1), cfg.crop_padding, cfg.hflip, generator)
                    x, x_adv = both.split(x.shape[1], dim=1)
                else:
                    x = augment_batch(x, cfg.crop_padding, cfg.hflip, generator)
            batch = Batch(x, labels[idx], x_adv, paired[idx] if paired is not None else None,
                          epoch=epoch, epochs=epochs)
            loss = step(model, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
            steps += 1
        last_loss = total / count
    return {"loss": last_loss, "steps": float(steps)}

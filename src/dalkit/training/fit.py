"""The one training loop.  Recipes differ only in the step function they hand to :func:`fit`."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from dalkit.data.augment import augment_batch
from dalkit.data.dataset import to_float
from dalkit.errors import TrainingDivergedError
from dalkit.training.config import TrainConfig


@dataclass
class Batch:
    """One minibatch handed to a step function.

    Attributes:
        x: float inputs in [0, 1], [B, C, H, W] (augmented).
        y: labels [B].
        x_adv: adversarial counterparts [B, C, H, W] or None; rows where ``paired`` is False are unused.
        paired: bool [B], True where the sample has an adversarial counterpart.
        x_raw: the same labeled inputs before crop/flip [B, C, H, W] (recipes with their own views).
        idx: positions of the batch's samples in the :class:`TrainSet` [B] (per-sample state, e.g.
            feature queues).
        num_labeled: size of the labeled set M.
        u: un-augmented unlabeled inputs [mu * B, C, H, W] in [0, 1] when the recipe asked for them
            (``unlabeled_ratio`` > 0), else None.
        generator: the loop's seeded CPU generator, for the recipe's own random augmentations.
        step: index of this optimiser step (0-based) in the round.
        epoch, epochs: this batch's epoch (0-based) and the round's number of epochs (schedules inside a
            recipe, e.g. loss prediction detaching its features after 60 % of the epochs).
        class_weight: per-class loss weights [C'] (``TrainConfig.class_balance``) or None: a recipe that
            honours them sums w[y_i] * loss_i instead of averaging.
    """

    x: Tensor
    y: Tensor
    x_adv: Tensor | None = None
    paired: Tensor | None = None
    x_raw: Tensor | None = None
    idx: Tensor | None = None
    num_labeled: int = 0
    u: Tensor | None = None
    generator: torch.Generator | None = None
    step: int = 0
    epoch: int = 0
    epochs: int = 1
    class_weight: Tensor | None = None


@dataclass
class TrainSet:
    """The labeled training data of a round.

    Attributes:
        images: uint8 [M, C, H, W]; labels: [M].
        adv_images: float [M, C, H, W] counterparts (rows without one are ignored) or None.
        paired: bool [M] or None.
        unlabeled: uint8 [U, C, H, W] unlabeled images for semi-supervised recipes, or None.
    """

    images: Tensor
    labels: Tensor
    adv_images: Tensor | None = None
    paired: Tensor | None = None
    unlabeled: Tensor | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])


StepFn = Callable[[nn.Module, Batch], Tensor]
"""A step function maps (model, batch) to the scalar loss to minimise."""


class _UnlabeledStream:
    """Endless slices of seeded ``randperm``s over the unlabeled images (a new permutation whenever one
    is used up, so every image is drawn once per pass)."""

    def __init__(self, images: Tensor, generator: torch.Generator) -> None:
        self.images = images
        self.generator = generator
        self.order = torch.empty(0, dtype=torch.long)

    def take(self, k: int) -> Tensor:
        n = self.images.shape[0]
        while self.order.numel() < k:
            self.order = torch.cat([self.order, torch.randperm(n, generator=self.generator)])
        idx, self.order = self.order[:k], self.order[k:]
        return to_float(self.images[idx.to(self.images.device)])


def class_weights(labels: Tensor, cfg: TrainConfig) -> Tensor | None:
    """1 / (n_c + 1e-5) per class of the labeled set when ``cfg.class_balance`` applies, else None
    ("one-batch": only while the whole labeled set fits in one batch, as the DM2 baselines' code)."""
    if cfg.class_balance == "off" or (cfg.class_balance == "one-batch" and len(labels) > cfg.batch_size):
        return None
    return 1.0 / (torch.bincount(labels.cpu()).double() + 1e-5)


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
    unlabeled_ratio: int = 0,
    on_epoch: Callable[[int, int], None] | None = None,
) -> dict[str, float]:
    """Train ``model`` on ``data`` with the loss given by ``step``.

    Batches are slices of a seeded ``randperm``; crop/flip augmentation runs on the whole batch
    (an adversarial counterpart gets the same crop and flip as its original).  A semi-supervised recipe
    declares ``unlabeled_ratio`` = mu: each labeled batch of B samples then comes with mu * B
    un-augmented unlabeled inputs (``batch.u``) drawn from ``data.unlabeled``; the recipe makes its own
    weak/strong views.  With ``unlabeled_ratio`` = 0 nothing else is drawn from ``generator``, so
    supervised and adversarial recipes see exactly the random stream they always did.

    Args:
        model: the model (moved to ``device`` by the caller).
        data: labeled images (+ optional adversarial pairs).
        step: ``step(model, batch) -> loss``.
        cfg: optimiser and schedule.
        generator: seeded CPU generator for shuffling and augmentation.
        progress: show a tqdm bar over epochs.
        unlabeled_ratio: mu, unlabeled samples per labeled sample in a batch (0: none).
        on_epoch: called after each epoch with (epochs done, epochs in all): 1..E in order, where E is
            ``cfg.epochs`` raised to reach ``cfg.min_steps`` (a labeling page's progress bar).
    Returns:
        {"loss": mean loss of the last epoch, "steps": optimiser steps taken}.
    """
    n = len(data)
    if n == 0:
        raise ValueError("cannot train on an empty labeled set")
    if unlabeled_ratio < 0:
        raise ValueError(f"unlabeled_ratio must be >= 0, got {unlabeled_ratio}")
    stream = None
    if unlabeled_ratio > 0:
        if data.unlabeled is None or data.unlabeled.shape[0] == 0:
            raise ValueError("this recipe trains on unlabeled batches; the train set has no unlabeled images")
        stream = _UnlabeledStream(data.unlabeled.to(device), generator)
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
    weights = class_weights(data.labels, cfg)
    weights = weights.float().to(device) if weights is not None else None
    model.train()
    last_loss, steps = 0.0, 0
    for epoch in tqdm(range(epochs), desc=desc, disable=not progress, leave=False):
        perm = torch.randperm(n, generator=generator).to(device)
        total, count = 0.0, 0
        for start in range(0, n, cfg.batch_size):
            idx = perm[start:start + cfg.batch_size]
            x = x_raw = to_float(images[idx])
            x_adv = adv[idx] if adv is not None else None
            if augment:
                if x_adv is not None:  # identical crop/flip for both halves of a pair
                    both = augment_batch(torch.cat([x, x_adv], 1), cfg.crop_padding, cfg.hflip, generator)
                    x, x_adv = both.split(x.shape[1], dim=1)
                else:
                    x = augment_batch(x, cfg.crop_padding, cfg.hflip, generator)
            u = stream.take(unlabeled_ratio * len(idx)) if stream is not None else None
            batch = Batch(x, labels[idx], x_adv, paired[idx] if paired is not None else None, x_raw=x_raw,
                          idx=idx, num_labeled=n, u=u, generator=generator, step=steps, epoch=epoch,
                          epochs=epochs, class_weight=weights)
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
        if not math.isfinite(last_loss):  # a NaN weight never recovers: stop before it is recorded
            raise TrainingDivergedError(
                f"training diverged: the mean loss of epoch {epoch + 1} of {epochs} is {last_loss} "
                f"({cfg.optimizer}, lr {cfg.lr:g}, {n} labeled samples); lower the learning rate (--lr) "
                "or try --optimizer adam")
        if on_epoch is not None:
            on_epoch(epoch + 1, epochs)
    return {"loss": last_loss, "steps": float(steps)}

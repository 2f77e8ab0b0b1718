"""Pool perturbations of the DM2 paper's robustness experiments: open-set noise (CIFAR-10s: CIFAR-10
with out-of-distribution images mixed into the unlabeled pool) and class imbalance (a long-tailed pool).

Out-of-distribution (OOD) images must exist offline.  The default source, ``photos``, cuts random crops
(side 1-4x the image side, grey for 1-channel pools) out of the two colour photographs scikit-learn ships
(``sklearn.datasets.load_sample_images``: a temple and a flower, 427x640), resized by area averaging to
the pool's image size.  They are natural-image texture and edges: clearly not digits, unlike noise
(trivially separable) or scikit-learn's 8x8 digits (in-distribution).  Any registered dataset that dalkit
can load may be named instead (converted to the pool's channels and size).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dalkit.data.dataset import ImageDataset
from dalkit.errors import ConfigError

OOD_SOURCES_BUILTIN = ("photos",)


def long_tail_counts(n_max: int, num_classes: int, ratio: float) -> list[int]:
    """Per-class sizes of an exponential long tail: n_c = floor(n_max * ratio^(-c / (C - 1))), class 0
    the head and class C-1 the tail with n_max / ratio samples (Cui et al. 2019, CIFAR-LT)."""
    if num_classes == 1:
        return [n_max]
    return [int(np.floor(n_max * ratio ** (-c / (num_classes - 1)) + 1e-9)) for c in range(num_classes)]


def long_tail_indices(labels: Tensor, num_classes: int, ratio: float, seed: int) -> Tensor:
    """Sorted indices of a long-tailed subset of ``labels`` with imbalance ratio ``ratio`` >= 1.

    The head size is the smallest class count (so every class can supply its share); each class keeps a
    seeded random choice of its samples.

    Raises:
        ConfigError: ratio < 1.
    """
    if not ratio >= 1:
        raise ConfigError(f"imbalance_ratio must be >= 1 (n_head / n_tail), got {ratio}")
    counts = torch.bincount(labels, minlength=num_classes)
    sizes = long_tail_counts(int(counts.min()), num_classes, ratio)
    g = torch.Generator().manual_seed(seed)
    keep = []
    for c in range(num_classes):
        members = (labels == c).nonzero().squeeze(1)
        keep.append(members[torch.randperm(members.numel(), generator=g)[: sizes[c]]])
    return torch.cat(keep).sort().values


def _resize(images: Tensor, shape: tuple[int, int, int]) -> Tensor:
    """float [N, C', h, w] in [0, 1] -> [N, C, H, W]: channel mean for grey targets, repeat for colour,
    area-averaging resize."""
    c, h, w = shape
    if images.shape[1] != c:
        images = images.mean(1, keepdim=True) if c == 1 else images.mean(1, keepdim=True).repeat(1, c, 1, 1)
    if images.shape[-2:] != (h, w):
        images = F.interpolate(images, size=(h, w), mode="area")
    return images


def photo_crops(n: int, shape: tuple[int, int, int], seed: int) -> Tensor:
    """``n`` uint8 crops [n, C, H, W] of scikit-learn's sample photographs (seeded)."""
    from sklearn.datasets import load_sample_images

    photos = [torch.from_numpy(np.array(im)).permute(2, 0, 1).float() / 255
              for im in load_sample_images().images]  # [3, 427, 640] each
    _, h, w = shape
    g = torch.Generator().manual_seed(seed)
    out = torch.empty(n, *shape, dtype=torch.uint8)
    for i in range(n):
        photo = photos[int(torch.randint(0, len(photos), (1,), generator=g))]
        side = int(torch.randint(min(h, w), 4 * max(h, w) + 1, (1,), generator=g))
        top = int(torch.randint(0, photo.shape[1] - side + 1, (1,), generator=g))
        left = int(torch.randint(0, photo.shape[2] - side + 1, (1,), generator=g))
        crop = photo[None, :, top:top + side, left:left + side]
        out[i] = (_resize(crop, shape)[0].clamp(0, 1) * 255).round().to(torch.uint8)
    return out


def ood_images(source: str, n: int, shape: tuple[int, int, int], seed: int,
               data_root: str | Path | None = None) -> Tensor:
    """``n`` out-of-distribution uint8 images of ``shape`` from ``source`` ("photos" or a dataset name).

    Raises:
        ConfigError / UnknownNameError: unknown source; DatasetNotFoundError: its files are absent.
    """
    if source == "photos":
        return photo_crops(n, shape, seed)
    from dalkit.data import DATASETS, load_dataset

    DATASETS.get(source)  # UnknownNameError listing the datasets
    split = load_dataset(source, data_root).train
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(split), generator=g)[:n]
    if idx.numel() < n:
        raise ConfigError(f"open-set source {source!r} has {len(split)} images, {n} are needed")
    return (_resize(split.images[idx].float() / 255, shape).clamp(0, 1) * 255).round().to(torch.uint8)


def add_open_set(pool: ImageDataset, fraction: float, source: str, seed: int,
                 data_root: str | Path | None = None) -> tuple[ImageDataset, Tensor]:
    """Append OOD images so that they make up ``fraction`` of the returned pool.

    OOD images get seeded random in-distribution labels: what an annotator forced to name a class
    would answer (the ``random-label`` oracle); the ``discard`` oracle ignores them.

    Returns:
        (pool with n_ood = round(fraction / (1 - fraction) * len(pool)) images appended, bool ood mask [N']).
    """
    if not 0 <= fraction < 1:
        raise ConfigError(f"open_set_fraction must lie in [0, 1), got {fraction}")
    n_ood = int(round(fraction / (1 - fraction) * len(pool)))
    mask = torch.zeros(len(pool) + n_ood, dtype=torch.bool)
    if n_ood == 0:
        return pool, mask
    imgs = ood_images(source, n_ood, pool.image_shape, seed, data_root)
    g = torch.Generator().manual_seed(seed + 1)
    labels = torch.randint(0, pool.num_classes, (n_ood,), generator=g)
    mask[len(pool):] = True
    merged = ImageDataset(torch.cat([pool.images, imgs]), torch.cat([pool.labels, labels]), pool.classes,
                          pool.name)
    return merged, mask


__all__ = ["OOD_SOURCES_BUILTIN", "add_open_set", "long_tail_counts", "long_tail_indices", "ood_images",
           "photo_crops"]

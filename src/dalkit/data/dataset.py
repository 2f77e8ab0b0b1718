"""Datasets held in memory as tensors."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from dalkit.errors import DatasetFormatError


@dataclass(frozen=True)
class ImageDataset:
    """A classification split held as tensors: uint8 images, or a float pool of any shape.

    Attributes:
        images: uint8 tensor [N, C, H, W] (pixels; models see them scaled to [0, 1]), or a float
            tensor [N, ...] of at least 2 dimensions (a *float pool*: embeddings [N, D], tabular rows,
            pre-normalised images; models see the values as they are).
        labels: int64 tensor [N] with values in ``range(len(classes))``.
        classes: class names, index = label.
        name: dataset name, for messages and reports.
    """

    images: Tensor
    labels: Tensor
    classes: tuple[str, ...]
    name: str = "dataset"

    def __post_init__(self) -> None:
        images = self.images
        if isinstance(images, np.ndarray):
            images = torch.from_numpy(np.ascontiguousarray(images))
            object.__setattr__(self, "images", images)
        if not isinstance(images, Tensor):
            raise DatasetFormatError(f"{self.name}: images must be a tensor or numpy array, "
                                     f"got {type(images).__name__}")
        if images.is_floating_point():
            if images.dim() < 2:
                raise DatasetFormatError(f"{self.name}: a float pool must be [N, ...] with at least 2 "
                                         f"dimensions (e.g. [N, D]), got shape {tuple(images.shape)}")
            if images.dtype != torch.float32:
                object.__setattr__(self, "images", images.float())
            check_finite_rows(self.images, self.name)
        elif images.dtype != torch.uint8 or images.dim() != 4:
            raise DatasetFormatError(
                f"{self.name}: images must be a uint8 tensor [N, C, H, W] or a float tensor [N, ...], "
                f"got {images.dtype} with shape {tuple(images.shape)}"
            )
        if self.labels.dim() != 1 or self.labels.shape[0] != self.images.shape[0]:
            raise DatasetFormatError(
                f"{self.name}: {self.images.shape[0]} images but labels of shape {tuple(self.labels.shape)}"
            )
        if self.labels.dtype != torch.int64:
            object.__setattr__(self, "labels", self.labels.long())
        if len(self) and (int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.classes)):
            raise DatasetFormatError(
                f"{self.name}: labels must lie in [0, {len(self.classes) - 1}], "
                f"got [{int(self.labels.min())}, {int(self.labels.max())}]"
            )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, ...]:
        """The shape of one sample: (C, H, W) for images, (D,) for embeddings."""
        return tuple(self.images.shape[1:])

    @property
    def is_float(self) -> bool:
        """True for a float pool (values fed to the model as they are), False for uint8 images."""
        return bool(self.images.is_floating_point())

    def subset(self, idx: Tensor) -> ImageDataset:
        """Return the samples at ``idx`` (a copy)."""
        return ImageDataset(self.images[idx], self.labels[idx], self.classes, self.name)


def to_float(images: Tensor, device: torch.device | str | None = None) -> Tensor:
    """Model inputs from pool samples: uint8 [B, C, H, W] -> float32 in [0, 1] on ``device`` (models
    normalise internally, so [0, 1] is the pixel range that FGSM clips to); a float pool's samples
    [B, ...] are returned as float32 values unchanged (always a copy, never a view of the pool)."""
    if images.dtype != torch.uint8:
        return images.to(device=device, dtype=torch.float32, copy=True)
    if device is not None:
        images = images.to(device, non_blocking=True)
    return images.float().div_(255.0)


def channel_stats(images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std for the models' input normalisation: of uint8 images in [0, 1] units
    (over N, H, W), or of a float pool's values per position of dimension 1 (per feature of [N, D],
    per channel of [N, C, H, W])."""
    x = to_float(images)
    dims = [d for d in range(x.dim()) if d != 1]
    mean = x.mean(dim=dims)
    std = x.std(dim=dims).clamp_min(1e-3) if x.shape[0] > 1 else torch.ones_like(mean)
    return tuple(mean.tolist()), tuple(std.tolist())


def check_finite_rows(x: Tensor, name: str) -> None:
    """Raise DatasetFormatError naming the first rows with NaN or inf values.

    Raises:
        DatasetFormatError: some values are not finite.
    """
    if x.numel() == 0:
        return
    flat = x.reshape(x.shape[0], -1)
    # a row sum is finite unless the row holds NaN/inf (or overflows: those rows are checked exactly);
    # one fast reduction, no N x D boolean mask on million-row pools
    finite = torch.isfinite(flat.sum(1))
    suspect = (~finite).nonzero().squeeze(1)
    if suspect.numel():
        finite[suspect] = torch.isfinite(flat[suspect]).all(1)
    if not bool(finite.all()):
        bad = (~finite).nonzero().squeeze(1)
        shown = ", ".join(str(int(i)) for i in bad[:5]) + (", ..." if bad.numel() > 5 else "")
        raise DatasetFormatError(f"{name}: {bad.numel()} rows hold NaN or inf values (rows {shown}); "
                                 "remove or fix them")


def float_to_uint8(array: Tensor, name: str) -> Tensor:
    """Convert a float array of pixel values to uint8, refusing NaN/inf.

    Values in [0, 1] are scaled by 255; values in [0, 255] are rounded.

    Raises:
        DatasetFormatError: NaN/inf present or values outside [0, 255].
    """
    if not torch.isfinite(array).all():
        bad = int((~torch.isfinite(array)).sum())
        raise DatasetFormatError(f"{name}: {bad} values are NaN or inf; clean the array before loading")
    if array.numel() == 0:
        return array.to(torch.uint8)
    lo, hi = float(array.min()), float(array.max())
    if lo < 0 or hi > 255:
        raise DatasetFormatError(f"{name}: pixel values must lie in [0, 1] or [0, 255], got [{lo}, {hi}]")
    if hi <= 1.0:
        array = array * 255.0
    return array.round().to(torch.uint8)

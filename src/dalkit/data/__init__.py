"""Datasets as tensors: a registry of named datasets, readers for standard files, augmentations."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dalkit.data.augment import augment_batch, random_crop, random_hflip
from dalkit.data.dataset import ImageDataset, channel_stats, to_float
from dalkit.data.readers import (
    NPY_FILES,
    read_cifar,
    read_idx,
    read_image_folder,
    read_mnist_dir,
    read_npy_dir,
    read_npz,
    read_svhn_mat,
)
from dalkit.errors import DatasetFormatError, DatasetNotFoundError
from dalkit.registry import Registry

__all__ = [
    "DATASETS",
    "DataSplits",
    "DatasetSpec",
    "ImageDataset",
    "augment_batch",
    "channel_stats",
    "default_data_root",
    "load_dataset",
    "random_crop",
    "random_hflip",
    "read_cifar",
    "read_idx",
    "read_image_folder",
    "read_mnist_dir",
    "read_npy_dir",
    "read_npz",
    "read_svhn_mat",
    "to_float",
]


@dataclass(frozen=True)
class DataSplits:
    """The train (pool) and test splits of a dataset."""

    train: ImageDataset
    test: ImageDataset


@dataclass(frozen=True)
class DatasetSpec:
    """How to load a dataset and the paper's defaults for it.

    Attributes:
        name: registry name.
        loader: ``loader(root_dir) -> DataSplits``; ``root_dir`` is ``<data_root>/<subdir>``.
        description: one line for ``dalkit datasets``.
        subdir: directory under the data root holding the files.
        family: "digits" (28x28 grey, Adam recipe) or "natural" (32x32 colour, SGD recipe).
        fgsm_epsilon: DM2-AT default perturbation (0.03 MNIST/SVHN as in the paper; 8/255 CIFAR, see
            ``CIFAR_FGSM_EPSILON``).
        needs_files: False for datasets shipped inside an installed package.
    """

    name: str
    loader: Callable[[Path], DataSplits]
    description: str
    subdir: str
    family: str = "digits"
    fgsm_epsilon: float = 0.03
    needs_files: bool = True
    extra: dict = field(default_factory=dict)


DATASETS: Registry[DatasetSpec] = Registry("dataset")

# The DM2 paper's section 4.1 sets eps = 0.1 for CIFAR-10; its revision searches eps over 1/255-8/255
# "for image input (pixel range [0, 1])".  0.1 is 3.2x the top of that grid, a perturbation that visibly
# changes a 32x32 image; no CIFAR file can be had here to measure either, so the default follows the
# revision's grid (its top, the closest to the original 0.03 of the digit sets).  The original reading
# stays one option away: recipe_options epsilon: 0.1.
CIFAR_FGSM_EPSILON = 8 / 255


def _register(spec: DatasetSpec) -> None:
    DATASETS.register(spec.name)(spec)


def default_data_root() -> Path:
    """``$DALKIT_DATA`` if set, else ``./data``."""
    return Path(os.environ.get("DALKIT_DATA", "data"))


def load_dataset(name: str, root: str | Path | None = None) -> DataSplits:
    """Load a registered dataset from ``<root>/<subdir>``.

    Args:
        name: registry name (``dalkit datasets`` lists them).
        root: data root; defaults to :func:`default_data_root`.
    Raises:
        UnknownNameError, DatasetNotFoundError, DatasetFormatError.
    """
    spec = DATASETS.get(name)
    base = Path(root) if root is not None else default_data_root()
    return spec.loader(base / spec.subdir)


_DIGIT_CLASSES = tuple(str(i) for i in range(10))


def _mnist_loader(name: str, classes: tuple[str, ...]) -> Callable[[Path], DataSplits]:
    def load(root: Path) -> DataSplits:
        return DataSplits(
            read_mnist_dir(root, "train", name, classes), read_mnist_dir(root, "test", name, classes)
        )

    return load


def _load_digits(_root: Path) -> DataSplits:
    """scikit-learn's 1,797 real 8x8 digits; the 17 grey levels are scaled to uint8.

    Split: a fixed stratified 1,497 / 300 train/test split (seed 0)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy((bunch.images * (255.0 / 16.0)).round().astype(np.uint8)).unsqueeze(1)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(labels), generator=g)
    test_idx, train_idx = perm[:300].sort().values, perm[300:].sort().values
    full = ImageDataset(images, labels, _DIGIT_CLASSES, "digits")
    return DataSplits(full.subset(train_idx), full.subset(test_idx))


_register(
    DatasetSpec(
        "mnist",
        _mnist_loader("mnist", _DIGIT_CLASSES),
        "MNIST handwritten digits, 60k/10k, 28x28 grey (IDX files)",
        "mnist",
    )
)
_register(
    DatasetSpec(
        "fashion-mnist",
        _mnist_loader(
            "fashion-mnist",
            ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
             "Ankle boot"),
        ),
        "Fashion-MNIST, 60k/10k, 28x28 grey (IDX files)",
        "fashion-mnist",
    )
)
_register(
    DatasetSpec(
        "digits",
        _load_digits,
        "scikit-learn's 1,797 real 8x8 handwritten digits (ships with scikit-learn, no files)",
        "",
        needs_files=False,
    )
)


def _cifar_loader(variant: str) -> Callable[[Path], DataSplits]:
    def load(root: Path) -> DataSplits:
        return DataSplits(read_cifar(root, "train", variant), read_cifar(root, "test", variant))

    return load


def _load_svhn(root: Path) -> DataSplits:
    return DataSplits(read_svhn_mat(root, "train"), read_svhn_mat(root, "test"))


def _load_npz(root: Path) -> DataSplits:
    """``data.npz``, or (when it is absent) the four ``.npy`` files, memory-mapped (:func:`read_npy_dir`)."""
    if not (root / "data.npz").exists() and all((root / f).is_file() for f in NPY_FILES):
        train, test = read_npy_dir(root)
    else:
        train, test = read_npz(root / "data.npz")
    return DataSplits(train, test)


def _load_image_folder(root: Path) -> DataSplits:
    """``<root>/train/<class>/*`` and ``<root>/test/<class>/*``; the test classes must be train classes."""
    layout = (
        f"put train/ and test/ in {root}, each holding one sub-folder per class with that class's images "
        f"(e.g. {root / 'train' / 'cat' / '0001.png'})"
    )
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise DatasetNotFoundError(f"image-folder: missing directory {root / split}; {layout}")
    train = read_image_folder(root / "train")
    test = read_image_folder(root / "test", classes=train.classes)
    if train.images.shape[2:] != test.images.shape[2:]:
        raise DatasetFormatError(
            f"image-folder: train images are {tuple(train.images.shape[2:])} (HxW) but test images are "
            f"{tuple(test.images.shape[2:])}; all images must share one size"
        )
    # a grey split next to a colour split is read as colour
    channels = max(train.images.shape[1], test.images.shape[1])
    train, test = (
        ImageDataset(d.images.expand(-1, channels, -1, -1).contiguous(), d.labels, d.classes, d.name)
        if d.images.shape[1] != channels else d
        for d in (train, test)
    )
    return DataSplits(train, test)


_register(
    DatasetSpec(
        "cifar10",
        _cifar_loader("cifar10"),
        "CIFAR-10, 50k/10k, 32x32 colour (python pickles: cifar-10-batches-py/)",
        "cifar10",
        family="natural",
        fgsm_epsilon=CIFAR_FGSM_EPSILON,
    )
)
_register(
    DatasetSpec(
        "cifar100",
        _cifar_loader("cifar100"),
        "CIFAR-100 (100 fine labels), 50k/10k, 32x32 colour (python pickles: cifar-100-python/)",
        "cifar100",
        family="natural",
        fgsm_epsilon=CIFAR_FGSM_EPSILON,
    )
)
_register(
    DatasetSpec(
        "svhn",
        _load_svhn,
        "SVHN cropped digits, 73k/26k, 32x32 colour (train_32x32.mat, test_32x32.mat)",
        "svhn",
        family="natural",
        fgsm_epsilon=0.03,
    )
)
_register(
    DatasetSpec(
        "npz",
        _load_npz,
        "your own arrays: data.npz with x_train, y_train, x_test, y_test (+ classes), or those as .npy files "
        "(memory-mapped)",
        "npz",
    )
)
_register(
    DatasetSpec(
        "image-folder",
        _load_image_folder,
        "your own images: train/ and test/, each with one sub-folder per class (PNG/JPEG)",
        "image-folder",
    )
)

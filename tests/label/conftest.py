"""Labeling-project fixtures: real MNIST digits written as PNG files, as a person's folder would hold."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from dalkit.data import DataSplits


def write_pngs(images, folder: Path) -> list[str]:
    """uint8 [N, 1, H, W] -> folder/00000.png ...; returns the file names in pool order."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i, x in enumerate(images.numpy()):
        name = f"{i:05d}.png"
        Image.fromarray(x[0]).save(folder / name)
        names.append(name)
    return names


@pytest.fixture(scope="session")
def mnist_pngs(tmp_path_factory, mnist: DataSplits) -> tuple[Path, list[int]]:
    """300 real MNIST training digits as PNGs (the first 300, pool order = file order) and labels."""
    folder = tmp_path_factory.mktemp("mnist_pngs")
    write_pngs(mnist.train.images[:300], folder)
    return folder, mnist.train.labels[:300].tolist()

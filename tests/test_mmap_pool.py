"""Million-sample pools: a features ``.npy`` is memory-mapped (paged in as read), not copied."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dalkit.errors import DatasetFormatError
from dalkit.experiment.runner import load_features


def test_float32_features_are_a_map_of_the_file(tmp_path):
    path = tmp_path / "f.npy"
    arr = np.arange(12 * 5, dtype=np.float32).reshape(12, 5)
    np.save(path, arr)
    feats = load_features(path, 12)
    assert feats.dtype == torch.float32 and torch.equal(feats, torch.from_numpy(arr))
    on_disk = np.load(path, mmap_mode="r+")  # another writer changes the file: the map shows it
    on_disk[3, 2] = -1.0
    on_disk.flush()
    assert float(feats[3, 2]) == -1.0, "load_features copied the file instead of mapping it"
    feats[0, 0] = 99.0  # copy-on-write: a write in memory never reaches the file
    assert float(np.load(path)[0, 0]) == 0.0


def test_other_dtypes_are_converted_and_nan_rows_named(tmp_path):
    arr = np.linspace(-1, 1, 40).reshape(8, 5)
    np.save(tmp_path / "d.npy", arr)
    assert torch.equal(load_features(tmp_path / "d.npy", 8), torch.from_numpy(arr.astype(np.float32)))
    arr[6, 1] = np.nan
    np.save(tmp_path / "n.npy", arr)
    with pytest.raises(DatasetFormatError, match=r"NaN or inf in 1 rows \(first: 6\)"):
        load_features(tmp_path / "n.npy", 8)

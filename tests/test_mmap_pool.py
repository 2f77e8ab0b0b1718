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


def _write_npy_dir(root, splits, nhwc: bool = False) -> None:
    root.mkdir(parents=True)
    for split, data in (("train", splits.train), ("test", splits.test)):
        x = data.images.numpy()
        np.save(root / f"x_{split}.npy", x.transpose(0, 2, 3, 1).copy() if nhwc else x)
        np.save(root / f"y_{split}.npy", data.labels.numpy())


@pytest.mark.parametrize("nhwc", [False, True])
def test_uint8_npy_images_are_a_map_of_the_file(tmp_path, digits, nhwc):
    from dalkit.data import load_dataset

    _write_npy_dir(tmp_path / "npz", digits, nhwc)
    splits = load_dataset("npz", tmp_path)
    pool = splits.train.images
    assert pool.dtype == torch.uint8 and torch.equal(pool, digits.train.images)
    assert torch.equal(splits.test.labels, digits.test.labels)
    assert splits.train.classes == digits.train.classes
    on_disk = np.load(tmp_path / "npz" / "x_train.npy", mmap_mode="r+")  # another writer: the map shows it
    old = int(pool[5, 0, 3, 4])
    if nhwc:
        on_disk[5, 3, 4, 0] = 255 - old
    else:
        on_disk[5, 0, 3, 4] = 255 - old
    on_disk.flush()
    assert int(pool[5, 0, 3, 4]) == 255 - old, "the .npy images were copied instead of mapped"
    pool[0, 0, 0, 0] = 7  # copy-on-write: a write in memory never reaches the file
    first = np.load(tmp_path / "npz" / "x_train.npy")[0].reshape(-1)[0]
    assert int(first) == int(digits.train.images[0, 0, 0, 0])


def test_a_pool_pass_reads_batch_by_batch(digits, digits_model):
    """The forward pass over the candidates gathers one inference batch at a time from the (mapped)
    pool, never the whole candidate set, and computes what a pass over the gathered tensor computes."""
    from dalkit.strategies import QueryContext
    from dalkit.strategies.base import PoolRows
    from dalkit.training.evaluate import predict

    pool = digits.train.images
    idx = torch.arange(3, len(pool), 2)
    rows = PoolRows(pool, idx)
    logits, emb = predict(digits_model, rows, 64, "cpu", with_embeddings=True)
    want_logits, want_emb = predict(digits_model, pool[idx], 64, "cpu", with_embeddings=True)
    assert rows.reads == -(-idx.numel() // 64)
    assert torch.equal(logits, want_logits) and torch.equal(emb, want_emb)
    seen = []
    ctx = QueryContext(digits_model, pool, torch.arange(0, len(pool), 2), digits.train.labels[::2], 10,
                       torch.Generator().manual_seed(0), batch_size=100)
    ctx.map_pool(lambda model, images, device, *a: seen.append(images) or torch.zeros(len(images)),
                 ctx.unlabeled_idx, 100)
    assert isinstance(seen[0], PoolRows) and len(seen[0]) == ctx.n_unlabeled


def test_a_mapped_image_pool_selects_what_the_in_memory_pool_selects(tmp_path, digits):
    """The same experiment on data.npz (read into memory) and on the .npy files (mapped): same records."""
    from dalkit.experiment import ExperimentConfig, run_experiment
    from dalkit.training import TrainConfig

    (tmp_path / "mem" / "npz").mkdir(parents=True)
    np.savez(tmp_path / "mem" / "npz" / "data.npz", x_train=digits.train.images.numpy(),
             y_train=digits.train.labels.numpy(), x_test=digits.test.images.numpy(),
             y_test=digits.test.labels.numpy())
    _write_npy_dir(tmp_path / "map" / "npz", digits)
    records = {}
    for where in ("mem", "map"):
        recs = []
        for method in ("coreset", "entropy"):
            cfg = ExperimentConfig(dataset="npz", data_root=str(tmp_path / where), method=method,
                                   initial_size=20, budget=10, rounds=2, seeds=(0,),
                                   train=TrainConfig(epochs=2, batch_size=32), device="cpu")
            recs += run_experiment(cfg, None, progress=False)
        records[where] = [{k: v for k, v in r.items() if not k.endswith("_s")} for r in recs]
    assert records["mem"] == records["map"] and len(records["map"][0]["selected"]) == 10

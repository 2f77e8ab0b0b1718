"""Every bad input: a typed error from the library, and from the CLI exit code 2 with one line on
stderr and no traceback.  A bad re-run never damages a run directory."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from dalkit.cli import main
from dalkit.data import load_dataset
from dalkit.data.dataset import float_to_uint8
from dalkit.data.readers import read_idx
from dalkit.errors import (
    BudgetError,
    ConfigError,
    DalkitError,
    DatasetFormatError,
    DatasetNotFoundError,
    RunDirectoryError,
    UnknownNameError,
)
from dalkit.experiment import ExperimentConfig, load_config, run_experiment
from dalkit.models import create_model
from dalkit.strategies import create_strategy
from dalkit.training import TrainConfig


def cli_error(capsys, *argv: str) -> str:
    """Run the CLI; assert exit code 2, exactly one line on stderr, no traceback; return the line."""
    rc = main(list(argv))
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert rc == 2, f"exit code {rc}; stderr: {err}"
    assert "Traceback" not in err and "Traceback" not in out
    assert len(lines) == 1, f"expected one line on stderr, got: {err!r}"
    assert lines[0].startswith("dalkit: error: ")
    return lines[0]


def run_args(tmp_path: Path, *extra: str) -> list[str]:
    """A tiny valid digits run; ``extra`` flags override."""
    return ["run", "--dataset", "digits", "--method", "random", "--initial-size", "10", "--budget", "5",
            "--rounds", "1", "--seeds", "0", "--epochs", "1", "--min-steps", "2", "--device", "cpu",
            "--out", str(tmp_path / "out"), "--quiet", *extra]


# ------------------------------------------------------------------------------------ unknown names


def test_unknown_strategy_lists_valid_names():
    with pytest.raises(UnknownNameError) as exc:
        create_strategy("entrophy")
    msg = str(exc.value)
    assert "'entrophy'" in msg and "entropy" in msg and "dm2" in msg and "random" in msg


def test_unknown_method(capsys, tmp_path):
    line = cli_error(capsys, *run_args(tmp_path, "--method", "dm3"))
    assert "unknown method 'dm3'" in line
    for valid in ("dm2", "dm2-at", "entropy", "random"):
        assert valid in line
    assert not (tmp_path / "out").exists()


def test_unknown_dataset(capsys, tmp_path):
    with pytest.raises(UnknownNameError, match="mnist"):
        load_dataset("imagenet-1k")
    line = cli_error(capsys, *run_args(tmp_path, "--dataset", "imagenet-1k"))
    assert "'imagenet-1k'" in line and "digits" in line and "mnist" in line


def test_unknown_model(capsys, tmp_path):
    with pytest.raises(UnknownNameError, match="resnet18"):
        create_model("alexnet", 1, 10)
    line = cli_error(capsys, *run_args(tmp_path, "--model", "alexnet"))
    assert "'alexnet'" in line and "cnn" in line and "resnet18" in line


# -------------------------------------------------------------------------------------------- sizes


def test_budget_larger_than_the_pool(capsys, tmp_path, digits):
    cfg = ExperimentConfig(dataset="digits", method="random", initial_size=100, budget=800, rounds=2,
                           seeds=(0,), device="cpu")
    with pytest.raises(BudgetError, match="1497"):  # the digits pool holds 1,497 samples
        run_experiment(cfg, tmp_path / "lib", splits=digits, progress=False)
    assert not (tmp_path / "lib").exists()  # validation happens before anything is written
    line = cli_error(capsys, *run_args(tmp_path, "--budget", "800", "--rounds", "2"))
    assert "exceeds the pool" in line
    line = cli_error(capsys, *run_args(tmp_path, "--pool-size", "50", "--budget", "20", "--rounds", "3"))
    assert "pool_size" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("flag", "value", "field"), [
    ("--budget", "0", "budget"), ("--budget", "-3", "budget"), ("--initial-size", "0", "initial_size"),
    ("--rounds", "-1", "rounds"), ("--pool-size", "0", "pool_size"), ("--test-size", "-2", "test_size"),
    ("--epochs", "0", "epochs"), ("--batch-size", "0", "batch_size"), ("--lr", "0", "lr"),
    ("--min-steps", "-1", "min_steps"),
])
def test_non_positive_sizes(capsys, tmp_path, flag, value, field):
    line = cli_error(capsys, *run_args(tmp_path, flag, value))
    assert field in line and value in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("values", [{"budget": 0}, {"initial_size": -1}, {"rounds": -1}, {"pool_size": 0},
                                    {"seeds": ()}, {"seeds": (1, 1)}, {"budget": True}])
def test_bad_config_values_raise_config_error(values):
    with pytest.raises(ConfigError):
        ExperimentConfig(**{"dataset": "digits", **values})


def test_bad_seeds(capsys, tmp_path):
    assert "--seeds" in cli_error(capsys, *run_args(tmp_path, "--seeds", "0,x"))
    assert "seeds" in cli_error(capsys, *run_args(tmp_path, "--seeds", "1,1"))


# --------------------------------------------------------------------------------------- data files


def write_idx(path: Path, array: np.ndarray) -> None:
    """IDX: magic 0x00 0x00 <type 0x08 = uint8> <ndim>, big-endian dims, then the data."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def make_mnist_dir(root: Path, n_train: int = 30, n_test: int = 10) -> Path:
    folder = root / "mnist"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    return folder


def test_small_idx_files_round_trip(tmp_path):
    """The corruption tests below start from files the reader accepts."""
    folder = make_mnist_dir(tmp_path)
    splits = load_dataset("mnist", tmp_path)
    assert splits.train.images.shape == (30, 1, 28, 28) and splits.test.images.shape == (10, 1, 28, 28)
    assert splits.train.labels.tolist() == [i % 10 for i in range(30)]
    raw = np.frombuffer((folder / "train-images-idx3-ubyte").read_bytes()[16:], dtype=np.uint8)
    assert splits.train.images.flatten().tolist() == raw.tolist()


def test_missing_data_files(capsys, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetNotFoundError) as exc:
        load_dataset("mnist", empty)
    assert "train-images-idx3-ubyte" in str(exc.value) and str(empty / "mnist") in str(exc.value)
    line = cli_error(capsys, *run_args(tmp_path, "--dataset", "mnist", "--data-root", str(empty)))
    assert "train-images-idx3-ubyte" in line and "dalkit fetch mnist" in line
    assert not (tmp_path / "out").exists()


def test_errors_are_one_line_without_quiet(capsys, tmp_path):
    """Without --quiet the progress header must not precede a validation error: every experiment is
    checked before anything is printed or run."""
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = [a for a in run_args(tmp_path, "--dataset", "mnist", "--data-root", str(empty)) if a != "--quiet"]
    line = cli_error(capsys, *argv)
    assert "train-images-idx3-ubyte" in line
    # several methods: the second one's bad option is caught before the first one runs
    argv = [a for a in run_args(tmp_path, "--method", "random,dm2", "--option", "n_neighbors=0")
            if a != "--quiet"]
    assert "n_neighbors" in cli_error(capsys, *argv)
    assert not (tmp_path / "out").exists()


def test_missing_label_file_is_named(tmp_path):
    folder = make_mnist_dir(tmp_path)
    (folder / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetNotFoundError, match="t10k-labels-idx1-ubyte"):
        load_dataset("mnist", tmp_path)


@pytest.mark.parametrize("damage", ["truncated", "bad-magic", "bad-type", "count-mismatch", "bad-gzip",
                                    "truncated-gzip", "empty"])
def test_corrupt_idx(capsys, tmp_path, damage):
    folder = make_mnist_dir(tmp_path)
    images = folder / "train-images-idx3-ubyte"
    raw = images.read_bytes()
    if damage == "truncated":
        images.write_bytes(raw[:-100])
    elif damage == "bad-magic":
        images.write_bytes(b"\x1f\x8b" + raw[2:])
    elif damage == "bad-type":
        images.write_bytes(raw[:2] + b"\x42" + raw[3:])
    elif damage == "count-mismatch":  # 30 images, 25 labels
        write_idx(folder / "train-labels-idx1-ubyte", np.arange(25) % 10)
    elif damage == "empty":
        images.write_bytes(b"")
    else:
        images.unlink()
        gz = folder / "train-images-idx3-ubyte.gz"
        packed = gzip.compress(raw)
        gz.write_bytes(b"not a gzip stream" if damage == "bad-gzip" else packed[: len(packed) // 2])
    with pytest.raises(DatasetFormatError):
        load_dataset("mnist", tmp_path)
    if damage not in ("count-mismatch", "bad-gzip", "truncated-gzip"):
        with pytest.raises(DatasetFormatError, match="train-images-idx3-ubyte"):
            read_idx(images)
    line = cli_error(capsys, *run_args(tmp_path, "--dataset", "mnist", "--data-root", str(tmp_path)))
    assert "mnist" in line or "idx" in line.lower()


def test_bad_labels_in_idx(tmp_path):
    folder = make_mnist_dir(tmp_path)
    write_idx(folder / "train-labels-idx1-ubyte", np.full(30, 12))  # label 12 of 10 classes
    with pytest.raises(DatasetFormatError, match="labels"):
        load_dataset("mnist", tmp_path)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_inf_inputs_are_refused(bad):
    x = torch.rand(3, 1, 4, 4)
    x[1, 0, 2, 2] = bad
    with pytest.raises(DatasetFormatError, match="1 values are NaN or inf"):
        float_to_uint8(x, "my-array")


def test_out_of_range_inputs_are_refused():
    with pytest.raises(DatasetFormatError, match="pixel values"):
        float_to_uint8(torch.tensor([[0.0, 256.0]]), "a")
    with pytest.raises(DatasetFormatError, match="pixel values"):
        float_to_uint8(torch.tensor([[-0.5, 0.5]]), "a")


def test_float_to_uint8_converts_valid_inputs():
    unit = torch.tensor([0.0, 0.5, 1.0, 0.2])
    assert float_to_uint8(unit, "a").tolist() == [round(v * 255) for v in (0.0, 0.5, 1.0, 0.2)]
    pixels = torch.tensor([0.0, 12.4, 12.6, 255.0])
    assert float_to_uint8(pixels, "a").tolist() == [0, 12, 13, 255]
    assert float_to_uint8(pixels, "a").dtype == torch.uint8


def test_float_to_uint8_empty_array():
    out = float_to_uint8(torch.empty(0, 1, 2, 2), "a")
    assert out.shape == (0, 1, 2, 2) and out.dtype == torch.uint8


def test_nan_features_file(capsys, tmp_path):
    feats = np.zeros((1497, 4), dtype=np.float32)  # one row per digits training sample
    feats[7, 2] = np.nan
    np.save(tmp_path / "f.npy", feats)
    line = cli_error(capsys, *run_args(tmp_path, "--features", str(tmp_path / "f.npy")))
    assert "NaN" in line
    np.save(tmp_path / "g.npy", np.zeros((10, 4), dtype=np.float32))  # wrong number of rows
    assert "N_train" in cli_error(capsys, *run_args(tmp_path, "--features", str(tmp_path / "g.npy")))


# ------------------------------------------------------------------------------------------- config


def test_unreadable_config(capsys, tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(missing)
    assert "cannot read config" in cli_error(capsys, "run", str(missing), "--quiet")
    assert "cannot read config" in cli_error(capsys, "run", str(tmp_path), "--quiet")  # a directory


@pytest.mark.parametrize(("text", "expected"), [
    ("dataset: digits\nmethod: [random, entropy\n", "not valid YAML"),
    ("dataset: digits\n  budget: : 3\n", "not valid YAML"),
    ("- random\n- entropy\n", "mapping"),
    ("dataset: digits\nbudgett: 5\n", "budgett"),
    ("dataset: digits\ntrain: {epochs: 1, momentumm: 0.5}\n", "momentumm"),
    ("dataset: digits\ntrain: 5\n", "train"),
    ("dataset: digits\nbudget: five\n", "budget"),
])
def test_invalid_config_file(capsys, tmp_path, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=expected):
        load_config(path)
    assert expected in cli_error(capsys, "run", str(path), "--out", str(tmp_path / "out"), "--quiet")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("text", "flags", "expected"), [
    ("dataset: digits\nstrategy_options: [1]\n", (), "strategy_options"),
    ("dataset: digits\nrecipe_options: 3\n", ("--recipe-option", "epsilon=0.1"), "recipe_options"),
    ("dataset: digits\nmethod: []\n", (), "method"),
    ("dataset: digits\ntrain: 5\n", ("--epochs", "1"), "train"),
    ("dataset: [digits]\n", ("--epochs", "1"), "unknown dataset"),
    ("dataset: [digits]\n", (), "unknown dataset"),
    ("dataset: digits\nmethod: [[dm2]]\n", (), "dm2"),
])
def test_wrongly_typed_config_fields_with_flags(capsys, tmp_path, text, flags, expected):
    """Config fields of the wrong type, also where a CLI flag merges into them: one line, no traceback."""
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    line = cli_error(capsys, "run", str(path), *flags, "--out", str(tmp_path / "out"), "--quiet")
    assert expected in line
    assert not (tmp_path / "out").exists()


def test_empty_method_list_flag(capsys, tmp_path):
    assert "method" in cli_error(capsys, *run_args(tmp_path, "--method", ","))


def test_unknown_strategy_option(capsys, tmp_path):
    with pytest.raises(ConfigError, match="n_neighbours"):
        create_strategy("dm2", n_neighbours=3)
    line = cli_error(capsys, *run_args(tmp_path, "--method", "dm2", "--option", "n_neighbours=3"))
    assert "n_neighbours" in line and "n_neighbors" in line  # names the bad option and the valid ones
    line = cli_error(capsys, *run_args(tmp_path, "--method", "dm2", "--option", "lam=3"))
    assert "lam" in line
    assert "KEY=VALUE" in cli_error(capsys, *run_args(tmp_path, "--option", "n_neighbors"))
    line = cli_error(capsys, *run_args(tmp_path, "--method", "dm2-at", "--recipe-option", "label=oracle"))
    assert "label" in line
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------- damaged run directories


@pytest.fixture()
def completed_run(tmp_path, digits):
    """A finished digits run made by the library; returns (dir, rounds.jsonl bytes, config bytes)."""
    run_dir = tmp_path / "out"
    cfg = ExperimentConfig(dataset="digits", method="random", initial_size=10, budget=5, rounds=1,
                           seeds=(0,), train=TrainConfig(epochs=1, batch_size=32, min_steps=2), device="cpu")
    run_experiment(cfg, run_dir, splits=digits, progress=False)
    return run_dir, (run_dir / "rounds.jsonl").read_bytes(), (run_dir / "config.yaml").read_bytes()


@pytest.mark.parametrize(("extra", "expected"), [
    (("--method", "entropy"), "different experiment"),
    (("--budget", "6"), "different experiment"),
    (("--budget", "900", "--rounds", "2"), "exceeds"),
    (("--option", "bogus=1"), "bogus"),
    (("--dataset", "mnist", "--data-root", "/nonexistent-dalkit-root"), "missing file"),
    (("--model", "alexnet"), "alexnet"),
])
def test_bad_rerun_leaves_completed_rounds_intact(capsys, tmp_path, completed_run, extra, expected):
    run_dir, rounds_before, config_before = completed_run
    # the same run as the fixture's, through the CLI, with one bad change
    line = cli_error(capsys, *run_args(tmp_path, "--initial-size", "10", "--budget", "5", "--rounds", "1",
                                       "--epochs", "1", "--batch-size", "32", "--min-steps", "2", *extra))
    assert expected in line
    assert (run_dir / "rounds.jsonl").read_bytes() == rounds_before
    assert (run_dir / "config.yaml").read_bytes() == config_before


def test_corrupt_middle_line_is_a_run_directory_error(capsys, tmp_path, digits):
    run_dir = tmp_path / "out"
    cfg = ExperimentConfig(dataset="digits", method="random", initial_size=10, budget=5, rounds=2,
                           seeds=(0,), train=TrainConfig(epochs=1, batch_size=32, min_steps=2), device="cpu")
    run_experiment(cfg, run_dir, splits=digits, progress=False)
    lines = (run_dir / "rounds.jsonl").read_bytes().split(b"\n")
    lines[1] = lines[1][: len(lines[1]) // 2]  # damage a completed line in the middle
    damaged = b"\n".join(lines)
    (run_dir / "rounds.jsonl").write_bytes(damaged)
    with pytest.raises(RunDirectoryError, match="line 2"):
        run_experiment(cfg, run_dir, splits=digits, progress=False)
    assert (run_dir / "rounds.jsonl").read_bytes() == damaged  # never "repaired" away
    assert issubclass(RunDirectoryError, DalkitError)


def test_report_on_a_non_run_directory(capsys, tmp_path):
    assert "not a run directory" in cli_error(capsys, "report", str(tmp_path))


def test_identical_rerun_succeeds_and_changes_no_round(capsys, tmp_path, completed_run):
    """The control for the test above: without the bad change, the re-run is accepted and a no-op."""
    run_dir, rounds_before, _ = completed_run
    rc = main(run_args(tmp_path, "--initial-size", "10", "--budget", "5", "--rounds", "1", "--epochs", "1",
                       "--batch-size", "32", "--min-steps", "2"))
    assert rc == 0, capsys.readouterr().err
    assert (run_dir / "rounds.jsonl").read_bytes() == rounds_before


def test_wrongly_typed_strategy_option_is_a_config_error(capsys, tmp_path):
    with pytest.raises(ConfigError, match="n_neighbors|bad option value"):
        create_strategy("dm2", n_neighbors="many")
    line = cli_error(capsys, *run_args(tmp_path, "--method", "dm2", "--option", "n_neighbors=many"))
    assert "dm2" in line
    assert not (tmp_path / "out").exists()

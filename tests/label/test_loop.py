"""The human loop shares the simulated loop's round: `dalkit label next` with an oracle answering from
MNIST's true labels selects exactly what `dalkit run` selects with the same seed and settings."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from tests.label.conftest import write_pngs

from dalkit.cli import main
from dalkit.experiment import ExperimentConfig, initial_labeled, prepare_data
from dalkit.label import Project

DATA_ROOT = Path(__file__).parents[2] / "data"
CLASSES = ",".join(str(c) for c in range(10))
SETTINGS = ["--initial-size", "20", "--budget", "10", "--epochs", "2", "--batch-size", "32"]


def answer(project_dir: Path, batch: dict, truth: dict[str, int], tmp: Path) -> None:
    """The oracle: a CSV with the true label of each item of the batch, imported through the CLI."""
    proj = Project(project_dir)
    path = tmp / f"answers-{batch['batch']}.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["item", "label"])
        for item in batch["items"]:
            w.writerow([item, truth[proj.items[proj.index[item]].path]])
    assert main(["label", "import", str(project_dir), str(path)]) == 0


@pytest.mark.parametrize("method", ["margin", "alphamix"])
def test_label_next_selects_what_dalkit_run_selects(method, tmp_path, mnist, capsys):
    seed, pool_size, rounds = 3, 300, 2
    run_dir = tmp_path / "run"
    assert main(["run", "--dataset", "mnist", "--data-root", str(DATA_ROOT), "--method", method, "--rounds",
                 str(rounds), "--seeds", str(seed), "--pool-size", str(pool_size), "--test-size", "200",
                 *SETTINGS, "--out", str(run_dir), "--quiet"]) == 0
    records = [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines()]
    # the runner's pool, written as a person's folder of PNGs (file k = pool index k)
    pool = prepare_data(ExperimentConfig(dataset="mnist", data_root=str(DATA_ROOT), pool_size=pool_size,
                                         initial_size=20, budget=10, rounds=rounds)).pool
    names = write_pngs(pool.images, tmp_path / "images")
    truth = dict(zip(names, pool.labels.tolist(), strict=True))
    project = tmp_path / "project"
    assert main(["label", "init", str(project), "--images", str(tmp_path / "images"), "--classes", CLASSES,
                 "--method", method, "--seed", str(seed), *SETTINGS]) == 0
    for b in range(rounds + 1):
        assert main(["label", "next", str(project), "--quiet"]) == 0
        batch = Project(project).current_batch()
        proj = Project(project)
        picked = sorted(int(proj.items[proj.index[i]].path[:5]) for i in batch["items"])
        if b == 0:  # no labels yet: the runner's random initial set
            assert batch["round"] is None
            assert picked == initial_labeled(pool_size, 20, seed).tolist()
        else:  # round b-1 of the run, trained on the same labels in the same order
            assert batch["round"] == b - 1
            assert picked == records[b - 1]["selected"], f"round {b - 1}"
            assert batch["n_trained"] == records[b - 1]["n_labeled"]
            assert batch["train_loss"] == records[b - 1]["train_loss"]
        answer(project, batch, truth, tmp_path)
    st = Project(project).status()
    assert st["labeled"] == 20 + rounds * 10 and st["rounds"] == rounds

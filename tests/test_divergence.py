"""A training that produces a non-finite loss stops with a typed error instead of recording a model at
chance (found by the LPLgrad claim run: SGD 0.1 warm-started on the digit CNN went to NaN at cycle 3 and
its rounds recorded 9.8 % accuracy and a NaN train_loss)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dalkit.errors import TrainingDivergedError
from dalkit.training import TrainConfig, fit
from dalkit.training.fit import TrainSet
from test_errors import cli_error, run_args


def _data(n: int = 32) -> TrainSet:
    g = torch.Generator().manual_seed(0)
    return TrainSet(torch.randint(0, 256, (n, 1, 4, 4), dtype=torch.uint8, generator=g),
                    torch.randint(0, 3, (n,), generator=g))


def _ce(model, batch):
    return nn.functional.cross_entropy(model(batch.x), batch.y)


def test_a_nan_loss_stops_fit_with_the_epoch_and_the_settings():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    cfg = TrainConfig(epochs=3, batch_size=8, optimizer="sgd", lr=0.1)
    seen = []

    def poisoned(model, batch):  # the second epoch's third step returns NaN
        seen.append(batch.epoch)
        loss = _ce(model, batch)
        return loss * float("nan") if (batch.epoch, batch.step) == (1, 6) else loss

    with pytest.raises(TrainingDivergedError, match=r"^training diverged: the mean loss of epoch 2 of 3 is "
                       r"nan \(sgd, lr 0.1, 32 labeled samples\); lower the learning rate \(--lr\) or try "
                       r"--optimizer adam$"):
        fit(model, _data(), poisoned, cfg, torch.Generator().manual_seed(0))
    assert seen == [0] * 4 + [1] * 4  # stopped at the end of the epoch it diverged in, not later


def test_a_finite_run_is_untouched():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    out = fit(model, _data(), _ce, TrainConfig(epochs=2, batch_size=8), torch.Generator().manual_seed(0))
    assert out["steps"] == 8.0 and out["loss"] == out["loss"]


def test_the_cli_stops_a_diverging_run_with_one_line_and_records_no_round(capsys, tmp_path):
    # SGD at lr 1e30 overflows in round 0: one line, exit 2, and no round with a NaN model is recorded
    line = cli_error(capsys, *run_args(tmp_path, "--optimizer", "sgd", "--lr", "1e30"))
    assert line.startswith("dalkit: error: training diverged: the mean loss of epoch ")
    assert line.endswith("is nan (sgd, lr 1e+30, 10 labeled samples); lower the learning rate (--lr) or try "
                         "--optimizer adam")
    rounds = tmp_path / "out" / "rounds.jsonl"
    assert not rounds.exists() or rounds.read_text() == ""

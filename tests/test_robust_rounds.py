"""``robust_rounds: final``: the corrupted test sets and the attacks evaluated in the last round only.

The claim benchmarks need it: on MNIST-C with PGD restarts, the robustness evaluation of one round costs
~100x the round's training.  Evaluating is read-only, so a final-only run must train, select and score
exactly what an every-round run does, and its last round must hold the same robust values."""

from __future__ import annotations

import json

import pytest

from dalkit.errors import ConfigError, RunDirectoryError
from dalkit.experiment import ExperimentConfig, run_experiment
from dalkit.experiment.rundir import ROBUST_COLUMNS, check_records
from dalkit.report import runs_table
from dalkit.training import TrainConfig

ROBUST = ("corrupt_acc", "corrupt_acc_mean", "fgsm_acc", "pgd_acc", "attack_epsilon", "pgd_steps", "robust_s")


def _cfg(**kw) -> ExperimentConfig:
    kw.setdefault("seeds", (0,))
    return ExperimentConfig(dataset="digits", method="margin", initial_size=20, budget=10, rounds=2,
                            pool_size=300, device="cpu",
                            train=TrainConfig(epochs=1, batch_size=32, min_steps=6),
                            test_corruptions=("stripe:1",), attack_epsilon=0.05, pgd_steps=2, pgd_restarts=1,
                            **kw)


@pytest.fixture(scope="module")
def both(digits, tmp_path_factory):
    root = tmp_path_factory.mktemp("robust_rounds")
    every = run_experiment(_cfg(), root / "every", splits=digits, progress=False)
    final = run_experiment(_cfg(robust_rounds="final"), root / "final", splits=digits, progress=False)
    return root, every, final


def test_final_only_evaluates_the_last_round_and_changes_nothing_else(both):
    _, every, final = both
    assert [r["round"] for r in final] == [0, 1, 2]
    for e, f in zip(every, final, strict=True):
        assert {k for k in ROBUST if k in f} == (set(ROBUST) if f["round"] == 2 else set())
        # training, selection and the clean accuracy are those of the every-round run, bit for bit
        for key in ("selected", "test_acc", "train_loss", "n_labeled"):
            assert f[key] == e[key], (f["round"], key)
    for key in ("corrupt_acc", "corrupt_acc_mean", "fgsm_acc", "pgd_acc"):
        assert final[-1][key] == every[-1][key]
    assert set(ROBUST) <= set(ROBUST_COLUMNS)


def test_the_report_gives_final_values_where_only_the_last_round_has_them(both):
    root, every, final = both
    table, summaries = runs_table([root / "final"])
    head = table.splitlines()[0]
    assert "final corrupted" in head and "final FGSM" in head and "AUBC corrupted" not in head
    rob = summaries["margin"]["robust"]
    assert rob["corrupt_acc_mean"]["final_mean"] == pytest.approx(final[-1]["corrupt_acc_mean"])
    assert "aubc_mean" not in rob["corrupt_acc_mean"]
    assert f"{100 * final[-1]['fgsm_acc']:.2f} ± 0.00" in table
    table_every, _ = runs_table([root / "every"])
    assert "AUBC corrupted" in table_every.splitlines()[0]


def test_resume_of_a_final_only_run_gives_the_same_records(both, digits):
    root, _, final = both
    path = root / "final" / "rounds.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:2]) + "\n")  # killed after round 1
    resumed = run_experiment(_cfg(robust_rounds="final"), root / "final", splits=digits, progress=False)
    assert [{k: v for k, v in r.items() if not k.endswith("_s")} for r in resumed] == \
        [{k: v for k, v in r.items() if not k.endswith("_s")} for r in final]


def test_a_seed_killed_after_another_finished_resumes(digits, tmp_path):
    # seed 0 finished (its last round holds the robust columns), seed 1 killed after its round 1: the
    # file holds the columns for one seed only, and resuming must continue it, not refuse it
    cfg = _cfg(robust_rounds="final", seeds=(0, 1))
    whole = run_experiment(cfg, tmp_path / "whole", splits=digits, progress=False)
    path = tmp_path / "killed" / "rounds.jsonl"
    run_experiment(cfg, tmp_path / "killed", splits=digits, progress=False)
    lines = path.read_text().splitlines()
    assert [json.loads(x)["seed"] for x in lines] == [0, 0, 0, 1, 1, 1]
    path.write_text("\n".join(lines[:5]) + "\n")
    check_records([json.loads(x) for x in lines[:5]], path, "final")
    resumed = run_experiment(cfg, tmp_path / "killed", splits=digits, progress=False)
    assert [{k: v for k, v in r.items() if not k.endswith("_s")} for r in resumed] == \
        [{k: v for k, v in r.items() if not k.endswith("_s")} for r in whole]
    assert "corrupt_acc_mean" in resumed[-1] and "corrupt_acc_mean" not in resumed[-2]


def test_a_robust_column_in_a_middle_round_is_refused(both, digits):
    root, _, final = both
    recs = [dict(r) for r in final]
    # the file checks accept robust columns in every round or in each seed's last round only ...
    check_records(recs, "x")
    check_records([{**r, "fgsm_acc": 0.5} for r in recs], "x")
    # ... the last-round-only layout not where the config says every round ...
    with pytest.raises(RunDirectoryError, match="line 1 lacks 'corrupt_acc_mean', which line 3 records"):
        check_records(recs, "x", "every")
    # ... and never a column that skips a middle round
    damaged = [recs[0] | {"fgsm_acc": 0.5}, recs[1], recs[2]]
    with pytest.raises(RunDirectoryError, match="line 2 lacks 'fgsm_acc'"):
        check_records(damaged, "x")
    # the replay check knows the config: a final-only run with a robust column before its last round
    path = root / "final" / "rounds.jsonl"
    # (round 1 is the file's last, so the file checks cannot tell it from a finished run's final round)
    path.write_text("".join(json.dumps(r) + "\n" for r in [recs[0], recs[1] | {"fgsm_acc": 0.5}]))
    with pytest.raises(RunDirectoryError, match="round 1 records 'fgsm_acc', which robust_rounds: final"):
        run_experiment(_cfg(robust_rounds="final"), root / "final", splits=digits, progress=False)


def test_bad_values():
    with pytest.raises(ConfigError, match="robust_rounds must be one of every, final, got 'last'"):
        _cfg(robust_rounds="last")
    with pytest.raises(ConfigError, match="robust_rounds 'final' needs test_corruptions"):
        ExperimentConfig(dataset="digits", robust_rounds="final")

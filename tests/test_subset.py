"""The runner-level random candidate subset (``subset=R``, LPLgrad Table II): drawn from the seeded
per-round generator, recorded in rounds.jsonl, the only samples a strategy sees, typed errors."""

from __future__ import annotations

import json

import pytest
import torch

from dalkit.cli import main
from dalkit.errors import BudgetError, ConfigError
from dalkit.experiment import ExperimentConfig, initial_labeled, run_experiment
from dalkit.experiment import round as round_module
from dalkit.experiment.runner import derive_seed, resolved_options
from dalkit.strategies import QueryContext, create_strategy, query
from dalkit.training import TrainConfig

QUICK_TRAIN = TrainConfig(epochs=1, batch_size=32, min_steps=8, lr=3e-3)


def config(method: str = "entropy", **changes) -> ExperimentConfig:
    values = dict(dataset="digits", model="cnn", method=method, initial_size=20, budget=10, rounds=3,
                  seeds=(0,), pool_size=300, train=QUICK_TRAIN, device="cpu", subset=40)
    values.update(changes)
    return ExperimentConfig(**values)


def naive_candidates(pool_size: int, labeled: set[int], subset: int, seed: int, r: int) -> set[int]:
    """The round's candidates computed another way: a Python list of the unlabeled indices."""
    unlabeled = [i for i in range(pool_size) if i not in labeled]
    g = torch.Generator().manual_seed(derive_seed(seed, r, 4))
    perm = torch.randperm(len(unlabeled), generator=g)[:subset].tolist()
    return {unlabeled[p] for p in perm}


def test_candidates_are_seeded_recorded_and_the_only_samples_a_strategy_sees(tmp_path, digits, monkeypatch):
    seen: list[torch.Tensor] = []
    real_context = round_module.QueryContext

    def spy(*args, **kwargs):
        ctx = real_context(*args, **kwargs)
        seen.append(ctx.unlabeled_idx.clone())
        return ctx

    monkeypatch.setattr(round_module, "QueryContext", spy)
    cfg = config(seeds=(0, 1))
    records = run_experiment(cfg, tmp_path / "run", splits=digits, progress=False)
    on_disk = [json.loads(line) for line in (tmp_path / "run" / "rounds.jsonl").read_text().splitlines()]
    assert [r["n_candidates"] for r in on_disk if r["round"] < cfg.rounds] == [40] * 6
    assert all("n_candidates" not in r for r in on_disk if r["round"] == cfg.rounds)
    k = 0
    for seed in cfg.seeds:
        labeled = set(initial_labeled(300, 20, seed).tolist())
        for rec in sorted((r for r in records if r["seed"] == seed), key=lambda r: r["round"])[:-1]:
            expected = naive_candidates(300, labeled, 40, seed, rec["round"])
            assert set(seen[k].tolist()) == expected  # the strategy saw exactly the candidates
            assert set(rec["selected"]) <= expected
            labeled |= set(rec["selected"])
            k += 1
    # same config + seed => same candidates and selections
    again = run_experiment(cfg, None, splits=digits, progress=False)
    assert [r["selected"] for r in again] == [r["selected"] for r in records]


def test_full_subset_and_method_default(digits):
    assert config(subset=None).candidate_subset is None
    assert config(subset="full").candidate_subset is None
    assert config("uncertain-gcn", subset=None).candidate_subset == 10000  # the method preset
    assert config("uncertain-gcn", subset="full").candidate_subset is None
    assert resolved_options(config(subset=40))["subset"] == 40
    # R at least the unlabeled pool: every unlabeled sample is a candidate
    recs = run_experiment(config(subset=300, rounds=1), None, splits=digits, progress=False)
    assert recs[0]["n_candidates"] == 280
    # a method preset's R larger than the pool is not an error: the whole pool is scored
    recs = run_experiment(config("uncertain-gcn", subset=None, rounds=1), None, splits=digits, progress=False)
    assert recs[0]["n_candidates"] == 280


def test_query_context_rejects_bad_candidates_and_query_checks_the_subset(make_context):
    ctx = make_context(subset=30)
    assert ctx.n_unlabeled == 30 and int(ctx.candidate_mask.sum()) == 30
    assert not bool((ctx.candidate_mask & ctx.labeled_mask).any())
    with pytest.raises(Exception, match="budget"):
        query(create_strategy("entropy"), ctx, 31)
    labeled = ctx.labeled_idx
    for bad in (labeled[:2], torch.tensor([5, 5]), torch.tensor([10 ** 6])):
        with pytest.raises(ConfigError):
            QueryContext(ctx.model, ctx.pool_images, labeled, ctx.labeled_labels, 10, torch.Generator(),
                         candidates=bad)

    class Outside:  # breaks the contract: picks an unlabeled sample that is not a candidate
        def select(self, ctx, budget):
            from dalkit.strategies import Selection
            return Selection((~ctx.labeled_mask & ~ctx.candidate_mask).nonzero().squeeze(1)[:budget])

    with pytest.raises(RuntimeError, match="candidate"):
        query(Outside(), ctx, 3)


@pytest.mark.parametrize("subset", [0, -5, 2.5, True, "half"])
def test_bad_subset_values_raise_config_errors(subset):
    with pytest.raises(ConfigError, match="subset"):
        config(subset=subset)


def test_subset_below_budget_or_above_the_pool_is_refused(digits):
    with pytest.raises(ConfigError, match="budget"):
        config(subset=5)
    with pytest.raises(ConfigError, match="exceeds pool_size"):
        config(subset=301)
    with pytest.raises(BudgetError, match="exceeds the pool"):  # pool known only once loaded
        run_experiment(config(subset=10 ** 6, pool_size=None), None, splits=digits, progress=False)
    with pytest.raises(ConfigError, match="runner-level"):
        run_experiment(config(strategy_options={"subset": 40}), None, splits=digits, progress=False)


def test_cli_subset_flag(tmp_path, capsys, digits):
    base = ["run", "--dataset", "digits", "--method", "random", "--initial-size", "10", "--budget", "5",
            "--rounds", "1", "--seeds", "0", "--epochs", "1", "--min-steps", "2", "--device", "cpu",
            "--pool-size", "200", "--quiet"]
    assert main([*base, "--subset", "0", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "subset" in err[0]
    assert not (tmp_path / "a").exists()
    assert main([*base, "--subset", "1000", "--out", str(tmp_path / "b")]) == 2
    assert "exceeds pool_size" in capsys.readouterr().err
    assert main([*base, "--subset", "50", "--out", str(tmp_path / "c")]) == 0
    rec = json.loads((tmp_path / "c" / "rounds.jsonl").read_text().splitlines()[0])
    assert rec["n_candidates"] == 50
    assert main([*base, "--subset", "full", "--out", str(tmp_path / "d")]) == 0

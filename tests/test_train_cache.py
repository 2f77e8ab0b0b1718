"""The train cache (``--train-cache DIR``): a loaded training gives the records a trained one gives."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest
import torch

from dalkit.cli import main
from dalkit.errors import ConfigError, OutputError
from dalkit.experiment import ExperimentConfig, run_experiment
from dalkit.experiment.executors import ExecutorConfig
from dalkit.experiment.round import ModelSpec, train_round
from dalkit.experiment.train_cache import TrainCache
from dalkit.training import TrainConfig, create_recipe

QUICK = TrainConfig(epochs=1, batch_size=32, min_steps=8, lr=3e-3)
VOLATILE = ("train_s", "query_s", "train_cached")


def config(method: str, **changes) -> ExperimentConfig:
    values = dict(dataset="digits", model="cnn", method=method, initial_size=20, budget=10, rounds=2,
                  seeds=(0,), pool_size=300, train=QUICK, device="cpu")
    values.update(changes)
    return ExperimentConfig(**values)


def stable(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in records]


# one method per recipe (supervised, adversarial pairs, loss prediction, FixMatch, FreeMatch + FA), a
# warm-started one, and MC dropout (its masks drawn after training)
CASES = {
    "margin": {},
    "bald": {},
    "dm2-at": {},
    "lplgrad": {"retrain": "continue"},
    "fixmatch:random": {"recipe_options": {"mu": 2}},
    "freematch+fa:coreset": {"recipe_options": {"mu": 2}},
}


@pytest.mark.parametrize("method", list(CASES))
def test_a_loaded_training_records_what_a_trained_one_does(method, tmp_path, digits):
    cfg = config(method, **CASES[method])
    plain = run_experiment(cfg, tmp_path / "plain", splits=digits, progress=False)
    cold = run_experiment(cfg, tmp_path / "cold", splits=digits, progress=False, train_cache=tmp_path / "c")
    warm = run_experiment(cfg, tmp_path / "warm", splits=digits, progress=False, train_cache=tmp_path / "c")
    assert stable(cold) == stable(plain)
    assert stable(warm) == stable(plain)  # selections, accuracies, losses, robust numbers: all of them
    assert [r.get("train_cached", False) for r in cold] == [False] * 3
    assert [r.get("train_cached", False) for r in warm] == [True] * 3
    assert len(list((tmp_path / "c").glob("*.pt"))) == 3
    # the stored training time is reported, not the load's
    assert [r["train_s"] for r in warm] == [r["train_s"] for r in cold]


def test_methods_share_round_zero_only(tmp_path, digits):
    cache = tmp_path / "c"
    run_experiment(config("margin"), tmp_path / "a", splits=digits, progress=False, train_cache=cache)
    other = run_experiment(config("entropy"), tmp_path / "b", splits=digits, progress=False,
                           train_cache=cache)
    # round 0 trains on the seed's initial set for every method; later rounds on each method's picks
    assert [r.get("train_cached", False) for r in other] == [True, False, False]
    alone = run_experiment(config("entropy"), tmp_path / "alone", splits=digits, progress=False)
    assert stable(other) == stable(alone)


@pytest.mark.parametrize("change", [{"seeds": (1,)}, {"train": dataclasses.replace(QUICK, lr=2e-3)},
                                    {"model_dropout": 0.25}, {"pool_size": 301}, {"method": "dm2-at"}])
def test_a_different_input_misses(change, tmp_path, digits):
    cache = tmp_path / "c"
    run_experiment(config("margin", rounds=0), tmp_path / "a", splits=digits, progress=False,
                   train_cache=cache)
    values = {"method": "margin", "rounds": 0, **change}
    recs = run_experiment(config(**values), tmp_path / "b", splits=digits, progress=False, train_cache=cache)
    assert "train_cached" not in recs[0]
    assert len(list(cache.glob("*.pt"))) == 2


def test_train_round_restores_the_global_rng_and_module_modes(tmp_path, digits, monkeypatch):
    # usernets builds a layer at import: the first round must not draw its init after that
    monkeypatch.delitem(sys.modules, "usernets", raising=False)
    spec = ModelSpec("usernets:frozen_norm", 10)  # after training, its norm layer is in eval mode
    recipe = create_recipe("supervised")
    idx = torch.arange(40)
    images, labels = digits.train.images, digits.train.labels
    cache = TrainCache(tmp_path / "c")
    trained = train_round(spec, recipe, QUICK, images, labels, idx, 0, 0, cache=cache)
    after_training = torch.get_rng_state()
    torch.manual_seed(123)  # whatever happened in between
    loaded = train_round(spec, recipe, QUICK, images, labels, idx, 0, 0, cache=cache)
    assert not trained.cached and loaded.cached
    assert torch.equal(torch.get_rng_state(), after_training)
    modes = [m.training for m in trained.model.modules()]
    assert False in modes and True in modes
    assert [m.training for m in loaded.model.modules()] == modes
    loaded_state = loaded.model.state_dict()
    for k, a in trained.model.state_dict().items():
        assert torch.equal(a, loaded_state[k]), k
    assert loaded.stats == trained.stats


def test_a_damaged_entry_is_retrained_and_replaced(tmp_path, digits):
    cache = tmp_path / "c"
    first = run_experiment(config("margin", rounds=0), tmp_path / "a", splits=digits, progress=False,
                           train_cache=cache)
    (entry,) = cache.glob("*.pt")
    entry.write_bytes(entry.read_bytes()[:100])  # torn
    again = run_experiment(config("margin", rounds=0), tmp_path / "b", splits=digits, progress=False,
                           train_cache=cache)
    assert "train_cached" not in again[0] and stable(again) == stable(first)
    third = run_experiment(config("margin", rounds=0), tmp_path / "c2", splits=digits, progress=False,
                           train_cache=cache)
    assert third[0]["train_cached"] is True


def test_bad_train_cache_values(tmp_path):
    afile = tmp_path / "f"
    afile.write_text("x")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        TrainCache(afile)
    with pytest.raises(ConfigError, match="train-cache must be a folder, got ''"):
        ExecutorConfig(train_cache="")
    with pytest.raises(ConfigError, match="train-cache must be a folder, got 3"):
        ExecutorConfig(train_cache=3)  # type: ignore[arg-type]


def test_cli_train_cache(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    afile = tmp_path / "f"
    afile.write_text("x")
    args = ["run", "--dataset", "digits", "--method", "margin,entropy", "--rounds", "1", "--initial-size",
            "20", "--budget", "10", "--pool-size", "200", "--epochs", "1", "--min-steps", "5", "--seeds", "0",
            "--quiet"]
    assert main([*args, "--out", "bad", "--train-cache", str(afile)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a file, not a folder" in err[0]
    assert not (tmp_path / "bad").exists()
    assert main([*args, "--out", "runs", "--train-cache", "cache"]) == 0
    recs = {m: [json.loads(x) for x in (tmp_path / "runs" / m / "rounds.jsonl").read_text().splitlines()]
            for m in ("margin", "entropy")}
    assert [r.get("train_cached", False) for r in recs["margin"]] == [False, False]
    assert [r.get("train_cached", False) for r in recs["entropy"]] == [True, False]
    assert len(list(Path("cache").glob("*.pt"))) == 3


def test_the_key_sees_unlabeled_images_counterparts_and_a_warm_start(tmp_path, digits):
    images, labels = digits.train.images, digits.train.labels
    spec, idx = ModelSpec("cnn", 10), torch.arange(20)
    cache = TrainCache(tmp_path / "c")
    ssl = create_recipe("fixmatch", mu=2).for_dataset(None)

    def hit(recipe, **kw) -> bool:
        return train_round(spec, recipe, QUICK, images, labels, idx, 0, 0, cache=cache, **kw).cached

    assert not hit(ssl, unlabeled_idx=torch.arange(20, 120))
    assert hit(ssl, unlabeled_idx=torch.arange(20, 120))
    assert not hit(ssl, unlabeled_idx=torch.arange(21, 121))  # the same labels, other unlabeled images
    pairs = create_recipe("adversarial", epsilon=0.03)
    adv = torch.rand(2, *images.shape[1:], generator=torch.Generator().manual_seed(0))
    assert not hit(pairs, adv_index=torch.tensor([3, 4]), adv_images=adv)
    assert hit(pairs, adv_index=torch.tensor([3, 4]), adv_images=adv)
    assert not hit(pairs, adv_index=torch.tensor([3, 4]), adv_images=adv.flip(0))
    sup = create_recipe("supervised")
    first = train_round(spec, sup, QUICK, images, labels, idx, 0, 0, cache=cache)
    assert not hit(sup, init_state=first.model.state_dict())  # a warm start is another training
    assert hit(sup, init_state=first.model.state_dict())

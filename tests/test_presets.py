"""The dm2-paper preset: the values it sets per method, that explicit values win, and the CLI/YAML/library
entry points."""

from __future__ import annotations

import json

import pytest

from dalkit.cli import main
from dalkit.errors import ConfigError
from dalkit.experiment import load_config
from dalkit.experiment.config import config_from_dict
from dalkit.experiment.presets import apply_preset
from dalkit.experiment.runner import resolved_options

METHODS = ["random", "bald", "entropy-bayesian", "probcover", "uncertain-gcn", "dm2", "dm2-at"]


def by_method(values):
    return {c.method: c for c in config_from_dict(values)}


def test_dm2_paper_sets_each_methods_reading():
    cfgs = by_method({"preset": "dm2-paper", "dataset": "mnist", "method": METHODS})
    for c in cfgs.values():
        # the code's 10 cycles are 10 evaluations and 9 queries: 20 + 9 x 20 = 200 labels
        assert (c.initial_size, c.budget, c.rounds, c.subset) == (20, 20, 9, 1000)
        assert c.initial_size + c.rounds * c.budget == 200
        assert c.model == "smallnet" and c.initial_set == "every-class"
        assert (c.train.optimizer, c.train.lr, c.train.epochs, c.train.lr_decay_at) == ("adam", 1e-3, 50, 0.4)
        assert c.train.class_balance == "one-batch" and c.train.batch_size == 96
    opts = {m: resolved_options(c) for m, c in cfgs.items()}
    assert opts["bald"]["strategy"]["mc"] == "blocks"
    assert opts["entropy-bayesian"]["strategy"]["mc"] == "blocks"
    assert opts["entropy-bayesian"]["strategy"]["score"] == "sum"
    assert opts["probcover"]["strategy"]["delta"] == 0.4
    assert opts["uncertain-gcn"]["strategy"]["normalization"] == "column"
    for m in ("dm2", "dm2-at"):
        assert opts[m]["strategy"]["mixing"] == "pairs" and opts[m]["strategy"]["alpha"] == 1.0
    assert opts["dm2-at"]["recipe"]["label"] == "predicted"
    assert opts["dm2-at"]["recipe"]["epsilon"] == pytest.approx(8 / 255)
    assert cfgs["random"].strategy_options == {}
    # without the preset: dalkit's defaults
    plain = resolved_options(by_method({"dataset": "mnist", "method": "dm2-at"})["dm2-at"])
    assert plain["strategy"]["mixing"] == "group" and plain["recipe"]["label"] == "true"


def test_cifar_protocol_and_explicit_values_win():
    cfgs = by_method({"preset": "dm2-paper", "dataset": "cifar10", "method": ["dm2-at", "bald"],
                      "rounds": 3,
                      "strategy_options": {"dm2-at": {"alpha": 0.4}, "bald": {"mc": "embedding"}},
                      "recipe_options": {"dm2-at": {"epsilon": 0.1}}})
    c = cfgs["dm2-at"]
    assert (c.initial_size, c.budget, c.rounds, c.subset) == (1000, 1000, 3, 25000)
    opts = resolved_options(c)
    assert opts["strategy"]["alpha"] == 0.4 and opts["strategy"]["mixing"] == "pairs"
    assert opts["recipe"]["epsilon"] == 0.1 and opts["recipe"]["label"] == "predicted"
    assert resolved_options(cfgs["bald"])["strategy"]["mc"] == "embedding"
    (one,) = config_from_dict({"preset": "dm2-paper", "dataset": "mnist", "method": "dm2",
                               "strategy_options": {"alpha": 0.7}})  # one method: shared keys win too
    assert resolved_options(one)["strategy"]["alpha"] == 0.7


def test_unknown_preset_and_yaml(tmp_path, capsys):
    with pytest.raises(ConfigError, match="valid presets: dm2-paper"):
        apply_preset({"preset": "dm3"})
    path = tmp_path / "c.yaml"
    path.write_text("preset: dm2-paper\ndataset: digits\nmethod: dm2-at\nrounds: 2\n")
    (cfg,) = load_config(path)
    assert cfg.subset == 1000 and cfg.rounds == 2 and cfg.budget == 20
    assert main(["run", "--preset", "dm3", "--dataset", "digits", "--out", str(tmp_path / "x")]) == 2
    assert "valid presets" in capsys.readouterr().err


def test_cli_preset_runs_and_records_the_resolved_options(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["run", "--preset", "dm2-paper", "--dataset", "digits", "--method", "dm2-at",
               "--rounds", "1", "--budget", "5", "--initial-size", "10", "--seeds", "0", "--epochs", "1",
               "--pool-size", "1400",
               "--out", str(out), "--quiet", "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    resolved = json.loads((out / "resolved.json").read_text())
    assert resolved["strategy"]["mixing"] == "pairs" and resolved["recipe"]["label"] == "predicted"
    rounds = [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]
    assert rounds[0]["n_candidates"] == 1000
    (small,) = config_from_dict({"preset": "dm2-paper", "dataset": "digits", "pool_size": 500})
    assert small.subset == "full"  # a pool no larger than the subset: all of it

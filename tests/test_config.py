"""Config parsing: per-method options, YAML round trip."""

import pytest

from dalkit.cli import _parse_options
from dalkit.errors import ConfigError
from dalkit.experiment import config_from_dict


def test_per_method_options_reach_only_their_method():
    configs = config_from_dict({
        "dataset": "digits", "method": ["random", "dm2", "dm2-at"],
        "strategy_options": {"dm2": {"mixing": "pairs"}, "dm2-at": {"n_neighbors": 3}},
        "recipe_options": {"dm2-at": {"label": "predicted"}},
    })
    opts = {c.method: (c.strategy_options, c.recipe_options) for c in configs}
    assert opts["random"] == ({}, {})
    assert opts["dm2"] == ({"mixing": "pairs"}, {})
    assert opts["dm2-at"] == ({"n_neighbors": 3}, {"label": "predicted"})


def test_cli_option_syntax():
    assert _parse_options(["k=5", "dm2.mixing=pairs", "dm2.alpha=1.0", "x=null"], "--option") == {
        "k": 5, "dm2": {"mixing": "pairs", "alpha": 1.0}, "x": None}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        _parse_options(["novalue"], "--option")


def test_round_trip_through_dict():
    (cfg,) = config_from_dict({"dataset": "digits", "method": "dm2", "seeds": [3, 4],
                               "train": {"epochs": 3, "batch_size": 8}})
    (again,) = config_from_dict(cfg.to_dict())
    assert again == cfg and again.seeds == (3, 4) and again.train.epochs == 3


@pytest.mark.parametrize(("text", "value"), [("1e-3", 1e-3), ("9e-1", 0.9), ("1E3", 1000.0),
                                              ("-2.5e+2", -250.0), (".5e1", 5.0), ("1.0e-3", 1e-3), ("3", 3),
                                              ("abc", "abc")])
def test_scientific_notation_is_a_number_in_options_and_config_files(tmp_path, text, value):
    """YAML 1.1 reads 1e-3 as a string; dalkit reads it as the number everybody means, in --option,
    --recipe-option and config files alike (1.0e-3 always was a number; integers stay integers)."""
    from dalkit.experiment.config import read_config_values

    parsed = _parse_options([f"lr={text}", f"fixmatch:random.tau={text}"], "--recipe-option")
    assert parsed == {"lr": value, "fixmatch:random": {"tau": value}}
    assert type(parsed["lr"]) is type(value)
    (tmp_path / "c.yaml").write_text(f"train: {{lr: {text}}}\nrecipe_options: {{tau: {text}}}\n")
    values = read_config_values(tmp_path / "c.yaml")
    assert values["train"]["lr"] == value and values["recipe_options"]["tau"] == value


def test_scientific_notation_reaches_the_recipe_and_the_optimiser():
    options = _parse_options(["tau=9e-1", "lambda_u=5e-1"], "--recipe-option")
    (cfg,) = config_from_dict({"dataset": "digits", "method": "fixmatch:random", "recipe_options": options,
                               "train": {"lr": _parse_options(["lr=1e-3"], "--option")["lr"]}})
    from dalkit.experiment.runner import resolved_options

    recipe = resolved_options(cfg)["recipe"]
    assert recipe["tau"] == 0.9 and recipe["lambda_u"] == 0.5 and cfg.train.lr == 1e-3


@pytest.mark.parametrize("given", [{"open_set_oracle": "discard"}, {"open_set_source": "photos"},
                                   {"open_set_oracle": "random-label", "open_set_source": "photos"}])
def test_open_set_settings_given_without_the_fraction_are_refused(given):
    """A value equal to the default counts: what matters is that the mapping gives it (it would be
    ignored without an open-set pool)."""
    with pytest.raises(ConfigError, match="^open_set_[a-z]+ '.*' needs an open-set pool") as info:
        config_from_dict({"dataset": "digits", **given})
    assert str(info.value).split()[0] in given


@pytest.mark.parametrize("fraction,oracle", [(0.0, "discard"), (0.5, "random-label")])
def test_a_saved_config_with_every_open_set_field_reads_back(fraction, oracle):
    """config.yaml records all three fields (defaults included): it must read back as the same config."""
    (cfg,) = config_from_dict({"dataset": "digits", "open_set_fraction": fraction, "open_set_oracle": oracle})
    saved = cfg.to_dict()
    assert {"open_set_fraction", "open_set_source", "open_set_oracle"} <= saved.keys()
    assert config_from_dict(saved)[0] == cfg

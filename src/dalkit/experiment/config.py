"""Experiment configuration: frozen dataclasses validated on construction, parsed from YAML/CLI at
the edge."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dalkit.checks import check_field_types, count_values, short, yaml_load
from dalkit.data import DATASETS
from dalkit.errors import ConfigError
from dalkit.experiment.methods import check_training_overrides, resolve_method
from dalkit.experiment.presets import apply_preset
from dalkit.experiment.robustness import check_robustness_fields
from dalkit.models import check_model_name
from dalkit.training.config import TrainConfig

INITIAL_SETS = ("random", "every-class")
RETRAIN = ("scratch", "continue")


@dataclass(frozen=True)
class ExperimentConfig:
    """One AL experiment: a method on a dataset, over several seeds.

    Attributes:
        dataset: registered dataset name (``dalkit datasets``).
        model: registered model name (``cnn``, ``resnet18``, ..., ``features``: an MLP head on the
            ``features_path`` array), or a Python import path ``package.module:builder`` to a function
            or class returning your own ``nn.Module`` (logits [B, C]; see
            :func:`dalkit.models.build_model`).
        model_options: keyword options of the model: ``features`` takes ``hidden`` and ``depth``; a
            builder takes its own keywords, plus ``embedding_layer`` / ``stages`` for the adapter.
        method: a strategy name or a strategy+recipe method such as ``dm2-at``.
        initial_size: labeled samples at round 0 (random, the same for every method under a seed).
        budget: samples labeled per round.
        rounds: query rounds (the model is evaluated rounds + 1 times).
        seeds: one run per seed.
        pool_size: use a random subset of the training split as the pool (None: all of it).
        test_size: evaluate on a random subset of the test split (None: all of it).
        train: optimiser/schedule; None takes the paper's recipe for the dataset family.
        strategy_options / recipe_options: override the method's defaults.
        recipe: override the method's training recipe ("supervised", "adversarial").
        model_dropout: embedding dropout (None: the model's default).
        data_root: where dataset files live (None: $DALKIT_DATA or ./data).
        features_path: with ``model: features``, the model's inputs (without it, the dataset's own
            samples must be feature rows [N, D], e.g. ``dataset: npz`` with 2-D ``x_train``): a ``.npy``
            [N_train, D] (one row
            per training sample of ``dataset``; a seeded ``test_size`` of the rows, default 20 % up to
            10,000, is held out as the test set) or a ``.npz`` with ``train`` [N_train, D] and ``test``
            [N_test, D]; labels come from ``dataset``.  With any other model: a ``.npy`` of per-pool-
            sample features for strategies whose ``source`` option is ``features``.
        device: "cpu", "cuda" or "auto".
        test_corruptions: corrupted copies of the test split evaluated every round, as
            ``"name:severity"`` strings, ``{name, severity}`` mappings, ``"all:3"`` or ``"all"``
            (:func:`dalkit.data.corruptions.parse_corruptions`); () = none.
        attack_epsilon: FGSM and PGD test accuracy at this L-inf radius every round (None: none).
        pgd_steps: PGD iterations (step 2.5 eps / steps).
        pgd_restarts: 0 = PGD starts at the clean input (deterministic); k >= 1 = k random starts in
            the eps-ball, a test image counting as correct only if it resists all k (Madry et al.).
        robust_rounds: when the corrupted test sets and the attacks are evaluated: "every" round
            (default; the report gives their AUBC) or only the "final" round (the report gives the final
            values; the clean accuracy is still evaluated every round).  On MNIST-C with PGD restarts
            the robustness evaluation is ~100x the training time of a DM2-paper round.
        open_set_fraction: fraction of the pool made of out-of-distribution images (0: none).
        open_set_source: where they come from: "photos" (crops of scikit-learn's sample photographs)
            or a dataset name.
        open_set_oracle: what the oracle answers for an OOD pick: "discard" (the DM2 paper: the label is
            refused, the budget is still charged, the sample is never trained on) or "random-label".
        imbalance_ratio: long-tailed pool with head/tail ratio (None: the pool as loaded).
        subset: R, score only a random R of the unlabeled pool each round (LPLgrad Table II; the DM2
            baselines' 1,000 / 25,000), drawn from the seeded per-round generator and recorded in
            ``rounds.jsonl``; strategies see only these candidates.  "full": the whole unlabeled pool;
            None: the method's default (full for every method but ``uncertain-gcn``, 10,000).  When
            fewer than R samples are left unlabeled, all of them are candidates.
        initial_set: "random" (default: ``initial_size`` uniform draws) or "every-class" (redrawn until
            every class is in it, the DM2 baselines' MNIST protocol).
        retrain: "scratch" (default: a fresh model every round) or "continue" (the model, with any
            loss-prediction module, starts each round from the previous round's weights with a fresh
            optimiser and schedule, as the LearningLoss / LPLgrad codes run; the weights are kept in
            the run directory's state so a resumed run ends with the same numbers).
    """

    dataset: str = "mnist"
    model: str = "cnn"
    method: str = "random"
    initial_size: int = 20
    budget: int = 20
    rounds: int = 10
    seeds: tuple[int, ...] = (0, 1, 2)
    pool_size: int | None = None
    test_size: int | None = None
    train: TrainConfig | None = None
    strategy_options: dict[str, Any] = field(default_factory=dict)
    recipe_options: dict[str, Any] = field(default_factory=dict)
    recipe: str | None = None
    model_dropout: float | None = None
    model_options: dict[str, Any] = field(default_factory=dict)
    data_root: str | None = None
    features_path: str | None = None
    device: str = "auto"
    test_corruptions: tuple[str, ...] = ()
    attack_epsilon: float | None = None
    pgd_steps: int = 10
    pgd_restarts: int = 0
    robust_rounds: str = "every"
    open_set_fraction: float = 0.0
    open_set_source: str = "photos"
    open_set_oracle: str = "discard"
    imbalance_ratio: float | None = None
    subset: int | str | None = None
    initial_set: str = "random"
    retrain: str = "scratch"

    def __post_init__(self) -> None:
        check_robustness_fields(self)
        if self.initial_set not in INITIAL_SETS:
            raise ConfigError(f"initial_set must be one of {', '.join(INITIAL_SETS)}, "
                              f"got {short(self.initial_set)}")
        if self.retrain not in RETRAIN:
            raise ConfigError(f"retrain must be one of {', '.join(RETRAIN)}, got {short(self.retrain)}")
        DATASETS.get(self.dataset)
        check_model_name(self.model)
        resolve_method(self.method)
        check_training_overrides(self.method, self.recipe, self.recipe_options)
        check_field_types(self)
        for name in ("initial_size", "budget"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {short(value)}")
        if not isinstance(self.rounds, int) or self.rounds < 0:
            raise ConfigError(f"rounds must be a non-negative integer, got {short(self.rounds)}")
        for name in ("pool_size", "test_size"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise ConfigError(f"{name} must be a positive integer or null, got {short(value)}")
        seeds = tuple(self.seeds) if isinstance(self.seeds, list | tuple) else (self.seeds,)
        valid_seeds = all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
        valid_seeds = valid_seeds and len(set(seeds)) == len(seeds)
        if not seeds or not valid_seeds:
            raise ConfigError(f"seeds must be distinct non-negative integers, got {short(self.seeds)}")
        object.__setattr__(self, "seeds", seeds)
        if isinstance(self.train, dict):
            object.__setattr__(self, "train", _build(TrainConfig, self.train, "train"))
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda', got {short(self.device)}")
        if self.model_dropout is not None and not 0 <= self.model_dropout < 1:
            raise ConfigError(f"model_dropout must lie in [0, 1), got {self.model_dropout}")
        for name in ("strategy_options", "recipe_options", "model_options"):
            if not isinstance(getattr(self, name), dict):
                raise ConfigError(f"{name} must be a mapping, got {short(getattr(self, name))}")
        if self.pool_size is not None and self.initial_size + self.rounds * self.budget > self.pool_size:
            raise ConfigError(
                f"initial_size + rounds * budget = {self.initial_size + self.rounds * self.budget} "
                f"exceeds pool_size {self.pool_size}"
            )

        if self.subset is not None and self.subset != "full":
            if isinstance(self.subset, bool) or not isinstance(self.subset, int) or self.subset <= 0:
                raise ConfigError(f"subset must be a positive integer, 'full' or null, got {self.subset!r}")
            if self.subset < self.budget:
                raise ConfigError(f"subset {self.subset} is smaller than the budget {self.budget}; "
                                  "the candidates must hold at least one round's budget")
            if self.pool_size is not None and self.subset > self.pool_size:
                raise ConfigError(f"subset {self.subset} exceeds pool_size {self.pool_size}; "
                                  "lower subset or use subset: full")

    @property
    def candidate_subset(self) -> int | None:
        """The effective R: this config's ``subset``, else the method's default (None = full)."""
        if self.subset == "full":
            return None
        return self.subset if self.subset is not None else resolve_method(self.method).subset

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["seeds"] = list(self.seeds)
        d["test_corruptions"] = list(self.test_corruptions)
        return d

    def replace(self, **changes: Any) -> ExperimentConfig:
        return dataclasses.replace(self, **changes)

    def same_experiment(self, other: ExperimentConfig) -> bool:
        """True when ``other`` produces the same rounds (seeds may differ: a run can gain seeds)."""
        a, b = self.to_dict(), other.to_dict()
        for d in (a, b):
            d.pop("seeds")
            d.pop("device")
            d.pop("data_root")
        return a == b


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = [k for k in values if k not in fields]
    if unknown:
        key = unknown[0]
        label = key if isinstance(key, str) and len(key) <= 80 and key.isprintable() else short(key)
        raise ConfigError(f"unknown field {where}.{label}; valid fields: {', '.join(sorted(fields))}")
    return cls(**values)


def options_for(method: str, options: Any, methods: list[str]) -> Any:
    """The options of ``method`` from a mapping that may hold per-method sub-mappings.

    ``{"n_neighbors": 5, "dm2": {"mixing": "pairs"}}`` gives every method ``n_neighbors`` and only
    ``dm2`` ``mixing``; a key naming one of the listed methods with a mapping value is a sub-mapping.
    """
    if not isinstance(options, dict):
        return options
    shared = {k: v for k, v in options.items() if not (k in methods and isinstance(v, dict))}
    own = options.get(method) if isinstance(options.get(method), dict) else {}
    return {**shared, **own}


def config_from_dict(values: dict[str, Any]) -> list[ExperimentConfig]:
    """Build configs from a mapping; ``method`` may be a list (one config per method); ``preset`` names
    a preset (:mod:`dalkit.experiment.presets`) applied under the mapping's values.

    With several methods, ``strategy_options``/``recipe_options`` may hold per-method sub-mappings
    (see :func:`options_for`).

    Raises:
        ConfigError: unknown field or bad value (the message names it).
    """
    if not isinstance(values, dict):
        raise ConfigError(f"a config must be a mapping of fields, got {type(values).__name__}")
    values = apply_preset(values)  # "preset: dm2-paper" fills in values the mapping does not set
    # given without the fraction, these would be silently ignored; the dataclass cannot tell a value
    # given from its default (config.yaml records all three, the fraction included), the mapping can
    for name in ("open_set_source", "open_set_oracle"):
        if name in values and "open_set_fraction" not in values:
            raise ConfigError(f"{name} {short(values[name])} needs an open-set pool: set open_set_fraction "
                              "(--open-set-fraction) above 0, or drop it")
    methods = values.pop("method", "random")
    methods = methods if isinstance(methods, list) else [methods]
    if not methods:
        raise ConfigError("method must name at least one method, got an empty list")
    bad = [m for m in methods if not isinstance(m, str)]
    if bad:
        raise ConfigError(f"method must be a method name or a list of names, got {short(bad[0])}")
    twice = [m for k, m in enumerate(methods) if m in methods[:k]]
    if twice:  # one run directory per method: a second copy would only repeat the first's rounds
        raise ConfigError(f"method {short(twice[0])} is listed twice; list each method once")
    if values.get("train") is not None:
        if not isinstance(values["train"], dict):
            raise ConfigError("train must be a mapping of TrainConfig fields")
        values["train"] = _build(TrainConfig, values["train"], "train")
    try:
        return [
            _build(ExperimentConfig, {
                **values, "method": m,
                **{k: options_for(m, values[k], methods) for k in ("strategy_options", "recipe_options")
                   if k in values},
            }, "config")
            for m in methods
        ]
    except TypeError as exc:  # wrong types reaching a comparison
        raise ConfigError(f"invalid config value: {short(str(exc))[1:-1]}") from None


MAX_CONFIG_BYTES = 1 << 20  # a config is a page of YAML; anything larger is a mistake (or an attack)
MAX_CONFIG_VALUES = 100_000  # counted with aliases expanded: refuses "billion laughs" alias bombs


def read_config_values(path: str | Path) -> dict[str, Any]:
    """The mapping of fields in a YAML config file, refusing anything that is not a small UTF-8 YAML
    mapping.

    Raises:
        ConfigError: unreadable, larger than 1 MiB, not UTF-8, not YAML, not a mapping, or expanding
            (through YAML aliases) to more than 100,000 values.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or type(exc).__name__}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config {path} is larger than {MAX_CONFIG_BYTES >> 20} MiB; is it the right file?")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    try:
        values = yaml_load(text)
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"config {path} is not valid YAML: {short(first)[1:-1]}") from None
    except RecursionError:
        raise ConfigError(f"config {path} is nested too deeply") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"config {path} must be a mapping of fields, got {type(values).__name__}")
    if count_values(values, MAX_CONFIG_VALUES) >= MAX_CONFIG_VALUES:
        raise ConfigError(f"config {path} expands to more than {MAX_CONFIG_VALUES} values "
                          "(YAML aliases repeated?); write the values out")
    return values


def load_config(path: str | Path) -> list[ExperimentConfig]:
    """Read a YAML config file.

    Raises:
        ConfigError: unreadable file, invalid YAML or invalid fields.
    """
    return config_from_dict(read_config_values(path))

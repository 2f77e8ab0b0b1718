"""The active-learning loop.  It never checks which strategy or recipe it runs."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dalkit.data import DATASETS, DataSplits, ImageDataset, channel_stats, load_dataset, to_float
from dalkit.errors import BudgetError, ConfigError, DatasetFormatError
from dalkit.experiment.config import ExperimentConfig
from dalkit.experiment.methods import resolve_method
from dalkit.experiment.rundir import RunDirectory, atomic_write_text
from dalkit.models import create_model
from dalkit.strategies import QueryContext, create_strategy, query
from dalkit.training import TrainConfig, TrainSet, accuracy, create_recipe, fit, prepare_model

log = logging.getLogger("dalkit")

_POOL_SEED = 12345  # pool/test subsets are the same for every method and seed


def derive_seed(*parts: int) -> int:
    """A stable 63-bit seed from integers (seed, round, purpose)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, dtype=np.uint64)[0] >> 1)


def generator(*parts: int) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(*parts))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available")
    return torch.device(name)


def initial_labeled(pool_size: int, initial_size: int, seed: int) -> Tensor:
    """The round-0 labeled set: ``initial_size`` random pool indices, a function of the seed only."""
    return torch.randperm(pool_size, generator=generator(seed, 0, 7))[:initial_size].sort().values


def draw_candidates(
    pool_size: int, labeled: Tensor, subset: int | None, gen: torch.Generator
) -> Tensor | None:
    """The round's random candidate subset: ``subset`` unlabeled pool indices (sorted), or None for the
    whole unlabeled pool (no subset, or no more than ``subset`` samples left unlabeled).

    Its own generator (seed, round, 4), so a strategy's random choices are the same with or without it.
    """
    if subset is None:
        return None
    mask = torch.ones(pool_size, dtype=torch.bool)
    mask[labeled] = False
    unlabeled = mask.nonzero().squeeze(1)
    if subset >= unlabeled.numel():
        return None
    return unlabeled[torch.randperm(unlabeled.numel(), generator=gen)[:subset]].sort().values


@dataclass
class Prepared:
    """Data and settings shared by every seed of an experiment."""

    pool: ImageDataset
    test: ImageDataset
    train_cfg: TrainConfig
    features: Tensor | None
    mean: tuple[float, ...]
    std: tuple[float, ...]


def prepare_data(config: ExperimentConfig, splits: DataSplits | None = None) -> Prepared:
    """Load the dataset, cut the pool/test subsets, resolve the training recipe.

    Raises:
        DatasetNotFoundError, DatasetFormatError, BudgetError.
    """
    spec = DATASETS.get(config.dataset)
    splits = splits or load_dataset(config.dataset, config.data_root)
    pool, test = splits.train, splits.test
    g = torch.Generator().manual_seed(_POOL_SEED)
    if config.pool_size is not None and config.pool_size < len(pool):
        pool = pool.subset(torch.randperm(len(pool), generator=g)[: config.pool_size].sort().values)
    if config.test_size is not None and config.test_size < len(test):
        test = test.subset(torch.randperm(len(test), generator=g)[: config.test_size].sort().values)
    needed = config.initial_size + config.rounds * config.budget
    if needed > len(pool):
        raise BudgetError(
            f"initial_size + rounds * budget = {needed} exceeds the pool of {len(pool)} samples; "
            "lower the budget or the number of rounds"
        )
    subset = config.subset  # the user's R (a method preset's default larger than the pool means all)
    if isinstance(subset, int) and subset > len(pool):
        raise BudgetError(f"subset {subset} exceeds the pool of {len(pool)} samples; lower subset or use "
                          "subset: full")
    features = None
    if config.features_path:
        try:
            arr = np.load(config.features_path)
        except (OSError, ValueError) as exc:
            raise DatasetFormatError(f"cannot read features {config.features_path}: {exc}") from None
        if arr.ndim != 2 or arr.shape[0] != len(splits.train):
            raise DatasetFormatError(f"features {config.features_path} must be [N_train, D], got {arr.shape}")
        if not np.isfinite(arr).all():
            raise DatasetFormatError(f"features {config.features_path} contain NaN or inf")
        features = torch.from_numpy(arr).float()
        if config.pool_size is not None and config.pool_size < len(splits.train):
            g2 = torch.Generator().manual_seed(_POOL_SEED)
            keep = torch.randperm(len(splits.train), generator=g2)[: config.pool_size].sort().values
            features = features[keep]
    mean, std = channel_stats(pool.images[: min(len(pool), 10000)])
    return Prepared(pool, test, config.train or TrainConfig.for_family(spec.family), features, mean, std)


def _recipe_for(config: ExperimentConfig):
    spec = resolve_method(config.method)
    name = config.recipe or spec.recipe
    options = {**spec.recipe_options, **config.recipe_options}
    if name == "adversarial" and options.get("epsilon") is None:
        options["epsilon"] = DATASETS.get(config.dataset).fgsm_epsilon
    return create_recipe(name, **options)


def _strategy_for(config: ExperimentConfig):
    spec = resolve_method(config.method)
    if "subset" in config.strategy_options:
        raise ConfigError("subset is a runner-level option for every strategy: set the config field "
                          "subset (CLI --subset), not a strategy option")
    return create_strategy(spec.strategy, **{**spec.strategy_options, **config.strategy_options})


def run_seed(
    config: ExperimentConfig,
    data: Prepared,
    seed: int,
    rundir: RunDirectory | None = None,
    done: list[dict[str, Any]] | None = None,
    progress: bool = False,
    on_round: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run (or resume) the AL loop for one seed; returns all its round records.

    Round r trains a freshly initialised model on the labeled set (seeded by (seed, r)), evaluates it,
    queries ``budget`` samples and labels them with the simulated oracle (the pool's labels).
    """
    device = resolve_device(config.device)
    strategy = _strategy_for(config)
    recipe = _recipe_for(config)
    pool = data.pool
    labeled = initial_labeled(len(pool), config.initial_size, seed)
    state = rundir.load_state(seed) if rundir is not None else {}
    adv_images = torch.empty(0, *pool.image_shape)  # counterparts, aligned with adv_index
    adv_index = torch.empty(0, dtype=torch.long)
    records: list[dict[str, Any]] = []
    for rec in done or []:  # replay completed rounds
        sel = torch.tensor(rec["selected"], dtype=torch.long)
        labeled = torch.cat([labeled, sel])
        key = f"adv_round{rec['round']}"
        if key in state:
            adv_index = torch.cat([adv_index, sel])
            adv_images = torch.cat([adv_images, state[key]])
        records.append(rec)
    start_round = len(records)
    for r in range(start_round, config.rounds + 1):
        torch.manual_seed(derive_seed(seed, r, 1))  # model init + dropout in training
        model = create_model(config.model, pool.image_shape[0], pool.num_classes, data.mean, data.std,
                             config.model_dropout, image_size=pool.image_shape[-1]).to(device)
        model = prepare_model(recipe, model, pool.image_shape)  # e.g. attaches a loss-prediction module
        paired = torch.zeros(len(labeled), dtype=torch.bool)
        train_adv = None
        if adv_index.numel():
            pos = {int(i): k for k, i in enumerate(labeled.tolist())}
            rows = torch.tensor([pos[int(i)] for i in adv_index.tolist()], dtype=torch.long)
            paired[rows] = True
            train_adv = torch.zeros(len(labeled), *pool.image_shape)
            train_adv[rows] = adv_images
        trainset = TrainSet(pool.images[labeled], pool.labels[labeled], train_adv,
                            paired if train_adv is not None else None)
        t0 = time.perf_counter()
        stats = fit(model, trainset, recipe.step(), data.train_cfg, generator(seed, r, 2), device,
                    progress=progress, desc=f"seed {seed} round {r}")
        train_s = time.perf_counter() - t0
        acc = accuracy(model, data.test.images, data.test.labels, data.train_cfg.eval_batch_size, device)
        selected: list[int] = []
        query_s = 0.0
        new_adv = None
        if r < config.rounds:
            candidates = draw_candidates(len(pool), labeled, config.candidate_subset, generator(seed, r, 4))
            ctx = QueryContext(model, pool.images, labeled, pool.labels[labeled], pool.num_classes,
                               generator(seed, r, 3), device, data.train_cfg.eval_batch_size, data.features,
                               candidates)
            t0 = time.perf_counter()
            sel = query(strategy, ctx, config.budget)
            query_s = time.perf_counter() - t0
            new = sel.indices.sort().values
            selected = new.tolist()
            x_new = to_float(pool.images[new], device)
            new_adv = recipe.counterparts(model, x_new, pool.labels[new].to(device))
        record = {
            "seed": seed, "round": r, "n_labeled": int(len(labeled)),
            "n_adversarial": int(adv_index.numel()), "test_acc": acc, "train_loss": stats["loss"],
            "train_s": round(train_s, 4), "query_s": round(query_s, 4), "selected": selected,
        }
        if r < config.rounds and config.candidate_subset is not None:
            record["n_candidates"] = ctx.n_unlabeled
        if new_adv is not None:
            state[f"adv_round{r}"] = new_adv.cpu()
            if rundir is not None:
                rundir.save_state(seed, state)
        if rundir is not None:
            rundir.append_round(record)
        records.append(record)
        if on_round is not None:
            on_round(record)
        if selected:
            sel_t = torch.tensor(selected, dtype=torch.long)
            labeled = torch.cat([labeled, sel_t])
            if new_adv is not None:
                adv_index = torch.cat([adv_index, sel_t])
                adv_images = torch.cat([adv_images, new_adv.cpu()])
    return records


def resolved_options(config: ExperimentConfig) -> dict[str, Any]:
    """The method's strategy and recipe with every option, defaults included, and the effective
    candidate subset (JSON-ready)."""
    spec = resolve_method(config.method)
    strategy, recipe = _strategy_for(config), _recipe_for(config)
    return json.loads(json.dumps({
        "strategy": {"name": spec.strategy, **dataclasses.asdict(strategy)},
        "recipe": {"name": config.recipe or spec.recipe, **dataclasses.asdict(recipe)},
        "subset": config.candidate_subset,
    }))


def check_experiment(
    config: ExperimentConfig, out_dir: str | Path | None = None, splits: DataSplits | None = None
) -> Prepared:
    """Validate everything about ``config`` without writing: options, data files, budget, and that
    ``out_dir`` (if it exists) holds the same experiment.  Returns the prepared data.

    Raises:
        ConfigError, BudgetError, DatasetNotFoundError, DatasetFormatError, RunDirectoryError.
    """
    resolved = resolved_options(config)
    required = getattr(_strategy_for(config), "requires_recipe", ())
    if required and resolved["recipe"]["name"] not in required:
        name = resolved["strategy"]["name"]
        raise ConfigError(f"strategy {name!r} needs the {required[0]!r} recipe, not "
                          f"{resolved['recipe']['name']!r}; use the method {name!r}")
    data = prepare_data(config, splits)
    if out_dir is not None:
        RunDirectory(out_dir).check(config, resolved)
    return data


def run_experiment(
    config: ExperimentConfig,
    out_dir: str | Path | None = None,
    splits: DataSplits | None = None,
    progress: bool = True,
    on_round: Callable[[dict[str, Any]], None] | None = None,
    prepared: Prepared | None = None,
) -> list[dict[str, Any]]:
    """Run every seed of ``config``; with ``out_dir``, record to and resume from a run directory.

    Re-running after an interruption continues from the last completed round and ends with the same
    numbers as an uninterrupted run.  All validation happens before anything is written.

    Args:
        prepared: the result of :func:`check_experiment`, to skip validating twice.
    Returns:
        all round records (every seed).
    Raises:
        ConfigError, BudgetError, DatasetNotFoundError, DatasetFormatError, RunDirectoryError.
    """
    data = prepared if prepared is not None else check_experiment(config, out_dir, splits)
    rundir = RunDirectory(out_dir) if out_dir is not None else None
    existing: list[dict[str, Any]] = []
    if rundir is not None:
        rundir.prepare(config, resolved_options(config))
        existing = rundir.read_rounds(repair=True)
    records: list[dict[str, Any]] = []
    for seed in config.seeds:
        done = sorted((r for r in existing if r["seed"] == seed), key=lambda r: r["round"])
        records += run_seed(config, data, seed, rundir, done, progress, on_round)
    if rundir is not None:
        from dalkit.report import summarize

        summary = summarize(records)
        summary["method"] = config.method
        atomic_write_text(rundir.summary_path, json.dumps(summary, indent=2))
    return records

"""The active-learning loop.  It never checks which strategy or recipe it runs."""

from __future__ import annotations

import dataclasses
import functools
import inspect
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

from dalkit.checks import short
from dalkit.data import DATASETS, DataSplits, ImageDataset, channel_stats, load_dataset, to_float
from dalkit.errors import BudgetError, ConfigError, DatasetFormatError, RunDirectoryError
from dalkit.experiment.config import ExperimentConfig
from dalkit.experiment.methods import resolve_method
from dalkit.experiment.robustness import corrupted_test_sets, perturb_pool
from dalkit.experiment.round import (  # noqa: F401  (re-exported: callers import them from here)
    ModelSpec,
    derive_seed,
    draw_candidates,
    generator,
    initial_labeled,
    run_round,
    unlabeled_mask,
)
from dalkit.experiment.rundir import RunDirectory, check_replay
from dalkit.experiment.train_cache import TrainCache
from dalkit.files import atomic_write_text
from dalkit.strategies import create_strategy
from dalkit.training import TrainConfig, accuracy, create_recipe, prepare_model
from dalkit.training.robust import robust_metrics

log = logging.getLogger("dalkit")

_POOL_SEED = 12345  # pool/test subsets are the same for every method and seed


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available")
    return torch.device(name)


@dataclass
class Prepared:
    """Data and settings shared by every seed of an experiment."""

    pool: ImageDataset
    test: ImageDataset
    train_cfg: TrainConfig
    features: Tensor | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    ood_mask: Tensor | None = None  # bool [N_pool]: out-of-distribution pool images
    corrupted: dict[str, Tensor] = dataclasses.field(default_factory=dict)  # "name:sev" -> test images


def prepare_data(config: ExperimentConfig, splits: DataSplits | None = None) -> Prepared:
    """Load the dataset, cut the pool/test subsets, resolve the training recipe.

    Raises:
        DatasetNotFoundError, DatasetFormatError, BudgetError.
    """
    spec = DATASETS.get(config.dataset)
    splits = splits or load_dataset(config.dataset, config.data_root)
    if config.model == "features" and config.features_path:  # the user's embeddings are the pool
        splits = feature_splits(config, splits)
    pool, test = splits.train, splits.test
    if config.model == "features" and (not pool.is_float or len(pool.image_shape) != 1):
        raise ConfigError(f"model 'features' trains on feature rows [N, D]; the {config.dataset} samples are "
                          f"{pool.images.dtype} {tuple(pool.image_shape)}: give your embeddings with "
                          "--features FILE (.npy [N_train, D], or .npz with train and test) or use a dataset "
                          "of rows (dataset: npz with a 2-D x_train)")
    for name, size, split in (("pool_size", config.pool_size, pool), ("test_size", config.test_size, test)):
        if size is not None and size > len(split):
            raise ConfigError(f"{name} {size} is larger than the {config.dataset} split of {len(split)} "
                              f"samples; use at most {len(split)} (or null for all of it)")
    g = torch.Generator().manual_seed(_POOL_SEED)
    if config.pool_size is not None and config.pool_size < len(pool):
        pool = pool.subset(torch.randperm(len(pool), generator=g)[: config.pool_size].sort().values)
    if config.test_size is not None and config.test_size < len(test):
        test = test.subset(torch.randperm(len(test), generator=g)[: config.test_size].sort().values)
    if config.features_path and (config.open_set_fraction > 0 or config.imbalance_ratio not in (None, 1)):
        raise ConfigError("features_path cannot be combined with open_set_fraction or imbalance_ratio "
                          "(the features would no longer line up with the pool)")
    pool, ood_mask = perturb_pool(config, pool)
    needed = config.initial_size + config.rounds * config.budget
    if config.initial_size > int((~ood_mask).sum()):
        raise BudgetError(f"initial_size {config.initial_size} exceeds the {int((~ood_mask).sum())} "
                          "in-distribution pool samples")
    n_classes = int(torch.unique(pool.labels[~ood_mask]).numel())
    if config.initial_set == "every-class" and config.initial_size < n_classes:
        raise BudgetError(f"initial_set every-class needs initial_size >= the {n_classes} classes of the "
                          f"pool, got {config.initial_size}")
    if needed > len(pool):
        raise BudgetError(
            f"initial_size + rounds * budget = {needed} exceeds the pool of {len(pool)} samples; "
            "lower the budget or the number of rounds"
        )
    subset = config.subset  # the user's R (a method preset's default larger than the pool means all)
    if isinstance(subset, int) and subset > len(pool):
        raise BudgetError(f"subset {subset} exceeds the pool of {len(pool)} samples; lower subset or use "
                          "subset: full")
    check_pool_kind(config, pool)
    features = None
    if config.model == "features":
        features = pool.images  # strategies with source=features read the model's own inputs
    elif config.features_path:
        features = load_features(config.features_path, len(splits.train))
        if config.pool_size is not None and config.pool_size < len(splits.train):
            g2 = torch.Generator().manual_seed(_POOL_SEED)
            keep = torch.randperm(len(splits.train), generator=g2)[: config.pool_size].sort().values
            features = features[keep]
    # the first 10,000 in-distribution samples (gathered by index: a mapped pool is never read whole)
    stat_rows = (~ood_mask).nonzero().squeeze(1)[:10000]
    mean, std = channel_stats(pool.images[:10000] if not bool(ood_mask.any()) else pool.images[stat_rows])
    return Prepared(pool, test, config.train or TrainConfig.for_family(spec.family), features, mean, std,
                    ood_mask, corrupted_test_sets(config, test))


def _check_feature_array(arr: Any, path: str | Path, n_rows: int, what: str = "N_train") -> Tensor:
    """float32 [n_rows, D] from a loaded array, or DatasetFormatError naming what is wrong."""
    if arr.dtype.kind not in "biuf":
        raise DatasetFormatError(f"features {path} must hold numbers, got dtype {arr.dtype}")
    if arr.ndim != 2 or arr.shape[0] != n_rows or arr.shape[1] == 0:
        raise DatasetFormatError(f"features {path} must be [{what}={n_rows}, D >= 1] (one row per sample), "
                                 f"got {arr.shape}")
    # in chunks of rows: a memory-mapped million-row file is never read whole into memory
    step = max(1, (64 << 20) // max(1, arr.shape[1] * arr.itemsize))
    bad = np.concatenate([np.flatnonzero(~np.isfinite(arr[s:s + step]).all(axis=1)) + s
                          for s in range(0, arr.shape[0], step)] or [np.empty(0, np.int64)])
    if bad.size:
        raise DatasetFormatError(f"features {path} contain NaN or inf in {bad.size} rows (first: "
                                 f"{', '.join(map(str, bad[:5]))})")
    if arr.dtype == np.float32 and arr.flags.c_contiguous:
        return torch.from_numpy(arr)  # a map of the file when loaded with mmap_mode: pages come in as read
    out = np.empty(arr.shape, np.float32)
    for s in range(0, arr.shape[0], step):
        with np.errstate(over="ignore"):  # checked below
            out[s:s + step] = arr[s:s + step]
        if not np.isfinite(out[s:s + step]).all():  # float64 (or int64) values beyond float32's range
            raise DatasetFormatError(f"features {path} hold values beyond float32's range (|x| > 3.4e38; "
                                     f"largest {np.abs(arr).max():.3g}); rescale them")
    return torch.from_numpy(out)


def _load_array(path: str | Path) -> Any:
    """The array in ``path``: a ``.npy`` memory-mapped copy-on-write (a write never reaches the file),
    so a pool larger than memory is paged in as it is read; an ``.npz`` archive as numpy opens it."""
    try:
        return np.load(path, allow_pickle=False, mmap_mode="c")
    except (OSError, ValueError, EOFError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else short(str(exc))[1:-1]
        raise DatasetFormatError(f"cannot read features {path}: {reason}") from None


def load_features(path: str | Path, n_rows: int) -> Tensor:
    """A float [n_rows, D] features array from a ``.npy`` file.

    Raises:
        DatasetFormatError: unreadable, not a plain numeric .npy array, wrong shape, or not finite.
    """
    arr = _load_array(path)
    if not isinstance(arr, np.ndarray):  # an .npz archive
        if hasattr(arr, "close"):
            arr.close()
        raise DatasetFormatError(f"features {path} must be one .npy array, not an .npz archive")
    return _check_feature_array(arr, path, n_rows)


FEATURE_TEST_FRACTION, FEATURE_TEST_MAX = 0.2, 10_000  # the held-out test rows of a .npy feature pool


def feature_splits(config: ExperimentConfig, splits: DataSplits) -> DataSplits:
    """The ``features`` model's data: the user's embeddings as float pools, labels from the dataset.

    ``.npz`` with ``train`` [N_train, D] and ``test`` [N_test, D]: rows aligned with the dataset's
    splits.  ``.npy`` [N_train, D]: rows aligned with the training split; a seeded ``test_size`` of them
    (default 20 %, at most 10,000) is held out as the test set and the rest are the pool.

    Raises:
        DatasetFormatError: unreadable file, wrong keys, rows or shape, NaN/inf rows.
    """
    path = config.features_path
    train, test = splits.train, splits.test
    arr = _load_array(path)
    if isinstance(arr, np.ndarray):
        x = _check_feature_array(arr, path, len(train))
        n_test = config.test_size or min(FEATURE_TEST_MAX, max(1, int(FEATURE_TEST_FRACTION * len(train))))
        if n_test >= len(train):
            raise ConfigError(f"test_size {n_test} leaves no pool rows of the {len(train)} in {path}")
        perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(_POOL_SEED + 1))
        test_rows, pool_rows = perm[:n_test].sort().values, perm[n_test:].sort().values
        name = f"{train.name}-features"
        return DataSplits(ImageDataset(x[pool_rows], train.labels[pool_rows], train.classes, name),
                          ImageDataset(x[test_rows], train.labels[test_rows], train.classes, name))
    with arr:
        missing = [k for k in ("train", "test") if k not in arr.files]
        if missing:
            raise DatasetFormatError(f"features {path} must hold arrays 'train' and 'test' (missing "
                                     f"{missing}; has {sorted(arr.files)[:8]})")
        parts = {k: arr[k] for k in ("train", "test")}
    x_train = _check_feature_array(parts["train"], f"{path} (train)", len(train))
    x_test = _check_feature_array(parts["test"], f"{path} (test)", len(test), "N_test")
    if x_train.shape[1] != x_test.shape[1]:
        raise DatasetFormatError(f"features {path}: train rows have {x_train.shape[1]} values but test rows "
                                 f"{x_test.shape[1]}")
    name = f"{train.name}-features"
    return DataSplits(ImageDataset(x_train, train.labels, train.classes, name),
                      ImageDataset(x_test, test.labels, test.classes, name))


def check_pool_kind(config: ExperimentConfig, pool: ImageDataset) -> None:
    """Refuse settings that only make sense for uint8 image pools when the pool is a float pool.

    Raises:
        ConfigError: names the setting.
    """
    if not pool.is_float:
        return
    what = "a float pool (embeddings or float arrays)"
    if config.test_corruptions or config.attack_epsilon is not None:
        raise ConfigError("test_corruptions and attack_epsilon act on image pixels in [0, 1]; "
                          f"the data is {what}")
    if config.open_set_fraction > 0:
        raise ConfigError(f"open_set_fraction adds out-of-distribution images; the data is {what}")
    cfg = config.train
    if cfg is not None and (cfg.crop_padding or cfg.hflip):
        raise ConfigError(f"train.crop_padding and train.hflip augment images; the data is {what}")
    ratio = int(getattr(_recipe_for(config), "unlabeled_ratio", 0))
    if ratio:
        raise ConfigError("the semi-supervised recipes augment images (RandAugment, flips); "
                          f"the data is {what}")


def model_spec_for(config: ExperimentConfig, data: Prepared) -> ModelSpec:
    """How every round of ``config`` builds its fresh model (a registered model or the user's builder,
    adapted) on the prepared pool."""
    return ModelSpec(config.model, data.pool.num_classes, data.mean, data.std, config.model_dropout,
                     dict(config.model_options), data.pool.is_float)


def build_round_model(config: ExperimentConfig, data: Prepared,
                      device: torch.device | str = "cpu") -> torch.nn.Module:
    """A fresh model for ``config`` on the prepared pool, on ``device``.  Seed the global RNG first: it
    initialises the weights.

    Raises:
        ConfigError: the model cannot be built or adapted for these data.
    """
    pool = data.pool
    return model_spec_for(config, data).build(pool.image_shape, to_float(pool.images[:2])).to(device)


def _recipe_for(config: ExperimentConfig):
    spec = resolve_method(config.method)
    name = config.recipe or spec.recipe
    options = {**spec.recipe_options, **config.recipe_options}
    if name == "adversarial" and options.get("epsilon") is None:
        options["epsilon"] = DATASETS.get(config.dataset).fgsm_epsilon
    recipe = create_recipe(name, **options)
    if hasattr(recipe, "for_dataset"):  # dataset-dependent defaults (e.g. SSL views flip natural images only)
        recipe = recipe.for_dataset(DATASETS.get(config.dataset))
    return recipe


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
    train_cache: TrainCache | None = None,
) -> list[dict[str, Any]]:
    """Run (or resume) the AL loop for one seed; returns all its round records.

    Round r trains a freshly initialised model on the labeled set (seeded by (seed, r)), evaluates it,
    queries ``budget`` samples and labels them with the simulated oracle (the pool's labels).  With
    ``train_cache`` a training already stored there is loaded instead (the record says
    ``"train_cached": true``; every other number is the same).
    """
    device = resolve_device(config.device)
    strategy = _strategy_for(config)
    recipe = _recipe_for(config)
    pool = data.pool
    ood = data.ood_mask if data.ood_mask is not None else torch.zeros(len(pool), dtype=torch.bool)
    open_set = bool(ood.any())
    # the oracle refuses OOD picks: they stay "labeled" (budget charged, never re-queried) but never train
    discard = ood if config.open_set_oracle == "discard" else torch.zeros_like(ood)
    labeled = initial_set(config, data, seed)
    state = rundir.load_state(seed) if rundir is not None else {}
    adv_images = torch.empty(0, *pool.image_shape)  # counterparts, aligned with adv_index
    adv_index = torch.empty(0, dtype=torch.long)
    records: list[dict[str, Any]] = []
    for rec in done or []:  # replay completed rounds
        sel = torch.tensor(rec["selected"], dtype=torch.long)
        labeled = torch.cat([labeled, sel])
        key = f"adv_round{rec['round']}"
        if key in state:
            adv_index = torch.cat([adv_index, sel[~discard[sel]]])
            adv_images = torch.cat([adv_images, state[key]])
        records.append(rec)
    start_round = len(records)
    warm = None  # retrain: continue -> the previous round's weights
    if config.retrain == "continue" and start_round > 0:
        warm = state.get(f"model_round{start_round - 1}")
        if warm is None:
            raise RunDirectoryError(f"seed {seed}: the weights of round {start_round - 1} are missing from "
                                    "the run's state, so retrain: continue cannot resume; use a new folder")
    model_spec = model_spec_for(config, data)

    def evaluate(model: torch.nn.Module, r: int) -> tuple[float, dict[str, float], float]:
        acc = accuracy(model, data.test.images, data.test.labels, data.train_cfg.eval_batch_size, device)
        if config.robust_rounds == "final" and r < config.rounds:
            return acc, {}, 0.0
        t0 = time.perf_counter()
        robust = robust_metrics(model, data.test.labels, data.corrupted, data.test.images,
                                config.attack_epsilon, config.pgd_steps, data.train_cfg.eval_batch_size,
                                device, config.pgd_restarts)
        return acc, robust, time.perf_counter() - t0

    for r in range(start_round, config.rounds + 1):
        train_idx = labeled[~discard[labeled]]
        res = run_round(model_spec, strategy, recipe, data.train_cfg, pool.images, pool.labels, labeled, seed,
                        r, config.budget if r < config.rounds else None, discard if open_set else None,
                        device, data.features, config.candidate_subset, adv_index, adv_images,
                        counterpart_labels=pool.labels, progress=progress,
                        after_train=functools.partial(evaluate, r=r),
                        init_state=warm, cache=train_cache)
        stats, train_s = res.stats, res.train_s
        acc, robust, robust_s = res.evaluation
        selected: list[int] = res.selected.tolist()
        query_s = res.query_s
        new_adv = res.new_adv
        info: dict[str, Any] = _jsonable(res.info)
        record = {
            "seed": seed, "round": r, "n_labeled": int(len(labeled)),
            "n_adversarial": int(adv_index.numel()), "test_acc": acc, "train_loss": stats["loss"],
            "train_s": round(train_s, 4), "query_s": round(query_s, 4), "selected": selected,
        }
        if res.train_cached:
            record["train_cached"] = True
        if r < config.rounds and config.candidate_subset is not None:
            record["n_candidates"] = res.n_candidates
        if robust:
            record.update(robust)
            record["robust_s"] = round(robust_s, 4)
        if open_set:
            record["n_trained"] = int(len(train_idx))
            record["n_ood_labeled"] = int(ood[labeled].sum())
            record["n_ood_selected"] = int(ood[torch.tensor(selected, dtype=torch.long)].sum())
        if info:
            record["info"] = info
        changed = new_adv is not None
        if new_adv is not None:
            state[f"adv_round{r}"] = new_adv.cpu()
        if config.retrain == "continue" and r < config.rounds:
            # kept per round (the last two): a crash between this write and the round's line leaves the
            # weights the resumed round r needs (round r - 1's) in place
            warm = {k: v.detach().cpu().clone() for k, v in res.model.state_dict().items()}
            state[f"model_round{r}"] = warm
            state.pop(f"model_round{r - 2}", None)
            changed = True
        if changed and rundir is not None:
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
                adv_index = torch.cat([adv_index, sel_t[~discard[sel_t]]])
                adv_images = torch.cat([adv_images, new_adv.cpu()])
    return records


def initial_set(config: ExperimentConfig, data: Prepared, seed: int) -> Tensor:
    """The seed's round-0 labeled set under ``config.initial_set`` (see :func:`initial_labeled`)."""
    every = config.initial_set == "every-class"
    return initial_labeled(len(data.pool), config.initial_size, seed, data.ood_mask,
                           data.pool.labels if every else None)


def _mask(n: int, idx: Tensor) -> Tensor:
    m = torch.zeros(n, dtype=torch.bool)
    m[idx] = True
    return m


def _jsonable(value: Any) -> Any:
    """Selection.info made JSON-ready (tensors to lists or floats)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _options(obj: Any) -> dict[str, Any]:
    """A strategy's or recipe's options; one added after runs were recorded (field metadata
    ``resolved_at_default: False``) is left out at its default, so those runs still resume."""
    out = dataclasses.asdict(obj)
    for f in dataclasses.fields(obj):
        if f.metadata.get("resolved_at_default", True) is False and out[f.name] == f.default:
            del out[f.name]
    return out


def resolved_options(config: ExperimentConfig) -> dict[str, Any]:
    """The method's strategy and recipe with every option, defaults included, and the effective
    candidate subset (JSON-ready)."""
    spec = resolve_method(config.method)
    strategy, recipe = _strategy_for(config), _recipe_for(config)
    return json.loads(json.dumps({
        "strategy": {"name": spec.strategy, **_options(strategy)},
        "recipe": {"name": config.recipe or spec.recipe, **_options(recipe)},
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
    resolve_device(config.device)
    data = prepare_data(config, splits)
    _check_features(config, resolved, data)
    _probe_model(config, data)
    _check_pool(config, data)
    if out_dir is not None:
        rundir = RunDirectory(out_dir)
        rundir.check(config, resolved)
        _check_done_rounds(config, data, rundir.read_rounds(), rundir.rounds_path)
    return data


def _check_features(config: ExperimentConfig, resolved: dict[str, Any], data: Prepared) -> None:
    """A strategy reads user features iff its ``source`` option is "features"."""
    name = resolved["strategy"]["name"]
    reads = resolved["strategy"].get("source") == "features"
    if config.model == "features":  # the features are the model's inputs; any strategy may run
        return
    if reads and data.features is None:
        raise ConfigError(f"strategy {name!r} with source='features' needs a features array "
                          "(--features FILE.npy or features_path)")
    if data.features is not None and not reads:
        hint = " (set --option source=features)" if "source" in resolved["strategy"] else ""
        raise ConfigError(f"--features was given but strategy {name!r} does not read it{hint}")


def _probe_model(config: ExperimentConfig, data: Prepared) -> None:
    """Build the model and run one image through it, so a shape the model cannot take (non-square or
    too-small images) is refused before anything is written; a user's model is probed by its adapter
    (a final nn.Linear, logits [B, C], the number of classes)."""
    pool = data.pool
    try:
        with torch.random.fork_rng(devices=[]):  # the caller's random stream is left as it was
            model = build_round_model(config, data).eval()
            with torch.inference_mode():
                model(to_float(pool.images[:1]))
            recipe = _recipe_for(config)
            _check_memory(config, data, model, recipe)  # before the recipe's modules are allocated
            prepare_model(recipe, model, pool.image_shape)  # sizes a loss-prediction module
    except ConfigError:
        raise
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"model {config.model!r} cannot take {config.dataset} images of shape "
                          f"{tuple(pool.image_shape)}: {short(str(exc).splitlines()[0])[1:-1]}") from None


def _check_memory(config: ExperimentConfig, data: Prepared, model: torch.nn.Module, recipe: Any) -> None:
    """Refuse sizes whose memory the machine cannot hold (:mod:`dalkit.experiment.memory`): the
    recipe's modules (loss prediction's ``hidden``), its state (FA's ``fa_queue``), ``mu`` x the batch.

    Raises:
        ConfigError: names the total, its largest part and the memory available.
    """
    from dalkit.experiment import memory

    pool = data.pool
    labeled = config.initial_size + config.rounds * config.budget  # the last round's labeled set
    batch = min(data.train_cfg.batch_size, labeled)
    act = memory.activation_floats(model, to_float(pool.images[:1]))
    params = memory.parameter_count(
        lambda: prepare_model(recipe, build_round_model(config, data, "meta"), pool.image_shape))
    embed_dim = int(getattr(model, "embed_dim", 0) or act)
    state = recipe.state_bytes(labeled, embed_dim, batch) if hasattr(recipe, "state_bytes") else 0
    parts = memory.round_bytes(
        params=params, act_per_sample=act, sample_floats=int(pool.images[0].numel()), batch=batch,
        unlabeled_ratio=int(getattr(recipe, "unlabeled_ratio", 0) or 0),
        extra_views=int(getattr(recipe, "extra_labeled_views", 0) or 0), recipe_state=state,
        eval_batch=min(data.train_cfg.eval_batch_size, len(pool)))
    device = resolve_device(config.device)
    available = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else None
    memory.check_round_memory(parts, f"method {config.method!r} on {config.dataset}", available)
    if config.rounds > 0:  # the selection runs on the CPU: the machine's memory, whatever the device
        memory.check_selection_memory(_strategy_for(config), resolve_method(config.method).strategy,
                                      selection_shape(config, data, embed_dim))


def selection_shape(config: ExperimentConfig, data: Prepared, embed_dim: int) -> Any:
    """The sizes of the largest selection of ``config``'s run (:class:`dalkit.experiment.memory.
    SelectionShape`): round 0's unlabeled pool (or the candidate subset), the last query's labeled set."""
    from dalkit.experiment import memory

    images = data.pool.images
    unlabeled = len(data.pool) - config.initial_size
    if config.candidate_subset is not None:
        unlabeled = min(unlabeled, config.candidate_subset)
    return memory.SelectionShape(
        n_unlabeled=unlabeled, n_labeled=config.initial_size + max(0, config.rounds - 1) * config.budget,
        embed_dim=embed_dim, num_classes=data.pool.num_classes, budget=config.budget,
        input_floats=int(images[0].numel()), input_bytes=int(images.element_size()),
        batch=min(data.train_cfg.eval_batch_size, len(data.pool)))


def _check_pool(config: ExperimentConfig, data: Prepared) -> None:
    """Refuse a candidate subset smaller than the budget, and give a strategy with a
    ``check_pool(n_unlabeled[, budget])`` hook the smallest number of samples a round will rank (the last
    round's unlabeled pool, or the candidate subset if smaller) and the budget."""
    ratio = int(getattr(_recipe_for(config), "unlabeled_ratio", 0) or 0)
    left = len(data.pool) - config.initial_size - config.rounds * config.budget  # unqueried, last round
    if ratio and left < 1:
        raise BudgetError(f"method {config.method!r} trains on unlabeled images, but round {config.rounds} "
                          f"leaves none: pool {len(data.pool)} - initial_size {config.initial_size} - "
                          f"rounds {config.rounds} x budget {config.budget} = {left}; lower the rounds or "
                          "the budget")
    if config.rounds <= 0:
        return
    subset = config.candidate_subset
    if subset is not None and subset < config.budget:  # a method's default subset (config checks its own)
        raise ConfigError(f"method {config.method!r} scores a candidate subset of {subset}, smaller than the "
                          f"budget {config.budget}; set subset (>= the budget) or subset: full")
    smallest = len(data.pool) - config.initial_size - (config.rounds - 1) * config.budget
    if subset is not None:
        smallest = min(smallest, subset)
    hook = getattr(_strategy_for(config), "check_pool", None)
    if hook is None:
        return
    if "budget" in inspect.signature(hook).parameters:
        hook(smallest, budget=config.budget)
    else:  # a hook written before the budget was passed
        hook(smallest)


def _check_done_rounds(config: ExperimentConfig, data: Prepared, existing: list[dict[str, Any]],
                       where: Path) -> None:
    for seed in sorted({r["seed"] for r in existing}):
        done = sorted((r for r in existing if r["seed"] == seed), key=lambda r: r["round"])
        # the same initial set run_seed starts from: with an open-set pool, in-distribution images only
        check_replay(done, config, len(data.pool), initial_set(config, data, seed).tolist(), where,
                     data.ood_mask)


def run_experiment(
    config: ExperimentConfig,
    out_dir: str | Path | None = None,
    splits: DataSplits | None = None,
    progress: bool = True,
    on_round: Callable[[dict[str, Any]], None] | None = None,
    prepared: Prepared | None = None,
    train_cache: str | Path | TrainCache | None = None,
) -> list[dict[str, Any]]:
    """Run every seed of ``config``; with ``out_dir``, record to and resume from a run directory.

    Re-running after an interruption continues from the last completed round and ends with the same
    numbers as an uninterrupted run.  All validation happens before anything is written.

    Args:
        prepared: the result of :func:`check_experiment`, to skip validating twice.
        train_cache: a folder of trained rounds shared between runs (:mod:`dalkit.experiment.train_cache`):
            a round whose training inputs match a stored one loads it instead of training.
    Returns:
        all round records (every seed).
    Raises:
        ConfigError, BudgetError, DatasetNotFoundError, DatasetFormatError, RunDirectoryError.
    """
    cache = train_cache if isinstance(train_cache, TrainCache | None) else TrainCache(train_cache)
    data = prepared if prepared is not None else check_experiment(config, out_dir, splits)
    if out_dir is None:
        return [rec for seed in config.seeds
                for rec in run_seed(config, data, seed, None, [], progress, on_round, cache)]
    rundir = RunDirectory(out_dir)
    with rundir.locked():
        existing, on_disk = open_run(config, data, rundir)
        records: list[dict[str, Any]] = []
        for seed in config.seeds:
            records += run_seed(config, data, seed, rundir, done_rounds(existing, seed), progress, on_round,
                                cache)
        close_run(config, rundir, existing, on_disk, records)
    return records


def done_rounds(existing: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """One seed's completed round records, in round order."""
    return sorted((r for r in existing if r["seed"] == seed), key=lambda r: r["round"])


def open_run(config: ExperimentConfig, data: Prepared, rundir: RunDirectory
             ) -> tuple[list[dict[str, Any]], list[int]]:
    """Check and prepare ``rundir`` for ``config`` (the caller holds its lock); every executor calls it.

    Returns:
        (the completed round records on disk, the seeds on disk that ``config`` does not run).
    Raises:
        RunDirectoryError: another experiment, or rounds that cannot be replayed.
    """
    # under the lock, check again: another run may have written since check_experiment
    rundir.check(config, resolved_options(config))
    existing = rundir.read_rounds(repair=True)
    _check_done_rounds(config, data, existing, rundir.rounds_path)
    # the config records every seed on disk, so config.yaml, rounds.jsonl and summary.json agree
    on_disk = [s for s in dict.fromkeys(r["seed"] for r in existing) if s not in config.seeds]
    rundir.prepare(config.replace(seeds=(*config.seeds, *on_disk)), resolved_options(config))
    return existing, on_disk


def close_run(config: ExperimentConfig, rundir: RunDirectory, existing: list[dict[str, Any]],
              on_disk: list[int], records: list[dict[str, Any]]) -> None:
    """Write ``summary.json`` once every seed of ``config`` has all its ``records``."""
    from dalkit.report import summarize

    summary = summarize([r for r in existing if r["seed"] in on_disk] + records)
    summary["method"] = config.method
    atomic_write_text(rundir.summary_path, json.dumps(summary, indent=2))

"""ONE active-learning round: train a fresh model on the labeled set, query the next batch.

Every caller shares it: the simulated runner (:func:`dalkit.experiment.runner.run_seed`, whose oracle
is the pool's labels), the labeling loop (:mod:`dalkit.label`, whose oracle is a person and a journal),
and the executors built around the runner.  A round is a function of its inputs and ``(seed, round)``:
the model is initialised from ``derive_seed(seed, r, 1)``, trained with ``generator(seed, r, 2)``, the
strategy draws from ``generator(seed, r, 3)`` and the candidate subset from ``generator(seed, r, 4)``, so
two callers that hand it the same pool, labels and settings select the same samples.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

import dalkit
from dalkit.data import to_float
from dalkit.errors import BudgetError
from dalkit.experiment.train_cache import TrainCache
from dalkit.models import build_model, import_model_code
from dalkit.strategies import QueryContext, query
from dalkit.training import TrainConfig, TrainSet, fit, prepare_model

OnProgress = Callable[[str, int, int], None]
"""``on_progress(phase, done, total)``: ("train", k, E) after epoch k of E (1..E in order), then
("query", 0, 1) when the query starts and ("query", 1, 1) when it has picked the batch."""


def derive_seed(*parts: int) -> int:
    """A stable 63-bit seed from integers (seed, round, purpose)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, dtype=np.uint64)[0] >> 1)


def generator(*parts: int) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(*parts))


def initial_labeled(pool_size: int, initial_size: int, seed: int, ood_mask: Tensor | None = None,
                    labels: Tensor | None = None) -> Tensor:
    """The round-0 labeled set: ``initial_size`` random pool indices, a function of the seed only.

    With an open-set pool the seed set is drawn from the in-distribution images (a seed set is labeled
    data; an OOD seed would only be discarded).  With ``labels`` [N] (``initial_set: every-class``, the
    DM2 baselines' MNIST protocol) permutations are redrawn from the same generator until the first
    ``initial_size`` hold every class that occurs in the (in-distribution) pool.

    Raises:
        BudgetError: ``labels`` given and ``initial_size`` is smaller than the number of classes, or no
            draw in 100,000 held every class (the reference's limit).
    """
    gen = generator(seed, 0, 7)
    keep = ~ood_mask if ood_mask is not None and bool(ood_mask.any()) else None
    classes = None
    if labels is not None:
        classes = torch.unique(labels[keep] if keep is not None else labels)
        if initial_size < classes.numel():
            raise BudgetError(f"initial_set every-class needs initial_size >= the {classes.numel()} classes, "
                              f"got {initial_size}")
    for _ in range(100_000):
        perm = torch.randperm(pool_size, generator=gen)
        if keep is not None:
            perm = perm[keep[perm]]
        first = perm[:initial_size]
        if classes is None or torch.unique(labels[first]).numel() == classes.numel():
            return first.sort().values
    raise BudgetError(f"no random initial set of {initial_size} held every class in 100,000 draws")


def unlabeled_mask(pool_size: int, labeled: Tensor) -> Tensor:
    """bool [N]: True for pool samples not in ``labeled``."""
    mask = torch.ones(pool_size, dtype=torch.bool)
    mask[labeled] = False
    return mask


def draw_candidates(
    pool_size: int, labeled: Tensor, subset: int | None, gen: torch.Generator
) -> Tensor | None:
    """The round's random candidate subset: ``subset`` unlabeled pool indices (sorted), or None for the
    whole unlabeled pool (no subset, or no more than ``subset`` samples left unlabeled).

    Its own generator (seed, round, 4), so a strategy's random choices are the same with or without it.
    """
    if subset is None:
        return None
    unlabeled = unlabeled_mask(pool_size, labeled).nonzero().squeeze(1)
    if subset >= unlabeled.numel():
        return None
    return unlabeled[torch.randperm(unlabeled.numel(), generator=gen)[:subset]].sort().values


@dataclass(frozen=True)
class ModelSpec:
    """How a round builds its fresh model: a registered name (or a user's ``package.module:builder``)
    plus the data-dependent arguments (:func:`dalkit.models.build_model`).

    Attributes:
        options: model options (``features``: hidden, depth; a builder's keywords, ``embedding_layer``,
            ``stages``).
        float_pool: the pool holds float values, not uint8 images (no [0, 1] clipping for FGSM).
    """

    name: str
    num_classes: int
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    dropout: float | None = None
    options: dict[str, Any] = field(default_factory=dict)
    float_pool: bool = False

    def build(self, image_shape: Sequence[int], example: Tensor | None = None) -> nn.Module:
        """A fresh model for samples of ``image_shape``; ``example`` (a few model inputs) is what a user's
        model is probed with (zeros when None)."""
        if example is None:
            example = torch.zeros(2, *image_shape)
        return build_model(self.name, tuple(image_shape), self.num_classes, example, self.mean, self.std,
                           self.dropout, self.options, self.float_pool)


@dataclass
class RoundResult:
    """What one round produced.

    Attributes:
        model: the trained model (eval mode is the caller's business).
        stats: ``fit()``'s statistics (``loss``...).
        train_s, query_s: seconds spent training and querying.
        selected: the queried pool indices, sorted [budget] (empty when the round did not query).
        info: the strategy's diagnostics (``Selection.info``).
        train_cached: the training was loaded from a :class:`TrainCache` (``train_s`` is then the
            seconds the stored training took).
        n_candidates: how many unlabeled samples the strategy ranked (None: no query).
        evaluation: what ``after_train`` returned.
        new_adv: the recipe's counterparts of the selected, trainable samples (e.g. DM2-AT's FGSM images)
            or None.
    """

    model: nn.Module
    stats: dict[str, float]
    train_s: float
    selected: Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))
    info: dict[str, Any] = field(default_factory=dict)
    query_s: float = 0.0
    n_candidates: int | None = None
    new_adv: Tensor | None = None
    evaluation: Any = None
    train_cached: bool = False


class Trained(NamedTuple):
    """What :func:`train_round` returns."""

    model: nn.Module
    stats: dict[str, float]
    seconds: float
    cached: bool = False


def train_round(
    model_spec: ModelSpec,
    recipe: Any,
    train_cfg: TrainConfig,
    images: Tensor,
    labels: Tensor,
    train_idx: Tensor,
    seed: int,
    r: int,
    device: torch.device | str = "cpu",
    adv_index: Tensor | None = None,
    adv_images: Tensor | None = None,
    unlabeled_idx: Tensor | None = None,
    progress: bool = False,
    init_state: dict[str, Tensor] | None = None,
    on_progress: OnProgress | None = None,
    cache: TrainCache | None = None,
) -> Trained:
    """Train a freshly initialised model on ``images[train_idx]`` (labels ``labels[train_idx]``).

    Args:
        images: the pool, uint8 images [N, C, H, W] or a float pool [N, ...]; labels: [N] (only
            ``train_idx`` rows are read).
        train_idx: pool indices trained on [M].
        adv_index, adv_images: pool indices (a subset of ``train_idx``) with fixed counterparts, and those
            counterparts, aligned [P, C, H, W] (DM2-AT); None for none.
        unlabeled_idx: pool indices a semi-supervised recipe draws unlabeled batches from.
        init_state: weights to start from (``retrain: continue``: the previous round's model and any
            loss-prediction module); None = the fresh initialisation.
        on_progress: told ("train", k, E) after each epoch (see :data:`OnProgress`).
        cache: load the training from this store when it holds one with the same inputs, else train
            and store it (:mod:`dalkit.experiment.train_cache`).
    Returns:
        :class:`Trained` (model, fit statistics, seconds, whether it came from ``cache``).
    """
    image_shape = tuple(images.shape[1:])
    import_model_code(model_spec.name)  # before the seed: a user module's import-time draws stay out of it
    torch.manual_seed(derive_seed(seed, r, 1))  # model init + dropout in training
    model = model_spec.build(image_shape, to_float(images[:2])).to(device)
    model = prepare_model(recipe, model, image_shape)  # e.g. attaches a loss-prediction module
    if init_state is not None:
        model.load_state_dict(init_state)
    paired = torch.zeros(len(train_idx), dtype=torch.bool)
    train_adv = None
    if adv_index is not None and adv_index.numel():
        pos = {int(i): k for k, i in enumerate(train_idx.tolist())}
        rows = torch.tensor([pos[int(i)] for i in adv_index.tolist()], dtype=torch.long)
        paired[rows] = True
        train_adv = torch.zeros(len(train_idx), *image_shape)
        train_adv[rows] = adv_images
    ratio = int(getattr(recipe, "unlabeled_ratio", 0))  # semi-supervised recipes: mu
    trainset = TrainSet(images[train_idx], labels[train_idx], train_adv,
                        paired if train_adv is not None else None,
                        unlabeled=images[unlabeled_idx] if ratio and unlabeled_idx is not None else None)
    key = None
    if cache is not None:
        key = cache.key([model_spec, recipe, train_cfg, seed, r, torch.device(device).type,
                         dalkit.__version__, torch.__version__], model,
                        [trainset.images, trainset.labels, trainset.adv_images, trainset.paired,
                         trainset.unlabeled])
        hit = cache.load(key, model)
        if hit is not None:
            if on_progress is not None:
                on_progress("train", 1, 1)  # loaded: one step, done
            return Trained(model, *hit, cached=True)
    on_epoch = None if on_progress is None else (lambda k, total: on_progress("train", k, total))
    t0 = time.perf_counter()
    stats = fit(model, trainset, recipe.step(), train_cfg, generator(seed, r, 2), device,
                progress=progress, desc=f"seed {seed} round {r}", unlabeled_ratio=ratio, on_epoch=on_epoch)
    seconds = time.perf_counter() - t0
    if key is not None:
        cache.store(key, model, stats, seconds, device)
    return Trained(model, stats, seconds)


def query_round(
    strategy: Any,
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    train_idx: Tensor,
    excluded: Tensor | None,
    num_classes: int,
    budget: int,
    seed: int,
    r: int,
    device: torch.device | str = "cpu",
    batch_size: int = 1024,
    features: Tensor | None = None,
    subset: int | None = None,
) -> tuple[Tensor, dict[str, Any], float, int]:
    """Query ``budget`` samples with ``strategy`` on the round's trained model.

    Args:
        train_idx: pool indices labeled and trained on [M] (the strategy's labeled set).
        excluded: bool [N], samples that leave the queryable pool without being trained on (an open-set
            oracle's discarded picks, items a person marked out-of-distribution); None for none.  The
            strategy sees the pool without them.
        features: optional user features [N, D] (aligned with ``images``).
        subset: score a random ``subset`` of the unlabeled pool (None: all of it).
    Returns:
        (selected pool indices sorted [budget], the strategy's info, seconds, candidates ranked).
    """
    n = images.shape[0]
    view = None
    if excluded is not None and bool(excluded.any()):
        view = (~excluded).nonzero().squeeze(1)  # sorted; train_idx lies inside it
    pool_images = images[view] if view is not None else images
    ctx_labeled = torch.searchsorted(view, train_idx) if view is not None else train_idx
    ctx_features = features[view] if (features is not None and view is not None) else features
    candidates = draw_candidates(pool_images.shape[0] if view is not None else n, ctx_labeled, subset,
                                 generator(seed, r, 4))
    ctx = QueryContext(model, pool_images, ctx_labeled, labels[train_idx], num_classes, generator(seed, r, 3),
                       device, batch_size, ctx_features, candidates)
    t0 = time.perf_counter()
    sel = query(strategy, ctx, budget)
    query_s = time.perf_counter() - t0
    picked = (view[sel.indices] if view is not None else sel.indices).sort().values
    return picked, dict(sel.info), query_s, int(ctx.n_unlabeled)


def run_round(
    model_spec: ModelSpec,
    strategy: Any,
    recipe: Any,
    train_cfg: TrainConfig,
    images: Tensor,
    labels: Tensor,
    labeled: Tensor,
    seed: int,
    r: int,
    budget: int | None,
    excluded: Tensor | None = None,
    device: torch.device | str = "cpu",
    features: Tensor | None = None,
    subset: int | None = None,
    adv_index: Tensor | None = None,
    adv_images: Tensor | None = None,
    counterpart_labels: Tensor | None = None,
    progress: bool = False,
    after_train: Callable[[nn.Module], Any] | None = None,
    init_state: dict[str, Tensor] | None = None,
    on_progress: OnProgress | None = None,
    cache: TrainCache | None = None,
) -> RoundResult:
    """Train on the labeled set, then (``budget`` not None) query the next batch.

    Args:
        images: uint8 pool [N, C, H, W]; labels: [N] long, read only at trained indices (and at the new
            picks when ``counterpart_labels`` is None).
        labeled: every pool index already queried [L]; those in ``excluded`` are never trained on.
        excluded: bool [N], samples never trained on and never offered again (None: none).
        budget: samples to query; None trains only (the last round of a run).
        counterpart_labels: labels [N] the recipe's counterparts of the new picks are built with (the
            simulated oracle knows them at query time); None skips counterparts.
        init_state: weights the round's model starts from (None: a fresh initialisation).
        after_train: called with the trained model before the query (evaluation: a strategy may leave
            the model in another state); its return value is ``RoundResult.evaluation``.
        on_progress: told each finished epoch and the query's start and end (:data:`OnProgress`).
        cache: a :class:`TrainCache` the training is loaded from or stored in (None: always train).
    Returns:
        :class:`RoundResult`.
    """
    n = images.shape[0]
    drop = excluded if excluded is not None else torch.zeros(n, dtype=torch.bool)
    train_idx = labeled[~drop[labeled]]
    queried = torch.zeros(n, dtype=torch.bool)
    queried[labeled] = True
    model, stats, train_s, cached = train_round(
        model_spec, recipe, train_cfg, images, labels, train_idx, seed, r, device, adv_index, adv_images,
        (~queried).nonzero().squeeze(1), progress, init_state, on_progress, cache)
    result = RoundResult(model, stats, train_s, train_cached=cached)
    if after_train is not None:
        result.evaluation = after_train(model)
    if budget is None:
        return result
    leave = drop & queried  # excluded picks leave the queryable pool; the strategy sees trained labels
    if on_progress is not None:
        on_progress("query", 0, 1)
    selected, info, query_s, n_cand = query_round(
        strategy, model, images, labels, train_idx, leave, model_spec.num_classes, budget, seed, r, device,
        train_cfg.eval_batch_size, features, subset)
    if on_progress is not None:
        on_progress("query", 1, 1)
    result.selected, result.info, result.query_s, result.n_candidates = selected, info, query_s, n_cand
    if counterpart_labels is not None:
        kept = selected[~drop[selected]]
        if kept.numel():
            x_new = to_float(images[kept], device)
            result.new_adv = recipe.counterparts(model, x_new, counterpart_labels[kept].to(device))
    return result

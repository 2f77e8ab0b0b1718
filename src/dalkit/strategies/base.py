"""The strategy interface: :class:`QueryContext` in, :class:`Selection` out, strategies found by name.

A strategy is a frozen dataclass whose fields are its options; ``select(ctx, budget)`` returns pool
indices.  Higher score means pick first, always; ties break with the context's seeded generator.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import torch
from torch import Tensor, nn

from dalkit.data.dataset import to_float
from dalkit.errors import BudgetError, ConfigError
from dalkit.registry import Registry
from dalkit.strategies.scoring import PoolFn, PoolScorer, current_scorer
from dalkit.training.evaluate import predict


class Strategy(Protocol):
    """Anything with ``select(ctx, budget) -> Selection``."""

    def select(self, ctx: QueryContext, budget: int) -> Selection: ...


@dataclass(frozen=True)
class Selection:
    """What a strategy returns.

    Attributes:
        indices: pool indices to label, [budget], int64, unique, all unlabeled.
        scores: the strategy's score of each selected index (higher = picked first) or None.
        info: free-form diagnostics (e.g. DM2's neighbour recall, ProbCover's delta).
    """

    indices: Tensor
    scores: Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)


S = TypeVar("S")
STRATEGIES: Registry[type] = Registry("strategy")


def register_strategy(name: str) -> Callable[[type[S]], type[S]]:
    """Class decorator registering a strategy dataclass under ``name``."""
    return STRATEGIES.register(name)


def create_strategy(name: str, **options: Any) -> Strategy:
    """Instantiate a registered strategy with its options.

    Raises:
        UnknownNameError: unknown strategy (lists the valid names).
        ConfigError: unknown option or a bad option value (names the option).
    """
    return STRATEGIES.create(name, **options)


def strategy_doc(name: str) -> str:
    """First sentence of a strategy's docstring (for ``dalkit strategies``)."""
    doc = (STRATEGIES.get(name).__doc__ or "").strip()
    paragraph = " ".join(line.strip() for line in doc.split("\n\n")[0].splitlines())
    return paragraph.split(". ")[0].rstrip(".") + "." if paragraph else ""


class QueryContext:
    """Everything a strategy may ask for in one round, each computed once and cached.

    Two strategies queried on the same context share the cache (one forward pass over the pool).

    Args:
        model: the trained model of this round: a dalkit model, or any ``nn.Module`` whose output is
            logits [B, C] (wrapped in :class:`dalkit.models.adapter.ModelAdapter`: the embedding is the
            input of its final ``nn.Linear``; pass a ``ModelAdapter`` yourself to name layers).
        pool_images: the whole pool (labeled + unlabeled): uint8 images [N, C, H, W] (the model sees
            them in [0, 1]), or a float pool [N, ...] (tensor or numpy array; the model sees the values
            as they are).
        labeled_idx: pool indices already labeled [L].
        labeled_labels: their labels [L] (the labels of unlabeled samples are never shown).
        num_classes: C.
        generator: seeded CPU generator for every random choice of the strategy.
        device: where the model runs.
        batch_size: inference batch size.
        features: optional user-supplied features [N, D] for the whole pool (e.g. self-supervised
            embeddings for ProbCover), returned by :meth:`embeddings` when ``source="features"``.
        candidates: pool indices the strategy may choose from (a random subset of the unlabeled pool,
            drawn by the runner; LPLgrad Table II); None = every unlabeled sample.  Strategies see
            only these as ``unlabeled_idx``; the labeled set is unchanged.
        scorer: runs the pool's forward passes (split over workers, :mod:`dalkit.strategies.scoring`);
            None: the scorer set by :func:`~dalkit.strategies.scoring.use_scorer`, else this process.

    Raises:
        ConfigError: a candidate is labeled, repeated or outside the pool; a model that cannot be
            adapted (no final ``nn.Linear``, outputs not [B, C]); a pool that is neither uint8 images
            nor finite floats.
    """

    def __init__(
        self,
        model: nn.Module,
        pool_images: Tensor,
        labeled_idx: Tensor,
        labeled_labels: Tensor,
        num_classes: int,
        generator: torch.Generator,
        device: torch.device | str = "cpu",
        batch_size: int = 1024,
        features: Tensor | None = None,
        candidates: Tensor | None = None,
        scorer: PoolScorer | None = None,
    ) -> None:
        pool_images = as_pool(pool_images)
        n = pool_images.shape[0]
        labeled_idx = torch.as_tensor(labeled_idx, dtype=torch.long)
        mask = torch.zeros(n, dtype=torch.bool)
        mask[labeled_idx] = True
        from dalkit.models.adapter import adapt_model

        self.model = adapt_model(model, to_float(pool_images[:2]),
                                 input_range=None if pool_images.is_floating_point() else (0.0, 1.0))
        self.pool_images = pool_images
        self.labeled_mask = mask
        self.labeled_idx = mask.nonzero().squeeze(1)
        # keep labels aligned with the sorted labeled_idx
        order = torch.argsort(labeled_idx)
        self.labeled_labels = torch.as_tensor(labeled_labels, dtype=torch.long)[order]
        if candidates is None:
            self.unlabeled_idx = (~mask).nonzero().squeeze(1)
        else:
            cand = torch.as_tensor(candidates, dtype=torch.long).reshape(-1)
            if cand.numel() and (int(cand.min()) < 0 or int(cand.max()) >= n):
                raise ConfigError(f"candidate indices must lie in [0, {n}), the pool")
            if torch.unique(cand).numel() != cand.numel() or bool(mask[cand].any()):
                raise ConfigError("candidates must be distinct unlabeled pool indices")
            self.unlabeled_idx = cand.sort().values
        # True for the pool indices a strategy may select (the unlabeled candidates)
        self.candidate_mask = torch.zeros(n, dtype=torch.bool)
        self.candidate_mask[self.unlabeled_idx] = True
        self.num_classes = num_classes
        self.generator = generator
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.user_features = features
        self.scorer = scorer if scorer is not None else current_scorer()
        self._cache: dict[Any, Any] = {}

    # -- sizes -----------------------------------------------------------------------------------
    @property
    def pool_size(self) -> int:
        return int(self.pool_images.shape[0])

    @property
    def n_unlabeled(self) -> int:
        """Unlabeled samples a strategy may choose from (the candidates when a subset is drawn)."""
        return int(self.unlabeled_idx.numel())

    def cached(self, key: Any, compute: Callable[[], Any]) -> Any:
        """Return ``compute()`` once per key per round (strategies may cache their own work)."""
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    # -- model outputs ---------------------------------------------------------------------------
    def _indices(self, which: str) -> Tensor:
        if which == "unlabeled":
            return self.unlabeled_idx
        if which == "labeled":
            return self.labeled_idx
        raise ValueError(f"which must be 'unlabeled' or 'labeled', got {which!r}")

    def _forward(self, which: str) -> tuple[Tensor, Tensor]:
        def compute() -> tuple[Tensor, Tensor]:
            return self.map_pool(_predict_block, self._indices(which), self.batch_size, self.batch_size)

        return self.cached(("forward", which), compute)

    def logits(self, which: str = "unlabeled") -> Tensor:
        """Logits [N_which, C] of the labeled or unlabeled samples (eval mode)."""
        return self._forward(which)[0]

    def probs(self, which: str = "unlabeled") -> Tensor:
        """Softmax probabilities [N_which, C]."""
        return self.cached(("probs", which), lambda: torch.softmax(self.logits(which), dim=1))

    def embeddings(self, which: str = "unlabeled", source: str = "model") -> Tensor:
        """Penultimate features [N_which, D] (``source="model"``) or the user-supplied features
        (``source="features"``)."""
        if source == "features":
            if self.user_features is None:
                raise ConfigError("embedding source 'features' needs a features array (features_path)")
            return self.user_features[self._indices(which)].float()
        if source != "model":
            raise ConfigError(f"embedding source must be 'model' or 'features', got {source!r}")
        return self._forward(which)[1]

    def mc_probs(self, k: int, p: float | None = None, which: str = "unlabeled",
                 mode: str = "embedding") -> Tensor:
        """K Monte-Carlo dropout predictions [K, N_which, C].

        ``mode="embedding"`` (default): the model stays in eval mode (BatchNorm untouched); dropout masks
        are sampled on the cached embeddings, so the K passes cost K classifier evaluations, batched.
        ``mode="blocks"``: dropout after every block with the model in train mode, K full forward passes
        (the baselines' reference code; :mod:`dalkit.strategies.mc_dropout`).
        """
        if mode == "blocks":
            from dalkit.strategies.mc_dropout import mc_block_probs

            p_eff = getattr(self.model, "dropout_p", 0.0) if p is None else p
            if not p_eff > 0:
                raise ValueError("MC dropout needs a dropout probability > 0 (model dropout is 0; pass p)")
            return self.cached(("mc-blocks", k, p_eff, which), lambda: mc_block_probs(
                self.model, self.pool_images[self._indices(which)], k, p_eff, self.generator, self.device,
                self.batch_size))
        if mode != "embedding":
            raise ConfigError(f"MC dropout mode must be 'embedding' or 'blocks', got {mode!r}")

        def compute() -> Tensor:
            emb = self.embeddings(which)
            out = torch.empty(k, emb.shape[0], self.num_classes)
            with torch.inference_mode():
                for start in range(0, emb.shape[0], 4096):
                    e = emb[start:start + 4096].to(self.device)
                    lg = self.model.mc_logits_from_embedding(e, k, p, self.generator)
                    out[:, start:start + e.shape[0]] = torch.softmax(lg.float(), dim=-1).cpu()
            return out

        return self.cached(("mc", k, p, which), compute)

    def map_pool(self, fn: PoolFn, idx: Tensor, align: int, *args: Any) -> Any:
        """``fn(model, pool_images[idx], device, *args)``: here, or on the scorer's workers in blocks cut at
        multiples of ``align`` (the batch unit of ``fn``, so the merged result is bit for bit the same).

        Here ``fn`` gets :class:`PoolRows`, which reads the rows batch by batch as ``fn`` slices it: a
        memory-mapped pool is never gathered whole into memory."""
        if self.scorer is None or idx.numel() <= align:
            return fn(self.model, PoolRows(self.pool_images, idx), self.device, *args)
        return self.scorer.map(fn, self.model, self.pool_images[idx], align, *args)

    def inputs(self, idx: Tensor) -> Tensor:
        """Model inputs of the pool samples ``idx`` on the device: images in [0, 1], or a float pool's
        values."""
        return to_float(self.pool_images[idx], self.device)


class PoolRows:
    """The pool rows ``pool[idx]`` read lazily: slicing (``rows[a:b]``) gathers only those rows, so a
    pass over a memory-mapped pool in batches holds one batch at a time.  Has ``shape``, ``dtype`` and
    ``len()`` like the tensor it stands for; ``materialize()`` gathers everything."""

    def __init__(self, pool: Tensor, idx: Tensor) -> None:
        self.pool, self.idx = pool, idx
        self.shape = torch.Size((int(idx.numel()), *pool.shape[1:]))
        self.dtype = pool.dtype
        self.reads = 0  # gathers made (tests check that a pass reads batch by batch)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: slice) -> Tensor:
        if not isinstance(key, slice):
            raise TypeError("PoolRows supports slices of rows only")
        self.reads += 1
        return self.pool[self.idx[key]]

    def materialize(self) -> Tensor:
        return self[:]


def as_pool(pool: Any) -> Tensor:
    """A pool as a tensor: uint8 images [N, C, H, W] unchanged, or a float pool [N, ...] (float32; from a
    tensor or numpy array of floats).

    Raises:
        ConfigError: not a tensor/array, fewer than 2 dimensions, or integer data that is not uint8
            images.
        DatasetFormatError: NaN/inf rows (the message names them).
    """
    import numpy as np

    from dalkit.data.dataset import check_finite_rows

    if isinstance(pool, np.ndarray):
        if pool.dtype.kind not in "uif":
            raise ConfigError(f"the pool must hold numbers, got a {pool.dtype} array")
        pool = torch.from_numpy(np.ascontiguousarray(pool))
    if not isinstance(pool, Tensor):
        raise ConfigError(f"the pool must be a tensor or numpy array, got {type(pool).__name__}")
    if pool.dtype == torch.uint8 and pool.dim() == 4:
        return pool
    if not pool.is_floating_point() or pool.dim() < 2:
        raise ConfigError(f"the pool must be uint8 images [N, C, H, W] or floats [N, ...] (at least 2-D), "
                          f"got {pool.dtype} of shape {tuple(pool.shape)}")
    pool = pool.float()
    check_finite_rows(pool, "pool")
    return pool


def _predict_block(model: nn.Module, images: Tensor, device: torch.device | str, batch_size: int
                   ) -> tuple[Tensor, Tensor]:
    """(logits [B, C], embeddings [B, D]) of uint8 images: the pool forward pass, any block of it."""
    return predict(model, images, batch_size, device, with_embeddings=True)


def check_budget(ctx: QueryContext, budget: int) -> None:
    """Raises:
    BudgetError: ``budget`` is not positive or exceeds the unlabeled pool."""
    if not isinstance(budget, int) or budget <= 0:
        raise BudgetError(f"budget must be a positive integer, got {budget!r}")
    if budget > ctx.n_unlabeled:
        raise BudgetError(
            f"budget {budget} exceeds the unlabeled pool ({ctx.n_unlabeled} samples left); "
            "lower the budget or the number of rounds"
        )


def query(strategy: Strategy, ctx: QueryContext, budget: int) -> Selection:
    """Run ``strategy`` with checks on both sides of the call.

    Raises:
        BudgetError: bad budget.
        RuntimeError: the strategy broke its contract (wrong count, duplicates, labeled indices).
    """
    check_budget(ctx, budget)
    sel = strategy.select(ctx, budget)
    idx = sel.indices
    if idx.numel() != budget or torch.unique(idx).numel() != budget:
        raise RuntimeError(f"{type(strategy).__name__} returned {idx.numel()} indices "
                           f"({torch.unique(idx).numel()} unique) for budget {budget}")
    if bool(ctx.labeled_mask[idx].any()):
        raise RuntimeError(f"{type(strategy).__name__} selected already-labeled samples")
    if not bool(ctx.candidate_mask[idx].all()):
        raise RuntimeError(f"{type(strategy).__name__} selected samples outside the candidate subset")
    return sel


def top_k(scores: Tensor, k: int, generator: torch.Generator, offset: int = 0) -> Tensor:
    """Positions of the ``k`` highest scores, ties broken at random by ``generator``.

    Args:
        scores: [N].
        k: how many.
        offset: skip the ``offset`` highest first (DM2 paper, Figure 1); offset + k must not exceed N.
    Returns:
        positions [k] into ``scores``, best first.
    Raises:
        ConfigError: offset < 0 or offset + k > N (refused, never clamped).
    """
    n = scores.shape[0]
    if offset < 0 or offset + k > n:
        raise ConfigError(f"offset {offset} + budget {k} exceeds the {n} samples to rank; lower the offset")
    perm = torch.randperm(n, generator=generator)
    order = torch.argsort(scores[perm], descending=True, stable=True)
    return perm[order[offset:offset + k]]

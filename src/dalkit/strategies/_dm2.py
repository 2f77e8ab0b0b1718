"""DM2: Distance-Measured Data Mixing (Song et al. 2025, DM2 paper sections 3-4)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dalkit.errors import ConfigError
from dalkit.strategies.base import QueryContext, Selection, register_strategy, top_k
from dalkit.strategies.pairwise import distances, knn, neighbour_recall


def mixing_weights(dist: Tensor, weights: str, eps: float = 1e-8) -> Tensor:
    """Weights of the n neighbours in Eq. 7: [N, n] -> [N, n].

    ``uniform``: 1/n (a normalised neighbour mean); ``distance``: proportional to 1/d_c, normalised;
    ``sum``: all ones — the literal, unnormalised sum of Eq. 7.
    """
    if weights == "uniform":
        return torch.full_like(dist, 1.0 / dist.shape[1])
    if weights == "distance":
        inv = 1.0 / (dist + eps)
        return inv / inv.sum(1, keepdim=True)
    if weights == "sum":
        return torch.ones_like(dist)
    raise ConfigError(f"dm2 weights must be 'uniform', 'distance' or 'sum', got {weights!r}")


def mix_group(x: Tensor, neighbours: Tensor, w: Tensor, lam: float | Tensor) -> Tensor:
    """Eq. 7: x_hat = lam * x + (1 - lam) * sum_j w_j x_j.

    Args:
        x: anchors [B, ...] (images [B, C, H, W], embeddings [B, D], ...); neighbours: [B, n, ...];
            w: [B, n]; lam: scalar or [B].
    """
    lam = torch.as_tensor(lam, dtype=x.dtype, device=x.device).reshape(-1, *([1] * (x.dim() - 1)))
    blend = (w.reshape(*w.shape, *([1] * (x.dim() - 1))) * neighbours).sum(1)
    return lam * x + (1.0 - lam) * blend


def confidence(logits: Tensor) -> Tensor:
    """Eq. 10: C = max softmax.  [B, C] -> [B]."""
    return torch.softmax(logits.float(), dim=1).max(1).values


@register_strategy("dm2")
@dataclass(frozen=True)
class DM2:
    """Distance-Measured Data Mixing: mix each sample with its d_c-nearest neighbours, pick the lowest
    confidence on the mixed inputs.  Reference: Song et al. 2025 (DM2 paper), Eq. 3-11, Algorithms 1-2.

    Options:
        n_neighbors: n, neighbours per anchor (from the unlabeled pool, the anchor excluded).
        mixing: "group" (Eq. 7, one mix of the anchor with a weighted neighbour combination) or
            "pairs" (Algorithm 2: the anchor mixed with each neighbour; it scores its lowest confidence).
        weights: "sum" (the literal, unnormalised Eq. 7), "uniform" (1/n) or "distance" (1/d_c,
            normalised) — group mixing only.  Default chosen by measurement (benchmarks/results/
            mnist_dm2.md, MNIST CNN, pool 20k, 50 + 10 x 50 labels, 3 seeds): AUBC 87.90 ± 0.36 for
            "sum" against 87.14 ± 0.33 "uniform", 87.06 ± 0.35 "distance", 86.99 ± 0.93 "pairs".
        lam: lambda, the anchor's weight (fixed), used when ``alpha`` is None.
        alpha: if set, lambda ~ Beta(alpha, alpha) per mixed input (Algorithm 2).
        metric: neighbour distance: "combined" (d_c = (L2 + L1)/2, Eq. 6), "l2" or "l1".
        candidates: L2 shortlist size for the re-ranked kNN; None = exact search.
        offset: skip the ``offset`` least confident samples (the paper's Figure 1 study).
        batch_size: anchors per forward pass of mixed inputs.
        recall_sample: anchors (seeded random) whose exact neighbours are computed each round to report
            the shortlist's recall in ``Selection.info["knn_recall"]`` (0 = off; only with
            ``candidates``).  Cost: recall_sample x U exact distances.

    ``Selection.info``: ``knn_recall`` (fraction of the exact d_c neighbours the L2 shortlist
    recovered on the sampled anchors), ``knn_recall_anchors``, ``knn_candidates``.
    """

    n_neighbors: int = 5
    mixing: str = "group"
    weights: str = "sum"
    lam: float = 0.5
    alpha: float | None = None
    metric: str = "combined"
    candidates: int | None = 20
    offset: int = 0
    batch_size: int = 512
    recall_sample: int = 64

    def __post_init__(self) -> None:
        if not isinstance(self.recall_sample, int) or self.recall_sample < 0:
            raise ConfigError(f"dm2 recall_sample must be an integer >= 0, got {self.recall_sample!r}")
        if self.n_neighbors < 1:
            raise ConfigError(f"dm2 n_neighbors must be >= 1, got {self.n_neighbors}")
        if self.mixing not in ("group", "pairs"):
            raise ConfigError(f"dm2 mixing must be 'group' or 'pairs', got {self.mixing!r}")
        if self.weights not in ("uniform", "distance", "sum"):
            raise ConfigError(f"dm2 weights must be 'uniform', 'distance' or 'sum', got {self.weights!r}")
        if not 0.0 <= self.lam <= 1.0:
            raise ConfigError(f"dm2 lam must lie in [0, 1], got {self.lam}")
        if self.alpha is not None and self.alpha <= 0:
            raise ConfigError(f"dm2 alpha must be positive, got {self.alpha}")
        if self.offset < 0:
            raise ConfigError(f"dm2 offset must be >= 0, got {self.offset}")
        if self.candidates is not None and self.candidates < 1:
            raise ConfigError(f"dm2 candidates (L2 shortlist size) must be >= 1 or null for exact search, "
                              f"got {self.candidates}")
        if self.candidates is not None and self.candidates < self.n_neighbors:  # was raised to n silently
            raise ConfigError(f"dm2 candidates {self.candidates} (L2 shortlist) is smaller than n_neighbors "
                              f"{self.n_neighbors}; the shortlist must hold the neighbours")
        if self.batch_size < 1:
            raise ConfigError(f"dm2 batch_size must be >= 1, got {self.batch_size}")
        if self.metric not in ("combined", "l2", "l1"):
            raise ConfigError(f"dm2 metric must be 'combined', 'l2' or 'l1', got {self.metric!r}")

    def check_pool(self, n_unlabeled: int, budget: int = 1) -> None:
        """Refuse (before a run starts) options the smallest unlabeled pool of the run cannot honour,
        instead of clamping them silently at query time.

        Args:
            n_unlabeled: the smallest number of samples a round will rank (unlabeled pool or candidates).
            budget: samples selected per round.
        Raises:
            ConfigError: n_neighbors >= the unlabeled pool, or offset + budget beyond it.
        """
        if self.n_neighbors >= n_unlabeled:
            raise ConfigError(f"dm2 n_neighbors {self.n_neighbors} needs more than {self.n_neighbors} "
                              f"unlabeled samples, but the last round has {n_unlabeled}")
        if self.offset + budget > n_unlabeled:
            raise ConfigError(f"dm2 offset {self.offset} + budget {budget} exceeds the last round's "
                              f"unlabeled pool ({n_unlabeled}); lower the offset to at most "
                              f"{n_unlabeled - budget}")

    def neighbours(self, ctx: QueryContext) -> tuple[Tensor, Tensor]:
        """(d_c [U, n], positions [U, n] into ``ctx.unlabeled_idx``), cached per round."""
        emb = ctx.embeddings()
        n = min(self.n_neighbors, emb.shape[0] - 1)
        if n < 1:
            raise ConfigError("dm2 needs at least 2 unlabeled samples to find neighbours")
        key = ("dm2-knn", n, self.metric, self.candidates)
        return ctx.cached(key, lambda: knn(emb, None, n, self.metric, True, self.candidates))

    def _lambdas(self, ctx: QueryContext, shape: tuple[int, ...]) -> Tensor | float:
        if self.alpha is None:
            return self.lam
        seed = int(torch.randint(0, 2**62, (1,), generator=ctx.generator))
        rng = np.random.default_rng(seed)
        return torch.from_numpy(rng.beta(self.alpha, self.alpha, size=shape).astype(np.float32))

    def scores(self, ctx: QueryContext) -> Tensor:
        """Negated mixed-input confidence of every unlabeled sample, [U] (higher = pick first)."""
        dist, nbr = self.neighbours(ctx)  # [U, n]
        pool = ctx.unlabeled_idx
        n_unl, n = nbr.shape
        conf = torch.empty(n_unl)
        if self.mixing == "group":
            w = mixing_weights(dist, self.weights)
            lam = self._lambdas(ctx, (n_unl,))
        else:
            lam = self._lambdas(ctx, (n_unl, n))
        model = ctx.model
        model.eval()
        step = max(1, self.batch_size // (n if self.mixing == "pairs" else 1))
        with torch.inference_mode():
            for start in range(0, n_unl, step):
                rows = slice(start, min(start + step, n_unl))
                x = ctx.inputs(pool[rows])  # [B, C, H, W] images, [B, D] embeddings
                xn = ctx.inputs(pool[nbr[rows]].reshape(-1)).reshape(x.shape[0], n, *x.shape[1:])
                if self.mixing == "group":
                    lam_b = lam[rows].to(x.device) if isinstance(lam, Tensor) else lam
                    mixed = mix_group(x, xn, w[rows].to(x.device), lam_b)
                    conf[rows] = confidence(model(mixed)).cpu()
                else:  # Algorithm 2: pair each anchor with each neighbour, keep its lowest confidence
                    lam_b = (lam[rows].to(x.device) if isinstance(lam, Tensor)
                             else torch.full((x.shape[0], n), lam, device=x.device))
                    lam_b = lam_b.reshape(*lam_b.shape, *([1] * (x.dim() - 1)))
                    mixed = lam_b * x[:, None] + (1.0 - lam_b) * xn  # [B, n, C, H, W]
                    c = confidence(model(mixed.reshape(-1, *x.shape[1:]))).reshape(x.shape[0], n)
                    conf[rows] = c.min(1).values.cpu()
        return -conf

    def knn_recall(self, ctx: QueryContext) -> dict[str, float]:
        """Recall of the shortlist kNN against exact search on ``recall_sample`` seeded anchors."""
        if self.candidates is None or self.recall_sample == 0 or self.metric == "l2":
            return {}
        emb = ctx.embeddings().float()
        _, nbr = self.neighbours(ctx)
        n = nbr.shape[1]
        g = torch.Generator().manual_seed(emb.shape[0])  # own stream: the selection's draws are unchanged
        rows = torch.randperm(emb.shape[0], generator=g)[: self.recall_sample]
        d = distances(emb[rows], emb, self.metric)  # [S, U] exact
        d[torch.arange(rows.numel()), rows] = float("inf")
        exact = d.topk(n, dim=1, largest=False).indices
        return {"knn_recall": neighbour_recall(nbr[rows], exact), "knn_recall_anchors": int(rows.numel()),
                "knn_candidates": int(self.candidates)}

    def memory_parts(self, s: Any) -> dict[str, int]:
        """Memory of a selection beyond the pool's outputs (:mod:`dalkit.experiment.memory`): the kNN's
        transposed copy of the embeddings, its distance blocks (~128 MB) and shortlist, the [U, n]
        neighbours, the mixed-input batches and the recall sample's exact distances."""
        from dalkit.experiment.memory import ranking_bytes

        u, e, n = s.n_unlabeled, s.embed_dim, self.n_neighbors
        chunk = max(1, min(4096, (32 << 20) // max(1, u)))
        m = self.candidates or 0
        per_anchor = (1 + n) * s.input_floats * 4 * (3 if self.mixing == "pairs" else 2)
        return {"kNN of the candidates (--subset, candidates)": u * e * 4 + u * 4 * 2 + 3 * chunk * u * 4
                + chunk * m * (e * 4 * 3 + 24) + u * n * (4 + 8) * 2,
                "mixed-input batches (batch_size)": self.batch_size * per_anchor,
                "neighbour recall sample (recall_sample, --subset)": 4 * self.recall_sample * u * 4,
                "scores and their seeded ranking (--subset)": ranking_bytes(s)}

    def select(self, ctx: QueryContext, budget: int) -> Selection:
        s = self.scores(ctx)
        info = self.knn_recall(ctx)
        pos = top_k(s, budget, ctx.generator, offset=self.offset)
        return Selection(ctx.unlabeled_idx[pos], s[pos], info)

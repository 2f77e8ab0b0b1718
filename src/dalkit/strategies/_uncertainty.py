"""Random and the classic single-pass uncertainty strategies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from dalkit.strategies.base import QueryContext, Selection, register_strategy, top_k


def least_confidence_scores(probs: Tensor) -> Tensor:
    """1 - max_c p_c.  probs [N, C] -> [N], higher = less confident."""
    return 1.0 - probs.max(dim=1).values


def margin_scores(probs: Tensor) -> Tensor:
    """-(p_(1) - p_(2)), the negated gap between the two largest probabilities.  [N, C] -> [N]."""
    top2 = probs.topk(2, dim=1).values
    return -(top2[:, 0] - top2[:, 1])


def entropy_scores(probs: Tensor) -> Tensor:
    """Predictive entropy -sum_c p_c log p_c, with 0 log 0 = 0.  [N, C] -> [N]."""
    return -torch.special.xlogy(probs, probs).sum(dim=1)


def _select_by(ctx: QueryContext, scores: Tensor, budget: int) -> Selection:
    pos = top_k(scores, budget, ctx.generator)
    return Selection(ctx.unlabeled_idx[pos], scores[pos])


@register_strategy("random")
@dataclass(frozen=True)
class Random:
    """Uniformly random unlabeled samples.  Reference: the standard AL baseline."""

    def memory_parts(self, s: Any) -> dict[str, int]:
        """Memory of a selection beyond the pool's outputs (:mod:`dalkit.experiment.memory`)."""
        return {"random order of the candidates (--subset)": s.n_unlabeled * 8}

    def select(self, ctx: QueryContext, budget: int) -> Selection:
        pos = torch.randperm(ctx.n_unlabeled, generator=ctx.generator)[:budget]
        return Selection(ctx.unlabeled_idx[pos])


@register_strategy("least-confidence")
@dataclass(frozen=True)
class LeastConfidence:
    """Lowest top-class probability.  Reference: Lewis & Gale 1994; Wang & Shang 2014."""

    def select(self, ctx: QueryContext, budget: int) -> Selection:
        return _select_by(ctx, least_confidence_scores(ctx.probs()), budget)


@register_strategy("margin")
@dataclass(frozen=True)
class Margin:
    """Smallest gap between the two most probable classes.  Reference: Scheffer et al. 2001."""

    def select(self, ctx: QueryContext, budget: int) -> Selection:
        return _select_by(ctx, margin_scores(ctx.probs()), budget)


@register_strategy("entropy")
@dataclass(frozen=True)
class Entropy:
    """Highest predictive entropy.  Reference: Wang & Shang 2014."""

    def select(self, ctx: QueryContext, budget: int) -> Selection:
        return _select_by(ctx, entropy_scores(ctx.probs()), budget)

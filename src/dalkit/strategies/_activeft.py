"""ActiveFT: select by optimising a parametric model of the selected set in feature space (Xie et al.,
"Active Finetuning: Exploiting Annotation Budget in the Pretraining-Finetuning Paradigm", CVPR 2023)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dalkit.errors import ConfigError
from dalkit.strategies.base import QueryContext, Selection, register_strategy


def activeft_objective(features: Tensor, centers: Tensor, fixed: Tensor | None, tau: float,
                       chunk: int = 8192) -> Tensor:
    """The ActiveFT loss of a set of (continuous) centres (Xie et al. 2023, section 3.2):

        L = - E_i [ sim(f_i, theta_{c_i}) / tau ] + E_j [ log sum_{k != j} exp(sim(theta_j, theta_k) / tau) ]

    where c_i = argmax_j sim(f_i, theta_j) (each sample's nearest centre; the first term pulls the
    selected set towards the pool distribution) and the second term pushes centres apart (diversity).
    sim is the cosine similarity.  ``fixed`` centres (the already labeled samples) take part in both
    terms but only ``centers`` are optimised; the second term averages over the optimised ones.

    Args:
        features: L2-normalised pool features [N, D].
        centers: the optimised centres [B, D] (normalised here).
        fixed: normalised fixed centres [L, D] or None.
        tau: temperature.
    Returns:
        scalar loss (differentiable in ``centers``).
    """
    theta = F.normalize(centers, dim=1)
    every = theta if fixed is None or fixed.shape[0] == 0 else torch.cat([theta, fixed])  # [B + L, D]
    match = features.new_zeros(())
    for start in range(0, features.shape[0], chunk):  # memory O(chunk * (B + L)), never N x N
        match = match + (features[start:start + chunk] @ every.T).max(dim=1).values.sum()
    match = match / features.shape[0]
    if every.shape[0] < 2:
        return -match / tau
    sim = theta @ every.T / tau  # [B, B + L]
    self_mask = torch.zeros_like(sim, dtype=torch.bool)
    self_mask[torch.arange(theta.shape[0]), torch.arange(theta.shape[0])] = True
    diversity = torch.logsumexp(sim.masked_fill(self_mask, float("-inf")), dim=1).mean()
    return -match / tau + diversity


def activeft_code_objective(features: Tensor, centers: Tensor, fixed: Tensor | None, tau: float,
                            balance: float = 1.0, chunk: int = 8192) -> Tensor:
    """The loss of ActiveFT's official code (``ActiveFT_CIFAR.py``, ``SampleModel.get_loss``):

        L = - E_i [ s_i - log( exp(s_i) + balance * sum_j exp(sim(theta_j, theta_{c_i}) / tau) ) ],
        s_i = max_k sim(f_i, theta_k) / tau,  c_i its argmax,

    where the sum over centres j includes c_i itself and theta_j is detached (the gradient flows through
    theta_{c_i} only).  Each sample's own nearest-centre similarity is contrasted against every centre's
    similarity to that centre, unlike the paper's Eq. (a mean of two separate terms, self excluded).
    ``fixed`` centres join both the nearest-centre search and the sum but are not optimised.

    Args:
        features: L2-normalised pool features [N, D].
        centers: optimised centres [B, D] (normalised here).
        fixed: normalised fixed centres [L, D] or None.
        tau: temperature; balance: the code's ``balance`` ratio (1.0).
    Returns:
        scalar loss (differentiable in ``centers``).
    """
    theta = F.normalize(centers, dim=1)
    every = theta if fixed is None or fixed.shape[0] == 0 else torch.cat([theta, fixed])  # [K, D]
    cent = every.detach() @ every.T / tau  # [K, K]: row j detached, column k with its gradient
    log_cent_sum = torch.logsumexp(cent, dim=0) + math.log(balance)  # [K]: log(balance sum_j exp(.))
    total = features.new_zeros(())
    for start in range(0, features.shape[0], chunk):  # memory O(chunk * K)
        pos, k = (features[start:start + chunk] @ every.T / tau).max(dim=1)
        total = total + (pos - torch.logaddexp(pos, log_cent_sum[k])).sum()
    return -total / features.shape[0]


def initial_centres(n: int, budget: int, generator: torch.Generator) -> Tensor:
    """``budget`` random positions of ``n`` for the initial centres, from a stream of their own: a
    generator seeded from the round generator's seed and a fixed salt, so the picks never repeat what
    ``random`` draws from the round generator itself."""
    seed = int(np.random.SeedSequence([generator.initial_seed() % 2**63, 0xAC7F7]).generate_state(1)[0])
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:budget]


def activeft_select(features: Tensor, fixed: Tensor | None, budget: int, generator: torch.Generator,
                    tau: float = 0.07, steps: int = 300, lr: float = 1e-3, loss: str = "paper",
                    balance: float = 1.0) -> Tensor:
    """Optimise ``budget`` centres from random samples' features by Adam on :func:`activeft_objective`
    (``loss="paper"``) or :func:`activeft_code_objective` (``loss="code"``), then map each centre to
    its nearest (cosine) not-yet-chosen sample.

    Args:
        features: [N, D] candidate features (any scale; normalised here).
        fixed: [L, D] features of the labeled samples (fixed centres) or None.
        budget: B <= N.
        generator: the round's generator; the initial centres come from their own stream derived from
            its seed (:func:`initial_centres`).
    Returns:
        positions [B] into ``features`` (unique).
    """
    n = features.shape[0]
    if not 0 < budget <= n:
        raise ValueError(f"budget must lie in [1, {n}], got {budget}")
    feats = F.normalize(features.float(), dim=1)
    fixed_n = F.normalize(fixed.float(), dim=1) if fixed is not None and fixed.shape[0] else None
    init = initial_centres(n, budget, generator)
    centers = feats[init].clone().requires_grad_(True)
    opt = torch.optim.Adam([centers], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            if loss == "code":
                value = activeft_code_objective(feats, centers, fixed_n, tau, balance)
            else:
                value = activeft_objective(feats, centers, fixed_n, tau)
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()
    theta = F.normalize(centers.detach(), dim=1)
    taken = torch.zeros(n, dtype=torch.bool)
    picks = torch.empty(budget, dtype=torch.long)
    for j in range(budget):  # nearest unused sample of each centre
        sim = feats @ theta[j]
        sim[taken] = float("-inf")
        picks[j] = int(torch.argmax(sim))
        taken[picks[j]] = True
    return picks


@register_strategy("activeft")
@dataclass(frozen=True)
class ActiveFT:
    """Samples nearest to a set of centres optimised for distribution matching and diversity.

    Continuous centres theta_j (initialised at random samples' features) minimise
    -E_i[sim(f_i, theta_{c_i}) / tau] + E_j[log sum_{k != j} exp(sim(theta_j, theta_k) / tau)], then each
    centre is replaced by its nearest unlabeled sample.  Labeled samples act as fixed centres, so the
    round adds what the labeled set lacks.  Reference: Xie et al. 2023, "Active Finetuning: Exploiting
    Annotation Budget in the Pretraining-Finetuning Paradigm" (CVPR), section 3 (tau = 0.07, Adam
    lr 1e-3, 300 iterations as there).

    Options:
        source: "model" (the current model's embeddings) or "features" (a user-supplied array, e.g.
            self-supervised features as in the paper).
        tau: temperature of the similarities.
        steps, lr: optimisation of the centres.
        use_labeled: labeled samples as fixed centres (True) or the paper's one-shot setting (False).
        loss: "paper" (the paper's Eq.: nearest-centre match minus centre diversity, self excluded;
            default) or "code" (the official code's per-sample contrast against all centres, self
            included, one side detached: :func:`activeft_code_objective`).
        balance: the code loss's weight on the centre sum (1.0, the code's default).
    """

    source: str = "model"
    tau: float = 0.07
    steps: int = 300
    lr: float = 1e-3
    use_labeled: bool = True
    loss: str = "paper"
    balance: float = 1.0

    def __post_init__(self) -> None:
        if self.loss not in ("paper", "code"):
            raise ConfigError(f"activeft loss must be 'paper' or 'code', got {self.loss!r}")
        bad_balance = isinstance(self.balance, bool) or not isinstance(self.balance, int | float)
        if bad_balance or not self.balance > 0:
            raise ConfigError(f"activeft balance must be a positive number, got {self.balance!r}")
        if self.source not in ("model", "features"):
            raise ConfigError(f"activeft source must be 'model' or 'features', got {self.source!r}")
        if not self.tau > 0 or not self.lr > 0:
            raise ConfigError(f"activeft tau and lr must be positive, got {self.tau}, {self.lr}")
        if not isinstance(self.steps, int) or isinstance(self.steps, bool) or self.steps < 0:
            raise ConfigError(f"activeft steps must be a non-negative integer, got {self.steps!r}")

    def memory_parts(self, s: Any) -> dict[str, int]:
        """Memory of a selection beyond the pool's outputs (:mod:`dalkit.experiment.memory`): the
        normalised features, the similarity chunks of the objective and its gradient, [U] picks."""
        u, e, k = s.n_unlabeled, s.embed_dim, s.budget + s.n_labeled
        return {"normalised features (--subset)": (u + s.n_labeled) * e * 4,
                "objective chunks and the centres' nearest-sample search (--subset)":
                8192 * k * 4 * 4 + u * (4 * 3 + 1) + (u // 8192 + 1) * 8192 * 8 + 4 * k * e * 4}

    def select(self, ctx: QueryContext, budget: int) -> Selection:
        pool = ctx.embeddings("unlabeled", source=self.source)  # [U, D]
        fixed = ctx.embeddings("labeled", source=self.source) if self.use_labeled else None
        pos = activeft_select(pool, fixed, budget, ctx.generator, self.tau, self.steps, self.lr, self.loss,
                              float(self.balance))
        return Selection(ctx.unlabeled_idx[pos])

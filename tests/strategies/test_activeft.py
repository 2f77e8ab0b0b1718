"""ActiveFT: its objective against a naive double loop, and its selection against a brute-force search
over every subset of a tiny pool."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from dalkit.strategies._activeft import activeft_objective, activeft_select


def naive_objective(features, centers, fixed, tau):
    feats = [F.normalize(f, dim=0) for f in features]
    theta = [F.normalize(c, dim=0) for c in centers]
    every = theta + list(fixed)
    match = sum(max(float(f @ c) for c in every) for f in feats) / len(feats)
    div = 0.0
    for j, tj in enumerate(theta):
        div += math.log(sum(math.exp(float(tj @ tk) / tau) for k, tk in enumerate(every) if k != j))
    return -match / tau + div / len(theta)


@pytest.mark.parametrize("n_fixed", [0, 2])
def test_objective_against_a_naive_loop(n_fixed):
    g = torch.Generator().manual_seed(0)
    feats = F.normalize(torch.randn(9, 4, generator=g), dim=1)
    centers = torch.randn(3, 4, generator=g)
    fixed = F.normalize(torch.randn(n_fixed, 4, generator=g), dim=1)
    got = activeft_objective(feats, centers, fixed if n_fixed else None, 0.5, chunk=4).item()
    assert got == pytest.approx(naive_objective(feats, centers, fixed, 0.5), rel=1e-5)


def test_selection_reaches_the_brute_force_optimum_on_a_tiny_pool():
    # three tight clusters of unequal size on the circle; B = 3 must take one sample near each centre
    g = torch.Generator().manual_seed(1)
    angles = torch.cat([a + 0.05 * torch.randn(k, generator=g) for a, k in ((0.0, 5), (2.1, 4), (4.2, 3))])
    feats = torch.stack([angles.cos(), angles.sin()], 1)
    tau = 0.5
    best = min(itertools.combinations(range(12), 3),
               key=lambda s: naive_objective(feats, feats[list(s)], [], tau))
    picks = activeft_select(feats, None, 3, torch.Generator().manual_seed(0), tau=tau, steps=300, lr=0.05)
    got = naive_objective(feats, feats[picks], [], tau)
    assert got <= naive_objective(feats, feats[list(best)], [], tau) + 0.05
    cluster = torch.tensor([0] * 5 + [1] * 4 + [2] * 3)
    assert sorted(cluster[picks].tolist()) == [0, 1, 2]  # one per cluster

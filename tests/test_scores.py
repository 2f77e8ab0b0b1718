"""Uncertainty scores against naive Python loops; top_k ordering, ties and offset."""

from __future__ import annotations

import math

import pytest
import torch

from dalkit.errors import ConfigError
from dalkit.strategies import top_k
from dalkit.strategies._uncertainty import entropy_scores, least_confidence_scores, margin_scores


def naive_least_confidence(probs: list[list[float]]) -> list[float]:
    return [1.0 - max(row) for row in probs]


def naive_margin(probs: list[list[float]]) -> list[float]:
    out = []
    for row in probs:
        first = max(row)
        rest = list(row)
        rest.remove(first)  # a tie for the top leaves the same value second: margin 0
        out.append(-(first - max(rest)))
    return out


def naive_entropy(probs: list[list[float]]) -> list[float]:
    out = []
    for row in probs:
        h = 0.0
        for p in row:
            if p > 0:
                h -= p * math.log(p)
        out.append(h)
    return out


def random_probs(n: int, c: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(3.0 * torch.randn(n, c, generator=g, dtype=torch.float64), dim=1)


HAND_PROBS = [
    [1.0, 0.0, 0.0],  # certain: exact zeros
    [0.5, 0.5, 0.0],  # tied top two, one exact zero
    [1 / 3, 1 / 3, 1 / 3],  # uniform
    [0.7, 0.2, 0.1],
    [0.0, 0.0, 1.0],
]

SCORES = [
    (least_confidence_scores, naive_least_confidence),
    (margin_scores, naive_margin),
    (entropy_scores, naive_entropy),
]


@pytest.mark.parametrize(("fn", "naive"), SCORES, ids=["least-confidence", "margin", "entropy"])
@pytest.mark.parametrize("shape", [(50, 10), (7, 2), (200, 3)])
def test_scores_match_naive_loop_on_random_probs(fn, naive, shape):
    probs = random_probs(*shape, seed=shape[0])
    got = fn(probs)
    assert got.shape == (shape[0],)
    expected = torch.tensor(naive(probs.tolist()), dtype=torch.float64)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("fn", "naive"), SCORES, ids=["least-confidence", "margin", "entropy"])
def test_scores_match_naive_loop_on_hand_made_probs(fn, naive):
    probs = torch.tensor(HAND_PROBS, dtype=torch.float64)
    got = fn(probs)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, torch.tensor(naive(HAND_PROBS), dtype=torch.float64))


def test_hand_worked_values():
    probs = torch.tensor(HAND_PROBS)
    # least confidence: 1 - max
    torch.testing.assert_close(least_confidence_scores(probs), torch.tensor([0.0, 0.5, 2 / 3, 0.3, 0.0]))
    # margin: -(p1 - p2)
    torch.testing.assert_close(margin_scores(probs), torch.tensor([-1.0, 0.0, 0.0, -0.5, -1.0]))
    # entropy: 0 log 0 = 0, so certain rows score exactly 0; uniform scores log 3
    ent = entropy_scores(probs)
    assert ent[0] == 0.0 and ent[4] == 0.0
    torch.testing.assert_close(ent[1], torch.tensor(math.log(2.0)))
    torch.testing.assert_close(ent[2], torch.tensor(math.log(3.0)))


def test_entropy_finite_with_zeros_in_float32():
    probs = torch.zeros(4, 10)
    probs[torch.arange(4), torch.tensor([0, 3, 9, 5])] = 1.0
    probs[3] = 0.0
    probs[3, :2] = 0.5
    ent = entropy_scores(probs)
    assert torch.isfinite(ent).all()
    torch.testing.assert_close(ent, torch.tensor([0.0, 0.0, 0.0, math.log(2.0)]))


def test_higher_score_means_less_certain():
    """All three agree on which of a confident and an uncertain row to pick first."""
    probs = torch.tensor([[0.98, 0.01, 0.01], [0.4, 0.35, 0.25]])
    for fn, _ in SCORES:
        s = fn(probs)
        assert s[1] > s[0]


# ---------------------------------------------------------------------------------------------- top_k


def test_top_k_returns_highest_first():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(100, generator=g)  # distinct with probability 1
    got = top_k(scores, 10, torch.Generator().manual_seed(5))
    expected = sorted(range(100), key=lambda i: -float(scores[i]))[:10]
    assert got.tolist() == expected
    assert all(scores[got[i]] >= scores[got[i + 1]] for i in range(9))


def test_top_k_offset_skips_the_top():
    scores = torch.randn(60, generator=torch.Generator().manual_seed(1))
    ranking = sorted(range(60), key=lambda i: -float(scores[i]))
    for offset in (0, 1, 7, 50):
        got = top_k(scores, 5, torch.Generator().manual_seed(0), offset=offset)
        assert got.tolist() == ranking[offset:offset + 5]
    got = top_k(scores, 5, torch.Generator().manual_seed(0), offset=55)  # the last k that fit
    assert got.tolist() == ranking[55:60]
    for offset in (56, 60, -1):  # too large for k to fit, or negative: refused, never clamped
        with pytest.raises(ConfigError, match="offset"):
            top_k(scores, 5, torch.Generator().manual_seed(0), offset=offset)


def test_top_k_ties_deterministic_for_one_seed_and_reordered_by_others():
    scores = torch.zeros(30)
    scores[[3, 17]] = 1.0  # two clear winners, then 28 exact ties
    runs = {}
    for seed in range(20):
        a = top_k(scores, 8, torch.Generator().manual_seed(seed))
        b = top_k(scores, 8, torch.Generator().manual_seed(seed))
        assert a.tolist() == b.tolist()  # same seed -> same order
        assert set(a[:2].tolist()) == {3, 17}  # ties never outrank a higher score
        assert torch.unique(a).numel() == 8
        runs[seed] = tuple(a.tolist())
    assert len(set(runs.values())) > 1  # different seeds reorder the exact ties


def test_top_k_tie_breaking_reaches_every_tied_item():
    scores = torch.tensor([0.0, 2.0, 2.0, 2.0, 1.0])
    winners = {int(top_k(scores, 1, torch.Generator().manual_seed(s))[0]) for s in range(100)}
    assert winners == {1, 2, 3}

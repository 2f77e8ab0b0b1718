"""Tests that catch wrong selections: every score-based strategy against a naive score computed here,
uniformity of ``random``, Alpha-Mix's clustering, MC dropout against a replayed mask, and the pair
augmentation of the training loop.

Scores here are computed sample by sample from the model's own layers (never through the library's
score functions or the QueryContext cache), so a mis-wired score, a flipped sign or a missing rescale
shows up as a selection that is not the naive top-k.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dalkit.data.dataset import to_float
from dalkit.strategies import STRATEGIES, QueryContext, create_strategy, query
from dalkit.training import TrainConfig, TrainSet, fit

MC_K, MC_P = 8, 0.3


def _naive_probs(ctx: QueryContext) -> list[list[float]]:
    """Softmax of the model, one unlabeled sample at a time, as Python floats."""
    model = ctx.model.eval()
    out = []
    with torch.no_grad():
        for i in ctx.unlabeled_idx.tolist():
            logits = model(to_float(ctx.pool_images[i:i + 1]))[0].double()
            z = [math.exp(v - float(logits.max())) for v in logits.tolist()]
            out.append([v / sum(z) for v in z])
    return out


def _entropy(row: list[float]) -> float:
    return -sum(p * math.log(p) for p in row if p > 0)


def _naive_mc_probs(ctx: QueryContext, seed: int, k: int = MC_K, p: float = MC_P) -> list[list[list[float]]]:
    """[K][U][C] MC-dropout probabilities with the masks replayed from a generator seeded like the
    context's (K x U x D uniform draws, kept where >= p, inverted-dropout rescale 1 / (1 - p)), the
    classifier applied sample by sample."""
    model = ctx.model.eval()
    with torch.no_grad():
        emb = model.embed(to_float(ctx.pool_images[ctx.unlabeled_idx])).double()  # [U, D]
    keep = torch.rand((k, *emb.shape), generator=torch.Generator().manual_seed(seed)) >= p
    w, b = model.classifier.weight.double(), model.classifier.bias.double()
    out = []
    for j in range(k):
        rows = []
        for i in range(emb.shape[0]):
            z = emb[i] * keep[j, i].double() / (1.0 - p)
            logits = (w @ z + b).tolist()
            m = max(logits)
            e = [math.exp(v - m) for v in logits]
            rows.append([v / sum(e) for v in e])
        out.append(rows)
    return out


def _naive_bald(ctx: QueryContext, seed: int) -> list[float]:
    mc = _naive_mc_probs(ctx, seed)
    scores = []
    for i in range(len(mc[0])):
        mean = [sum(mc[j][i][c] for j in range(MC_K)) / MC_K for c in range(len(mc[0][i]))]
        scores.append(_entropy(mean) - sum(_entropy(mc[j][i]) for j in range(MC_K)) / MC_K)
    return scores


def _naive_mean_entropy(ctx: QueryContext, seed: int) -> list[float]:
    mc = _naive_mc_probs(ctx, seed)
    return [_entropy([sum(mc[j][i][c] for j in range(MC_K)) / MC_K for c in range(len(mc[0][i]))])
            for i in range(len(mc[0]))]


def _naive_grad_norms(ctx: QueryContext, how: str) -> list[float]:
    """Per sample: one backward pass of the predictive entropy H(softmax(model(x))) (eval mode), then
    the norm of the gradient over all parameters: Frobenius (sqrt of the sum of squares) or the sum of
    the per-tensor norms ("layer-sum")."""
    model = ctx.model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    out = []
    for i in ctx.unlabeled_idx.tolist():
        logits = model(to_float(ctx.pool_images[i:i + 1]))[0]
        p = torch.softmax(logits, 0)
        h = -(p * torch.log(p)).sum()
        grads = torch.autograd.grad(h, params)
        norms = [float(g.double().pow(2).sum().sqrt()) for g in grads]
        out.append(math.sqrt(sum(n * n for n in norms)) if how == "frobenius" else sum(norms))
    return out


def _naive_dm2(ctx: QueryContext, seed: int) -> list[float]:
    """DM2 (group mixing, uniform weights, 3 neighbours, lam 0.6): minus the naive per-anchor loop of
    tests/test_dm2.py (exact combined-distance neighbours, mixed inputs, max softmax)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("_dm2_tests", Path(__file__).parent / "test_dm2.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return [-c for c in module.naive_dm2_confidence(ctx, 3, "group", "uniform", 0.6)]


def _margin(row: list[float]) -> float:
    first, second = sorted(row, reverse=True)[:2]
    return -(first - second)


# name -> (strategy options, naive score over ctx.unlabeled_idx (higher = pick first)[, context options])
ORACLES: dict[str, tuple] = {
    "least-confidence": ({}, lambda ctx, seed: [1.0 - max(row) for row in _naive_probs(ctx)]),
    "margin": ({}, lambda ctx, seed: [_margin(row) for row in _naive_probs(ctx)]),
    "entropy": ({}, lambda ctx, seed: [_entropy(row) for row in _naive_probs(ctx)]),
    "bald": ({"k": MC_K, "p": MC_P}, _naive_bald),
    "entropy-bayesian": ({"k": MC_K, "p": MC_P}, _naive_mean_entropy),
    "lplgrad": ({"norm": "frobenius"}, lambda ctx, seed: _naive_grad_norms(ctx, "frobenius")),
    "ent-gradnorm": ({"norm": "layer-sum"}, lambda ctx, seed: _naive_grad_norms(ctx, "layer-sum")),
    "dm2": ({"n_neighbors": 3, "mixing": "group", "weights": "uniform", "lam": 0.6, "candidates": None},
            _naive_dm2, {"pool_size": 90}),
}
# every other registered strategy, with why it has no single-score oracle here (and where it is tested)
NOT_SCORE_BASED = {
    "random": "uniform: test_random_is_uniform",
    "activeft": "optimised centres: tests/strategies/test_activeft.py (objective + brute-force subset)",
    "alphamix": "candidates + k-means: test_alphamix_clusters_its_candidates, test_alphamix.py",
    "badge": "k-means++ on gradient embeddings: tests/strategies/test_badge.py",
    "coreset": "k-center greedy: tests/strategies/test_coreset.py",
    "noise-stability": "feature-deviation score: tests/strategies/test_noise_stability.py",
    "probcover": "graph cover: tests/strategies/test_probcover.py",
    "uncertain-gcn": "GCN ranking: tests/strategies/test_uncertain_gcn.py",
    "learning-loss": "predicted loss (needs the loss-prediction recipe): tests/strategies/test_gradnorm.py",
}


def test_every_registered_strategy_has_an_oracle_or_a_reason():
    """A new strategy must come with an oracle in ORACLES (a naive score written in this file) or an
    entry in NOT_SCORE_BASED saying where its selection is checked."""
    missing = [n for n in STRATEGIES.names() if n not in ORACLES and n not in NOT_SCORE_BASED]
    assert not missing, f"add a naive-score oracle (ORACLES) or a reason (NOT_SCORE_BASED) for {missing}"


@pytest.mark.parametrize("kind", ["dalkit", "sequential", "user-bn"])  # conftest.MODEL_KINDS
@pytest.mark.parametrize("name", sorted(ORACLES))
@pytest.mark.parametrize("seed", [0, 1])
def test_selection_is_the_top_k_of_a_naive_score(name, seed, kind, make_context, model_for):
    """Also with a plain nn.Sequential and a user module with BatchNorm and dropout (through the model
    adapter): the naive scores read the adapter's embed()/classifier, which tests/test_own_model.py
    checks against the user's own layers."""
    options, naive, *rest = ORACLES[name]
    ctx_options = {"seed": seed, "per_class": 2, "model": model_for(name, kind), **(rest[0] if rest else {})}
    ctx = make_context(**ctx_options)
    budget = 15
    sel = query(create_strategy(name, **options), ctx, budget)
    scores = naive(make_context(**ctx_options), seed)
    by_index = dict(zip(ctx.unlabeled_idx.tolist(), scores, strict=True))
    chosen = set(sel.indices.tolist())
    worst_chosen = min(by_index[i] for i in chosen)
    best_left = max(s for i, s in by_index.items() if i not in chosen)
    # the selection is the naive top-k (ties at the boundary may go either way)
    assert worst_chosen >= best_left - 1e-6, (name, worst_chosen, best_left)
    # and it is not an accident of a flat score: the naive scores do separate the pool
    assert max(scores) - min(scores) > 1e-3


def test_mc_probs_equal_a_replayed_dropout_mask(make_context):
    ctx = make_context(seed=5)
    mc = ctx.mc_probs(MC_K, MC_P)  # [K, U, C]
    naive = torch.tensor(_naive_mc_probs(make_context(seed=5), 5), dtype=torch.float64)
    assert mc.shape == naive.shape
    torch.testing.assert_close(mc.double(), naive, atol=1e-5, rtol=1e-4)


def test_random_is_uniform(make_context):
    """Over many seeds every unlabeled sample is drawn about equally often (chi-square), each draw
    has ``budget`` distinct samples, and a draw is not the same set for different seeds."""
    ctx = make_context(seed=0)
    strat = create_strategy("random")
    u, budget, draws = ctx.n_unlabeled, 10, 3000
    counts = torch.zeros(ctx.pool_size)
    first_sets = set()
    for s in range(draws):
        ctx.generator = torch.Generator().manual_seed(s)
        idx = query(strat, ctx, budget).indices
        counts[idx] += 1
        if s < 20:
            first_sets.add(tuple(sorted(idx.tolist())))
    observed = counts[ctx.unlabeled_idx].double()
    expected = draws * budget / u
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    # chi-square with u - 1 degrees of freedom: mean u - 1, sd sqrt(2 (u - 1)); allow 5 sd
    assert chi2 < (u - 1) + 5 * math.sqrt(2 * (u - 1)), chi2
    assert float(counts[ctx.labeled_idx].sum()) == 0
    assert len(first_sets) == 20
    # positions spread over the whole pool: the mean selected position is near the middle
    pos = torch.searchsorted(ctx.unlabeled_idx, observed.nonzero().squeeze(1))
    assert pos.numel() == u


def _coverage_cost(points: np.ndarray, centres: np.ndarray) -> float:
    """Sum over points of the squared distance to the nearest centre (the k-means objective)."""
    d = ((points[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
    return float(d.min(1).sum())


def test_alphamix_clusters_its_candidates(make_context):
    """Over budget, Alpha-Mix labels one candidate per k-means cluster: its picks cover the candidate
    set far better (k-means objective) than random subsets of the candidates do."""
    strat = create_strategy("alphamix", closed_form=False)
    ctx = make_context(seed=0)
    budget = 6
    cand, _, _ = strat.candidates(ctx, budget)
    cand_pos = cand.nonzero().squeeze(1)
    assert cand_pos.numel() > 3 * budget
    sel = query(strat, make_context(seed=0), budget)
    emb = F.normalize(ctx.embeddings("unlabeled").float(), dim=1).double().numpy()
    feats = emb[cand_pos.numpy()]
    picked = torch.searchsorted(ctx.unlabeled_idx, sel.indices).numpy()
    cost = _coverage_cost(feats, emb[picked])
    rng = np.random.default_rng(0)
    random_costs = [_coverage_cost(feats, feats[rng.choice(len(feats), budget, replace=False)])
                    for _ in range(200)]
    assert cost < np.quantile(random_costs, 0.05), (cost, np.quantile(random_costs, [0.05, 0.5]))


def test_pairs_get_the_same_crop_and_flip():
    """fit() augments an original and its counterpart identically: with counterparts = 0.5 * x, every
    augmented batch has x_adv == 0.5 * x on the paired rows (zero padding scales to zero)."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(1, 256, (40, 3, 12, 12), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 3, (40,), generator=g)
    paired = torch.arange(40) % 2 == 0
    adv = 0.5 * to_float(images)
    adv[~paired] = 0.0
    seen = []
    flipped_or_cropped = []

    def step(model, batch):
        seen.append(batch)
        return model.weight.sum() * 0.0 + 1.0

    model = torch.nn.Linear(1, 1)
    cfg = TrainConfig(epochs=3, batch_size=16, crop_padding=3, hflip=True)
    fit(model, TrainSet(images, labels, adv, paired), step, cfg, torch.Generator().manual_seed(1))
    assert len(seen) == 9
    for batch in seen:
        rows = batch.paired
        assert bool(rows.any())
        torch.testing.assert_close(batch.x_adv[rows], 0.5 * batch.x[rows], atol=0, rtol=0)
        flipped_or_cropped.append(bool((batch.x == 0).any()))  # padding entered: a crop moved the image
    assert any(flipped_or_cropped)
    # augmentation is per sample: the 16 rows of a batch do not all get the same offset
    x = seen[0].x
    zero_cols = (x == 0).all(dim=(1, 2))  # [B, W] fully padded columns per sample
    assert len({tuple(r.tolist()) for r in zero_cols}) > 1

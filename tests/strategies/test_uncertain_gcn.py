"""UncertainGCN: the adjacency against a double loop, the low-rank operator, the GCN maths, the margin."""

from __future__ import annotations

import math

import pytest
import torch

from dalkit.errors import ConfigError
from dalkit.strategies import create_strategy, query
from dalkit.strategies._uncertain_gcn import (
    LowRankAdjacency,
    gcn_forward,
    gcn_loss,
    init_gcn_params,
    normalized_adjacency,
    train_gcn,
    uncertain_gcn_scores,
)


def _naive_adjacency(emb: torch.Tensor, normalization: str) -> torch.Tensor:
    """A = D^-1 (S - I) + I (row) or (S - I) D^-1 + I (column), S_ij = cos(e_i, e_j), by loops."""
    e = emb.double()
    m = e.shape[0]
    v = [e[i] / e[i].norm() for i in range(m)]
    s = [[float(v[i] @ v[j]) - (1.0 if i == j else 0.0) for j in range(m)] for i in range(m)]
    deg = [sum(s[i]) for i in range(m)]
    adj = torch.empty(m, m, dtype=torch.float64)
    for i in range(m):
        for j in range(m):
            d = deg[i] if normalization == "row" else deg[j]
            adj[i, j] = s[i][j] / d + (1.0 if i == j else 0.0)
    return adj


@pytest.mark.parametrize("normalization", ["row", "column"])
def test_adjacency_matches_a_double_loop(normalization):
    emb = torch.rand(12, 5, generator=torch.Generator().manual_seed(0)) + 0.05  # ReLU-like, > 0
    dense = normalized_adjacency(emb, normalization)
    assert torch.allclose(dense.double(), _naive_adjacency(emb, normalization), atol=1e-5)
    # row normalisation: each row of D^-1 (S - I) sums to 1, so each row of A sums to 2
    if normalization == "row":
        assert torch.allclose(dense.sum(1), torch.full((12,), 2.0), atol=1e-5)
    else:
        assert torch.allclose(dense, normalized_adjacency(emb, "row").T, atol=1e-6)


@pytest.mark.parametrize("normalization", ["row", "column"])
def test_low_rank_operator_equals_the_dense_matrix(normalization):
    g = torch.Generator().manual_seed(1)
    emb = torch.rand(40, 8, generator=g)
    x = torch.randn(40, 3, generator=g)
    op = LowRankAdjacency(emb, normalization)
    dense = normalized_adjacency(emb, normalization)
    assert op.shape == (40, 40)
    assert torch.allclose(op @ x, dense @ x, atol=1e-5)
    assert torch.allclose(op @ x[:, 0], dense @ x[:, 0], atol=1e-5)
    assert torch.allclose(op.dense(), dense, atol=1e-5)


def test_isolated_node_keeps_its_self_loop():
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # orthogonal: no edges, zero degrees
    adj = normalized_adjacency(emb)
    assert torch.isfinite(adj).all() and torch.equal(adj, torch.eye(2))
    assert torch.allclose(LowRankAdjacency(emb).dense(), torch.eye(2))


def test_gcn_forward_matches_manual_matrices():
    g = torch.Generator().manual_seed(2)
    emb = torch.rand(15, 6, generator=g)
    adj = normalized_adjacency(emb)
    x = torch.nn.functional.normalize(emb, dim=1)
    params = init_gcn_params(6, 4, torch.Generator().manual_seed(3))
    logits, hidden = gcn_forward(x, adj, params)
    w1, b1, w2, b2 = (params[k].detach() for k in ("w1", "b1", "w2", "b2"))
    h = torch.clamp(adj @ x @ w1 + b1, min=0)
    expected = (adj @ h @ w2).squeeze(1) + b2
    assert torch.allclose(hidden, h, atol=1e-6)
    assert torch.allclose(logits, expected, atol=1e-6)
    # the low-rank operator and the precomputed first propagation give the same numbers
    op = LowRankAdjacency(emb)
    logits_op, _ = gcn_forward(x, op, params, ax=op @ x)
    assert torch.allclose(logits_op, expected, atol=1e-5)
    # dropout: the mask comes from the generator, kept units scaled by 1 / (1 - p)
    logits_d, _ = gcn_forward(x, adj, params, 0.5, torch.Generator().manual_seed(4))
    keep = torch.rand(h.shape, generator=torch.Generator().manual_seed(4)) >= 0.5
    assert torch.allclose(logits_d, (adj @ (h * keep * 2.0) @ w2).squeeze(1) + b2, atol=1e-6)


def test_init_bounds():
    params = init_gcn_params(10, 16, torch.Generator().manual_seed(0))
    assert params["w1"].shape == (10, 16) and params["w2"].shape == (16, 1)
    assert params["w1"].abs().max() <= 1 / math.sqrt(16) and params["b2"].abs().max() <= 1.0
    assert all(p.requires_grad for p in params.values())


def test_loss_is_eq4():
    logits = torch.tensor([2.0, -1.0, 0.5, -3.0, 40.0])
    mask = torch.tensor([True, False, True, False, False])
    f = torch.sigmoid(logits.double())
    log_1mf = torch.log(torch.sigmoid(-logits.double()))  # log(1 - f), exact even for f = sigmoid(40)
    expected = -(torch.log(f[0]) + torch.log(f[2])) / 2 - 1.2 * (log_1mf[1] + log_1mf[3] + log_1mf[4]) / 3
    assert torch.allclose(gcn_loss(logits, mask, 1.2).double(), expected, atol=1e-5)
    assert torch.isfinite(gcn_loss(torch.tensor([1e4, -1e4]), torch.tensor([False, True]), 1.0))


def test_scores_pick_the_nodes_closest_to_the_margin():
    conf = torch.tensor([0.9, 0.12, 0.5, 0.05, 0.1, 0.0, 0.3])
    scores = uncertain_gcn_scores(conf, 0.1)
    assert torch.allclose(scores, -(conf - 0.1).abs())
    assert scores.argsort(descending=True)[:3].tolist() == [4, 1, 3]
    assert uncertain_gcn_scores(conf, 0.5).argmax() == 2


def test_training_separates_labeled_from_unlabeled_and_is_seeded():
    g = torch.Generator().manual_seed(0)
    labeled = torch.rand(30, 8, generator=g) + torch.tensor([3.0] * 4 + [0.0] * 4)  # one region
    unlabeled = torch.rand(120, 8, generator=g) + torch.tensor([0.0] * 4 + [3.0] * 4)
    emb = torch.cat([unlabeled, labeled])
    mask = torch.zeros(150, dtype=torch.bool)
    mask[120:] = True
    a = train_gcn(emb, mask, torch.Generator().manual_seed(5), epochs=80)
    b = train_gcn(emb, mask, torch.Generator().manual_seed(5), epochs=80)
    assert torch.equal(a, b)
    assert a[mask].mean() > a[~mask].mean() + 0.2
    assert ((a > 0) & (a < 1)).all()


def test_strategy_selects_the_unlabeled_nodes_closest_to_the_margin(make_context, monkeypatch):
    import dalkit.strategies._uncertain_gcn as mod

    ctx = make_context(seed=1, extra_labeled=10)
    n_unl = ctx.n_unlabeled
    hand_set = torch.linspace(0.0, 1.0, n_unl + ctx.labeled_idx.numel())  # hand-set confidences

    def fake_train(emb, labeled_mask, *args, **kw):
        assert emb.shape[0] == n_unl + ctx.labeled_idx.numel() and int(labeled_mask.sum()) == 20
        assert labeled_mask[n_unl:].all()  # the labeled nodes come last
        return hand_set

    monkeypatch.setattr(mod, "train_gcn", fake_train)
    sel = query(create_strategy("uncertain-gcn", s_margin=0.25), ctx, 5)
    expected = (hand_set[:n_unl] - 0.25).abs().argsort()[:5]
    assert sel.indices.tolist() == ctx.unlabeled_idx[expected].tolist()
    assert torch.allclose(sel.scores, -(hand_set[expected] - 0.25).abs())


@pytest.mark.parametrize("options, subset",
                         [({"epochs": 30}, None), ({"epochs": 30, "normalization": "column"}, 60)])
def test_contract_budget_unique_unlabeled_deterministic(options, subset, make_context):
    def make():
        return make_context(seed=3, extra_labeled=15, subset=subset)

    a = query(create_strategy("uncertain-gcn", **options), make(), 40)
    b = query(create_strategy("uncertain-gcn", **options), make(), 40)
    ctx = make()
    assert a.indices.tolist() == b.indices.tolist()
    assert a.indices.numel() == 40 and torch.unique(a.indices).numel() == 40
    assert not bool(ctx.labeled_mask[a.indices].any()) and bool(ctx.candidate_mask[a.indices].all())
    expected_nodes = (subset or ctx.n_unlabeled) + ctx.labeled_idx.numel()
    assert a.info["graph_nodes"] == expected_nodes


def test_one_labeled_per_class_budget_equal_to_the_pool_and_small_subsets(make_context):
    ctx = make_context(per_class=1)
    params = [p.detach().clone() for p in ctx.model.parameters()]
    assert query(create_strategy("uncertain-gcn", epochs=20), ctx, 30).indices.numel() == 30
    assert all(torch.equal(a, b) for a, b in zip(params, ctx.model.parameters(), strict=True))
    ctx = make_context(pool_size=80)
    sel = query(create_strategy("uncertain-gcn", epochs=20), ctx, ctx.n_unlabeled)
    assert sorted(sel.indices.tolist()) == ctx.unlabeled_idx.tolist()
    # a candidate subset of exactly the budget: all of it is selected
    ctx = make_context(pool_size=80, subset=30)
    sel = query(create_strategy("uncertain-gcn", epochs=20), ctx, 30)
    assert sorted(sel.indices.tolist()) == ctx.unlabeled_idx.tolist() and sel.info["graph_nodes"] == 30 + 10


@pytest.mark.parametrize("options, field", [
    ({"subset": 10}, "subset"), ({"hidden": 0}, "hidden"), ({"epochs": 1.5}, "epochs"),
    ({"dropout": 1.0}, "dropout"), ({"lr": 0.0}, "lr"), ({"weight_decay": -1.0}, "weight_decay"),
    ({"lam": -0.1}, "lam"), ({"s_margin": 1.5}, "s_margin"), ({"normalization": "sym"}, "normalization"),
])
def test_bad_options_raise_config_errors_naming_the_field(options, field):
    with pytest.raises(ConfigError, match=field):
        create_strategy("uncertain-gcn", **options)

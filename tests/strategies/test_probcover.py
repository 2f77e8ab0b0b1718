"""ProbCover: the sparse delta-graph against dense adjacency, purity and delta against naive loops,
the incremental greedy against a from-scratch greedy and exhaustive coverage, and the strategy."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from dalkit.errors import BudgetError, ConfigError
from dalkit.strategies import QueryContext, create_strategy, query
from dalkit.strategies._probcover import (
    ball_pairs,
    choose_delta,
    delta_graph,
    delta_purity,
    greedy_max_coverage,
    kmeans_labels,
    nearest_other_cluster_sq,
    purity_delta_graph,
)


def _gap_delta(x: np.ndarray, q: float) -> float:
    """A radius halfway between two consecutive pairwise distances near quantile q, so float32
    rounding cannot move any pair across it."""
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    u = np.unique(d[np.triu_indices(len(x), 1)])
    gaps = np.diff(u)
    lo = int(q * len(u))
    i = lo + int(np.argmax(gaps[lo:lo + 50]))
    return float((u[i] + u[i + 1]) / 2)


@pytest.mark.parametrize("block_elems", [10**9, 700, 97])
def test_delta_graph_equals_dense_adjacency(block_elems: int) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(150, 4))
    delta = _gap_delta(x, 0.05)
    dense = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1)) < delta  # [N, N], self-loops included
    g = delta_graph(torch.from_numpy(x).float(), delta, block_elems=block_elems)
    assert isinstance(g, sp.csr_matrix) and g.nnz == int(dense.sum())
    assert np.array_equal(g.toarray(), dense)
    assert 150 < g.nnz < 150 * 150 // 4  # non-trivial and sparse


def test_delta_graph_refuses_more_than_max_edges() -> None:
    x = torch.randn(100, 3, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ConfigError, match="max_edges"):
        delta_graph(x, 100.0, max_edges=500)


def _naive_purity(x: np.ndarray, clusters: np.ndarray, delta: float) -> float:
    pure = 0
    for i in range(len(x)):
        ball = [j for j in range(len(x)) if np.sqrt(((x[i] - x[j]) ** 2).sum()) < delta]
        pure += all(clusters[j] == clusters[i] for j in ball)
    return pure / len(x)


@pytest.mark.parametrize("block_elems", [10**9, 333])
def test_delta_purity_matches_naive_loop(block_elems: int) -> None:
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(size=(40, 3)), rng.normal(size=(40, 3)) + 2.5])
    clusters = np.repeat([0, 1], 40)
    r_sq = nearest_other_cluster_sq(torch.from_numpy(x).float(), torch.from_numpy(clusters),
                                    block_elems=block_elems)
    naive_r = [min(((x[i] - x[j]) ** 2).sum() for j in range(80) if clusters[j] != clusters[i])
               for i in range(80)]
    assert np.allclose(r_sq.numpy(), naive_r, rtol=1e-4, atol=1e-5)
    deltas = [_gap_delta(x, q) for q in (0.01, 0.1, 0.3, 0.6)]
    purity = delta_purity(torch.from_numpy(x).float(), torch.from_numpy(clusters), deltas)
    assert purity.tolist() == pytest.approx([_naive_purity(x, clusters, d) for d in deltas])
    assert purity[0] > purity[-1]  # purity falls as the balls grow


def test_nearest_other_cluster_on_a_row_sample_matches_all_rows() -> None:
    g = torch.Generator().manual_seed(4)
    x = torch.randn(300, 5, generator=g)
    clusters = torch.randint(0, 4, (300,), generator=g)
    full = nearest_other_cluster_sq(x, clusters)
    rows = torch.randperm(300, generator=g)[:70]
    assert torch.allclose(nearest_other_cluster_sq(x, clusters, rows=rows, block_elems=1000), full[rows],
                          rtol=1e-5, atol=1e-6)


def _blobs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(5, 8)) * 2.0
    x = torch.from_numpy(centres[rng.integers(0, 5, n)] + rng.normal(size=(n, 8))).float()
    return x, kmeans_labels(x, 5, seed)


@pytest.mark.parametrize("grid", [None, tuple(np.round(np.arange(0.05, 3.0, 0.05), 2))])
def test_one_sweep_delta_graph_equals_the_two_exact_sweeps(grid) -> None:
    x, clusters = _blobs(700, 5)
    delta, purity = choose_delta(nearest_other_cluster_sq(x, clusters), 0.95, grid)
    exact = delta_graph(x, delta)
    one = purity_delta_graph(x, clusters, 0.95, grid, torch.Generator().manual_seed(0), sample=120)
    assert one.passes == ("sample", "bound")
    assert one.delta == pytest.approx(delta, rel=1e-6) and one.purity == pytest.approx(purity)
    assert (one.graph != exact).nnz == 0 and exact.nnz > 700
    # a bound that misses (margin < 0 puts it below delta*) falls back to the exact sweeps
    miss = purity_delta_graph(x, clusters, 0.95, grid, torch.Generator().manual_seed(0), sample=120,
                              margin=-0.04)
    assert miss.passes == ("sample", "bound", "purity", "graph")
    assert miss.delta == delta and (miss.graph != exact).nnz == 0
    small = purity_delta_graph(x, clusters, 0.95, grid, torch.Generator().manual_seed(0), sample=700)
    assert small.passes == ("purity", "graph") and small.delta == delta


def test_ball_pairs_distances_match_float64() -> None:
    rng = np.random.default_rng(6)
    x = rng.normal(size=(120, 6))
    delta = _gap_delta(x, 0.1)
    src, dst, dist = ball_pairs(torch.from_numpy(x).float(), delta, with_dist=True, block_elems=500)
    assert bool((src < dst).all()) and len(set(zip(src.tolist(), dst.tolist(), strict=True))) == len(src)
    want = ((x[src] - x[dst]) ** 2).sum(1)
    assert np.allclose(dist, want, rtol=1e-4, atol=1e-5)
    assert len(src) == int(((np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1)) < delta).sum() - 120) // 2)


def test_choose_delta_is_the_largest_with_enough_purity() -> None:
    r_sq = torch.tensor([0.01, 0.04, 0.09, 0.16, 0.25, 0.36, 0.49, 0.64, 0.81, 1.0])  # r = 0.1 ... 1.0
    delta, purity = choose_delta(r_sq, 0.75)
    assert delta == pytest.approx(0.3) and purity == pytest.approx(0.8)  # 8 of 10 have r >= 0.3, 7 >= 0.4
    assert float((r_sq >= (delta + 1e-6) ** 2).float().mean()) < 0.75
    # on a grid: the largest grid value whose purity (mean of r >= delta) is >= alpha
    grid = (0.05, 0.15, 0.25, 0.35, 0.45)
    naive = max(d for d in grid if np.mean(np.sqrt(r_sq.numpy()) >= d) >= 0.75)
    assert choose_delta(r_sq, 0.75, grid)[0] == naive == 0.25
    with pytest.raises(ConfigError, match="delta_grid"):
        choose_delta(r_sq, 0.99, (0.5, 0.9))
    with pytest.raises(ConfigError, match="one cluster"):
        choose_delta(torch.full((5,), float("inf")), 0.95)


def _coverage(balls: list[set[int]], chosen: list[int]) -> int:
    return len(set().union(*(balls[i] for i in chosen))) if chosen else 0


def _balls(graph: sp.csr_matrix) -> list[set[int]]:
    return [set(graph.indices[graph.indptr[i]:graph.indptr[i + 1]].tolist()) for i in range(graph.shape[0])]


def _naive_greedy(balls: list[set[int]], labeled: np.ndarray, budget: int, order: np.ndarray) -> list[int]:
    """Algorithm 1 recomputing every degree from scratch; ties go to the earliest node in ``order``."""
    covered = set().union(*(balls[i] for i in np.flatnonzero(labeled))) if labeled.any() else set()
    picks: list[int] = []
    for _ in range(budget):
        best, best_gain = None, 0
        for i in order:
            gain = len(balls[i] - covered)
            if not labeled[i] and i not in picks and gain > best_gain:
                best, best_gain = int(i), gain
        if best is None:
            break
        picks.append(best)
        covered |= balls[best]
    return picks


def _random_graph(rng: np.random.Generator, n: int, p: float, symmetric: bool) -> sp.csr_matrix:
    adj = rng.random((n, n)) < p
    if symmetric:
        adj = adj | adj.T
    np.fill_diagonal(adj, True)
    return sp.csr_matrix(adj)


@pytest.mark.parametrize("symmetric", [False, True])
def test_incremental_greedy_matches_from_scratch_greedy(symmetric: bool) -> None:
    rng = np.random.default_rng(2)
    for trial in range(15):
        n = 40
        graph = _random_graph(rng, n, 0.08, symmetric)
        labeled = np.zeros(n, dtype=bool)
        labeled[rng.choice(n, size=trial % 4, replace=False)] = True
        order = rng.permutation(n)
        cov = greedy_max_coverage(graph, labeled, 12, order, incoming=graph if symmetric else None)
        balls = _balls(graph)
        assert cov.picks.tolist() == _naive_greedy(balls, labeled, 12, order)
        # gains are the marginal coverage; the covered mask is the union of all balls
        lab = np.flatnonzero(labeled).tolist()
        assert cov.initially_covered == _coverage(balls, lab)
        assert cov.initially_covered + cov.gains.sum() == _coverage(balls, lab + cov.picks.tolist())
        assert int(cov.covered.sum()) == _coverage(balls, lab + cov.picks.tolist())


def test_greedy_within_1_minus_1_over_e_of_exhaustive_optimum() -> None:
    rng = np.random.default_rng(3)
    for trial in range(60):
        n = 8
        graph = _random_graph(rng, n, 0.3, symmetric=bool(trial % 2))
        labeled = np.zeros(n, dtype=bool)
        labeled[rng.choice(n, size=trial % 3, replace=False)] = True
        balls = _balls(graph)
        lab = np.flatnonzero(labeled).tolist()
        base = _coverage(balls, lab)
        cand = np.flatnonzero(~labeled).tolist()
        for b in (1, 2, 3):
            cov = greedy_max_coverage(graph, labeled, b, rng.permutation(n))
            assert len(cov.picks) <= b and not labeled[cov.picks].any()
            got = _coverage(balls, lab + cov.picks.tolist())
            best = max(_coverage(balls, lab + list(s)) for s in itertools.combinations(cand, b))
            # f(S) = |union of balls of L + S| is monotone submodular: greedy >= (1 - 1/e) OPT gain
            assert got - base >= (1 - 1 / math.e) * (best - base) - 1e-9
            if b == 1:
                assert got == best  # one greedy step is exact


def test_greedy_is_exact_on_disjoint_stars() -> None:
    # three disjoint balls of sizes 4, 3, 1 (plus the leaves' own self-loops): greedy = optimum
    edges = [(0, j) for j in range(4)] + [(4, j) for j in range(4, 7)] + [(i, i) for i in range(8)]
    r, c = zip(*edges, strict=True)
    graph = sp.csr_matrix((np.ones(len(r), dtype=bool), (r, c)), shape=(8, 8))
    labeled = np.zeros(8, dtype=bool)
    cov = greedy_max_coverage(graph, labeled, 2)
    assert cov.picks.tolist() == [0, 4] and cov.gains.tolist() == [4, 3]
    balls = _balls(graph)
    best = max(_coverage(balls, list(s)) for s in itertools.combinations(range(8), 2))
    assert int(cov.covered.sum()) == best == 7


def test_labeled_balls_count_as_covered() -> None:
    # labeled node 0 covers {0, 1, 2, 3}; unlabeled 1 has the largest raw ball {1, 2, 3} but adds
    # nothing; node 5's ball {5, 6} is the best new coverage
    edges = [(0, 0), (0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (1, 3), (5, 5), (5, 6), (4, 4), (6, 6), (2, 2),
             (3, 3)]
    r, c = zip(*edges, strict=True)
    graph = sp.csr_matrix((np.ones(len(r), dtype=bool), (r, c)), shape=(7, 7))
    labeled = np.zeros(7, dtype=bool)
    labeled[0] = True
    cov = greedy_max_coverage(graph, labeled, 3)
    assert cov.initially_covered == 4
    assert cov.picks.tolist() == [5, 4] and cov.gains.tolist() == [2, 1]  # then coverage is exhausted
    assert cov.covered.all() and 0 not in cov.picks and 1 not in cov.picks


# -- the strategy --------------------------------------------------------------------------------

def test_probcover_contract_on_real_digits(make_context) -> None:
    strat = create_strategy("probcover")
    ctx = make_context(seed=3)
    sel = query(strat, ctx, 25)
    assert sel.indices.numel() == 25 and not bool(ctx.labeled_mask[sel.indices].any())
    info = sel.info
    assert 0 < info["delta"] < 2 and info["purity"] >= 0.95 and info["n_random"] == 0
    n = ctx.pool_size
    assert n <= info["n_edges"] < n * n // 10  # sparse
    assert info["coverage"] > info["coverage_before"]
    # gains are non-increasing (submodularity) and positive before any random fill
    assert bool((sel.scores[1:] <= sel.scores[:-1]).all()) and float(sel.scores.min()) > 0
    again = query(create_strategy("probcover"), make_context(seed=3), 25)
    assert torch.equal(sel.indices, again.indices)


def test_probcover_budget_equals_pool_falls_back_to_random(make_context) -> None:
    ctx = make_context(seed=0, pool_size=120)
    sel = query(create_strategy("probcover", delta=0.6), ctx, ctx.n_unlabeled)
    assert torch.equal(sel.indices.sort().values, ctx.unlabeled_idx)
    assert sel.info["coverage"] == 1.0 and sel.info["n_random"] > 0
    assert float(sel.scores[-1]) == 0.0  # the random fill scores 0


def test_probcover_user_features_and_labeled_coverage(digits_model, digits_pool) -> None:
    # features: one tight blob per class, so the labeled sample of a class covers its whole blob and
    # the greedy must spend the budget elsewhere — first on the unlabeled blob of class 9
    labels = digits_pool.labels
    g = torch.Generator().manual_seed(0)
    centres = 10.0 * torch.eye(10)
    feats = centres[labels] + 0.01 * torch.randn(len(labels), 10, generator=g)
    labeled = torch.cat([torch.nonzero(labels == c).squeeze(1)[:1] for c in range(9)])
    ctx = QueryContext(digits_model, digits_pool.images, labeled, labels[labeled], 10,
                       torch.Generator().manual_seed(0), features=feats)
    sel = query(create_strategy("probcover", source="features", normalize=False, delta=1.0), ctx, 3)
    assert int(labels[sel.indices[0]]) == 9 and float(sel.scores[0]) == float((labels == 9).sum())
    assert sel.info["coverage_before"] == pytest.approx(float((labels != 9).float().mean()))
    assert sel.info["n_random"] == 2  # nothing left to cover after the class-9 blob


def test_probcover_one_labeled_per_class_and_ties_follow_the_seed(make_context) -> None:
    a = query(create_strategy("probcover", delta=1e-3), make_context(seed=1), 10)  # balls = self only
    b = query(create_strategy("probcover", delta=1e-3), make_context(seed=2), 10)
    assert a.info["n_edges"] == make_context().pool_size  # self-loops only: every gain ties at 1
    assert set(a.indices.tolist()) != set(b.indices.tolist())


def test_probcover_errors(make_context) -> None:
    for bad in ({"source": "pixels"}, {"delta": 0.0}, {"alpha": 1.5}, {"delta_grid": ()},
                {"delta_grid": (0.1, -1.0)}, {"n_clusters": 1}, {"max_edges": 0}):
        with pytest.raises(ConfigError):
            create_strategy("probcover", **bad)
    ctx = make_context()
    with pytest.raises(BudgetError):
        query(create_strategy("probcover"), ctx, ctx.n_unlabeled + 1)
    with pytest.raises(ConfigError, match="features"):
        query(create_strategy("probcover", source="features"), ctx, 5)
    with pytest.raises(ConfigError, match="max_edges"):
        query(create_strategy("probcover", delta=1.5, max_edges=1000), make_context(), 5)


def test_probcover_pool_smaller_than_the_number_of_classes(digits_model, digits_pool, caplog) -> None:
    images, labels = digits_pool.images[:6], digits_pool.labels[:6]
    ctx = QueryContext(digits_model, images, torch.tensor([0]), labels[:1], 10,
                       torch.Generator().manual_seed(0))
    with caplog.at_level("WARNING"):
        sel = query(create_strategy("probcover"), ctx, 5)  # k-means falls back to k = 6 points
    assert sorted(sel.indices.tolist()) == [1, 2, 3, 4, 5]
    # lowered loudly: one warning line, and the round's info says from what to what
    warned = [r.getMessage() for r in caplog.records if "n_clusters" in r.getMessage()]
    assert warned == ["dalkit: warning: probcover n_clusters lowered from 10 to 6: only 6 labeled + "
                      "unlabeled samples to cluster"]
    assert sel.info["n_clusters"] == 6 and sel.info["n_clusters_wanted"] == 10
    caplog.clear()
    with caplog.at_level("WARNING"):
        sel = query(create_strategy("probcover", n_clusters=4), ctx, 5)  # fits: no warning, no info
    assert not caplog.records and "n_clusters" not in sel.info


def _lattice_with_duplicates(offset: float) -> np.ndarray:
    """Points of a 0.5-spaced 3-D lattice (every distance is exact: many pairs at exactly 1.0, sqrt(2),
    ...), each third one duplicated (ties at distance 0), moved far from the origin so that the float32
    expansion ||a||^2 + ||b||^2 - 2 a.b is off by far more than the gaps between distances."""
    grid = np.stack(np.meshgrid(*[np.arange(6) * 0.5] * 3, indexing="ij"), -1).reshape(-1, 3)
    return np.concatenate([grid, grid[::3]]) + offset


@pytest.mark.parametrize("backend", ["torch", "faiss"])
@pytest.mark.parametrize("delta", [1.0, math.sqrt(2.0), 0.5])
def test_ball_pairs_are_the_float64_pairs_on_a_lattice_with_ties(backend: str, delta: float) -> None:
    pytest.importorskip("faiss")
    x = _lattice_with_duplicates(3000.0)
    d2 = ((x[:, None] - x[None]) ** 2).sum(-1)  # float64, exact on this lattice
    want = {(i, j) for i, j in zip(*np.nonzero(d2 < delta * delta), strict=True) if i < j}
    src, dst, dist = ball_pairs(torch.from_numpy(x).float(), delta, with_dist=True, block_elems=5000,
                                backend=backend)
    assert set(zip(src.tolist(), dst.tolist(), strict=True)) == want and len(src) == len(want)
    # without the float64 decisions the float32 screen alone gets this lattice wrong (what is tested)
    xf = torch.from_numpy(x).float()
    sq = (xf * xf).sum(1)
    f32 = (sq[:, None] + sq[None, :] - 2 * xf @ xf.T) < delta * delta
    naive = {(i, j) for i, j in zip(*np.nonzero(f32.numpy()), strict=True) if i < j}
    assert naive != want


def test_probcover_faiss_and_torch_pick_the_same_samples_with_ties() -> None:
    pytest.importorskip("faiss")
    from dalkit.models.features import FeatureMLP

    # a float pool of 10 blobs with 500 exact duplicates (ties in distance and in coverage gain), larger
    # than the purity sample so that delta and the graph come from one sweep of the backend
    g = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 10, (5000,), generator=g)
    pool = torch.randn(10, 12, generator=g)[labels] * 2.0 + torch.randn(5000, 12, generator=g)
    pool[4500:] = pool[:500]
    labeled = torch.arange(0, 5000, 250)
    torch.manual_seed(0)
    model = FeatureMLP(12, 10, depth=0).eval()
    out = {}
    for backend in ("torch", "faiss"):
        ctx = QueryContext(model, pool, labeled, labels[labeled], 10, torch.Generator().manual_seed(7))
        out[backend] = query(create_strategy("probcover", backend=backend), ctx, 40)
    t, f = out["torch"], out["faiss"]
    assert t.info["backend"] == "torch" and f.info["backend"] == "faiss"
    assert t.indices.tolist() == f.indices.tolist() and torch.equal(t.scores, f.scores)
    assert t.info["delta"] == f.info["delta"] and t.info["n_edges"] == f.info["n_edges"] > 3000
    assert t.info["passes"] == f.info["passes"] == ("sample", "bound")


def test_probcover_backend_errors(monkeypatch) -> None:
    with pytest.raises(ConfigError, match="backend must be one of"):
        create_strategy("probcover", backend="gpu")
    import builtins

    real = builtins.__import__

    def no_faiss(name, *args, **kwargs):
        if name == "faiss":
            raise ImportError("no faiss")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_faiss)
    with pytest.raises(ConfigError) as err:
        create_strategy("probcover", backend="faiss")
    assert str(err.value) == ("probcover backend 'faiss' needs faiss, which is not installed; pip install "
                              "'dalkit[faiss]' (or use backend: torch)")
    assert create_strategy("probcover").backend == "auto"  # auto falls back to torch without faiss
    from dalkit.strategies._probcover import resolve_backend
    assert resolve_backend("auto") == "torch"

"""ProbCover: greedy maximum coverage of a delta-ball graph (Yehuda et al., NeurIPS 2022).

"Active Learning Through a Covering Lens": every sample x owns the ball B_delta(x) = {x' : ||x - x'|| <
delta} in an embedding space (the paper: L2 on unit-normalised self-supervised features).  The method
picks the unlabeled samples whose balls cover the most not-yet-covered points (Algorithm 1), with delta
the largest value whose *purity* — the fraction of points whose ball holds only points of their own
k-means cluster (k = number of classes) — stays above alpha = 0.95 (section 4.2).

The graph is built in row chunks of the upper triangle (half the matrix products of a full sweep, and
exactly symmetric), kept as a scipy CSR matrix: memory O(N*D + E), never an N x N matrix.  Each block
is one ``addmm`` (||b||^2 - 2 a.b) and one compare against delta^2 - ||a||^2: measured on 2 CPU cores,
the full squared-distance expansion with its clamp costs 2.2-3.3x the bare matrix product, and the
threshold test does not need it.  Estimating delta and building its graph share one sweep
(:func:`purity_delta_graph`): a 4,096-row sample bounds delta from above, the sweep keeps every pair
under the bound with its distance, and that is enough to get delta exactly; measured on the 60k MNIST
CNN features, 33-36 s against 57-59 s for the purity sweep plus the graph sweep, same delta and edges.
The greedy keeps every node's count of uncovered ball members and decrements it with ``np.bincount``
over the in-edges of the newly covered nodes only, so the whole selection touches each edge once.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from dalkit.errors import ConfigError
from dalkit.strategies.base import QueryContext, Selection, register_strategy

log = logging.getLogger(__name__)

#: float elements per distance block: 2**24 = 64 MB of float32 (plus a bool block of 16 MB)
BLOCK_ELEMS = 1 << 24
#: rows whose nearest other-cluster distance bounds delta before the single sweep over all pairs
PURITY_SAMPLE = 4096


def _row_chunk(n: int, block_elems: int) -> int:
    """Rows per [rows, n] distance block."""
    return max(1, min(n, block_elems // max(1, n)))


def nearest_other_cluster_sq(x: Tensor, clusters: Tensor, rows: Tensor | None = None,
                             block_elems: int = BLOCK_ELEMS) -> Tensor:
    """Squared distance from every row to the nearest row of a different cluster, chunked.

    A point's delta-ball is pure (holds only its own cluster) iff delta^2 <= this distance, so one pass
    gives the purity of every delta at once.  For all rows, they are sorted by cluster and only the
    blocks of a cluster against the later clusters are computed (each cross-cluster pair once, no
    masking); a block's row minima serve its rows and its column minima its columns.

    Args:
        x: [N, D] embeddings; clusters: [N] int cluster ids.
        rows: only these row indices [S] (against all N points); None = every row.
    Returns:
        [N] (or [S]) float32 squared distances (inf where every point shares the cluster).
    """
    x = x.float()
    n = x.shape[0]
    if rows is not None:
        sq_all = (x * x).sum(1)
        out = torch.empty(rows.numel())
        step = _row_chunk(n, block_elems)
        for s in range(0, rows.numel(), step):
            idx = rows[s:s + step]
            d = torch.addmm(sq_all[None, :], x[idx], x.T, alpha=-2.0).add_(sq_all[idx, None])
            d.masked_fill_(clusters[idx, None] == clusters[None, :], float("inf"))
            out[s:s + idx.numel()] = d.min(1).values
        return out.clamp_min_(0.0)
    order = torch.argsort(clusters, stable=True)
    xs = x[order]
    sq = (xs * xs).sum(1)
    ends = torch.cumsum(torch.bincount(clusters[order]), 0).tolist()
    best = torch.full((n,), float("inf"))
    lo = 0
    for hi in ends:
        if lo == hi:
            continue
        if hi < n:
            cols = xs[hi:].T  # [D, n - hi]: every point of a later cluster (a view)
            step = _row_chunk(n - hi, block_elems)
            for s in range(lo, hi, step):
                e = min(s + step, hi)
                # ||a||^2 + ||b||^2 - 2 a.b, as one addmm and one in-place add
                d = torch.addmm(sq[None, hi:], xs[s:e], cols, alpha=-2.0).add_(sq[s:e, None])
                best[s:e] = torch.minimum(best[s:e], d.min(1).values)
                best[hi:] = torch.minimum(best[hi:], d.min(0).values)
        lo = hi
    out = torch.empty(n)
    out[order] = best.clamp_min_(0.0)
    return out


def delta_purity(x: Tensor, clusters: Tensor, deltas: Tensor | list[float]) -> Tensor:
    """Purity of each delta: the fraction of points whose ball B_delta (``||x - x'|| < delta``)
    contains only points of their own cluster.  ``x`` [N, D], ``clusters`` [N] -> [G]."""
    r_sq = nearest_other_cluster_sq(x, clusters)
    d = torch.as_tensor(deltas, dtype=torch.float64)
    return (r_sq[None, :] >= (d * d).float()[:, None]).double().mean(1)


def choose_delta(r_sq: Tensor, alpha: float, grid: tuple[float, ...] | None = None) -> tuple[float, float]:
    """The largest delta whose purity is >= alpha.

    Args:
        r_sq: [N] squared distance of every point to the nearest point of another cluster
            (:func:`nearest_other_cluster_sq`); purity(delta) = mean(r_sq >= delta^2).
        alpha: the purity threshold (the paper: 0.95).
        grid: candidate deltas; None searches every value where the purity changes (the limit of an
            arbitrarily fine grid): delta* = the ceil(alpha * N)-th largest distance.
    Returns:
        (delta, its purity).
    Raises:
        ConfigError: no delta of the grid reaches the purity, or the clustering has one cluster only.
    """
    n = r_sq.numel()
    r = r_sq.float()  # compared in float32 against python scalars, as the graph compares distances
    if grid is None:
        k = max(1, math.ceil(alpha * n - 1e-9))
        delta_sq = float(torch.topk(r, k).values[-1])
        if not math.isfinite(delta_sq):
            raise ConfigError("probcover cannot estimate delta: the k-means clustering put (almost) every "
                              "point in one cluster; pass delta explicitly")
        delta = math.sqrt(delta_sq)
    else:
        g = torch.tensor(sorted(grid), dtype=torch.float64)
        purity = (r[None, :] >= (g * g).float()[:, None]).double().mean(1)
        ok = (purity >= alpha).nonzero()
        if ok.numel() == 0:
            raise ConfigError(f"probcover: no delta in delta_grid reaches purity alpha={alpha} (the "
                              f"smallest, {float(g[0]):g}, has purity {float(purity[0]):.3f}); "
                              "add smaller values")
        delta = float(g[int(ok.max())])
    purity = float((r >= delta * delta).double().mean())  # float32 compare: delta^2 rounds back exactly
    return delta, purity


def ball_pairs(x: Tensor, delta: float, max_edges: int | None = None, with_dist: bool = False,
               block_elems: int = BLOCK_ELEMS) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Every pair i < j with ``||x_i - x_j|| < delta``, from chunked blocks of the upper triangle.

    Each block is one ``addmm`` (||b||^2 - 2 a.b) and one compare against delta^2 - ||a||^2 (the
    full squared-distance expansion with its clamp costs 2.2-3.3x the bare matrix product on 2 CPU
    cores, and the threshold test does not need it).  Memory O(N*D + E).

    Args:
        x: [N, D] embeddings.
        delta: radius (pairs at distance exactly delta are excluded).
        max_edges: raise once the graph would hold more directed edges (2 per pair + N self-loops).
        with_dist: also return the pairs' squared distances.
    Returns:
        (src [P] int32, dst [P] int32, squared distances [P] float32 or None), src < dst.
    Raises:
        ConfigError: more than ``max_edges`` edges.
    """
    x = x.float()
    n = x.shape[0]
    sq = (x * x).sum(1)
    row_thr = float(delta) * float(delta) - sq  # ||a - b||^2 < d^2  <=>  ||b||^2 - 2 a.b < d^2 - ||a||^2
    step = _row_chunk(n, block_elems)
    ar = torch.arange(step)
    upper = ar[None, :] > ar[:, None]  # [step, step] strict upper triangle of a diagonal block
    src_parts: list[np.ndarray] = []
    dst_parts: list[np.ndarray] = []
    dist_parts: list[np.ndarray] = []
    n_pairs = 0
    for s in range(0, n, step):
        e = min(s + step, n)
        part = torch.addmm(sq[None, s:], x[s:e], x[s:].T, alpha=-2.0)  # [b, n - s]
        hit = part < row_thr[s:e, None]
        hit[:, : e - s] &= upper[: e - s, : e - s]
        r, c = hit.nonzero(as_tuple=True)
        n_pairs += r.numel()
        if max_edges is not None and 2 * n_pairs + n > max_edges:
            raise ConfigError(
                f"probcover: the delta-graph (delta={delta:.4g}) exceeds max_edges={max_edges} after "
                f"{e} of {n} rows; pass a smaller delta (or alpha closer to 1) or raise max_edges")
        src_parts.append((r + s).numpy().astype(np.int32))
        dst_parts.append((c + s).numpy().astype(np.int32))
        if with_dist:
            dist_parts.append((part[r, c] + sq[r + s]).clamp_min_(0.0).numpy())
    empty_i = np.empty(0, np.int32)
    src = np.concatenate(src_parts) if src_parts else empty_i
    dst = np.concatenate(dst_parts) if dst_parts else empty_i
    dist = (np.concatenate(dist_parts) if dist_parts else np.empty(0, np.float32)) if with_dist else None
    return src, dst, dist


def graph_from_pairs(src: np.ndarray, dst: np.ndarray, n: int, self_loops: bool = True) -> sp.csr_matrix:
    """Symmetric bool CSR [N, N] with edges src -> dst, dst -> src (and i -> i)."""
    loops = np.arange(n, dtype=np.int32) if self_loops else np.empty(0, np.int32)
    rows = np.concatenate([src, dst, loops])
    cols = np.concatenate([dst, src, loops])
    graph = sp.csr_matrix((np.ones(rows.size, dtype=np.bool_), (rows, cols)), shape=(n, n))
    graph.sort_indices()
    return graph


def delta_graph(x: Tensor, delta: float, max_edges: int | None = None,
                block_elems: int = BLOCK_ELEMS) -> sp.csr_matrix:
    """The delta-ball graph: edge i -> j iff ``||x_i - x_j|| < delta`` (self-loops included), as CSR.

    The relation is symmetric, so row i lists both the ball of i (out-edges) and the points whose balls
    hold i (in-edges).  Built from the upper triangle (:func:`ball_pairs`), so it is exactly symmetric.

    Returns:
        bool CSR matrix [N, N] with ``nnz`` = number of directed edges (N self-loops included).
    Raises:
        ConfigError: the graph would exceed ``max_edges``.
    """
    src, dst, _ = ball_pairs(x, delta, max_edges, block_elems=block_elems)
    return graph_from_pairs(src, dst, x.shape[0], self_loops=delta > 0)


def other_cluster_sq_from_pairs(src: np.ndarray, dst: np.ndarray, dist: np.ndarray, clusters: Tensor,
                                n: int) -> Tensor:
    """Nearest other-cluster squared distance [N] over the given pairs only (inf where none)."""
    src_t, dst_t = torch.from_numpy(src).long(), torch.from_numpy(dst).long()
    cross = clusters[src_t] != clusters[dst_t]
    d = torch.from_numpy(dist)[cross]
    out = torch.full((n,), float("inf"))
    out.scatter_reduce_(0, src_t[cross], d, "amin")
    out.scatter_reduce_(0, dst_t[cross], d, "amin")
    return out


@dataclass(frozen=True)
class DeltaGraph:
    """Result of :func:`purity_delta_graph`: the radius, its purity, the graph and the passes it took
    (each pass = one sweep of matrix products over all pairs or a row sample)."""

    delta: float
    purity: float
    graph: sp.csr_matrix
    passes: tuple[str, ...]


def purity_delta_graph(x: Tensor, clusters: Tensor, alpha: float, grid: tuple[float, ...] | None,
                       generator: torch.Generator, max_edges: int | None = None,
                       sample: int = PURITY_SAMPLE, margin: float | None = None) -> DeltaGraph:
    """delta by purity and its graph, usually in one sweep over the pairs instead of two.

    The exact delta* is the ceil(alpha N)-th largest nearest-other-cluster distance r.  A row sample
    (``sample`` rows against all N) gives r on the sample; its quantile at alpha - margin (3 binomial
    standard errors by default) is an upper bound delta_up >= delta* with high probability.  One sweep
    then collects every pair closer than delta_up with its distance, which holds r_i exactly wherever
    r_i < delta_up: if fewer than ceil(alpha N) points are left unknown, delta* is exact, and the graph
    is the pairs closer than delta*.  Otherwise (a rare miss) it falls back to the two exact sweeps.
    Pools no larger than ``sample`` use the two exact sweeps directly.

    Raises:
        ConfigError: no delta reaches the purity, a single cluster, or more than ``max_edges`` edges.
    """
    n = x.shape[0]
    k = max(1, math.ceil(alpha * n - 1e-9))
    if n > sample:
        rows = torch.randperm(n, generator=generator)[:sample]
        r_rows = nearest_other_cluster_sq(x, clusters, rows=rows)
        m = 3.0 * math.sqrt(alpha * (1.0 - alpha) / sample) if margin is None else margin
        upper, _ = choose_delta(r_rows, min(1.0, max(alpha - m, 1e-9)))
        src, dst, dist = ball_pairs(x, upper, max_edges, with_dist=True)
        r_sq = other_cluster_sq_from_pairs(src, dst, dist, clusters, n)
        if math.isfinite(float(torch.topk(r_sq, k).values[-1])):  # delta* < delta_up: r known down there
            in_reach = None if grid is None else tuple(g for g in grid if g <= upper)  # r exact below
            if in_reach == ():
                best = math.sqrt(float(torch.topk(r_sq, k).values[-1]))
                raise ConfigError(f"probcover: no delta in delta_grid reaches purity alpha={alpha}; add "
                                  f"values at or below {best:.4g} (the exact largest)")
            delta, purity = choose_delta(r_sq, alpha, in_reach)
            keep = dist < np.float32(delta * delta)
            graph = graph_from_pairs(src[keep], dst[keep], n, self_loops=delta > 0)
            return DeltaGraph(delta, purity, graph, ("sample", "bound"))
        del src, dst, dist
        passes: tuple[str, ...] = ("sample", "bound", "purity", "graph")
    else:
        passes = ("purity", "graph")
    delta, purity = choose_delta(nearest_other_cluster_sq(x, clusters), alpha, grid)
    return DeltaGraph(delta, purity, delta_graph(x, delta, max_edges), passes)


@dataclass(frozen=True)
class Coverage:
    """Result of :func:`greedy_max_coverage`.

    Attributes:
        picks: node ids in pick order [P] (P <= budget; the greedy stops when no candidate adds coverage).
        gains: newly covered nodes of each pick [P].
        covered: bool [N], covered after the picks (labeled balls included).
        initially_covered: number of nodes the labeled balls covered before any pick.
    """

    picks: np.ndarray
    gains: np.ndarray
    covered: np.ndarray
    initially_covered: int


def greedy_max_coverage(graph: sp.csr_matrix, labeled: np.ndarray, budget: int,
                        tie_order: np.ndarray | None = None,
                        incoming: sp.csr_matrix | None = None) -> Coverage:
    """ProbCover Algorithm 1: repeatedly pick the candidate of largest out-degree in the graph of
    uncovered nodes, then delete every edge pointing into a node its ball covers.

    Labeled nodes count as already picked: their balls are covered at the start and they are never
    candidates.  Out-degrees are updated incrementally: covering node y subtracts one from every node
    with an edge into y (``np.bincount`` over y's in-edges), so each edge is touched once overall.

    Args:
        graph: CSR [N, N], row i = the out-neighbours (ball) of i.
        labeled: bool [N].
        budget: at most this many picks.
        tie_order: a permutation of the nodes; among equal degrees the one earliest in it wins
            (None: lowest id, as the reference code's ``argmax``).
        incoming: CSR of the transpose (row y = nodes whose ball holds y); None means ``graph.T``.
            Pass ``graph`` itself for a symmetric graph.
    Returns:
        :class:`Coverage`.
    """
    n = graph.shape[0]
    incoming = graph.T.tocsr() if incoming is None else incoming
    indptr, indices = graph.indptr, graph.indices
    degree = np.diff(indptr).astype(np.int64)  # [N] uncovered ball members
    covered = np.zeros(n, dtype=bool)
    excluded = np.asarray(labeled, dtype=bool).copy()  # labeled or picked: never a candidate
    order = np.arange(n) if tie_order is None else np.asarray(tie_order)

    def cover(nodes: np.ndarray) -> None:
        covered[nodes] = True
        if nodes.size:
            degree[:] -= np.bincount(incoming[nodes].indices, minlength=n)

    lab = np.flatnonzero(excluded)
    first = np.unique(graph[lab].indices) if lab.size else np.empty(0, np.int64)
    cover(first)
    picks: list[int] = []
    gains: list[int] = []
    for _ in range(budget):
        score = np.where(excluded[order], -1, degree[order])
        pos = int(score.argmax())
        if score[pos] <= 0:
            break  # coverage exhausted: no candidate covers anything new
        cur = int(order[pos])
        ball = indices[indptr[cur]:indptr[cur + 1]]
        new = ball[~covered[ball]]
        picks.append(cur)
        gains.append(int(new.size))
        excluded[cur] = True
        cover(new)
    return Coverage(np.asarray(picks, dtype=np.int64), np.asarray(gains, dtype=np.int64), covered,
                    int(first.size))


def _seed(generator: torch.Generator) -> int:
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator))


def kmeans_labels(x: Tensor, k: int, seed: int) -> Tensor:
    """Cluster ids [N] from scikit-learn k-means (k-means++, one seeded initialisation)."""
    from sklearn.cluster import KMeans

    if not 2 <= k <= x.shape[0]:
        raise ConfigError(f"probcover: k-means with k={k} clusters needs at least max(k, 2) samples, "
                          f"got {x.shape[0]}; pass delta explicitly")
    km = KMeans(n_clusters=k, n_init=1, random_state=seed).fit(x.float().numpy())
    return torch.from_numpy(km.labels_.astype(np.int64))


@register_strategy("probcover")
@dataclass(frozen=True)
class ProbCover:
    """Greedy maximum coverage of delta-balls around the samples.  Reference: Yehuda et al., "Active
    Learning Through a Covering Lens", NeurIPS 2022 (Algorithm 1; delta by k-means purity, sec. 4.2).

    The graph spans the whole pool (labeled + unlabeled); labeled samples count as picked (their balls
    start covered); only unlabeled samples are candidates; degree ties break at random (seeded).  When
    no unlabeled sample covers anything new, the rest of the budget is filled with random unlabeled
    samples (the reference code would keep returning node 0).

    Options:
        source: "model" (the model's penultimate features) or "features" (the user-supplied array of
            the QueryContext — the paper uses self-supervised SimCLR features).
        normalize: L2-normalise each embedding to unit norm first (the paper does).
        delta: the ball radius; None estimates it as the largest delta with purity >= ``alpha``.
        alpha: purity threshold for the estimate (the paper: 0.95).
        delta_grid: deltas to search; None searches every value where the purity changes (the limit
            of an arbitrarily fine grid, so the result is the largest delta any grid could give).
        n_clusters: k of the purity k-means; None = number of classes.  Lowered to the number of
            samples when fewer (a warning, and ``n_clusters``/``n_clusters_wanted`` in the round info).
        max_edges: stop with a ConfigError rather than build a graph with more directed edges.
    """

    source: str = "model"
    normalize: bool = True
    delta: float | None = None
    alpha: float = 0.95
    delta_grid: tuple[float, ...] | None = None
    n_clusters: int | None = None
    max_edges: int = 200_000_000

    def __post_init__(self) -> None:
        if self.source not in ("model", "features"):
            raise ConfigError(f"probcover source must be 'model' or 'features', got {self.source!r}")
        if self.delta is not None and not self.delta > 0:
            raise ConfigError(f"probcover delta must be positive (or None to estimate it), got {self.delta}")
        if not 0.0 < self.alpha <= 1.0:
            raise ConfigError(f"probcover alpha (purity threshold) must lie in (0, 1], got {self.alpha}")
        if self.delta_grid is not None:
            if len(self.delta_grid) == 0 or any(not d > 0 for d in self.delta_grid):
                raise ConfigError(f"probcover delta_grid must hold positive values, got {self.delta_grid}")
            object.__setattr__(self, "delta_grid", tuple(float(d) for d in self.delta_grid))
        if self.n_clusters is not None and self.n_clusters < 2:
            raise ConfigError(f"probcover n_clusters must be >= 2, got {self.n_clusters}")
        if self.max_edges < 1:
            raise ConfigError(f"probcover max_edges must be positive, got {self.max_edges}")

    def features(self, ctx: QueryContext) -> Tensor:
        """Embeddings of the pool as [labeled; unlabeled] rows, [L + U, D] (normalised if asked)."""
        def compute() -> Tensor:
            lab = ctx.embeddings("labeled", source=self.source)
            unl = ctx.embeddings("unlabeled", source=self.source)
            x = torch.cat([lab.float(), unl.float()])
            if self.normalize:  # in place: F.normalize's rule, without a second [N, D] copy
                x.div_(x.norm(dim=1, keepdim=True).clamp_min_(1e-12))
            return x

        return ctx.cached(("probcover-features", self.source, self.normalize), compute)

    def select(self, ctx: QueryContext, budget: int) -> Selection:
        x = self.features(ctx)
        n_lab = int(ctx.labeled_idx.numel())
        n = x.shape[0]
        seconds: dict[str, float] = {}
        clock = time.perf_counter()

        def lap(stage: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            seconds[stage] = round(now - clock, 3)
            clock = now

        lowered: dict[str, int] = {}
        if self.delta is None:  # section 4.2: purity of k-means clusters, k = number of classes
            wanted = self.n_clusters or ctx.num_classes
            k = min(wanted, n)  # a pool smaller than k: one point per cluster, said loudly
            if k < wanted:
                lowered = {"n_clusters": k, "n_clusters_wanted": wanted}
                log.warning(f"dalkit: warning: probcover n_clusters lowered from {wanted} to {k}: only {n} "
                            "labeled + unlabeled samples to cluster")
            clusters = kmeans_labels(x, k, _seed(ctx.generator))
            lap("kmeans")
            found = purity_delta_graph(x, clusters, self.alpha, self.delta_grid, ctx.generator,
                                       self.max_edges)
            delta, purity, graph, passes = found.delta, found.purity, found.graph, found.passes
            lap("delta+graph")
        else:
            delta, purity, passes = float(self.delta), float("nan"), ("graph",)
            graph = ctx.cached(("probcover-graph", self.source, self.normalize, delta),
                               lambda: delta_graph(x, delta, self.max_edges))
            lap("graph")
        labeled = np.zeros(n, dtype=bool)
        labeled[:n_lab] = True
        tie_order = torch.randperm(n, generator=ctx.generator).numpy()
        cov = greedy_max_coverage(graph, labeled, budget, tie_order, incoming=graph)
        lap("greedy")
        pos = cov.picks - n_lab  # positions into ctx.unlabeled_idx
        scores = cov.gains.astype(np.float32)
        n_random = budget - pos.size
        if n_random:  # coverage exhausted: fill with random unlabeled samples
            free = np.ones(n - n_lab, dtype=bool)
            free[pos] = False
            perm = torch.randperm(n - n_lab, generator=ctx.generator).numpy()
            fill = perm[free[perm]][:n_random]
            pos = np.concatenate([pos, fill])
            scores = np.concatenate([scores, np.zeros(n_random, dtype=np.float32)])
        pos_t = torch.from_numpy(pos.astype(np.int64))
        info = {"delta": delta, "purity": purity, "n_edges": int(graph.nnz),
                "coverage_before": cov.initially_covered / n, "coverage": float(cov.covered.mean()),
                "n_random": int(n_random), "passes": passes, "seconds": seconds, **lowered}
        return Selection(ctx.unlabeled_idx[pos_t], torch.from_numpy(scores), info)

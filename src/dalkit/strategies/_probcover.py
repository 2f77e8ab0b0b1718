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

Exact decisions.  A float32 matrix product (or faiss) gets ||a - b||^2 right only to about
``E * 2^-24 * (|a| + |b|)^2``, and how far off depends on the block a pair falls in, so two equal
distances (duplicated rows: ties) could land on either side of delta.  Every sweep therefore only
*screens* pairs with a margin above that bound (:func:`screen_margin`), and a pair whose screened
distance lies within the margin of a threshold is decided on its float64 distance (:func:`exact_sq`); the
distances that set delta (nearest other-cluster pairs) are float64 too.  The graph is then the pairs
whose float64 distance is below delta, whatever computed the screen: the ``torch`` backend (chunked
``addmm``) and the ``faiss`` backend (``IndexFlatL2.range_search``, :func:`ball_pairs`) give the same
delta, graph and selection (tested on a pool with duplicated rows).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, ClassVar

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
#: float64 values per chunk of exactly recomputed pairs (two [P, E] gathers: 64 MB)
EXACT_ELEMS = 1 << 22
BACKENDS = ("auto", "torch", "faiss")


def screen_margin(x: Tensor) -> float:
    """An upper bound (2x the worst-case rounding bound) of |float32 ||a - b||^2 - exact| for any two rows
    of ``x`` [N, E], computed as ||a||^2 + ||b||^2 - 2 a.b by a matrix product (torch or faiss)."""
    top = float((x.double() ** 2).sum(1).max()) if x.shape[0] else 0.0
    return 16.0 * (x.shape[1] + 2) * 2.0**-24 * top


def exact_sq(x: Tensor, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """||x_src - x_dst||^2 in float64 [P] (the same value for a pair whatever chunk it is in)."""
    out = np.empty(len(src), np.float64)
    step = max(1, EXACT_ELEMS // max(1, x.shape[1]))
    for s in range(0, len(src), step):
        a = x[torch.from_numpy(np.asarray(src[s:s + step], np.int64))].double()
        b = x[torch.from_numpy(np.asarray(dst[s:s + step], np.int64))].double()
        out[s:s + step] = (a - b).square_().sum(1).numpy()
    return out


def decide_below(x: Tensor, src: np.ndarray, dst: np.ndarray, approx: np.ndarray, thr_sq: float,
                 margin: float) -> np.ndarray:
    """bool [P]: the float64 ||x_src - x_dst||^2 < ``thr_sq``, given screened distances ``approx``
    within ``margin`` of it; only the pairs screened within the margin of the threshold are recomputed."""
    approx = np.asarray(approx, np.float64)
    out = approx < thr_sq - margin
    unsure = np.flatnonzero(~out & (approx < thr_sq + margin))
    if unsure.size:
        out[unsure] = exact_sq(x, src[unsure], dst[unsure]) < thr_sq
    return out


def resolve_backend(backend: str) -> str:
    """"torch" or "faiss" for ``backend`` ("auto": faiss when it is installed).

    Raises:
        ConfigError: an unknown backend, or "faiss" without faiss installed.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"probcover backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "torch":
        return "torch"
    try:
        import faiss  # noqa: F401
    except ImportError:
        if backend == "faiss":
            raise ConfigError("probcover backend 'faiss' needs faiss, which is not installed; "
                              "pip install 'dalkit[faiss]' (or use backend: torch)") from None
        return "torch"
    return "faiss"


def _row_chunk(n: int, block_elems: int) -> int:
    """Rows per [rows, n] distance block."""
    return max(1, min(n, block_elems // max(1, n)))


def nearest_other_cluster_sq(x: Tensor, clusters: Tensor, rows: Tensor | None = None,
                             block_elems: int = BLOCK_ELEMS) -> Tensor:
    """Squared distance from every row to the nearest row of a different cluster, chunked, exact.

    A point's delta-ball is pure (holds only its own cluster) iff delta^2 <= this distance, so one pass
    gives the purity of every delta at once.  Each block of rows is screened against all N points with
    one ``addmm``; every point within twice :func:`screen_margin` of a row's screened minimum is then
    measured in float64 (:func:`exact_sq`), so the result is the float64 minimum, ties included.

    Args:
        x: [N, D] embeddings; clusters: [N] int cluster ids.
        rows: only these row indices [S] (against all N points); None = every row.
    Returns:
        [N] (or [S]) float64 squared distances (inf where every point shares the cluster).
    """
    x = x.float()
    n = x.shape[0]
    rows = torch.arange(n) if rows is None else rows
    margin = 2.0 * screen_margin(x)
    sq_all = (x * x).sum(1)
    out = torch.full((rows.numel(),), float("inf"), dtype=torch.float64)
    step = _row_chunk(n, block_elems)
    for s in range(0, rows.numel(), step):
        idx = rows[s:s + step]
        d = torch.addmm(sq_all[None, :], x[idx], x.T, alpha=-2.0).add_(sq_all[idx, None])
        d.masked_fill_(clusters[idx, None] == clusters[None, :], float("inf"))
        low = d.min(1).values
        r, c = ((d <= (low + margin)[:, None]) & torch.isfinite(d)).nonzero(as_tuple=True)
        exact = torch.from_numpy(exact_sq(x, idx[r].numpy(), c.numpy()))
        best = torch.full((idx.numel(),), float("inf"), dtype=torch.float64)
        out[s:s + idx.numel()] = best.scatter_reduce_(0, r, exact, "amin")
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
    r = r_sq.double()  # compared in float64 with delta * delta, as the graph decides its pairs
    if grid is None:
        k = max(1, math.ceil(alpha * n - 1e-9))
        delta_sq = float(torch.topk(r, k).values[-1])
        if not math.isfinite(delta_sq):
            raise ConfigError("probcover cannot estimate delta: the k-means clustering put (almost) every "
                              "point in one cluster; pass delta explicitly")
        delta = math.sqrt(delta_sq)
        while delta * delta > delta_sq:  # the k-th point stays pure: r >= delta^2 as the graph computes it
            delta = math.nextafter(delta, 0.0)
    else:
        g = torch.tensor(sorted(grid), dtype=torch.float64)
        purity = (r[None, :] >= (g * g)[:, None]).double().mean(1)
        ok = (purity >= alpha).nonzero()
        if ok.numel() == 0:
            raise ConfigError(f"probcover: no delta in delta_grid reaches purity alpha={alpha} (the "
                              f"smallest, {float(g[0]):g}, has purity {float(purity[0]):.3f}); "
                              "add smaller values")
        delta = float(g[int(ok.max())])
    purity = float((r >= delta * delta).double().mean())
    return delta, purity


def ball_pairs(x: Tensor, delta: float, max_edges: int | None = None, with_dist: bool = False,
               block_elems: int = BLOCK_ELEMS, backend: str = "torch"
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Every pair i < j whose float64 ``||x_i - x_j||`` is below ``delta``, in blocks of rows.

    ``backend="torch"``: each block of the upper triangle is one ``addmm`` (||b||^2 - 2 a.b) screened
    against delta^2 - ||a||^2 (the full squared-distance expansion with its clamp costs 2.2-3.3x the bare
    matrix product on 2 CPU cores, and the threshold test does not need it).  ``backend="faiss"``: each
    block of rows is one ``IndexFlatL2.range_search``.  Either screens with :func:`screen_margin` and
    decides the pairs within it in float64 (:func:`decide_below`), so both return the same pairs.
    Memory O(N*D + E).

    Args:
        x: [N, D] embeddings.
        delta: radius (pairs at distance exactly delta are excluded).
        max_edges: raise once the graph would hold more directed edges (2 per pair + N self-loops).
        with_dist: also return the pairs' screened squared distances (within :func:`screen_margin` of
            the float64 ones; :func:`decide_below` decides a threshold on them exactly).
        backend: "torch" or "faiss" (:func:`resolve_backend`).
    Returns:
        (src [P] int32, dst [P] int32, squared distances [P] float32 or None), src < dst, by row.
    Raises:
        ConfigError: more than ``max_edges`` edges.
    """
    x = x.float().contiguous()
    n = x.shape[0]
    thr = float(delta) * float(delta)
    margin = screen_margin(x)
    step = _row_chunk(n, block_elems)
    if backend == "faiss":
        import faiss

        faiss.omp_set_num_threads(torch.get_num_threads())
        index = faiss.IndexFlatL2(x.shape[1])
        xn = x.numpy()
        index.add(xn)
    else:
        sq = (x * x).sum(1)
        # screened ||a - b||^2 < d^2 + m  <=>  ||b||^2 - 2 a.b < d^2 + m - ||a||^2
        row_thr = (thr + margin) - sq
        ar = torch.arange(step)
        upper = ar[None, :] > ar[:, None]  # [step, step] strict upper triangle of a diagonal block
    src_parts: list[np.ndarray] = []
    dst_parts: list[np.ndarray] = []
    dist_parts: list[np.ndarray] = []
    n_pairs = 0
    for s in range(0, n, step):
        e = min(s + step, n)
        if backend == "faiss":
            lims, dists, ids = index.range_search(xn[s:e], thr + margin)
            src_b = np.repeat(np.arange(s, e, dtype=np.int64), np.diff(lims).astype(np.int64))
            above = ids > src_b
            src_b, dst_b, approx = src_b[above], ids[above], dists[above]
        else:
            part = torch.addmm(sq[None, s:], x[s:e], x[s:].T, alpha=-2.0)  # [b, n - s]
            hit = part < row_thr[s:e, None]
            hit[:, : e - s] &= upper[: e - s, : e - s]
            r, c = hit.nonzero(as_tuple=True)
            approx = (part[r, c] + sq[r + s]).numpy()
            src_b, dst_b = (r + s).numpy(), (c + s).numpy()
        keep = decide_below(x, src_b, dst_b, approx, thr, margin)
        n_pairs += int(keep.sum())
        if max_edges is not None and 2 * n_pairs + n > max_edges:
            raise ConfigError(
                f"probcover: the delta-graph (delta={delta:.4g}) exceeds max_edges={max_edges} after "
                f"{e} of {n} rows; pass a smaller delta (or alpha closer to 1) or raise max_edges")
        src_parts.append(src_b[keep].astype(np.int32))
        dst_parts.append(dst_b[keep].astype(np.int32))
        if with_dist:
            dist_parts.append(np.maximum(approx[keep], 0.0).astype(np.float32))
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
                block_elems: int = BLOCK_ELEMS, backend: str = "torch") -> sp.csr_matrix:
    """The delta-ball graph: edge i -> j iff ``||x_i - x_j|| < delta`` (self-loops included), as CSR.

    The relation is symmetric, so row i lists both the ball of i (out-edges) and the points whose balls
    hold i (in-edges).  Built from the upper triangle (:func:`ball_pairs`), so it is exactly symmetric.

    Returns:
        bool CSR matrix [N, N] with ``nnz`` = number of directed edges (N self-loops included).
    Raises:
        ConfigError: the graph would exceed ``max_edges``.
    """
    src, dst, _ = ball_pairs(x, delta, max_edges, block_elems=block_elems, backend=backend)
    return graph_from_pairs(src, dst, x.shape[0], self_loops=delta > 0)


def other_cluster_sq_from_pairs(src: np.ndarray, dst: np.ndarray, dist: np.ndarray, clusters: Tensor,
                                n: int, x: Tensor | None = None) -> Tensor:
    """Nearest other-cluster squared distance [N] over the given pairs only (inf where none); with ``x``
    the cross-cluster pairs are measured in float64 (:func:`exact_sq`) instead of taking ``dist``."""
    src_t, dst_t = torch.from_numpy(src).long(), torch.from_numpy(dst).long()
    cross = clusters[src_t] != clusters[dst_t]
    if x is None:
        d = torch.from_numpy(dist)[cross].double()
    else:
        idx = cross.nonzero().squeeze(1).numpy()
        d = torch.from_numpy(exact_sq(x.float(), src[idx], dst[idx]))
    out = torch.full((n,), float("inf"), dtype=torch.float64)
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
                       sample: int = PURITY_SAMPLE, margin: float | None = None,
                       backend: str = "torch") -> DeltaGraph:
    """delta by purity and its graph, usually in one sweep over the pairs instead of two.

    The exact delta* is the ceil(alpha N)-th largest nearest-other-cluster distance r.  A row sample
    (``sample`` rows against all N) gives r on the sample; its quantile at alpha - margin (3 binomial
    standard errors by default) is an upper bound delta_up >= delta* with high probability.  One sweep
    then collects every pair closer than delta_up with its distance, which holds r_i exactly wherever
    r_i < delta_up: if fewer than ceil(alpha N) points are left unknown, delta* is exact, and the graph
    is the pairs closer than delta*.  Otherwise (a rare miss) it falls back to the two exact sweeps.
    Pools no larger than ``sample`` use the two exact sweeps directly.  ``backend`` runs the sweeps over
    all pairs (:func:`ball_pairs`); every backend gives the same result.

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
        src, dst, dist = ball_pairs(x, upper, max_edges, with_dist=True, backend=backend)
        r_sq = other_cluster_sq_from_pairs(src, dst, dist, clusters, n, x)
        if math.isfinite(float(torch.topk(r_sq, k).values[-1])):  # delta* < delta_up: r known down there
            in_reach = None if grid is None else tuple(g for g in grid if g <= upper)  # r exact below
            if in_reach == ():
                best = math.sqrt(float(torch.topk(r_sq, k).values[-1]))
                raise ConfigError(f"probcover: no delta in delta_grid reaches purity alpha={alpha}; add "
                                  f"values at or below {best:.4g} (the exact largest)")
            delta, purity = choose_delta(r_sq, alpha, in_reach)
            keep = decide_below(x.float(), src, dst, dist, delta * delta, screen_margin(x.float()))
            graph = graph_from_pairs(src[keep], dst[keep], n, self_loops=delta > 0)
            return DeltaGraph(delta, purity, graph, ("sample", "bound"))
        del src, dst, dist
        passes: tuple[str, ...] = ("sample", "bound", "purity", "graph")
    else:
        passes = ("purity", "graph")
    delta, purity = choose_delta(nearest_other_cluster_sq(x, clusters), alpha, grid)
    return DeltaGraph(delta, purity, delta_graph(x, delta, max_edges, backend=backend), passes)


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
        backend: what sweeps the pairs for the graph: "faiss" (``IndexFlatL2.range_search``), "torch"
            (chunked matrix products) or "auto" (faiss when installed).  Every backend gives the same
            delta, graph and picks (the decisions are float64; module docstring).
    """

    source: str = "model"
    normalize: bool = True
    delta: float | None = None
    alpha: float = 0.95
    delta_grid: tuple[float, ...] | None = None
    n_clusters: int | None = None
    max_edges: int = 200_000_000
    backend: str = "auto"

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
        resolve_backend(self.backend)

    #: bytes per directed edge at the graph's peak: the pairs (int32 ends, float32 distance) in blocks and
    #: joined, the float64 checks, the kept ends, the COO rows/cols/data and the CSR built from them
    EDGE_BYTES: ClassVar[int] = 48

    def memory_parts(self, s: Any) -> dict[str, int]:
        """Memory of a selection beyond the pool's outputs (:mod:`dalkit.experiment.memory`): the
        normalised [labeled; unlabeled] features and k-means's copy of them, the distance blocks of the
        sweeps, and the delta-ball graph, bounded by ``max_edges`` (its size depends on the data: the
        bound is what the option allows)."""
        n, e = s.n_unlabeled + s.n_labeled, s.embed_dim
        blocks = BLOCK_ELEMS * (4 * 3 + 1 * 2 + 8 * 4) + 2 * EXACT_ELEMS * 8
        return {"features and the k-means copy (--subset)": n * e * 4 * 2 + n * (8 * 4 + 1),
                "distance blocks of the sweeps": blocks,
                "delta-ball graph (max_edges)": self.EDGE_BYTES * self.max_edges}

    def memory_fix(self, s: Any, available: int) -> str | None:
        """The ``max_edges`` (rounded down to two significant digits) whose graph fits beside the rest
        of the selection in ``available`` bytes, or None when nothing is left for a graph of N edges."""
        rest = sum(v for k, v in self.memory_parts(s).items() if "max_edges" not in k)
        from dalkit.experiment.memory import batch_bytes, pool_outputs_bytes

        edges = (available - rest - pool_outputs_bytes(s) - batch_bytes(s)) // self.EDGE_BYTES
        if edges < 2 * (s.n_unlabeled + s.n_labeled):
            return None
        digits = max(0, len(str(edges)) - 2)
        return f"max_edges={edges // 10**digits * 10**digits}"

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
        backend = resolve_backend(self.backend)
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
                                       self.max_edges, backend=backend)
            delta, purity, graph, passes = found.delta, found.purity, found.graph, found.passes
            lap("delta+graph")
        else:
            delta, purity, passes = float(self.delta), float("nan"), ("graph",)
            graph = ctx.cached(("probcover-graph", self.source, self.normalize, delta),
                               lambda: delta_graph(x, delta, self.max_edges, backend=backend))
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
                "n_random": int(n_random), "passes": passes, "seconds": seconds, "backend": backend,
                **lowered}
        return Selection(ctx.unlabeled_idx[pos_t], torch.from_numpy(scores), info)

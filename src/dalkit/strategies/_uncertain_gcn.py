"""UncertainGCN: a GCN told labeled from unlabeled nodes, queried at a confidence margin.

Reference: Razvan Caramalau, Binod Bhattarai, Tae-Kyun Kim, "Sequential Graph Convolutional Network for
Active Learning", CVPR 2021 (arXiv:2006.10219); reference code
github.com/razvancaramalau/Sequential-GCN-for-Active-Learning (read to confirm the details, not copied).

One round, as the paper (Sec. 3, the sampler) and its reference code do it; the comments below cite
these steps, since the equation numbering was not checked against the published PDF:

1. Nodes: the learner's embeddings of a random subset of the unlabeled pool (``SUBSET = 10000``;
   here the runner's ``subset``, which the ``uncertain-gcn`` method preset sets to 10,000) and of
   every labeled sample, each row L2-normalised: v_i = e_i / ||e_i||.
2. Edges: S = V V^T (cosine similarities), A = D^{-1} (S - I) + I with D the degree matrix of S - I
   (the paper's graph): self-loops removed, each node's neighbourhood normalised by its degree, then the
   node itself added back with weight 1.  The reference code divides the columns instead,
   (S - I) D^{-1} + I; for a symmetric S the two are transposes of each other (option
   ``normalization``).
3. A two-layer GCN f (Kipf & Welling): f = sigmoid(A (dropout(relu(A V W1 + b1))) W2 + b2), hidden 128,
   dropout 0.3, trained full-batch with Adam (lr 1e-3, weight decay 5e-4, 200 epochs) on the paper's
   the paper's loss: L = -1/N_l sum_{labeled} log f(v) - lambda/N_u sum_{unlabeled} log(1 - f(v)),
   lambda = 1.2 (reference default).
4. UncertainGCN: query the unlabeled nodes whose confidence f(v) is closest to the margin
   s_margin = 0.1, argmin |f(v) - s_margin| -- unlabeled samples the GCN finds hardest to tell from
   labeled ones, but not ones it already takes for labeled.

Memory: S = V V^T has rank <= D (the embedding size), so A is never built: A x = D^{-1}(V (V^T x) - x) + x
costs O(M * D) per column, and the whole round O(M * D) memory (M nodes) instead of the M^2 floats of
the dense matrix (400 MB at M = 10,000).  ``normalized_adjacency`` builds the dense matrix for tests and
small graphs.  The first layer's A V is fixed, so it is computed once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from dalkit.errors import ConfigError
from dalkit.strategies.base import QueryContext, Selection, register_strategy, top_k

NORMALIZATIONS = ("row", "column")


def _check_normalization(normalization: str) -> None:
    if normalization not in NORMALIZATIONS:
        raise ConfigError(f"uncertain-gcn normalization must be one of {NORMALIZATIONS}, "
                          f"got {normalization!r}")


def _safe_degree(degree: Tensor, eps: float) -> Tensor:
    """Degrees with |d| <= eps replaced by 1: an isolated node keeps only its own self-loop."""
    return torch.where(degree.abs() > eps, degree, torch.ones_like(degree))


def normalized_adjacency(emb: Tensor, normalization: str = "row", eps: float = 1e-8) -> Tensor:
    """The dense graph of step 2: A = D^{-1} (S - I) + I, S = V V^T, V = rows of ``emb``
    L2-normalised, D = diag of the row sums of S - I.  ``normalization="column"`` gives the reference
    code's (S - I) D^{-1} + I.  Memory M^2 floats: for tests and small graphs; the strategy uses
    :class:`LowRankAdjacency`, the same operator without the matrix.

    Args:
        emb: node features [M, D].
    Returns:
        A [M, M].
    """
    _check_normalization(normalization)
    v = F.normalize(emb.float(), dim=1)
    s = v @ v.T - torch.eye(v.shape[0])  # S - I: no self-loops
    degree = _safe_degree(s.sum(1), eps)  # [M]; S is symmetric, so row sums = column sums
    adj = s / degree[:, None] if normalization == "row" else s / degree[None, :]
    return adj + torch.eye(v.shape[0])


class LowRankAdjacency:
    """The adjacency of :func:`normalized_adjacency` as an operator: ``adj @ x`` without the M x M matrix.

    With S = V V^T of rank <= D:  row:    A x = D^{-1} (V (V^T x) - x) + x,
                                  column: A x = V (V^T (D^{-1} x)) - D^{-1} x + x.
    Memory O(M * D); one product costs 4 * M * D * k flops for x of width k.

    Args:
        emb: node features [M, D] (normalised here).
        normalization: "row" (paper) or "column" (reference code).
    """

    def __init__(self, emb: Tensor, normalization: str = "row", eps: float = 1e-8) -> None:
        _check_normalization(normalization)
        self.v = F.normalize(emb.float(), dim=1)  # [M, D]
        self.normalization = normalization
        # degree of S - I: d = S 1 - 1 = V (V^T 1) - 1
        self.degree = _safe_degree(self.v @ self.v.sum(0) - 1.0, eps)  # [M]

    @property
    def shape(self) -> tuple[int, int]:
        return (self.v.shape[0], self.v.shape[0])

    def __matmul__(self, x: Tensor) -> Tensor:
        vec = x.dim() == 1
        x = x[:, None] if vec else x  # [M, k]
        if self.normalization == "row":
            out = (self.v @ (self.v.T @ x) - x) / self.degree[:, None] + x
        else:
            xd = x / self.degree[:, None]
            out = self.v @ (self.v.T @ xd) - xd + x
        return out.squeeze(1) if vec else out

    def dense(self) -> Tensor:
        """The M x M matrix (tests only)."""
        return self @ torch.eye(self.v.shape[0], device=self.v.device)


def init_gcn_params(in_dim: int, hidden: int, generator: torch.Generator,
                    device: torch.device | str = "cpu") -> dict[str, Tensor]:
    """Parameters of the two graph convolutions, each U(-1/sqrt(fan_out), 1/sqrt(fan_out)) as in Kipf &
    Welling's GCN layer (and the reference): w1 [D, H], b1 [H], w2 [H, 1], b2 [1]."""
    def uniform(shape: tuple[int, ...], fan_out: int) -> Tensor:
        bound = 1.0 / math.sqrt(fan_out)
        return ((torch.rand(shape, generator=generator) * 2 - 1) * bound).to(device).requires_grad_()

    return {"w1": uniform((in_dim, hidden), hidden), "b1": uniform((hidden,), hidden),
            "w2": uniform((hidden, 1), 1), "b2": uniform((1,), 1)}


def gcn_forward(
    x: Tensor,
    adj: Tensor | LowRankAdjacency,
    params: dict[str, Tensor],
    dropout: float = 0.0,
    generator: torch.Generator | None = None,
    ax: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The two-layer GCN: h = relu(A x W1 + b1); logit = A dropout(h) W2 + b2 (sigmoid(logit) = f).

    Args:
        x: node features [M, D].
        adj: A, dense [M, M] or a :class:`LowRankAdjacency`.
        params: from :func:`init_gcn_params`.
        dropout: drop probability on h (training only; 0 in evaluation).
        generator: for the dropout mask (on h's device).
        ax: A x if already known (it is fixed during training): saves one product per epoch.
    Returns:
        (logits [M], hidden h [M, H]).
    """
    ax = adj @ x if ax is None else ax
    h = torch.relu(ax @ params["w1"] + params["b1"])  # A x W1 = (A x) W1
    if dropout > 0:
        keep = torch.rand(h.shape, generator=generator, device=h.device) >= dropout
        h_in = h * keep / (1.0 - dropout)
    else:
        h_in = h
    logits = (adj @ (h_in @ params["w2"])).squeeze(1) + params["b2"]
    return logits, h


def gcn_loss(logits: Tensor, labeled_mask: Tensor, lam: float) -> Tensor:
    """Step 3's loss: -mean_{labeled} log f - lambda * mean_{unlabeled} log(1 - f), f = sigmoid(logits).

    Written with log-sigmoids (log f = -softplus(-z), log(1 - f) = -softplus(z)): finite for any z.
    An empty group contributes 0.
    """
    zero = logits.new_zeros(())
    labeled_term = F.softplus(-logits[labeled_mask]).mean() if labeled_mask.any() else zero
    unlabeled_term = F.softplus(logits[~labeled_mask]).mean() if (~labeled_mask).any() else zero
    return labeled_term + lam * unlabeled_term


def train_gcn(
    emb: Tensor,
    labeled_mask: Tensor,
    generator: torch.Generator,
    hidden: int = 128,
    dropout: float = 0.3,
    lr: float = 1e-3,
    weight_decay: float = 5e-4,
    epochs: int = 200,
    lam: float = 1.2,
    normalization: str = "row",
) -> Tensor:
    """Train the GCN to tell labeled (1) from unlabeled (0) nodes; return f = sigmoid(logit) per node.

    Args:
        emb: node embeddings [M, D] (normalised here: V).
        labeled_mask: [M] bool, True for labeled nodes.
        generator: seeds the initialisation and the dropout masks (any device; a CPU generator is fine).
        hidden, dropout, lr, weight_decay, epochs, lam: the paper's GCN recipe.
        normalization: adjacency normalisation, "row" or "column".
    Returns:
        confidences [M] in (0, 1), evaluated without dropout, on the CPU.
    """
    device = emb.device
    adj = LowRankAdjacency(emb, normalization)
    x = adj.v  # node features: the normalised embeddings
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    g = torch.Generator(device=device).manual_seed(seed)
    params = init_gcn_params(x.shape[1], hidden, torch.Generator().manual_seed(seed), device)
    labeled_mask = labeled_mask.to(device)
    with torch.no_grad():
        ax = adj @ x  # fixed first-layer propagation
    opt = torch.optim.Adam(params.values(), lr=lr, weight_decay=weight_decay)
    with torch.enable_grad():
        for _ in range(epochs):
            opt.zero_grad(set_to_none=True)
            logits, _ = gcn_forward(x, adj, params, dropout, g, ax=ax)
            gcn_loss(logits, labeled_mask, lam).backward()
            opt.step()
    with torch.no_grad():
        logits, _ = gcn_forward(x, adj, params, 0.0, ax=ax)
    return torch.sigmoid(logits).cpu()


def uncertain_gcn_scores(confidence: Tensor, s_margin: float = 0.1) -> Tensor:
    """Step 4, UncertainGCN's rule argmin |f(v) - s_margin|, as a score (higher = pick first):
    -|f(v) - s_margin|.  [N] -> [N]."""
    return -(confidence - s_margin).abs()


@register_strategy("uncertain-gcn")
@dataclass(frozen=True)
class UncertainGCN:
    """Unlabeled nodes whose labeled-vs-unlabeled GCN confidence is closest to s_margin.  Reference:
    Caramalau, Bhattarai & Kim, "Sequential Graph Convolutional Network for Active Learning", CVPR 2021
    (UncertainGCN; steps 1-4 of the module docstring).

    Options:
        (The reference builds its graph on a random 10,000 unlabeled samples: the ``uncertain-gcn``
        method preset sets the runner's ``subset`` to 10,000.  Memory O((U + L) * D): the adjacency
        stays low-rank.)
        hidden: GCN hidden units (128).
        dropout: GCN dropout (0.3).
        lr, weight_decay: Adam (1e-3, 5e-4).
        epochs: full-batch GCN training epochs (200).
        lam: lambda of the loss, the unlabeled term's weight (reference default 1.2).
        s_margin: the confidence margin of UncertainGCN's rule (0.1).
        normalization: "row" (D^{-1}(S - I) + I, the paper's formula) or "column" ((S - I) D^{-1} + I,
            the reference code).
    """

    hidden: int = 128
    dropout: float = 0.3
    lr: float = 1e-3
    weight_decay: float = 5e-4
    epochs: int = 200
    lam: float = 1.2
    s_margin: float = 0.1
    normalization: str = "row"

    def __post_init__(self) -> None:
        def positive_int(name: str, value: object) -> None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"uncertain-gcn {name} must be a positive integer, got {value!r}")

        positive_int("hidden", self.hidden)
        positive_int("epochs", self.epochs)
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"uncertain-gcn dropout must lie in [0, 1), got {self.dropout!r}")
        if not self.lr > 0:
            raise ConfigError(f"uncertain-gcn lr must be positive, got {self.lr!r}")
        if not self.weight_decay >= 0:
            raise ConfigError(f"uncertain-gcn weight_decay must be >= 0, got {self.weight_decay!r}")
        if not self.lam >= 0:
            raise ConfigError(f"uncertain-gcn lam must be >= 0, got {self.lam!r}")
        if not 0.0 <= self.s_margin <= 1.0:
            raise ConfigError(f"uncertain-gcn s_margin must lie in [0, 1] (a sigmoid confidence), "
                              f"got {self.s_margin!r}")
        _check_normalization(self.normalization)

    def graph_nodes(self, ctx: QueryContext, budget: int) -> tuple[Tensor, Tensor]:
        """(positions into ``ctx.unlabeled_idx`` of the unlabeled nodes, node embeddings
        [U_sub + L, D] with the unlabeled nodes first)."""
        positions = torch.arange(ctx.n_unlabeled)  # the runner's ``subset`` narrows the candidates
        unl_emb = ctx.embeddings("unlabeled")
        lab_emb = ctx.embeddings("labeled") if ctx.labeled_idx.numel() else unl_emb[:0]
        return positions, torch.cat([unl_emb, lab_emb]).float()

    def confidences(self, ctx: QueryContext, budget: int) -> tuple[Tensor, Tensor]:
        """(positions of the unlabeled nodes, their GCN confidence f(v) [U_sub])."""
        positions, emb = self.graph_nodes(ctx, budget)
        labeled_mask = torch.zeros(emb.shape[0], dtype=torch.bool)
        labeled_mask[positions.numel():] = True
        conf = train_gcn(emb.to(ctx.device), labeled_mask, ctx.generator, self.hidden, self.dropout,
                         self.lr, self.weight_decay, self.epochs, self.lam, self.normalization)
        return positions, conf[: positions.numel()]

    def memory_parts(self, s: Any) -> dict[str, int]:
        """Memory of a selection beyond the pool's outputs (:mod:`dalkit.experiment.memory`): the node
        embeddings, their normalised copy and A V (the adjacency stays low-rank), and the GCN's
        activations and their gradients (hidden) over every node."""
        from dalkit.experiment.memory import ranking_bytes

        m, e = s.n_unlabeled + s.n_labeled, s.embed_dim
        return {"graph nodes, normalised, and A V (--subset)": 4 * m * e * 4,
                "GCN activations and gradients (hidden, --subset)": m * (12 * self.hidden + 16) * 4,
                "scores and their seeded ranking (--subset)": ranking_bytes(s)}

    def select(self, ctx: QueryContext, budget: int) -> Selection:
        positions, conf = self.confidences(ctx, budget)
        scores = uncertain_gcn_scores(conf, self.s_margin)
        pos = top_k(scores, budget, ctx.generator)
        return Selection(ctx.unlabeled_idx[positions[pos]], scores[pos],
                         {"graph_nodes": int(positions.numel() + ctx.labeled_idx.numel()),
                          "mean_confidence_unlabeled": float(conf.mean())})

"""ALFA-Mix: active learning by feature mixing (Parvaneh et al., CVPR 2022).

Every unlabeled embedding z_u is interpolated towards each class anchor z*_y (the mean labeled
embedding of class y), z~ = (1 - alpha) * z_u + alpha * z*, with a per-dimension ratio alpha.  A sample
whose prediction on some mix differs from its own pseudo-label y^ = argmax f(z_u) is a *candidate*; the
candidates are clustered into ``budget`` groups and the one nearest each centre is labeled.

The ratio (paper, Eq. 3-5): alpha maximises the loss of the pseudo-label inside ||alpha|| <= eps; to
first order, l(f(z~), y^) ~ l(f(z_u), y^) + (alpha (.) (z* - z_u))^T g with g = grad_z l(f(z_u), y^), so

    alpha* = eps * ||z* - z_u||_2 / ||g||_2 * g (/) (z* - z_u)                            (Eq. 5)

((.) and (/) element-wise), which makes the step alpha* (.) (z* - z_u) = eps ||z* - z_u|| g / ||g|| — a
step of length eps * ||z* - z_u|| along the loss gradient.  As in the authors' code
(github.com/AminParvaneh/alpha_mix_active_learning, ``calculate_optimum_alpha``): eps is divided by
sqrt(D), the division is by (z* - z_u + 1e-8), alpha is not clipped, and eps grows in steps of ``epsilon``
(eps, 2 eps, ... up to 1) until more candidates than the budget are found.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dalkit.errors import ConfigError
from dalkit.strategies.base import QueryContext, Selection, register_strategy

#: float elements per [B, C, D] mixing block (16 MB of float32)
BLOCK_ELEMS = 1 << 22


def class_anchors(emb: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Mean labeled embedding of every class, [C, D]; a class without labeled samples gets the mean
    of all labeled embeddings (as the reference code does)."""
    emb = emb.float()
    sums = torch.zeros(num_classes, emb.shape[1]).index_add_(0, labels, emb)
    counts = torch.bincount(labels, minlength=num_classes).float()
    anchors = sums / counts.clamp_min(1.0)[:, None]
    anchors[counts == 0] = emb.mean(0)
    return anchors


def loss_gradients(classifier: nn.Module, z: Tensor, labels: Tensor) -> Tensor:
    """Per-sample gradients grad_z CE(classifier(z), y), [N, D] (rows are independent, so one
    backward pass of the summed loss gives all of them)."""
    with torch.enable_grad():
        z = z.detach().clone().requires_grad_(True)
        loss = F.cross_entropy(classifier(z), labels, reduction="sum")
        (grad,) = torch.autograd.grad(loss, z)
    return grad


def closed_form_alpha(z: Tensor, anchor: Tensor, grad: Tensor, eps: float) -> Tensor:
    """Eq. 5: alpha* = eps ||z* - z_u|| / ||g|| * g (/) (z* - z_u + 1e-8).

    Args:
        z: [..., D] unlabeled embeddings; anchor: [..., D] (broadcast); grad: [..., D] loss gradients.
        eps: the bound per dimension (the strategy passes eps / sqrt(D), as the reference code).
    Returns:
        alpha [..., D]; rows with a zero gradient (a saturated prediction) get alpha = 0.
    """
    diff = anchor - z
    gnorm = grad.norm(dim=-1, keepdim=True)
    scale = eps * diff.norm(dim=-1, keepdim=True) / gnorm.clamp_min(1e-30)
    scale = torch.where(gnorm > 0, scale, torch.zeros_like(scale))
    den = diff + 1e-8
    den = torch.where(den == 0, torch.full_like(den, 1e-8), den)
    return scale * grad / den


def mix(z: Tensor, anchor: Tensor, alpha: Tensor) -> Tensor:
    """(1 - alpha) z + alpha z*, computed as z + alpha (z* - z) (exact when alpha is huge)."""
    return z + alpha * (anchor - z)


def _learn_alpha(classifier: nn.Module, z: Tensor, anchors: Tensor, pred: Tensor, eps: float,
                 iters: int, lr: float, l2_coef: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """The reference's optimised alpha (``learn_alpha``), all anchors at once: alpha ~ N(eps/2, eps/2)
    clamped to [1e-8, eps], then ``iters`` ascent steps on CE(f(z~), y^) - l2_coef ||alpha||, each
    projected back to [1e-8, eps].

    The reference builds a fresh Adam optimiser every iteration, so each step is Adam's first step,
    lr * g / (|g| + 1e-8) (lr / 10 for the last third of the iterations); that is what runs here.  The
    prediction is checked before every step and after the last.

    Args:
        z: [B, D]; anchors: [A, D]; pred: [B] pseudo-labels.
    Returns:
        (flipped [B, A] bool — some evaluated alpha changed the prediction,
         smallest flipping ||alpha|| [B, A], inf where none).
    """
    n, dim = z.shape
    n_anc = anchors.shape[0]
    za, target = z[:, None, :], pred.repeat_interleave(n_anc)
    alpha = torch.normal(eps / 2.0, eps / 2.0, size=(n, n_anc, dim), generator=generator).to(z.device)
    alpha = alpha.clamp_(1e-8, eps)
    flipped = torch.zeros(n, n_anc, dtype=torch.bool, device=z.device)
    best = torch.full((n, n_anc), float("inf"), device=z.device)
    for it in range(iters + 1):
        with torch.enable_grad():
            a = alpha.detach().requires_grad_(True)
            logits = classifier(mix(za, anchors[None], a).reshape(-1, dim))  # [B * A, C]
            flip = (logits.argmax(1) != target).reshape(n, n_anc)
            norm = a.norm(dim=-1)  # [B, A]
            best = torch.where(flip & (norm < best), norm.detach(), best)
            flipped |= flip
            if it == iters:
                break
            # minimise -CE + l2 (the reference's loss), i.e. ascend the loss of the pseudo-label
            ce = F.cross_entropy(logits, target, reduction="none").reshape(n, n_anc)
            (g,) = torch.autograd.grad((l2_coef * norm - ce).sum(), a)
        step = lr if it < iters * 2 / 3 else lr / 10.0
        alpha = (alpha - step * g / (g.abs() + 1e-8)).clamp_(1e-8, eps)
    return flipped, best


def find_candidates(classifier: nn.Module, z: Tensor, anchors: Tensor, eps: float, closed_form: bool = True,
                    clip_alpha: bool = False, learn_iters: int = 5, learn_lr: float = 0.1,
                    l2_coef: float = 0.01, generator: torch.Generator | None = None,
                    block_elems: int = BLOCK_ELEMS) -> tuple[Tensor, Tensor]:
    """Samples whose prediction changes when mixed with some anchor, at one bound eps.

    Args:
        classifier: embeddings [B, D] -> logits [B, C] (the model's final layer, eval mode).
        z: unlabeled embeddings [U, D]; anchors: [A, D].
        eps: the bound: closed form uses eps / sqrt(D) per dimension (reference code); the learned
            variant clamps alpha to [1e-8, eps].
        closed_form: Eq. 5 (True) or the reference's optimised alpha (False).
        clip_alpha: closed form only: clamp alpha to [0, eps / sqrt(D)], so every mix is a true
            interpolation (the paper restricts alpha to [0, 1)); the reference does not clip.
        learn_iters, learn_lr, l2_coef: the optimised variant's settings (reference defaults).
    Returns:
        (candidate [U] bool, smallest flipping ||alpha|| [U], inf where none flips).
    """
    if not closed_form and generator is None:
        raise ValueError("the optimised alpha needs a generator for its random start")
    dev = next(classifier.parameters()).device
    n_unl, dim = z.shape
    n_anc = anchors.shape[0]
    eps_dim = eps / math.sqrt(dim) if closed_form else eps
    changed = torch.zeros(n_unl, dtype=torch.bool)
    best = torch.full((n_unl,), float("inf"))
    step = max(1, block_elems // (n_anc * dim))
    anchors = anchors.float().to(dev)
    for s in range(0, n_unl, step):
        zb = z[s:s + step].float().to(dev)  # [B, D]
        with torch.no_grad():
            pred = classifier(zb).argmax(1)  # y^, the pseudo-label
        if closed_form:
            grad = loss_gradients(classifier, zb, pred)  # [B, D]
            with torch.no_grad():
                za, ga = zb[:, None, :], grad[:, None, :]  # broadcast over the A anchors
                alpha = closed_form_alpha(za, anchors[None], ga, eps_dim)  # [B, A, D]
                if clip_alpha:
                    alpha.clamp_(0.0, eps_dim)
                logits = classifier(mix(za, anchors[None], alpha).reshape(-1, dim))
                flip = (logits.argmax(1).reshape(-1, n_anc) != pred[:, None])  # [B, A]
                norm = alpha.norm(dim=-1).masked_fill(~flip, float("inf"))  # [B, A]
                changed[s:s + step] = flip.any(1).cpu()
                best[s:s + step] = norm.min(1).values.cpu()
        else:
            flip, norm = _learn_alpha(classifier, zb, anchors, pred, eps, learn_iters, learn_lr, l2_coef,
                                      generator)
            changed[s:s + step] = flip.any(1).cpu()
            best[s:s + step] = norm.min(1).values.cpu()
    return changed, best


def epsilon_schedule(epsilon: float, grow: bool = True) -> list[float]:
    """The bounds the reference code tries: epsilon, 2 epsilon, ... while the previous one is < 1."""
    if not grow:
        return [epsilon]
    k = max(1, math.ceil(1.0 / epsilon - 1e-9))
    return [epsilon * (i + 1) for i in range(k)]


def nearest_to_centres(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k-means (``k`` clusters, k-means++, one seeded start) and, per non-empty cluster, the row
    closest to its centre.  Returns row positions (<= k, unique)."""
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, n_init=1, random_state=seed).fit(x)
    lab = km.labels_
    dist = ((x - km.cluster_centers_[lab]) ** 2).sum(1)
    order = np.lexsort((dist, lab))  # by cluster, then distance
    first = np.ones(order.size, dtype=bool)
    first[1:] = lab[order][1:] != lab[order][:-1]
    return order[first]


@register_strategy("alphamix")
@dataclass(frozen=True)
class AlphaMix:
    """Feature mixing with class anchors; label the diverse samples whose prediction flips.
    Reference: Parvaneh et al., "Active Learning by Feature Mixing" (ALFA-Mix), CVPR 2022, Eq. 1-5.

    Candidates are found at eps = epsilon, 2 epsilon, ... (up to 1) until there are more than the
    budget.  Over budget: k-means with ``budget`` clusters on the L2-normalised embeddings of the
    candidates, the candidate nearest each centre (remaining slots, if k-means leaves a cluster empty,
    from the other candidates at random).  Under budget: every candidate, the rest random unlabeled
    samples (as the reference code, but without replacement).

    Options:
        epsilon: the step and first value of the bound eps (0.2: the authors' closed-form setting).
        grow_epsilon: try eps = epsilon, 2 epsilon, ... up to 1 (reference); False uses epsilon only.
        closed_form: alpha from Eq. 5 (True) or the reference's optimised alpha (False: a random start
            and ``learn_iters`` projected ascent steps per anchor).
        clip_alpha: clamp the closed-form alpha to [0, eps / sqrt(D)] (the paper's alpha in [0, 1));
            False = the reference code.
        learn_iters, learn_lr, l2_coef: the optimised variant (reference defaults 5, 0.1, 0.01);
            learn_iters=0 keeps the random alpha (the reference without ``--alpha_opt``).
    """

    epsilon: float = 0.2
    grow_epsilon: bool = True
    closed_form: bool = True
    clip_alpha: bool = False
    learn_iters: int = 5
    learn_lr: float = 0.1
    l2_coef: float = 0.01

    def __post_init__(self) -> None:
        if not self.epsilon > 0:
            raise ConfigError(f"alphamix epsilon must be positive, got {self.epsilon}")
        if self.learn_iters < 0:
            raise ConfigError(f"alphamix learn_iters must be >= 0, got {self.learn_iters}")
        if not self.learn_lr > 0:
            raise ConfigError(f"alphamix learn_lr must be positive, got {self.learn_lr}")
        if self.l2_coef < 0:
            raise ConfigError(f"alphamix l2_coef must be >= 0, got {self.l2_coef}")

    def candidates(self, ctx: QueryContext, budget: int) -> tuple[Tensor, Tensor, float]:
        """(candidate mask [U], smallest flipping ||alpha|| [U], the last eps tried)."""
        classifier = getattr(ctx.model, "classifier", None)
        if not isinstance(classifier, nn.Module):
            raise ConfigError("alphamix needs a model with a `classifier` module on its embeddings "
                              "(every dalkit model has one)")
        if ctx.labeled_idx.numel() == 0:
            raise ConfigError("alphamix needs labeled samples for its class anchors; start from an "
                              "initial labeled set (or use a cold-start strategy such as probcover)")
        classifier.eval()
        z = ctx.embeddings("unlabeled")
        anchors = class_anchors(ctx.embeddings("labeled"), ctx.labeled_labels, ctx.num_classes)
        cand = torch.zeros(z.shape[0], dtype=torch.bool)
        best = torch.full((z.shape[0],), float("inf"))
        eps = self.epsilon
        for eps in epsilon_schedule(self.epsilon, self.grow_epsilon):
            changed, norm = find_candidates(classifier, z, anchors, eps, self.closed_form, self.clip_alpha,
                                            self.learn_iters, self.learn_lr, self.l2_coef, ctx.generator)
            cand |= changed
            best = torch.minimum(best, norm)
            if int(cand.sum()) > budget:
                break
        return cand, best, eps

    def memory_parts(self, s: Any) -> dict[str, int]:
        """Memory of a selection beyond the pool's outputs (:mod:`dalkit.experiment.memory`): the mixing
        blocks, and k-means on the normalised embeddings of up to every candidate (float32 gather and
        normalisation, the float64 copy and scikit-learn's own copy)."""
        u, e = s.n_unlabeled, s.embed_dim
        return {"candidate search blocks": BLOCK_ELEMS * 4 * 6 + u * (4 + 4 + 1 + 1),
                "k-means of the flipping candidates (--subset)": u * e * (4 + 4 + 8 + 8) + u * 8 * 4}

    def select(self, ctx: QueryContext, budget: int) -> Selection:
        clock = time.perf_counter()
        cand, _, eps = self.candidates(ctx, budget)
        seconds = {"candidates": round(time.perf_counter() - clock, 3)}
        clock = time.perf_counter()
        cand_pos = cand.nonzero().squeeze(1)
        n_cand = int(cand_pos.numel())
        if n_cand > budget:
            feats = F.normalize(ctx.embeddings("unlabeled")[cand_pos].float(), dim=1).double().numpy()
            seed = int(torch.randint(0, 2**31 - 1, (1,), generator=ctx.generator))
            chosen = torch.from_numpy(nearest_to_centres(feats, budget, seed).astype(np.int64))
            pos = cand_pos[chosen]
            pool_rest = cand_pos  # k-means left a cluster empty: fill from the other candidates
        else:
            pos = cand_pos
            pool_rest = torch.arange(ctx.n_unlabeled)
        n_fill = budget - pos.numel()
        if n_fill:
            free = torch.ones(ctx.n_unlabeled, dtype=torch.bool)
            free[pos] = False
            rest = pool_rest[free[pool_rest]]
            pos = torch.cat([pos, rest[torch.randperm(rest.numel(), generator=ctx.generator)[:n_fill]]])
        seconds["cluster"] = round(time.perf_counter() - clock, 3)
        info = {"n_candidates": n_cand, "epsilon": eps, "n_random": max(0, budget - n_cand),
                "seconds": seconds}
        return Selection(ctx.unlabeled_idx[pos], None, info)

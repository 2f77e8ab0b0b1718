"""Semi-supervised step functions: FixMatch, FreeMatch and the feature re-alignment module (FA).

The SSAL paper (``papers/002``) trains every AL round with a pseudo-label SSL method (its Eq. 2: labeled
cross-entropy on weak views + cross-entropy of strong views against the weak views' confident
pseudo-labels) and adds FA (its section 3.5): a similarity loss L_s over per-sample feature queues
(Eq. 11-12) and a per-dimension contrastive loss L_c between strong and weak features (Eq. 17-18).

Every piece of maths is a pure function here, tested against naive loops; :func:`ssl_step` assembles
them into one step function for :func:`dalkit.training.fit`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dalkit.data.augment import strong_view, weak_view
from dalkit.training.fit import Batch, StepFn

# -- FixMatch ---------------------------------------------------------------------------------------


def fixmatch_mask(probs_w: Tensor, tau: float) -> tuple[Tensor, Tensor]:
    """Confident pseudo-labels (FixMatch, Sohn et al. 2020, Eq. 2; SSAL paper Eq. 2).

    Args:
        probs_w: softmax of the weak views [B, C] (no gradient).
        tau: fixed confidence threshold.
    Returns:
        (mask float [B]: 1 where max_c p >= tau, pseudo-labels argmax_c p [B]).
    """
    conf, pseudo = probs_w.max(dim=1)
    return (conf >= tau).to(probs_w.dtype), pseudo


def masked_pseudo_label_loss(logits_s: Tensor, pseudo: Tensor, mask: Tensor) -> Tensor:
    """l_u = 1/(mu B) sum_b mask_b * H(pseudo_b, softmax(logits_s_b)): the mean over *all* unlabeled
    samples (masked ones count as 0), as in FixMatch's Eq. 4."""
    return (F.cross_entropy(logits_s, pseudo, reduction="none") * mask).mean()


# -- FreeMatch --------------------------------------------------------------------------------------


class FreeMatchThresholds:
    """Self-adaptive thresholds of FreeMatch (Wang et al. 2023, Eq. 6-9) and its fairness term.

    State, all initialised to 1/C: the global threshold tau_t, the class-wise expected confidence
    p~_t [C] and the histogram of weak-view predictions h~_t [C].  Each step, with q_b the weak-view
    probabilities of the unlabeled batch (EMA momentum lambda):

        tau_t   = lambda tau_{t-1} + (1 - lambda) mean_b max_c q_b          (Eq. 6)
        p~_t(c) = lambda p~_{t-1}(c) + (1 - lambda) mean_b q_b(c)           (Eq. 7)
        h~_t(c) = lambda h~_{t-1}(c) + (1 - lambda) (1/B) #{b: argmax q_b = c}
        tau_t(c) = p~_t(c) / max_c' p~_t(c') * tau_t                        (Eq. 8, MaxNorm)
        mask_b  = 1[max_c q_b >= tau_t(argmax q_b)]                         (Eq. 9)
    """

    def __init__(self, num_classes: int | None = None, momentum: float = 0.999) -> None:
        self.momentum = momentum
        self.tau = self.p_model = self.hist = torch.empty(0)
        if num_classes is not None:
            self._reset(num_classes)

    def _reset(self, c: int) -> None:
        self.tau = torch.tensor(1.0 / c)
        self.p_model = torch.full((c,), 1.0 / c)
        self.hist = torch.full((c,), 1.0 / c)

    def update(self, probs_w: Tensor) -> tuple[Tensor, Tensor]:
        """Update the EMAs with this batch, then return (mask float [B], pseudo-labels [B]).
        The state is sized by the first batch when ``num_classes`` was not given."""
        lam = self.momentum
        probs_w = probs_w.detach().float().cpu()
        if self.p_model.numel() != probs_w.shape[1]:
            self._reset(probs_w.shape[1])
        conf, pseudo = probs_w.max(dim=1)
        counts = torch.bincount(pseudo, minlength=probs_w.shape[1]).float() / probs_w.shape[0]
        self.tau = lam * self.tau + (1 - lam) * conf.mean()
        self.p_model = lam * self.p_model + (1 - lam) * probs_w.mean(0)
        self.hist = lam * self.hist + (1 - lam) * counts
        class_tau = self.p_model / self.p_model.max() * self.tau  # [C]
        return (conf >= class_tau[pseudo]).float(), pseudo

    def class_thresholds(self) -> Tensor:
        """tau_t(c) [C] (Eq. 8)."""
        return self.p_model / self.p_model.max() * self.tau


def fairness_loss(probs_s: Tensor, mask: Tensor, p_model: Tensor, hist: Tensor) -> Tensor:
    """FreeMatch's self-adaptive fairness term (Wang et al. 2023, Eq. 11):
    L_f = -H(SumNorm(p~ / h~), SumNorm(p_bar / h_bar)) = sum_c a_c log b_c, where p_bar and h_bar are the
    mean strong-view probability and the strong-view prediction histogram over the *masked* samples.
    Minimising it spreads the predictions over the classes.

    Args:
        probs_s: strong-view probabilities [B, C] (with gradient).
        mask: [B] float; zero masked samples give a zero loss.
        p_model, hist: FreeMatch's EMAs p~_t and h~_t [C] (no gradient).
    """
    keep = mask > 0
    if not bool(keep.any()):
        return probs_s.sum() * 0.0
    p = probs_s[keep]  # [K, C]
    c = p.shape[1]
    h_bar = torch.bincount(p.detach().argmax(1), minlength=c).to(p.dtype) / p.shape[0]
    p_bar = p.mean(0)

    def sum_norm_ratio(num: Tensor, den: Tensor) -> Tensor:
        inv = torch.where(den > 0, 1.0 / den.clamp_min(1e-12), torch.zeros_like(den))
        r = num * inv
        return r / r.sum().clamp_min(1e-12)

    a = sum_norm_ratio(p_model.to(p), hist.to(p)).detach()
    b = sum_norm_ratio(p_bar, h_bar)
    return (a * torch.log(b + 1e-12)).sum()


# -- Feature re-alignment (SSAL paper, section 3.5) -------------------------------------------------


class FeatureQueues:
    """Per labeled sample: its latest weak-view feature (Q_w) and a FIFO of its last T strong-view
    features (Q_s), SSAL paper section 3.5.

    Args:
        num_labeled: N_l.
        dim: feature size D.
        length: T, strong features kept per sample (the paper's default 10, Figure 2).
    """

    def __init__(self, num_labeled: int, dim: int, length: int = 10) -> None:
        self.weak = torch.zeros(num_labeled, dim)  # [N_l, D]
        self.strong = torch.zeros(num_labeled, length, dim)  # [N_l, T, D], slot t of a ring buffer
        self.weak_seen = torch.zeros(num_labeled, dtype=torch.bool)
        self.count = torch.zeros(num_labeled, dtype=torch.long)  # strong features pushed so far
        self.length = length

    def push(self, idx: Tensor, z_weak: Tensor, z_strong: Tensor) -> None:
        """Replace Q_w[idx] with ``z_weak`` and append ``z_strong`` to Q_s[idx], dropping the oldest
        once T are held.  idx: [B] (unique); z_*: [B, D] (stored detached, on the CPU)."""
        idx = idx.cpu()
        self.weak[idx] = z_weak.detach().float().cpu()
        self.weak_seen[idx] = True
        slot = self.count[idx] % self.length
        self.strong[idx, slot] = z_strong.detach().float().cpu()
        self.count[idx] += 1

    def valid(self) -> Tensor:
        """bool [N_l, T]: slots that hold a feature."""
        return torch.arange(self.length)[None, :] < self.count[:, None]

    def ordered_strong(self, i: int) -> Tensor:
        """Sample i's strong features, oldest first [min(count, T), D] (for inspection and tests)."""
        n = int(self.count[i])
        if n <= self.length:
            return self.strong[i, :n]
        start = n % self.length
        return torch.cat([self.strong[i, start:], self.strong[i, :start]])

    def nearest(self, z_strong_u: Tensor) -> Tensor:
        """Eq. 11: i* = argmax_i max_t cos(z_s^u, q_{i,s,t}) for each unlabeled feature.

        Args:
            z_strong_u: [U, D].
        Returns:
            i* [U] (labeled positions); -1 where no queue holds a feature yet.
        """
        valid = self.valid() & self.weak_seen[:, None]  # [N_l, T]
        if not bool(valid.any()):
            return torch.full((z_strong_u.shape[0],), -1, dtype=torch.long)
        q = F.normalize(self.strong.to(z_strong_u), dim=-1).flatten(0, 1)  # [N_l * T, D]
        sim = F.normalize(z_strong_u.detach(), dim=-1) @ q.T  # [U, N_l * T]
        sim = sim.masked_fill(~valid.flatten().to(sim.device)[None, :], float("-inf"))
        return (sim.argmax(dim=1) // self.length).cpu()


def similarity_loss(z_weak_u: Tensor, z_strong_u: Tensor, queues: FeatureQueues) -> Tensor:
    """L_s (Eq. 12): mean over the unlabeled batch of 1 - cos(z_w^u, q_{i*,w}), i* from Eq. 11 on the
    strong feature.  The gradient flows through z_w^u only (queues are constants).

    Args:
        z_weak_u, z_strong_u: [U, D] features of the weak and strong views of the unlabeled batch.
    """
    i_star = queues.nearest(z_strong_u)  # [U]
    ok = i_star >= 0
    if not bool(ok.any()):
        return z_weak_u.sum() * 0.0
    target = queues.weak[i_star.clamp_min(0)].to(z_weak_u)  # [U, D]
    cos = F.cosine_similarity(z_weak_u, target, dim=1)
    return ((1.0 - cos) * ok.to(cos)).sum() / ok.sum()


def contrastive_loss(z_strong: Tensor, z_weak: Tensor, norm: str = "batch") -> Tensor:
    """L_c (Eq. 17-18): sum_i (1 - E_x[g_i(x_s) g_i(x_w)])^2 over the feature dimensions i.

    The paper asks for "features normalised to modulus 1" so that the per-dimension product is a
    correlation.  ``norm="batch"`` (default) standardises each dimension over the batch (zero mean,
    unit variance), the invariant-feature reading of its reference [52], where E[g_i g_i'] is the
    correlation of dimension i between the views and 1 is attainable.  ``norm="sample"`` is the
    literal reading: each feature vector scaled to unit L2 norm, so sum_i g_i^2 = 1 and the target 1
    per dimension is out of reach (the loss then mostly pushes features to a few dimensions).

    Args:
        z_strong, z_weak: [B, D] (same rows = same samples).
    """
    if norm == "batch":
        def standardise(z: Tensor) -> Tensor:
            return (z - z.mean(0)) / z.std(0, unbiased=False).clamp_min(1e-6)

        zs, zw = standardise(z_strong), standardise(z_weak)
    elif norm == "sample":
        zs, zw = F.normalize(z_strong, dim=1), F.normalize(z_weak, dim=1)
    else:
        raise ValueError(f"norm must be 'batch' or 'sample', got {norm!r}")
    corr = (zs * zw).mean(0)  # [D]: E_x[g_i(x_s) g_i(x_w)]
    return (1.0 - corr).pow(2).sum()


# -- the step function ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FAOptions:
    """Weights and sizes of the feature re-alignment module (SSAL paper, section 3.5)."""

    similarity_weight: float = 1.0
    contrastive_weight: float = 1.0
    queue_length: int = 10
    contrastive_norm: str = "batch"


Masker = Callable[[Tensor], tuple[Tensor, Tensor]]


def ssl_step(
    masker: Masker,
    lambda_u: float,
    flip: bool,
    fa: FAOptions | None = None,
    fairness: FreeMatchThresholds | None = None,
    fairness_weight: float = 0.0,
    n_ops: int = 2,
    log: dict[str, float] | None = None,
    ra_ranges: str = "fixmatch",
) -> StepFn:
    """One pseudo-label SSL step (SSAL paper Eq. 2), optionally with FA:

        L = CE(f(alpha(x_l)), y) + lambda_u * l_u [+ w_f L_f] [+ w_s L_s + w_c L_c]

    One forward pass over [weak labeled | weak unlabeled | strong unlabeled (| strong labeled)], so
    BatchNorm sees every view, as in the reference implementations of FixMatch and FreeMatch.

    Args:
        masker: weak-view probabilities [U, C] -> (mask [U], pseudo-labels [U]).
        lambda_u: weight of the unlabeled loss.
        flip: horizontal flips in the views (natural images; never digits).
        fa: feature re-alignment options, or None (plain SSL).
        fairness: FreeMatch's state, for its fairness term (weight ``fairness_weight``).
        log: if given, receives the latest loss parts (for diagnostics).
        ra_ranges: RandAugment's ranges in the strong views, "fixmatch" (Table 12) or "google".
    """
    state: dict[str, FeatureQueues] = {}

    def step(model: nn.Module, batch: Batch) -> Tensor:
        if batch.u is None or batch.x_raw is None or batch.generator is None:
            raise ValueError("SSL recipes need unlabeled batches: pass unlabeled_ratio > 0 to fit()")
        g = batch.generator
        nl, nu = batch.x_raw.shape[0], batch.u.shape[0]
        views = [weak_view(batch.x_raw, g, flip), weak_view(batch.u, g, flip),
                 strong_view(batch.u, g, flip, n_ops=n_ops, ranges=ra_ranges)]
        if fa is not None:
            views.append(strong_view(batch.x_raw, g, flip, n_ops=n_ops, ranges=ra_ranges))
        logits, emb, _ = model.forward_all(torch.cat(views))
        logits_l, logits_uw, logits_us = logits[:nl], logits[nl:nl + nu], logits[nl + nu:nl + 2 * nu]
        loss_l = F.cross_entropy(logits_l, batch.y)
        probs_w = torch.softmax(logits_uw.detach().float(), dim=1)
        mask, pseudo = masker(probs_w)
        mask, pseudo = mask.to(logits.device), pseudo.to(logits.device)
        loss_u = masked_pseudo_label_loss(logits_us, pseudo, mask)
        loss = loss_l + lambda_u * loss_u
        parts = {"l": loss_l.detach(), "u": loss_u.detach(), "mask": mask.mean()}
        if fairness is not None and fairness_weight > 0:
            loss_f = fairness_loss(torch.softmax(logits_us, 1), mask, fairness.p_model, fairness.hist)
            loss = loss + fairness_weight * loss_f
            parts["f"] = loss_f.detach()
        if fa is not None:
            z_l, z_uw, z_us = emb[:nl], emb[nl:nl + nu], emb[nl + nu:nl + 2 * nu]
            z_ls = emb[nl + 2 * nu:]
            if "q" not in state:
                state["q"] = FeatureQueues(batch.num_labeled, emb.shape[1], fa.queue_length)
            state["q"].push(batch.idx, z_l, z_ls)
            if fa.similarity_weight > 0:
                loss_s = similarity_loss(z_uw, z_us, state["q"])
                loss = loss + fa.similarity_weight * loss_s
                parts["s"] = loss_s.detach()
            if fa.contrastive_weight > 0:
                loss_c = contrastive_loss(z_us, z_uw, fa.contrastive_norm)
                loss = loss + fa.contrastive_weight * loss_c
                parts["c"] = loss_c.detach()
        if log is not None:
            log.update({k: float(v) for k, v in parts.items()})
        return loss

    return step

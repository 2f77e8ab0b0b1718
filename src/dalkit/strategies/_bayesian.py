"""MC-dropout (Bayesian) uncertainty: BALD and EntropyBayesian (max entropy of the MC-averaged prediction).

Both read ``ctx.mc_probs(k, p)``: K dropout masks sampled on the cached penultimate embeddings, with the
model left in eval mode (BatchNorm statistics untouched).  Two strategies with the same (k, p) in one
round share those K passes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from dalkit.errors import ConfigError, DalkitError
from dalkit.strategies.base import QueryContext, Selection, register_strategy, top_k


def mean_entropy_scores(mc_probs: Tensor) -> Tensor:
    """Entropy of the MC-averaged prediction, H[mean_k p_k], with 0 log 0 = 0.  [K, N, C] -> [N]."""
    mean = mc_probs.mean(0)  # [N, C], the MC estimate of p(y | x, D_train)
    return -torch.special.xlogy(mean, mean).sum(1)


def sum_entropy_scores(mc_probs: Tensor) -> Tensor:
    """Sum over the K passes of each pass's entropy, sum_k H[p_k] (the baselines' reference code's
    EntropyBayesian reading).  [K, N, C] -> [N]."""
    return -torch.special.xlogy(mc_probs, mc_probs).sum(2).sum(0)


def bald_scores(mc_probs: Tensor) -> Tensor:
    """BALD mutual information I[y; w | x, D] = H[mean_k p_k] - mean_k H[p_k].  [K, N, C] -> [N].

    Gal, Islam & Ghahramani 2017, Eq. 2 (Houlsby et al. 2011), estimated with K dropout samples.
    ``xlogy`` guards p = 0.  I >= 0 by concavity of H; float rounding can leave ~-1e-7, clamped to 0.
    """
    mean_h = -torch.special.xlogy(mc_probs, mc_probs).sum(2).mean(0)  # [N], E_w[H[y | x, w]]
    return (mean_entropy_scores(mc_probs) - mean_h).clamp_min_(0.0)


MC_MODES = ("embedding", "blocks")


def _check_mc_options(name: str, k: int, p: float | None, k_min: int, mc: str = "embedding") -> None:
    if mc not in MC_MODES:
        raise ConfigError(f"{name} mc must be 'embedding' (dropout on the embedding, BatchNorm in eval mode) "
                          f"or 'blocks' (dropout after every block, train mode), got {mc!r}")
    if not isinstance(k, int) or k < k_min:
        raise ConfigError(f"{name} k (number of MC-dropout passes) must be an integer >= {k_min}, got {k!r}")
    if p is not None and not 0.0 < p < 1.0:
        raise ConfigError(f"{name} p (MC-dropout probability) must lie in (0, 1) or be None, got {p!r}")


def mc_dropout_probs(ctx: QueryContext, k: int, p: float | None, name: str, mc: str = "embedding") -> Tensor:
    """``ctx.mc_probs(k, p)`` [K, U, C], with a model without dropout reported as a ConfigError.

    Raises:
        ConfigError: the effective dropout probability is 0 (advice: set model_dropout or ``p``).
    """
    model_p = getattr(ctx.model, "dropout_p", None)
    advice = (f"{name} needs MC dropout, but the model's dropout is {model_p!r}; set model_dropout "
              "(--model-dropout 0.3) or the strategy's p option (strategy_options p: 0.3, --option p=0.3)")
    if p is None and model_p is not None and model_p <= 0:
        raise ConfigError(advice)
    ctx.embeddings()  # the forward pass runs outside the try: its errors are not dropout errors
    try:
        return ctx.mc_probs(k, p) if mc == "embedding" else ctx.mc_probs(k, p, mode=mc)
    except DalkitError:
        raise
    except ValueError as err:  # DalkitModel.mc_logits_from_embedding: dropout probability <= 0
        raise ConfigError(f"{advice} ({err})") from err


@register_strategy("bald")
@dataclass(frozen=True)
class BALD:
    """Highest mutual information between the label and the weights under MC dropout (BALD).

    Score: I = H[mean_k p_k] - mean_k H[p_k] over K dropout passes; high when the passes are each
    confident but disagree.  Reference: Gal, Islam & Ghahramani 2017, "Deep Bayesian Active Learning
    with Image Data" (ICML), Eq. 2, after Houlsby et al. 2011.

    Options:
        k: number of MC-dropout passes K (>= 2; the paper samples 20 dropout masks).
        p: dropout probability for the MC passes; None = the model's own dropout (must be > 0).
        mc: "embedding" (default: dropout on the cached embedding, BatchNorm in eval mode, K cheap
            classifier passes) or "blocks" (dropout after every block, model in train mode, K full
            passes: the baselines' reference code, ``--preset dm2-paper``).
    """

    k: int = 20
    p: float | None = None
    mc: str = "embedding"

    def __post_init__(self) -> None:
        _check_mc_options("bald", self.k, self.p, k_min=2, mc=self.mc)  # K = 1 makes I identically 0

    def memory_parts(self, s: Any) -> dict[str, int]:
        """Memory of a selection beyond the pool's outputs (:mod:`dalkit.experiment.memory`): the K
        MC-dropout predictions, their log and product temporaries, the batched dropout masks, the
        ranking; ``mc: blocks`` also
        gathers the candidates' inputs."""
        from dalkit.experiment.memory import ranking_bytes

        out = {"MC dropout predictions (k, --subset)": 3 * self.k * s.n_unlabeled * s.num_classes * 4,
               "dropout masks of a 4,096-row block (k)": 3 * self.k * 4096 * s.embed_dim * 4,
               "scores and their seeded ranking (--subset)": ranking_bytes(s)}
        if self.mc == "blocks":
            out["candidate inputs (--subset)"] = s.n_unlabeled * s.input_floats * 4
        return out

    def select(self, ctx: QueryContext, budget: int) -> Selection:
        scores = bald_scores(mc_dropout_probs(ctx, self.k, self.p, "bald", self.mc))
        pos = top_k(scores, budget, ctx.generator)
        return Selection(ctx.unlabeled_idx[pos], scores[pos])


@register_strategy("entropy-bayesian")
@dataclass(frozen=True)
class EntropyBayesian:
    """Highest entropy of the MC-dropout-averaged prediction (Max Entropy with MC dropout).

    Score: H[mean_k p_k], the predictive entropy of the MC estimate of the posterior predictive
    p(y | x, D) ~ 1/K sum_k p(y | x, w_k).  Reference: Gal & Ghahramani 2016, "Dropout as a Bayesian
    Approximation" (ICML), Eq. 8 (MC dropout); as an acquisition function "Max Entropy" in Gal, Islam
    & Ghahramani 2017, Eq. 1.

    Options:
        k: number of MC-dropout passes K (>= 1).
        p: dropout probability for the MC passes; None = the model's own dropout (must be > 0).
        mc: "embedding" (default) or "blocks", as for ``bald``.
        score: "mean" (default: H[mean_k p_k], the entropy of the MC-averaged prediction, Gal et al.
            2017 Eq. 1) or "sum" (sum_k H[p_k], the sum of per-pass entropies of the baselines'
            reference code, ``--preset dm2-paper``).
    """

    k: int = 20
    p: float | None = None
    mc: str = "embedding"
    score: str = "mean"

    def __post_init__(self) -> None:
        _check_mc_options("entropy-bayesian", self.k, self.p, k_min=1, mc=self.mc)
        if self.score not in ("mean", "sum"):
            raise ConfigError(f"entropy-bayesian score must be 'mean' or 'sum', got {self.score!r}")

    def memory_parts(self, s: Any) -> dict[str, int]:
        """Memory of a selection beyond the pool's outputs (:mod:`dalkit.experiment.memory`): the K
        MC-dropout predictions, their log and product temporaries, the batched dropout masks, the
        ranking; ``mc: blocks`` also
        gathers the candidates' inputs."""
        from dalkit.experiment.memory import ranking_bytes

        out = {"MC dropout predictions (k, --subset)": 3 * self.k * s.n_unlabeled * s.num_classes * 4,
               "dropout masks of a 4,096-row block (k)": 3 * self.k * 4096 * s.embed_dim * 4,
               "scores and their seeded ranking (--subset)": ranking_bytes(s)}
        if self.mc == "blocks":
            out["candidate inputs (--subset)"] = s.n_unlabeled * s.input_floats * 4
        return out

    def select(self, ctx: QueryContext, budget: int) -> Selection:
        probs = mc_dropout_probs(ctx, self.k, self.p, "entropy-bayesian", self.mc)
        scores = mean_entropy_scores(probs) if self.score == "mean" else sum_entropy_scores(probs)
        pos = top_k(scores, budget, ctx.generator)
        return Selection(ctx.unlabeled_idx[pos], scores[pos])

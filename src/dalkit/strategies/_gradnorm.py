"""Gradient-norm and loss-prediction strategies: LPLgrad, Ent-GradNorm, LearningLoss.

LPLgrad (Eq. 6-9): the predictive entropy H(p(y|x)) = -sum_c p_c log p_c (Eq. 6) is treated as the
sample's loss; its gradient with respect to every main-model parameter (Eq. 7) is taken per sample,
g_i = ||grad_w H_i||_F (Eq. 8), and the B highest g_i are queried (Eq. 9).  The model is not updated.

Per-sample gradients come from ``torch.func``: ``vmap(grad(H))`` over a functional call of the model,
in chunks so at most ~``chunk_mib`` MiB of per-sample gradients live at once, with the model in eval
mode (BatchNorm uses its running statistics, so a sample's gradient does not depend on the others in
its chunk).  The reference codes score one sample at a time with a backward pass each; the results are
the same (tests compare with such a loop to 1e-5); ``benchmarks/gradnorm_speed.py`` times both.

Norms: ``frobenius`` = sqrt(sum over parameter tensors of ||g_t||^2) (Eq. 8); ``layer-sum`` =
sum_t ||g_t||, what the official LPLgrad and GradNorm codes compute (a norm per parameter tensor, summed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from dalkit.errors import ConfigError
from dalkit.strategies.base import QueryContext, Selection, register_strategy, top_k
from dalkit.training.loss_prediction import LOSS_MODULE, loss_module, predicted_losses

NORMS = ("frobenius", "layer-sum")


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Eq. 6 from logits: -sum_c p_c log p_c via log-softmax (finite for finite logits).
    [..., C] -> [...]."""
    logp = F.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)


def main_parameters(model: nn.Module) -> dict[str, Tensor]:
    """The main model's parameters w_main (detached), without an attached loss-prediction module."""
    prefix = LOSS_MODULE + "."
    return {name: p.detach() for name, p in model.named_parameters() if not name.startswith(prefix)}


def per_sample_grad_norms(
    model: nn.Module,
    x: Tensor,
    chunk_size: int | None = None,
    chunk_mib: float = 256.0,
) -> Tensor:
    """Per-sample, per-parameter-tensor norms of grad_w H(p(y|x_i)) (Eq. 7), vectorised.

    Args:
        model: the classifier (put in eval mode for the call, restored afterwards; not modified).
        x: float inputs [N, C, H, W] on the model's device.
        chunk_size: samples per ``vmap`` call; None sizes it so the chunk's per-sample gradients take
            about ``chunk_mib`` MiB.
    Returns:
        [N, T] float norms ||g_i,t|| for the T parameter tensors of :func:`main_parameters`, on the CPU.
    """
    params = main_parameters(model)
    buffers = {name: b.detach() for name, b in model.named_buffers()}
    n_params = sum(p.numel() for p in params.values())
    if chunk_size is None:
        chunk_size = max(1, min(512, int(chunk_mib * 2 ** 20 // (4 * n_params))))

    def sample_entropy(p: dict[str, Tensor], xi: Tensor) -> Tensor:
        logits = functional_call(model, (p, buffers), (xi.unsqueeze(0),))
        return entropy_from_logits(logits)[0]

    grads_of = vmap(grad(sample_entropy), in_dims=(None, 0))
    was_training = model.training
    model.eval()
    out = torch.empty(x.shape[0], len(params))
    try:
        for start in range(0, x.shape[0], chunk_size):
            g = grads_of(params, x[start:start + chunk_size])
            norms = torch.stack([t.flatten(1).norm(dim=1) for t in g.values()], dim=1)  # [B, T]
            out[start:start + norms.shape[0]] = norms.float().cpu()
    finally:
        model.train(was_training)
    return out


def combine_norms(per_tensor: Tensor, norm: str) -> Tensor:
    """[N, T] per-tensor norms -> [N]: ``frobenius`` (Eq. 8) or ``layer-sum`` (reference codes)."""
    if norm == "frobenius":
        return per_tensor.double().pow(2).sum(dim=1).sqrt().float()
    if norm == "layer-sum":
        return per_tensor.sum(dim=1)
    raise ConfigError(f"norm must be one of {NORMS}, got {norm!r}")


def pool_grad_norms(ctx: QueryContext, chunk_size: int | None = None) -> Tensor:
    """Per-tensor entropy-gradient norms [N_unlabeled, T] of the context's unlabeled candidates, cached
    per round (LPLgrad and Ent-GradNorm on one context share them)."""

    def compute() -> Tensor:
        idx = ctx.unlabeled_idx
        parts = []
        step = 4096  # uint8 -> float conversion in slices; the vmap chunks are smaller
        for start in range(0, idx.numel(), step):
            parts.append(per_sample_grad_norms(ctx.model, ctx.inputs(idx[start:start + step]), chunk_size))
        return torch.cat(parts) if parts else torch.empty(0, len(main_parameters(ctx.model)))

    return ctx.cached(("entropy-gradnorms", chunk_size), compute)


def _check(name: str, norm: str, chunk_size: int | None) -> None:
    if norm not in NORMS:
        raise ConfigError(f"{name} norm must be one of {NORMS}, got {norm!r}")
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int)
                                   or chunk_size < 1):
        raise ConfigError(f"{name} chunk_size must be a positive integer or None, got {chunk_size!r}")


@register_strategy("lplgrad")
@dataclass(frozen=True)
class LPLGrad:
    """Highest norm of the gradient of the predictive entropy with respect to the main model's
    parameters.  Reference: Bagheri et al., "LPLgrad: Optimizing Active Learning Through Gradient Norm
    Sample Selection and Auxiliary Model Training" (Eq. 6-9); the ``lplgrad`` method adds the
    loss-prediction training recipe (section III-B).

    Options:
        norm: "frobenius" (Eq. 8, default) or "layer-sum" (the official code: per-tensor norms summed).
        chunk_size: samples per vectorised gradient call; None = sized to ~256 MiB of gradients.
    """

    norm: str = "frobenius"
    chunk_size: int | None = None

    def __post_init__(self) -> None:
        _check("lplgrad", self.norm, self.chunk_size)

    def select(self, ctx: QueryContext, budget: int) -> Selection:
        scores = combine_norms(pool_grad_norms(ctx, self.chunk_size), self.norm)
        pos = top_k(scores, budget, ctx.generator)
        return Selection(ctx.unlabeled_idx[pos], scores[pos])


@register_strategy("ent-gradnorm")
@dataclass(frozen=True)
class EntGradNorm:
    """Highest gradient norm of the entropy loss, trained with plain cross-entropy.  Reference: Wang et
    al., "Boosting Active Learning via Improving Test Performance", AAAI 2022 (entropy-gradnorm; its
    "expected" scheme, sum_c p_c CE(x, c), is the same entropy and the same gradient).

    Options:
        norm: "layer-sum" (default: the reference code sums the per-parameter-tensor norms) or
            "frobenius" (the norm of the whole gradient vector).
        chunk_size: samples per vectorised gradient call; None = sized to ~256 MiB of gradients.
    """

    norm: str = "layer-sum"
    chunk_size: int | None = None

    def __post_init__(self) -> None:
        _check("ent-gradnorm", self.norm, self.chunk_size)

    def select(self, ctx: QueryContext, budget: int) -> Selection:
        scores = combine_norms(pool_grad_norms(ctx, self.chunk_size), self.norm)
        pos = top_k(scores, budget, ctx.generator)
        return Selection(ctx.unlabeled_idx[pos], scores[pos])


@register_strategy("learning-loss")
@dataclass(frozen=True)
class LearningLoss:
    """Highest loss predicted by the loss-prediction module trained with the model.  Reference: Yoo &
    Kweon, "Learning Loss for Active Learning", CVPR 2019; needs the ``loss-prediction`` recipe (the
    ``learning-loss`` method sets it).
    """

    requires_recipe: ClassVar[tuple[str, ...]] = ("loss-prediction",)

    def select(self, ctx: QueryContext, budget: int) -> Selection:
        if loss_module(ctx.model) is None:
            raise ConfigError("learning-loss needs a model trained with the loss-prediction recipe "
                              "(use the method learning-loss)")
        scores = ctx.cached("predicted-loss", lambda: predicted_losses(
            ctx.model, ctx.pool_images[ctx.unlabeled_idx], ctx.batch_size, ctx.device))
        pos = top_k(scores, budget, ctx.generator)
        return Selection(ctx.unlabeled_idx[pos], scores[pos])


__all__ = ["NORMS", "combine_norms", "entropy_from_logits", "main_parameters", "per_sample_grad_norms",
           "pool_grad_norms"]

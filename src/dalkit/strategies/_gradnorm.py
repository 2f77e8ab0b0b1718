"""Gradient-norm and loss-prediction strategies: LPLgrad, Ent-GradNorm, LearningLoss.

LPLgrad (Eq. 6-9): the predictive entropy H(p(y|x)) = -sum_c p_c log p_c (Eq. 6) is treated as the
sample's loss; its gradient with respect to every main-model parameter (Eq. 7) is taken per sample,
g_i = ||grad_w H_i||_F (Eq. 8), and the B highest g_i are queried (Eq. 9).  The model is not updated.

Per-sample gradients come from ``torch.func``: ``vmap(grad(H))`` over a functional call of the model,
in chunks so at most ~``chunk_mib`` MiB of per-sample gradients live at once, with the model in eval
mode (BatchNorm uses its running statistics, so a sample's gradient does not depend on the others in
its chunk).  By default the Linear/Conv2d weight gradients are not materialised: ``vmap(grad)`` gives
each sample's gradient at those layers' outputs, and the weight-gradient norm follows from it and the
layer's input (``method="factored"``; ``method="vmap"`` materialises everything).  The reference codes
score one sample at a time with a backward pass each; the results are the same (tests compare with
such a loop to 1e-5); ``benchmarks/gradnorm_speed.py`` times the three.

Norms: ``frobenius`` = sqrt(sum over parameter tensors of ||g_t||^2) (Eq. 8); ``layer-sum`` =
sum_t ||g_t||, what the official LPLgrad and GradNorm codes compute (a norm per parameter tensor, summed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

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


def _factored_layers(model: nn.Module, x1: Tensor) -> dict[str, tuple[nn.Module, torch.Size]]:
    """Linear and (ungrouped) Conv2d layers called exactly once in a forward pass of one sample
    ``x1`` [1, C, H, W], with their output shapes: their weight gradients are factored (see
    :func:`per_sample_grad_norms`)."""
    candidates = {name: mod for name, mod in model.named_modules()
                  if not name.startswith(LOSS_MODULE + ".")
                  and (isinstance(mod, nn.Linear) or (isinstance(mod, nn.Conv2d) and mod.groups == 1))}
    calls: dict[str, list[torch.Size]] = {name: [] for name in candidates}
    handles = [mod.register_forward_hook(lambda m, a, out, name=name: calls[name].append(out.shape[1:]))
               for name, mod in candidates.items()]
    try:
        with torch.no_grad():
            model(x1)
    finally:
        for h in handles:
            h.remove()
    return {name: (candidates[name], shapes[0]) for name, shapes in calls.items() if len(shapes) == 1}


def _weight_grad_norms(mod: nn.Module, a: Tensor, delta: Tensor) -> Tensor:
    """||dH/dW||_F per sample from the layer's inputs ``a`` [B, 1, ...] and output gradients ``delta``
    [B, ...] (no per-sample weight gradient over all samples at once for Linear).

    Linear on one vector per sample: dW = delta a^T, so ||dW|| = ||delta|| ||a||.  Conv2d: dW = delta U^T
    with U the unfolded input patches [C_in k^2, P]; either materialised per sample by a batched matrix
    product, or (when P is small) ||dW||^2 = sum_{p,q} (delta_p . delta_q)(u_p . u_q) from two P x P Grams.
    """
    b = a.shape[0]
    if isinstance(mod, nn.Linear):
        return delta.reshape(b, -1).norm(dim=1) * a.reshape(b, -1).norm(dim=1)
    u = F.unfold(a.reshape(b, *a.shape[2:]), mod.kernel_size, mod.dilation, mod.padding,
                 mod.stride)  # [B, C_in k^2, P]
    d = delta.reshape(b, delta.shape[1], -1)  # [B, C_out, P]
    k, p, c_out = u.shape[1], u.shape[2], d.shape[1]
    if p * (c_out + k) < c_out * k:  # Gram route is cheaper
        gram_d = torch.bmm(d.transpose(1, 2), d)  # [B, P, P]
        gram_u = torch.bmm(u.transpose(1, 2), u)
        return (gram_d * gram_u).sum(dim=(1, 2)).clamp_min(0).sqrt()
    return torch.bmm(d, u.transpose(1, 2)).flatten(1).norm(dim=1)


def per_sample_grad_norms(
    model: nn.Module,
    x: Tensor,
    chunk_size: int | None = None,
    chunk_mib: float = 256.0,
    method: str = "factored",
) -> Tensor:
    """Per-sample, per-parameter-tensor norms of grad_w H(p(y|x_i)) (Eq. 7), vectorised.

    ``method="vmap"``: ``vmap(grad(H))`` over every parameter: each sample's full gradient is
    materialised.  ``method="factored"`` (default, same numbers): ``vmap(grad)`` over the parameters
    other than Linear/Conv2d weights and over zero "probes" added to those layers' outputs, which gives
    each sample's output gradient delta; the weight-gradient norms then follow from delta and the
    layer's input (:func:`_weight_grad_norms`) without the outer products that dominate the plain path
    on a CPU.

    Args:
        model: the classifier (put in eval mode for the call, restored afterwards; not modified).
        x: float inputs [N, C, H, W] on the model's device.
        chunk_size: samples per ``vmap`` call; None sizes it so the chunk's per-sample gradients (or
            saved activations) take about ``chunk_mib`` MiB.
        method: "factored" or "vmap".
    Returns:
        [N, T] float norms ||g_i,t|| for the T parameter tensors of :func:`main_parameters`, on the CPU.
    """
    if method not in ("factored", "vmap"):
        raise ValueError(f"method must be 'factored' or 'vmap', got {method!r}")
    params = main_parameters(model)
    buffers = {name: b.detach() for name, b in model.named_buffers()}
    was_training = model.training
    model.eval()
    out = torch.empty(x.shape[0], len(params))
    try:
        layers = _factored_layers(model, x[:1]) if method == "factored" and x.shape[0] else {}
        factored = {f"{name}.weight": name for name in layers}
        free = {k: v for k, v in params.items() if k not in factored}  # differentiated directly
        fixed = {k: v for k, v in params.items() if k in factored}
        per_sample_floats = sum(v.numel() for v in free.values()) + sum(
            2 * shape.numel() for _, shape in layers.values()) + sum(
            int(torch.tensor(layers[n][0].weight.shape[1:]).prod()) * 64 for n in layers)
        if chunk_size is None:
            chunk_size = max(1, min(512, int(chunk_mib * 2 ** 20 // (4 * max(per_sample_floats, 1)))))
        probes = {name: torch.zeros(shape, device=x.device, dtype=x.dtype)
                  for name, (_, shape) in layers.items()}

        def sample_entropy(p: dict[str, Tensor], probe: dict[str, Tensor], xi: Tensor):
            inputs: dict[str, Tensor] = {}

            def make_hook(name: str):
                def hook(mod: nn.Module, args: tuple, output: Tensor) -> Tensor:
                    inputs[name] = args[0]
                    return output + probe[name]
                return hook

            handles = [mod.register_forward_hook(make_hook(name)) for name, (mod, _) in layers.items()]
            try:
                logits = functional_call(model, ({**p, **fixed}, buffers), (xi.unsqueeze(0),))
            finally:
                for h in handles:
                    h.remove()
            return entropy_from_logits(logits)[0], inputs

        grads_of = vmap(grad(sample_entropy, argnums=(0, 1), has_aux=True), in_dims=(None, None, 0))
        for start in range(0, x.shape[0], chunk_size):
            (g_free, g_probe), inputs = grads_of(free, probes, x[start:start + chunk_size])
            cols = []
            for name in params:
                if name in factored:
                    layer = factored[name]
                    cols.append(_weight_grad_norms(layers[layer][0], inputs[layer], g_probe[layer]))
                else:
                    cols.append(g_free[name].flatten(1).norm(dim=1))
            norms = torch.stack(cols, dim=1)  # [B, T]
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
        # a scorer's blocks start at multiples of the slice (or, with a set chunk_size, of the vmap chunk),
        # so every vmap call sees the samples it sees here
        align = chunk_size or _GRAD_SLICE
        return ctx.map_pool(_grad_norm_block, ctx.unlabeled_idx, align, chunk_size)

    return ctx.cached(("entropy-gradnorms", chunk_size), compute)


_GRAD_SLICE = 4096  # uint8 -> float conversion in slices; the vmap chunks are smaller


def _grad_norm_block(model: nn.Module, images: Tensor, device: torch.device | str,
                     chunk_size: int | None) -> Tensor:
    """Per-tensor entropy-gradient norms [B, T] of uint8 pool images (any block of the pool)."""
    from dalkit.data.dataset import to_float

    step = chunk_size * max(1, _GRAD_SLICE // chunk_size) if chunk_size else _GRAD_SLICE
    parts = [per_sample_grad_norms(model, to_float(images[s:s + step], device), chunk_size)
             for s in range(0, images.shape[0], step)]
    return torch.cat(parts) if parts else torch.empty(0, len(main_parameters(model)))


def _check(name: str, norm: str, chunk_size: int | None) -> None:
    if norm not in NORMS:
        raise ConfigError(f"{name} norm must be one of {NORMS}, got {norm!r}")
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int)
                                   or chunk_size < 1):
        raise ConfigError(f"{name} chunk_size must be a positive integer or None, got {chunk_size!r}")


def _grad_norm_memory(s: Any) -> dict[str, int]:
    """Memory of a gradient-norm selection beyond the pool's outputs (:mod:`dalkit.experiment.memory`):
    the per-sample gradient chunks (~256 MiB, x3 for vmap's temporaries), the input slices, per-tensor
    norms [U, T] (T <= 64 parameter tensors counted) and the ranking."""
    from dalkit.experiment.memory import ranking_bytes

    return {"per-sample gradient chunks (chunk_size)": 3 * 256 * 2**20 + 2 * _GRAD_SLICE * s.input_floats * 4,
            "per-tensor gradient norms (--subset)": s.n_unlabeled * 64 * 4,
            "scores and their seeded ranking (--subset)": ranking_bytes(s)}


def _select_by_grad_norm(ctx: QueryContext, budget: int, norm: str, chunk_size: int | None) -> Selection:
    """The ``budget`` unlabeled samples with the highest entropy-gradient norm (ties: seeded)."""
    scores = combine_norms(pool_grad_norms(ctx, chunk_size), norm)
    pos = top_k(scores, budget, ctx.generator)
    return Selection(ctx.unlabeled_idx[pos], scores[pos])


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

    def memory_parts(self, s: Any) -> dict[str, int]:
        return _grad_norm_memory(s)

    def select(self, ctx: QueryContext, budget: int) -> Selection:
        return _select_by_grad_norm(ctx, budget, self.norm, self.chunk_size)


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

    def memory_parts(self, s: Any) -> dict[str, int]:
        return _grad_norm_memory(s)

    def select(self, ctx: QueryContext, budget: int) -> Selection:
        return _select_by_grad_norm(ctx, budget, self.norm, self.chunk_size)


@register_strategy("learning-loss")
@dataclass(frozen=True)
class LearningLoss:
    """Highest loss predicted by the loss-prediction module trained with the model.  Reference: Yoo &
    Kweon, "Learning Loss for Active Learning", CVPR 2019; needs the ``loss-prediction`` recipe (the
    ``learning-loss`` method sets it).
    """

    requires_recipe: ClassVar[tuple[str, ...]] = ("loss-prediction",)

    def memory_parts(self, s: Any) -> dict[str, int]:
        """Memory of a selection beyond the pool's outputs: the candidates' inputs and the ranking."""
        from dalkit.experiment.memory import ranking_bytes

        return {"candidate inputs (--subset)": s.n_unlabeled * s.input_floats * s.input_bytes,
                "scores and their seeded ranking (--subset)": ranking_bytes(s)}

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

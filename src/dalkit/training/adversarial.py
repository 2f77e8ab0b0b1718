"""FGSM counterparts and the paired adversarial loss of DM2-AT (DM2 paper, section 4, Eq. 12-16)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dalkit.errors import ConfigError


def input_range(model: nn.Module) -> tuple[float, float] | None:
    """The range a model's inputs live in, for clipping perturbed inputs: (0, 1) for image models,
    None (no clipping) for models on float pools (``model.input_range``, e.g. the ``features`` model,
    or an adapted model on a float pool: FGSM then perturbs features, unclipped)."""
    return getattr(model, "input_range", (0.0, 1.0))


EPSILON_UNITS = ("input", "std")


def fgsm_step_size(model: nn.Module, epsilon: float, units: str = "input") -> float | Tensor:
    """The FGSM step of ``epsilon`` in ``units``: "input" = the inputs' own units (pixels on the [0, 1]
    scale for images, the raw values of a float pool); "std" = ``epsilon`` standard deviations of each
    input feature (channel, for images), the pool statistics the model standardises its inputs with
    (``model.input_std``): a step of ``epsilon`` in the standardised space the network sees.

    Raises:
        ConfigError: "std" for a model without ``input_std`` (a user's network behind the adapter).
    """
    if units == "input":
        return epsilon
    if units != "std":
        raise ConfigError(f"epsilon_units must be one of {', '.join(EPSILON_UNITS)}, got {units!r}")
    std = getattr(model, "input_std", None)
    if not isinstance(std, Tensor):
        raise ConfigError(f"epsilon_units 'std' needs a model that standardises its inputs (dalkit's models, "
                          f"the features model); {type(getattr(model, 'net', model)).__name__} has no "
                          "input_std: use epsilon_units input")
    return epsilon * std.detach().float()


def fgsm(model: nn.Module, x: Tensor, y: Tensor, epsilon: float | Tensor,
         clip: tuple[float, float] | None | str = "model", batch_size: int = 512) -> Tensor:
    """Fast gradient sign counterparts H = clip(x + eps * sign(grad_x L(theta, x, y))) (Eq. 13, 15, 16).

    The model's mode is left as found; gradients are taken in eval mode so BatchNorm statistics and
    dropout do not change the direction.  Parameter gradients are not touched.

    Args:
        x: float inputs in [0, 1], [B, C, H, W].
        y: the label used in the loss [B]: the true label or the model's prediction (paper versions).
        epsilon: step size (pixel units, [0, 1] scale; feature units on a float pool), or a tensor of
            steps broadcast over x (per channel / feature: :func:`fgsm_step_size` with "std").
        clip: (low, high), None (no clipping) or "model": :func:`input_range` of the model.
    Returns:
        [B, C, H, W], detached.
    """
    if clip == "model":
        clip = input_range(model)
    if isinstance(epsilon, Tensor):
        epsilon = epsilon.to(x.device, x.dtype)
    was_training = model.training
    model.eval()
    out = torch.empty_like(x)
    try:
        with torch.enable_grad():  # callers may sit in a no_grad block (evaluation loops)
            for start in range(0, x.shape[0], batch_size):
                xb = x[start:start + batch_size].detach().clone().requires_grad_(True)
                loss = F.cross_entropy(model(xb), y[start:start + batch_size], reduction="sum")
                (grad,) = torch.autograd.grad(loss, xb)
                h = xb.detach() + epsilon * grad.sign()
                out[start:start + batch_size] = h.clamp_(*clip) if clip is not None else h
    finally:
        model.train(was_training)
    return out


def paired_loss(logits: Tensor, logits_adv: Tensor | None, y: Tensor, paired: Tensor | None,
                class_weight: Tensor | None = None) -> Tensor:
    """Eq. 14 per sample: 0.5 * (L(x, y) + L(H, y)) where a counterpart exists, L(x, y) elsewhere;
    averaged over the batch (with ``class_weight`` [C']: summed with weights w[y_i], the class-balanced
    loss of the DM2 baselines' code).

    Args:
        logits: [B, C] on the clean inputs.
        logits_adv: [P, C] on the counterparts of the P paired rows (in row order), or None.
        y: labels [B].
        paired: bool [B] with P True entries, or None.
    """
    loss = F.cross_entropy(logits, y, reduction="none")  # [B]
    if logits_adv is not None and paired is not None and logits_adv.shape[0] > 0:
        adv = F.cross_entropy(logits_adv, y[paired], reduction="none")  # [P]
        loss = loss.clone()
        loss[paired] = 0.5 * (loss[paired] + adv)
    if class_weight is not None:
        return (loss * class_weight[y]).sum()
    return loss.mean()

"""Step functions (training recipes) for :func:`dalkit.training.fit`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dalkit.training.adversarial import fgsm, fgsm_step_size, paired_loss
from dalkit.training.fit import Batch, StepFn


def supervised_step(model: nn.Module, batch: Batch) -> Tensor:
    """Plain cross-entropy on the labeled batch (Eq. 1); with ``batch.class_weight`` the class-balanced
    sum sum_i w[y_i] CE_i of the DM2 baselines' code."""
    if batch.class_weight is not None:
        ce = F.cross_entropy(model(batch.x), batch.y, reduction="none")
        return (ce * batch.class_weight[batch.y]).sum()
    return F.cross_entropy(model(batch.x), batch.y)


def adversarial_pair_step(regenerate: bool = False, epsilon: float = 0.03, units: str = "input") -> StepFn:
    """DM2-AT recipe: 0.5 * (L(x, y) + L(H, y)) on paired samples, plain CE on the rest (Eq. 14).

    Args:
        regenerate: recompute H by FGSM with the current weights (true label) at every step instead of
            using the counterparts fixed at selection time (the paper).
        epsilon: FGSM step when ``regenerate`` is True, in ``units`` (:func:`fgsm_step_size`).
    """

    def step(model: nn.Module, batch: Batch) -> Tensor:
        if batch.paired is None or batch.x_adv is None or not bool(batch.paired.any()):
            return supervised_step(model, batch)
        paired = batch.paired
        if regenerate:
            x_adv = fgsm(model, batch.x[paired], batch.y[paired], fgsm_step_size(model, epsilon, units))
        else:
            x_adv = batch.x_adv[paired]
        # one forward over the clean batch and the P counterparts: BatchNorm sees both
        logits = model(torch.cat([batch.x, x_adv]))
        clean, adv = logits[: batch.x.shape[0]], logits[batch.x.shape[0]:]
        return paired_loss(clean, adv, batch.y, paired, batch.class_weight)

    return step

"""Robust accuracy: accuracy on corrupted test sets and under FGSM / PGD attacks (DM2 paper, Table 3).

The DM2 paper reports DM2-AT's accuracy on corrupted test sets (MNIST-C, SVHN-C, CIFAR10-C); dalkit
records, beside the clean accuracy of every round, the accuracy on each configured corruption
(:mod:`dalkit.data.corruptions`) and the accuracy under L-infinity FGSM and PGD attacks at a stated
epsilon (pixel units on the [0, 1] scale), with the true test label.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dalkit.data.dataset import to_float
from dalkit.training.adversarial import fgsm
from dalkit.training.evaluate import accuracy


def pgd(model: nn.Module, x: Tensor, y: Tensor, epsilon: float, steps: int = 10,
        step_size: float | None = None, clip: tuple[float, float] = (0.0, 1.0),
        generator: torch.Generator | None = None) -> Tensor:
    """L-infinity projected gradient ascent on the cross-entropy (Madry et al. 2018, Eq. 2 iterated):
    x_{t+1} = Proj_{||x' - x||_inf <= eps, [0, 1]}(x_t + a sign(grad L(x_t, y))), started at x, or, with
    a ``generator``, at a uniform random point of the eps-ball (Madry et al.'s random start).

    Starting at x (no random start) keeps the attack deterministic; with ``steps=1`` and ``a = eps`` it
    is exactly FGSM.  The model's mode is left as found (gradients in eval mode).

    Args:
        x: float inputs [B, C, H, W] in [0, 1]; y: labels [B].
        step_size: a; None = 2.5 eps / steps (Madry et al.).
        generator: seeds the random start (CPU); None = start at x.
    Returns:
        adversarial inputs [B, C, H, W], detached.
    """
    a = 2.5 * epsilon / steps if step_size is None else step_size
    was_training = model.training
    model.eval()
    x0 = x.detach()
    lo, hi = (x0 - epsilon).clamp(min=clip[0]), (x0 + epsilon).clamp(max=clip[1])
    xt = x0.clone()
    if generator is not None:
        noise = (torch.rand(x0.shape, generator=generator) * 2 - 1).to(x0.device, x0.dtype) * epsilon
        xt = torch.max(torch.min(x0 + noise, hi), lo)
    try:
        with torch.enable_grad():
            for _ in range(steps):
                xt.requires_grad_(True)
                loss = F.cross_entropy(model(xt), y, reduction="sum")
                (grad,) = torch.autograd.grad(loss, xt)
                xt = torch.max(torch.min(xt.detach() + a * grad.sign(), hi), lo)
    finally:
        model.train(was_training)
    return xt.detach()


PGD_SEED = 9177  # random starts are the same for every method, seed and round


def attack_accuracy(model: nn.Module, images: Tensor, labels: Tensor, attack: str, epsilon: float,
                    steps: int = 10, batch_size: int = 512, device: torch.device | str = "cpu",
                    restarts: int = 0) -> float:
    """Accuracy (fraction) on ``attack`` ("fgsm" or "pgd") counterparts of uint8 ``images``, built with
    the true labels.

    Args:
        restarts: PGD only.  0 = one attack started at x (deterministic); k >= 1 = k attacks from
            random starts in the eps-ball (seeded by ``PGD_SEED``, the restart and the batch), a sample
            counting as correct only if it resists all k (the worst case, Madry et al.).
    """
    correct = 0
    for start in range(0, images.shape[0], batch_size):
        x = to_float(images[start:start + batch_size], device)
        y = labels[start:start + batch_size].to(device)
        if attack == "fgsm":
            advs = [fgsm(model, x, y, epsilon)]
        elif restarts == 0:
            advs = [pgd(model, x, y, epsilon, steps)]
        else:
            advs = [pgd(model, x, y, epsilon, steps,
                        generator=torch.Generator().manual_seed(PGD_SEED + 1_000_003 * k + start))
                    for k in range(restarts)]
        ok = torch.ones(y.shape[0], dtype=torch.bool, device=y.device)
        with torch.inference_mode():
            model.eval()
            for x_adv in advs:
                ok &= model(x_adv).argmax(1) == y
        correct += int(ok.sum())
    return correct / max(1, images.shape[0])


def robust_metrics(model: nn.Module, labels: Tensor, corrupted: dict[str, Tensor], clean_images: Tensor,
                   epsilon: float | None, pgd_steps: int = 10, batch_size: int = 1024,
                   device: torch.device | str = "cpu", pgd_restarts: int = 0) -> dict[str, object]:
    """The robustness fields of a round record.

    Args:
        labels: test labels [N]; clean_images: uint8 test images [N, C, H, W].
        corrupted: {"name:severity": uint8 corrupted test images [N, C, H, W]}.
        epsilon: attack radius (None: no attacks).
    Returns:
        {"corrupt_acc": {key: acc}, "corrupt_acc_mean": mean over keys} when corruptions are given, and
        {"fgsm_acc", "pgd_acc", "attack_epsilon", "pgd_steps"} when ``epsilon`` is set (and
        "pgd_restarts" when PGD starts at random points).
    """
    out: dict[str, object] = {}
    if corrupted:
        accs = {k: accuracy(model, v, labels, batch_size, device) for k, v in corrupted.items()}
        out["corrupt_acc"] = accs
        out["corrupt_acc_mean"] = float(sum(accs.values()) / len(accs))
    if epsilon is not None:
        bs = max(1, batch_size // 2)
        out["fgsm_acc"] = attack_accuracy(model, clean_images, labels, "fgsm", epsilon, batch_size=bs,
                                          device=device)
        out["pgd_acc"] = attack_accuracy(model, clean_images, labels, "pgd", epsilon, pgd_steps, bs, device,
                                         pgd_restarts)
        out["attack_epsilon"] = epsilon
        out["pgd_steps"] = pgd_steps
        if pgd_restarts:
            out["pgd_restarts"] = pgd_restarts
    return out


__all__ = ["attack_accuracy", "pgd", "robust_metrics"]

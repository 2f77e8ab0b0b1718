"""``robust_metrics`` against FGSM and PGD run by hand on a tiny model, one sample at a time.

FGSM (Goodfellow et al. 2015): x' = clip(x + eps sign(grad_x CE(f(x), y)), 0, 1).  PGD (Madry et al.
2018), started at x without random start: ``steps`` times x <- Proj_{B_inf(x0, eps) and [0, 1]}(x + a
sign(grad_x CE(f(x), y))) with a = 2.5 eps / steps.  Accuracy is over the true labels, model in eval
mode.  The hand-run numbers differ between step counts and from the clean accuracy, so a metric that
ignores ``pgd_steps`` or reports the clean accuracy as FGSM accuracy disagrees.
"""

from __future__ import annotations

import pytest
import torch

from dalkit.training.robust import robust_metrics
from test_steps import TinyNet, ce


def hand_attack(model, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int,
                step_size: float) -> torch.Tensor:
    out = []
    for i in range(x.shape[0]):
        x0 = x[i:i + 1]
        xt = x0.clone()
        for _ in range(steps):
            xt = xt.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(ce(model(xt)[0], int(y[i])), xt)
            xt = xt.detach() + step_size * g.sign()
            xt = torch.minimum(torch.maximum(xt, x0 - eps), x0 + eps).clamp(0, 1)
        out.append(xt.detach())
    return torch.cat(out)


def hand_accuracy(model, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return sum(int(model(x[i:i + 1])[0].argmax()) == int(y[i]) for i in range(len(y))) / len(y)


@pytest.fixture(scope="module")
def setting():
    model = TinyNet(seed=8, scale=1.5).eval()
    g = torch.Generator().manual_seed(4)
    images = (torch.rand(60, 1, 8, 8, generator=g) * 255).round().to(torch.uint8)
    x = images.float() / 255
    with torch.no_grad():
        labels = model(x).argmax(1)
    labels[::5] = (labels[::5] + 1) % 3  # some samples misclassified before any attack
    return model, images, x, labels


def test_fgsm_accuracy_is_the_hand_run_attack_and_below_clean_accuracy(setting):
    model, images, x, labels = setting
    eps = 0.05
    out = robust_metrics(model, labels, {}, images, eps, pgd_steps=3, batch_size=16)
    clean = hand_accuracy(model, x, labels)
    fgsm = hand_accuracy(model, hand_attack(model, x, labels, eps, 1, eps), labels)
    assert fgsm < clean - 0.05  # the attack bites on this model
    assert out["fgsm_acc"] == pytest.approx(fgsm)
    assert out["attack_epsilon"] == eps and out["pgd_steps"] == 3


@pytest.mark.parametrize("steps", [1, 3, 8])
def test_pgd_accuracy_is_the_hand_run_attack_with_the_given_steps(setting, steps):
    model, images, x, labels = setting
    eps = 0.05
    out = robust_metrics(model, labels, {}, images, eps, pgd_steps=steps, batch_size=16)
    expect = hand_accuracy(model, hand_attack(model, x, labels, eps, steps, 2.5 * eps / steps), labels)
    assert out["pgd_acc"] == pytest.approx(expect)
    assert out["pgd_steps"] == steps


def test_the_step_count_matters_on_this_model(setting):
    """The hand-run PGD accuracies for 1, 3 and 8 steps are not all equal (so the test above separates a
    metric that always runs one step)."""
    model, _, x, labels = setting
    accs = {s: hand_accuracy(model, hand_attack(model, x, labels, 0.05, s, 2.5 * 0.05 / s), labels)
            for s in (1, 3, 8)}
    assert accs[1] != accs[3] or accs[1] != accs[8], accs

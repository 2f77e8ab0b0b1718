"""Robust accuracy: FGSM/PGD accuracy against the closed form of a linear two-class model, PGD's
projection, and corrupted-set accuracy against a direct count."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dalkit.data.corruptions import corrupt
from dalkit.training.adversarial import fgsm
from dalkit.training.robust import attack_accuracy, pgd, robust_metrics


class Linear2(nn.Module):
    """logits = W x + b on flattened 1x4x4 images; two classes."""

    num_classes = 2

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.lin = nn.Linear(16, 2)
        with torch.no_grad():
            self.lin.weight.copy_(torch.randn(2, 16, generator=g))
            self.lin.bias.zero_()

    def forward(self, x):
        return self.lin(x.flatten(1))


def images(n: int, seed: int = 1) -> torch.Tensor:
    """uint8 images whose pixels lie in [0.3, 0.7]: an eps <= 0.3 attack never meets the clip."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, 4, 4, generator=g) * 0.4 * 255 + 0.3 * 255).round().to(torch.uint8)


def closed_form_robust(model: Linear2, imgs: torch.Tensor, labels: torch.Tensor, eps: float) -> float:
    """For two classes the worst L-inf perturbation lowers the margin by eps * ||w_y - w_o||_1."""
    x = imgs.float().div(255).flatten(1)
    w = model.lin.weight.detach()
    ok = 0
    for i in range(len(labels)):
        y = int(labels[i])
        d = w[y] - w[1 - y]
        margin = float(d @ x[i])
        ok += margin - eps * float(d.abs().sum()) > 0
    return ok / len(labels)


@pytest.mark.parametrize("eps", [0.01, 0.05, 0.2])
def test_fgsm_and_pgd_accuracy_match_the_linear_closed_form(eps):
    model = Linear2()
    imgs = images(400)
    with torch.no_grad():
        labels = model(imgs.float() / 255).argmax(1)  # clean accuracy 1
    labels[::7] = 1 - labels[::7]  # some misclassified samples too
    expect = closed_form_robust(model, imgs, labels, eps)
    assert 0 < expect < 0.9 or eps == 0.01
    assert attack_accuracy(model, imgs, labels, "fgsm", eps, batch_size=64) == pytest.approx(expect)
    assert attack_accuracy(model, imgs, labels, "pgd", eps, steps=5, batch_size=64) == pytest.approx(expect)


def test_pgd_one_full_step_is_fgsm_and_stays_in_the_ball(trainer, digits):
    model = trainer(digits.train, torch.arange(300), epochs=2)
    x = digits.test.images[:50].float() / 255
    y = digits.test.labels[:50]
    one = pgd(model, x, y, 0.1, steps=1, step_size=0.1)
    torch.testing.assert_close(one, fgsm(model, x, y, 0.1), rtol=0, atol=1e-6)
    many = pgd(model, x, y, 0.1, steps=10)
    assert float((many - x).abs().max()) <= 0.1 + 1e-6
    assert float(many.min()) >= 0 and float(many.max()) <= 1
    with torch.no_grad():
        ce = nn.functional.cross_entropy
        assert float(ce(model(many), y)) >= float(ce(model(one), y)) - 1e-4  # more steps, higher loss


def test_robust_metrics_fields(trainer, digits):
    model = trainer(digits.train, torch.arange(300), epochs=2)
    test = digits.test
    corrupted = {k: corrupt(test.images, k.split(":")[0], int(k.split(":")[1]), seed=0)
                 for k in ("gaussian_noise:5", "rotate:2")}
    out = robust_metrics(model, test.labels, corrupted, test.images, 0.1, pgd_steps=3)
    for k, v in corrupted.items():
        with torch.no_grad():
            direct = float((model(v.float() / 255).argmax(1) == test.labels).float().mean())
        assert out["corrupt_acc"][k] == pytest.approx(direct)
    assert out["corrupt_acc_mean"] == pytest.approx(sum(out["corrupt_acc"].values()) / 2)
    assert out["pgd_acc"] <= out["fgsm_acc"] + 0.02
    assert out["attack_epsilon"] == 0.1 and out["pgd_steps"] == 3
    assert robust_metrics(model, test.labels, {}, test.images, None) == {}

"""Issue 15, item 6: RandAugment's FixMatch ranges, FreeMatch's fairness weight, PGD with random starts
and restarts."""

from __future__ import annotations

import pytest
import torch

from dalkit.data.augment import rand_augment
from dalkit.errors import ConfigError
from dalkit.experiment import ExperimentConfig, run_experiment
from dalkit.training import TrainConfig, create_recipe
from dalkit.training.robust import PGD_SEED, attack_accuracy, pgd


def _factors(ranges: str, n: int = 4000) -> torch.Tensor:
    """Brightness factor per image: brightness blends with black, so out = f * x on a 0.4 image."""
    x = torch.full((n, 1, 4, 4), 0.4)
    out = rand_augment(x, torch.Generator().manual_seed(0), n_ops=1, cutout_frac=0.0, ops=("brightness",),
                       ranges=ranges)
    return out[:, 0, 0, 0] / 0.4


def test_fixmatch_enhancement_factors_are_uniform_on_005_095():
    f = _factors("fixmatch")
    assert float(f.min()) >= 0.05 - 1e-6 and float(f.max()) <= 0.95 + 1e-6
    assert float(f.min()) < 0.07 and float(f.max()) > 0.93
    assert float(f.mean()) == pytest.approx(0.5, abs=0.02)  # U[0.05, 0.95]
    hist = torch.histc(f, bins=9, min=0.05, max=0.95)
    assert float(hist.min()) > 0.8 * len(f) / 9  # flat
    g = _factors("google")  # RandAugment's 1 +- 0.95 m
    assert float(g.max()) > 1.8 and float(g.min()) < 0.1 and float(g.mean()) == pytest.approx(1.0, abs=0.03)


def test_fixmatch_posterize_keeps_4_to_7_bits():
    x = torch.ones(2000, 1, 2, 2)  # level 255: b bits keep 255 & ~(2^(8-b) - 1)
    levels = {"fixmatch": set(), "google": set()}
    for ranges in levels:
        out = rand_augment(x, torch.Generator().manual_seed(1), n_ops=1, cutout_frac=0.0, ops=("posterize",),
                           ranges=ranges)
        levels[ranges] = set((out[:, 0, 0, 0] * 255).round().int().tolist())
    assert levels["fixmatch"] == {240, 248, 252, 254}  # 4, 5, 6, 7 bits
    assert levels["google"] == {240, 248, 252, 254, 255}  # 4..8 bits
    with pytest.raises(ValueError, match="ranges"):
        rand_augment(x, torch.Generator(), ranges="cifar")


def test_ssl_recipe_defaults_and_options():
    fm = create_recipe("freematch")
    assert fm.fairness == 0.001  # every FreeMatch config the authors ship (USB): ent_loss_ratio 0.001
    assert fm.ra_ranges == "fixmatch" and create_recipe("fixmatch").ra_ranges == "fixmatch"
    assert create_recipe("fixmatch", ra_ranges="google").ra_ranges == "google"
    with pytest.raises(ConfigError, match="ra_ranges"):
        create_recipe("freematch", ra_ranges="wide")


class Quadratic(torch.nn.Module):
    """Two classes; class 1's logit is 50 * ||x - c||^2 - 0.2 with c = 127/255: at the centre of the
    eps-ball the gradient vanishes, so PGD started at x = c never moves while a random start escapes."""

    def forward(self, x):
        c = torch.tensor(127.0) / 255
        d = ((x - c) ** 2).flatten(1).sum(1)
        return torch.stack([torch.zeros_like(d), 50 * d - 0.2], 1)


def test_random_start_finds_what_the_deterministic_start_misses():
    imgs = torch.full((8, 1, 2, 2), 127, dtype=torch.uint8)  # exactly the centre c
    labels = torch.zeros(8, dtype=torch.long)
    eps = 0.2
    assert attack_accuracy(Quadratic(), imgs, labels, "pgd", eps, steps=5) == 1.0
    assert attack_accuracy(Quadratic(), imgs, labels, "pgd", eps, steps=5, restarts=1) == 0.0


def test_restarts_take_the_worst_case_over_seeded_starts(trainer, digits):
    model = trainer(digits.train, torch.arange(300), epochs=2)
    imgs, labels = digits.test.images[:120], digits.test.labels[:120]
    eps = 0.08
    acc = attack_accuracy(model, imgs, labels, "pgd", eps, steps=3, batch_size=60, restarts=3)
    ok = torch.ones(120, dtype=torch.bool)
    for start in (0, 60):
        x = imgs[start:start + 60].float() / 255
        y = labels[start:start + 60]
        for k in range(3):
            gen = torch.Generator().manual_seed(PGD_SEED + 1_000_003 * k + start)
            adv = pgd(model, x, y, eps, 3, generator=gen)
            assert float((adv - x).abs().max()) <= eps + 1e-6
            with torch.no_grad():
                ok[start:start + 60] &= model.eval()(adv).argmax(1) == y
    assert acc == pytest.approx(float(ok.float().mean()))
    one = attack_accuracy(model, imgs, labels, "pgd", eps, steps=3, batch_size=60, restarts=1)
    assert acc <= one
    start_only = pgd(model, imgs[:4].float() / 255, labels[:4], eps, steps=1, step_size=0.0,
                     generator=torch.Generator().manual_seed(0))
    moved = (start_only - imgs[:4].float() / 255).abs()
    assert float(moved.max()) <= eps + 1e-6 and float(moved.mean()) > eps / 4  # a uniform start


def test_pgd_restarts_in_a_run(digits):
    cfg = ExperimentConfig(dataset="digits", method="random", initial_size=20, budget=10, rounds=0,
                           seeds=(0,), pool_size=300, train=TrainConfig(epochs=1, batch_size=32, min_steps=8),
                           device="cpu",
                           attack_epsilon=0.05, pgd_steps=2, pgd_restarts=2)
    (rec,) = run_experiment(cfg, splits=digits, progress=False)
    assert rec["pgd_restarts"] == 2 and 0 <= rec["pgd_acc"] <= rec["test_acc"] + 1e-9
    with pytest.raises(ConfigError, match="pgd_restarts"):
        cfg.replace(pgd_restarts=-1)


def test_corrupted_test_sets_are_generated_once_per_test_split(digits, monkeypatch):
    from dalkit.experiment import robustness

    calls = []
    real = robustness.corrupt

    def counting(images, name, severity, seed=0):
        calls.append(name)
        return real(images, name, severity, seed=seed)

    monkeypatch.setattr(robustness, "corrupt", counting)
    robustness._CACHE.clear()
    cfg = ExperimentConfig(dataset="digits", test_corruptions=("stripe:1", "fog:2"))
    first = robustness.corrupted_test_sets(cfg, digits.test)
    again = robustness.corrupted_test_sets(cfg, digits.test)
    assert calls == ["stripe", "fog"] and all(first[k] is again[k] for k in first)
    other = robustness.corrupted_test_sets(cfg, digits.test.subset(torch.arange(50)))
    assert calls == ["stripe", "fog", "stripe", "fog"] and other["fog:2"].shape[0] == 50
    robustness._CACHE.clear()

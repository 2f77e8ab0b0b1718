"""Robustness experiments end to end on real digits: open-set pool with the discarding oracle, the
long-tailed pool, corrupted/attacked test accuracy in every round record and in the report."""

from __future__ import annotations

import pytest
import torch

from dalkit.data.poolnoise import add_open_set, long_tail_counts, long_tail_indices, photo_crops
from dalkit.errors import ConfigError
from dalkit.experiment import ExperimentConfig, RunDirectory, run_experiment
from dalkit.experiment import round as round_module
from dalkit.experiment.config import config_from_dict
from dalkit.experiment.runner import prepare_data
from dalkit.report.tables import markdown_table, summarize
from dalkit.training import TrainConfig

QUICK_TRAIN = TrainConfig(epochs=1, batch_size=32, min_steps=8, lr=3e-3)


def config(method: str = "entropy", **changes) -> ExperimentConfig:
    values = dict(dataset="digits", model="cnn", method=method, initial_size=20, budget=10, rounds=3,
                  seeds=(0,), pool_size=300, train=QUICK_TRAIN, device="cpu")
    values.update(changes)
    return ExperimentConfig(**values)


def test_long_tail_counts_by_hand():
    assert long_tail_counts(100, 3, 100.0) == [100, 10, 1]
    assert long_tail_counts(80, 5, 16.0) == [80, 40, 20, 10, 5]
    labels = torch.arange(10).repeat(50)  # 50 per class
    keep = long_tail_indices(labels, 10, 10.0, seed=0)
    counts = torch.bincount(labels[keep], minlength=10).tolist()
    assert counts == long_tail_counts(50, 10, 10.0)
    assert counts[0] == 50 and counts[-1] == 5
    assert torch.equal(keep, long_tail_indices(labels, 10, 10.0, seed=0))


def test_open_set_pool_composition(digits):
    pool = digits.train.subset(torch.arange(300))
    merged, mask = add_open_set(pool, 0.25, "photos", seed=3)
    assert len(merged) == 400 and int(mask.sum()) == 100 and not bool(mask[:300].any())
    assert torch.equal(merged.images[:300], pool.images)
    assert merged.images.shape[1:] == pool.images.shape[1:]
    again, _ = add_open_set(pool, 0.25, "photos", seed=3)
    assert torch.equal(again.images, merged.images)
    crops = photo_crops(50, (1, 8, 8), seed=0)
    assert float(crops.float().std(0).mean()) > 10  # varied images, not one repeated crop


def test_open_set_discard_charges_the_budget_and_never_trains(digits, monkeypatch):
    cfg = config("random", open_set_fraction=0.5, open_set_oracle="discard", rounds=4, budget=20)
    data = prepare_data(cfg, digits)
    ood = data.ood_mask
    assert int(ood.sum()) == 300 and len(data.pool) == 600
    trained: list[torch.Tensor] = []
    real_fit = round_module.fit

    def spy_fit(model, trainset, *args, **kwargs):
        trained.append(trainset.images.clone())
        return real_fit(model, trainset, *args, **kwargs)

    monkeypatch.setattr(round_module, "fit", spy_fit)
    records = run_experiment(cfg, None, splits=digits, progress=False)
    labeled = set()
    for r in records:
        assert r["n_labeled"] == 20 + 20 * r["round"]  # budget charged for every pick
        sel = torch.tensor(r["selected"], dtype=torch.long)
        assert r["n_ood_selected"] == int(ood[sel].sum())
        assert not labeled & set(r["selected"])  # discarded picks are never offered again
        labeled |= set(r["selected"])
    picked_ood = sum(r["n_ood_selected"] for r in records)
    assert 10 < picked_ood < 70  # random picks: about half of 80
    assert records[-1]["n_ood_labeled"] == picked_ood
    for r, imgs in zip(records, trained, strict=True):
        assert r["n_trained"] == r["n_labeled"] - r["n_ood_labeled"] == imgs.shape[0]
    ood_imgs = {bytes(x.numpy()) for x in data.pool.images[ood]}
    assert not any(bytes(x.numpy()) in ood_imgs for imgs in trained for x in imgs)


def test_open_set_random_label_oracle_trains_on_ood(digits):
    cfg = config("random", open_set_fraction=0.5, open_set_oracle="random-label", rounds=2, budget=20)
    records = run_experiment(cfg, None, splits=digits, progress=False)
    assert records[-1]["n_trained"] == records[-1]["n_labeled"]
    assert records[-1]["n_ood_labeled"] > 0


def test_imbalanced_pool(digits):
    cfg = config(imbalance_ratio=10.0, pool_size=None)
    data = prepare_data(cfg, digits)
    counts = torch.bincount(data.pool.labels, minlength=10).tolist()
    base = int(torch.bincount(digits.train.labels, minlength=10).min())
    assert counts == long_tail_counts(base, 10, 10.0)


def test_robust_fields_in_records_and_report(tmp_path, digits):
    cfg = config("margin", test_corruptions=("gaussian_noise:4", "rotate:3"), attack_epsilon=0.1,
                 pgd_steps=2, seeds=(0, 1), rounds=2)
    records = run_experiment(cfg, tmp_path / "run", splits=digits, progress=False)
    for r in records:
        assert set(r["corrupt_acc"]) == {"gaussian_noise:4", "rotate:3"}
        assert r["corrupt_acc_mean"] == pytest.approx(sum(r["corrupt_acc"].values()) / 2)
        assert 0 <= r["pgd_acc"] <= 1 and 0 <= r["fgsm_acc"] <= 1
        assert r["attack_epsilon"] == 0.1
    s = summarize(records)
    assert set(s["robust"]) == {"corrupt_acc_mean", "fgsm_acc", "pgd_acc"}
    table = markdown_table({"margin": s})
    assert "AUBC corrupted" in table and "AUBC PGD" in table
    # the same corrupted test set under every seed and method
    again = run_experiment(cfg.replace(method="random", seeds=(0,)), None, splits=digits, progress=False)
    assert again[0]["corrupt_acc"] == records[0]["corrupt_acc"]  # round 0: same model, same sets
    saved = RunDirectory(tmp_path / "run").read_config()  # survives the round trip through the file
    assert saved.test_corruptions == ("gaussian_noise:4", "rotate:3") and saved.same_experiment(cfg)


def test_bad_robustness_fields():
    for bad in (dict(test_corruptions=["smog:1"]), dict(test_corruptions=["fog:9"]),
                dict(attack_epsilon=2.0), dict(attack_epsilon=0), dict(pgd_steps=0),
                dict(open_set_fraction=1.0), dict(open_set_oracle="ask"), dict(imbalance_ratio=0.5),
                dict(open_set_source="nope")):
        with pytest.raises(Exception) as info:
            config(**bad)
        assert isinstance(info.value, ConfigError) or type(info.value).__name__ == "UnknownNameError"
    cfgs = config_from_dict({"dataset": "digits", "test_corruptions": {"name": "all", "severity": 2}})
    assert len(cfgs[0].test_corruptions) > 10

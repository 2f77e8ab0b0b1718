"""The reference protocols (issue 15, items 3-4): the DM2 baselines' MNIST network, lr schedule,
class-balanced loss and every-class initial set; LearningLoss/LPLgrad's warm start (``retrain:
continue``) with bit-exact resume; the presets that switch them on."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from dalkit.errors import BudgetError, ConfigError, RunDirectoryError
from dalkit.experiment import (
    ExperimentConfig,
    RunDirectory,
    config_from_dict,
    initial_labeled,
    run_experiment,
)
from dalkit.experiment.round import ModelSpec, train_round
from dalkit.models import create_model
from dalkit.training import TrainConfig, TrainSet, create_recipe, fit, supervised_step
from dalkit.training.adversarial import paired_loss
from dalkit.training.fit import Batch, class_weights

QUICK = TrainConfig(epochs=1, batch_size=32, min_steps=8, lr=3e-3)


# -- the baselines' MNIST network ----------------------------------------------------------------------------
def test_smallnet_is_the_reference_layout_computed_by_hand():
    torch.manual_seed(0)
    net = create_model("smallnet", 1, 10, [0.0], [1.0]).eval()
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items() if not k.startswith("input_")}
    assert shapes == {"classifier.weight": (10, 128), "classifier.bias": (10,), "conv1.weight": (32, 1, 5, 5),
                      "conv1.bias": (32,), "conv2.weight": (64, 32, 5, 5), "conv2.bias": (64,),
                      "fc.weight": (128, 1024), "fc.bias": (128,)}
    x = torch.rand(3, 1, 28, 28)
    h = F.relu(F.max_pool2d(F.conv2d(x, net.conv1.weight, net.conv1.bias), 2))  # 24 -> 12
    h = F.relu(F.max_pool2d(F.conv2d(h, net.conv2.weight, net.conv2.bias), 2))  # 8 -> 4
    emb = h.reshape(3, 1024) @ net.fc.weight.T + net.fc.bias  # no activation after fc1 (reference)
    logits = emb @ net.classifier.weight.T + net.classifier.bias
    assert torch.allclose(net.embed(x), emb, atol=1e-5) and torch.allclose(net(x), logits, atol=1e-5)
    assert bool((net.embed(x) < 0).any())  # linear embedding: negative values survive
    assert net.dropout_p == 0.0
    with pytest.raises(ValueError, match="at least 16 px"):
        create_model("smallnet", 1, 10, image_size=8)


# -- class-balanced loss ---------------------------------------------------------------------------------
def test_class_weights_and_the_balanced_sum_by_hand():
    labels = torch.tensor([0, 0, 0, 1, 2])
    w = class_weights(labels, TrainConfig(batch_size=8, class_balance="one-batch"))
    assert torch.allclose(w, torch.tensor([1 / 3.00001, 1 / 1.00001, 1 / 1.00001], dtype=torch.float64))
    assert class_weights(labels, TrainConfig(batch_size=4, class_balance="one-batch")) is None  # 2 batches
    assert class_weights(labels, TrainConfig(batch_size=4, class_balance="always")) is not None
    assert class_weights(labels, TrainConfig(batch_size=8)) is None  # default off
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 3.0, 0.0],
                           [0.5, 0.0, 0.0]])
    ce = [-torch.log_softmax(logits[i], 0)[labels[i]] for i in range(5)]
    expect = sum(float(ce[i]) * float(w[labels[i]]) for i in range(5))  # sum_i w[y_i] CE_i, not a mean

    class Fixed(torch.nn.Module):
        def forward(self, x):
            return logits

    batch = Batch(torch.zeros(5, 1, 2, 2), labels, class_weight=w.float())
    assert float(supervised_step(Fixed(), batch)) == pytest.approx(expect, rel=1e-5)
    assert float(paired_loss(logits, None, labels, None, w.float())) == pytest.approx(expect, rel=1e-5)
    with pytest.raises(ConfigError, match="class_balance"):
        TrainConfig(class_balance="sometimes")


def test_fit_hands_the_weights_only_while_the_set_fits_one_batch():
    seen = []

    def step(model, batch):
        seen.append(batch.class_weight)
        return model(batch.x).sum() * 0

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    imgs = torch.zeros(6, 1, 2, 2, dtype=torch.uint8)
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    fit(model, TrainSet(imgs, labels), step, TrainConfig(epochs=1, batch_size=8, class_balance="one-batch"),
        torch.Generator().manual_seed(0))
    assert seen[-1] is not None and torch.allclose(seen[-1], torch.tensor([0.5, 1 / 3, 1.0]), atol=1e-4)
    seen.clear()
    fit(model, TrainSet(imgs, labels), step, TrainConfig(epochs=1, batch_size=4, class_balance="one-batch"),
        torch.Generator().manual_seed(0))
    assert seen == [None, None]


def test_lr_drops_tenfold_after_epoch_20_of_50():
    """One parameter, loss = w (gradient 1), plain SGD: w moves by exactly the lr of each step."""
    w = torch.nn.Parameter(torch.zeros(()))

    class One(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = w

    cfg = TrainConfig(epochs=50, batch_size=8, optimizer="sgd", lr=0.1, momentum=0.0, lr_decay_at=0.4)
    fit(One(), TrainSet(torch.zeros(2, 1, 1, 1, dtype=torch.uint8), torch.zeros(2, dtype=torch.long)),
        lambda model, batch: model.w * 1.0, cfg, torch.Generator().manual_seed(0))
    assert float(w.detach()) == pytest.approx(-(20 * 0.1 + 30 * 0.01), abs=1e-6)


# -- every-class initial set -------------------------------------------------------------------------------
def test_every_class_initial_set(digits):
    labels = digits.train.labels
    n = len(labels)
    misses = 0
    for seed in range(20):
        plain = initial_labeled(n, 20, seed)
        misses += torch.unique(labels[plain]).numel() < 10
        full = initial_labeled(n, 20, seed, labels=labels)
        assert torch.unique(labels[full]).numel() == 10 and full.numel() == 20
        assert torch.equal(full, initial_labeled(n, 20, seed, labels=labels))  # a function of the seed
    assert misses >= 5  # ~79 % of uniform 20-label draws miss a class: the reason for the option
    ood = torch.zeros(n, dtype=torch.bool)
    ood[:200] = True
    picked = initial_labeled(n, 20, 3, ood, labels)
    assert not bool(ood[picked].any()) and torch.unique(labels[picked]).numel() == 10
    with pytest.raises(BudgetError, match="initial_size >= the 10 classes"):
        initial_labeled(n, 9, 0, labels=labels)


def test_every_class_runs_end_to_end_and_is_refused_when_impossible(digits):
    cfg = ExperimentConfig(dataset="digits", method="random", initial_size=10, budget=5, rounds=1, seeds=(0,),
                           pool_size=300, train=QUICK, device="cpu", initial_set="every-class")
    recs = run_experiment(cfg, splits=digits, progress=False)
    assert recs[0]["n_labeled"] == 10
    with pytest.raises(BudgetError, match="every-class"):
        run_experiment(cfg.replace(initial_size=8), splits=digits, progress=False)
    with pytest.raises(ConfigError, match="initial_set"):
        cfg.replace(initial_set="balanced")


# -- retrain: continue ---------------------------------------------------------------------------------------
def test_continue_starts_from_the_given_weights(digits):
    spec = ModelSpec("cnn", 10)
    recipe = create_recipe("loss-prediction")
    idx = torch.arange(20)
    first, *_ = train_round(spec, recipe, QUICK, digits.train.images, digits.train.labels, idx, 0, 0)
    kept = {k: v.clone() for k, v in first.state_dict().items()}
    assert any(k.startswith("loss_module.") for k in kept)  # the loss module travels with the model
    frozen = TrainConfig(epochs=1, batch_size=32, optimizer="sgd", lr=1e-12, momentum=0.0)
    warm, *_ = train_round(spec, recipe, frozen, digits.train.images, digits.train.labels, idx, 0, 1,
                             init_state=kept)
    cold, *_ = train_round(spec, recipe, frozen, digits.train.images, digits.train.labels, idx, 0, 1)
    for k, v in warm.state_dict().items():
        if v.is_floating_point():
            assert torch.allclose(v, kept[k], atol=1e-6), k
    assert not torch.allclose(cold.state_dict()["conv1.weight"], kept["conv1.weight"])


class Interrupt:
    def __init__(self, after: int) -> None:
        self.after = after

    def __call__(self, record: dict) -> None:
        if record["seed"] == 0 and record["round"] == self.after:
            raise KeyboardInterrupt


def _strip(records):
    return [{k: v for k, v in r.items() if k not in ("train_s", "query_s")} for r in records]


def test_continue_resumes_bit_exactly_and_differs_from_scratch(tmp_path, digits):
    cfg = ExperimentConfig(dataset="digits", method="learning-loss", initial_size=20, budget=10, rounds=3,
                           seeds=(0,), pool_size=300, train=QUICK, device="cpu", retrain="continue")
    full = run_experiment(cfg, tmp_path / "A", splits=digits, progress=False)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, tmp_path / "B", splits=digits, progress=False, on_round=Interrupt(1))
    state = RunDirectory(tmp_path / "B").load_state(0)
    assert sorted(state) == ["model_round0", "model_round1"]
    resumed = run_experiment(cfg, tmp_path / "B", splits=digits, progress=False)
    assert _strip(resumed) == _strip(full)
    assert sorted(RunDirectory(tmp_path / "B").load_state(0)) == ["model_round1", "model_round2"]
    scratch = run_experiment(cfg.replace(retrain="scratch"), splits=digits, progress=False)
    assert scratch[0]["test_acc"] == full[0]["test_acc"]  # round 0 is the same fresh model
    assert [r["test_acc"] for r in scratch[1:]] != [r["test_acc"] for r in full[1:]]
    # a run whose state lost the weights cannot continue: refused with a message, nothing changed
    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, tmp_path / "C", splits=digits, progress=False, on_round=Interrupt(0))
    (tmp_path / "C" / "state" / "seed0.pt").unlink()
    before = (tmp_path / "C" / "rounds.jsonl").read_bytes()
    with pytest.raises(RunDirectoryError, match="retrain: continue cannot resume"):
        run_experiment(cfg, tmp_path / "C", splits=digits, progress=False)
    assert (tmp_path / "C" / "rounds.jsonl").read_bytes() == before


# -- presets ------------------------------------------------------------------------------------------------
def test_lplgrad_paper_preset():
    (c,) = config_from_dict({"preset": "lplgrad-paper", "dataset": "mnist", "method": "lplgrad"})
    assert c.retrain == "continue"
    t = c.train
    assert (t.optimizer, t.lr, t.momentum, t.weight_decay, t.epochs, t.batch_size) == ("sgd", 0.1, 0.9, 5e-4,
                                                                                       200, 128)
    assert int(round(t.lr_decay_at * t.epochs)) == 160
    assert c.recipe_options == {"detach_after": 0.6} and int(0.6 * 200) == 120
    (e,) = config_from_dict({"preset": "lplgrad-paper", "method": "entropy", "retrain": "scratch",
                             "train": {"epochs": 20}})
    assert e.retrain == "scratch" and e.train.epochs == 20 and e.train.lr == 0.1 and e.recipe_options == {}


def test_dm2_paper_cli_epochs_keep_the_preset_schedule(tmp_path):
    from dalkit.cli import main

    out = tmp_path / "r"
    rc = main(["run", "--preset", "dm2-paper", "--dataset", "digits", "--method", "random", "--rounds", "1",
               "--budget", "5", "--initial-size", "10", "--seeds", "0", "--epochs", "2", "--out", str(out),
               "--quiet"])
    assert rc == 0
    import yaml

    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["train"]["epochs"] == 2 and saved["train"]["lr_decay_at"] == 0.4
    assert saved["train"]["class_balance"] == "one-batch" and saved["initial_set"] == "every-class"
    assert saved["model"] == "cnn"  # 8 px digits: the 28 px network is not forced on them
    rounds = [json.loads(x) for x in (out / "rounds.jsonl").read_text().splitlines()]
    assert len(rounds) == 2

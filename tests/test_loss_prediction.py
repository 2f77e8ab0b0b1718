"""The loss-prediction recipe (Yoo & Kweon 2019; LPLgrad Eq. 1-4) and the lplgrad / learning-loss
methods end to end."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from dalkit.cli import main
from dalkit.errors import ConfigError
from dalkit.experiment import ExperimentConfig, run_experiment
from dalkit.experiment.runner import check_experiment, resolved_options
from dalkit.models import create_model
from dalkit.training import (
    Batch,
    LossPredictionModule,
    TrainConfig,
    attach_loss_module,
    create_recipe,
    predicted_losses,
    ranking_loss,
)

QUICK_TRAIN = TrainConfig(epochs=2, batch_size=32, min_steps=8, lr=3e-3)


def naive_ranking_loss(pred: list[float], true: list[float], margin: float) -> float:
    half = len(pred) // 2
    total = 0.0
    for m in range(half):
        n = m + half
        d = 1.0 if true[m] > true[n] else -1.0
        total += max(0.0, margin - d * (pred[m] - pred[n]))
    return total / half


def test_ranking_loss_hand_worked_and_against_a_loop():
    pred, true = torch.tensor([3.0, 1.0, 0.0, 2.0]), torch.tensor([1.0, 2.0, 0.5, 0.1])
    # pairs (0, 2): d = +1, 1 - 3 < 0 -> 0;  (1, 3): d = +1, 1 - (1 - 2) = 2  -> mean 1.0
    assert float(ranking_loss(pred, true, 1.0)) == pytest.approx(1.0)
    assert float(ranking_loss(pred, true, 0.5)) == pytest.approx(0.75)
    # d = -1 when the first sample's true loss is not larger (ties included)
    tie = torch.tensor([1.0, 1.0])
    assert float(ranking_loss(torch.tensor([0.0, 0.0]), tie, 1.0)) == pytest.approx(1.0)
    assert float(ranking_loss(torch.tensor([0.0, 3.0]), tie, 1.0)) == pytest.approx(0.0)
    g = torch.Generator().manual_seed(0)
    for size in (2, 7, 32):  # an odd batch drops its last sample
        p, t = torch.randn(size, generator=g), torch.rand(size, generator=g)
        expected = naive_ranking_loss(p.tolist(), t.tolist(), 1.3)
        assert float(ranking_loss(p, t, 1.3)) == pytest.approx(expected, abs=1e-6)
    assert float(ranking_loss(torch.tensor([1.0]), torch.tensor([2.0]))) == 0.0


def test_module_shape_and_attachment_leave_the_model_unchanged():
    torch.manual_seed(0)
    model = create_model("resnet18", 3, 10, image_size=8)
    stats = {k: v.clone() for k, v in model.state_dict().items()}
    attach_loss_module(model, (3, 8, 8), hidden=16)
    assert isinstance(model.loss_module, LossPredictionModule)
    assert [b.in_features for b in model.loss_module.blocks] == [64, 128, 256, 512]
    assert model.loss_module.out.in_features == 4 * 16
    assert all(torch.equal(stats[k], model.state_dict()[k]) for k in stats)  # BN statistics untouched
    x = torch.rand(5, 3, 8, 8)
    _, stages = model.eval().forward_features(x)
    hand = torch.cat([F.relu(fc(s.mean(dim=(2, 3)))) for fc, s in zip(model.loss_module.blocks, stages,
                                                                          strict=True)], 1)
    torch.testing.assert_close(model.loss_module(stages), model.loss_module.out(hand).squeeze(1))


def _grads(model, loss):
    model.zero_grad()
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_step_is_eq4_and_detaches_the_features_after_the_set_fraction(digits):
    torch.manual_seed(0)
    model = attach_loss_module(create_model("cnn", 1, 10, dropout=0.0, image_size=8), (1, 8, 8))
    x = digits.train.images[:16].float() / 255
    y = digits.train.labels[:16]
    step = create_recipe("loss-prediction", margin=1.0, weight=0.5, detach_after=0.6).step()
    model.train()
    logits, _, stages = model.forward_all(x)
    per_sample = F.cross_entropy(logits, y, reduction="none")
    expected = per_sample.mean() + 0.5 * ranking_loss(model.loss_module(stages), per_sample, 1.0)
    for epoch in (0, 5, 6, 9):
        loss = step(model, Batch(x, y, epoch=epoch, epochs=10)).detach()
        assert float(loss) == pytest.approx(float(expected.detach()), rel=1e-6)
    ce_only = _grads(model, F.cross_entropy(model(x), y))
    early = _grads(model, step(model, Batch(x, y, epoch=5, epochs=10)))  # 5 < floor(0.6 * 10)
    late = _grads(model, step(model, Batch(x, y, epoch=6, epochs=10)))
    main = [n for n in ce_only if not n.startswith("loss_module.") and not n.startswith("classifier.")]
    # before the switch the ranking loss reaches the feature extractor; afterwards only w_aux learns from it
    assert any(not torch.allclose(early[n], ce_only[n]) for n in main)
    assert all(torch.allclose(late[n], ce_only[n], atol=1e-7) for n in main)
    assert any(n.startswith("loss_module.") for n in late)


def test_module_parameters_are_saved_and_restored_with_the_model_state(digits_model_lp, tmp_path):
    state = digits_model_lp.state_dict()
    assert any(k.startswith("loss_module.") for k in state)
    torch.save(state, tmp_path / "model.pt")
    fresh = attach_loss_module(create_model("cnn", 1, 10, image_size=8), (1, 8, 8))
    fresh.load_state_dict(torch.load(tmp_path / "model.pt"))
    images = (torch.rand(9, 1, 8, 8) * 255).to(torch.uint8)
    torch.testing.assert_close(predicted_losses(fresh, images), predicted_losses(digits_model_lp, images))


@pytest.mark.parametrize("options", [{"margin": 0}, {"margin": -1.0}, {"weight": 0.0}, {"weight": -2},
                                     {"detach_after": 1.5}, {"detach_after": -0.1}, {"hidden": 0},
                                     {"margin": "big"}])
def test_bad_recipe_options_raise_config_errors_naming_them(options):
    with pytest.raises(ConfigError, match=next(iter(options))):
        create_recipe("loss-prediction", **options)


def config(method: str, **changes) -> ExperimentConfig:
    values = dict(dataset="digits", model="cnn", method=method, initial_size=20, budget=10, rounds=2,
                  seeds=(0,), pool_size=200, train=QUICK_TRAIN, device="cpu")
    values.update(changes)
    return ExperimentConfig(**values)


@pytest.mark.parametrize("method", ["lplgrad", "learning-loss"])
def test_methods_run_end_to_end_deterministically(method, digits):
    resolved = resolved_options(config(method))
    assert resolved["recipe"]["name"] == "loss-prediction" and resolved["strategy"]["name"] == method
    a = run_experiment(config(method, subset=60), None, splits=digits, progress=False)
    b = run_experiment(config(method, subset=60), None, splits=digits, progress=False)
    assert [r["selected"] for r in a] == [r["selected"] for r in b]
    assert all(len(r["selected"]) == 10 for r in a[:-1]) and a[0]["n_candidates"] == 60


def test_lplgrad_selection_with_or_without_the_auxiliary_module(digits):
    # the ablation: the same selection rule on a model trained without w_aux
    cfg = config("lplgrad", recipe="supervised", rounds=1)
    recs = run_experiment(cfg, None, splits=digits, progress=False)
    assert len(recs[0]["selected"]) == 10


def test_learning_loss_without_its_recipe_is_refused_before_anything_is_written(tmp_path, digits, capsys):
    with pytest.raises(ConfigError, match="loss-prediction"):
        check_experiment(config("learning-loss", recipe="supervised"), tmp_path / "run", digits)
    assert not (tmp_path / "run").exists()
    base = ["run", "--dataset", "digits", "--initial-size", "10", "--budget", "5", "--rounds", "1",
            "--seeds", "0", "--epochs", "1", "--device", "cpu", "--quiet"]
    for extra in (["--method", "learning-loss", "--recipe", "supervised"],
                  ["--method", "lplgrad", "--recipe-option", "margin=0"],
                  ["--method", "lplgrad", "--recipe-option", "lambda=1"],
                  ["--method", "ent-gradnorm", "--option", "norm=l3"]):
        assert main([*base, *extra, "--out", str(tmp_path / "cli")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("dalkit: error:")
        assert not (tmp_path / "cli").exists()


def test_copying_a_model_keeps_its_module(digits_model_lp):
    clone = copy.deepcopy(digits_model_lp)
    assert isinstance(clone.loss_module, LossPredictionModule)

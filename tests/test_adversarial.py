"""DM2-AT pieces (DM2 paper section 4, Eq. 12-16): FGSM counterparts, the paired loss, the step
function and the recipe, each against an independent computation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dalkit.errors import ConfigError
from dalkit.models import DigitCNN
from dalkit.training import AdversarialPairs, Batch, adversarial_pair_step, fgsm, paired_loss
from dalkit.training.recipes import create_recipe


def small_model(dropout: float = 0.3, seed: int = 0) -> DigitCNN:
    torch.manual_seed(seed)
    return DigitCNN(in_channels=1, num_classes=10, dropout=dropout, image_size=8)


def inputs(n: int, seed: int = 0) -> torch.Tensor:
    """Float images in [0, 1] with many pixels exactly at 0 and 1, so clipping matters."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=g)
    x[:, :, :2] = 0.0
    x[:, :, -2:] = 1.0
    return x


def reference_fgsm(model, x, y, eps):
    """Independent: eval mode, mean CE, torch.autograd.grad, clamp to [0, 1]."""
    model.eval()
    xr = x.clone().requires_grad_(True)
    loss = F.cross_entropy(model(xr), y)  # mean: the sign is the same as for the sum
    (grad,) = torch.autograd.grad(loss, xr)
    return (x + eps * grad.sign()).clamp(0.0, 1.0)


@pytest.mark.parametrize("batch_size", [512, 3])  # one chunk, and several chunks
def test_fgsm_equals_clipped_sign_step(batch_size):
    model = small_model()
    x, y = inputs(10), torch.randint(0, 10, (10,), generator=torch.Generator().manual_seed(1))
    out = fgsm(model, x, y, 0.1, batch_size=batch_size)
    ref = reference_fgsm(model, x, y, 0.1)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert not out.requires_grad
    # clipping really happened: some pixels at 1 were pushed up and stayed at 1 (or 0 and down)
    moved = (out - x).abs()
    assert bool((moved[:, :, 2:-2] > 0.099).any())  # interior pixels move by eps
    assert bool(((x == 1.0) & (out == 1.0)).any()) and bool(((x == 0.0) & (out == 0.0)).any())
    # every pixel moved by exactly eps unless clipped or its gradient is exactly zero
    interior = moved[:, :, 2:-2]
    assert bool(((interior - 0.1).abs() < 1e-6).float().mean() > 0.5)


def test_fgsm_increases_the_loss():
    model = small_model(dropout=0.0)
    x, y = inputs(32, seed=2), torch.randint(0, 10, (32,), generator=torch.Generator().manual_seed(3))
    x_adv = fgsm(model, x, y, 0.05)
    with torch.no_grad():
        before = F.cross_entropy(model(x), y)
        after = F.cross_entropy(model(x_adv), y)
    assert float(after) > float(before)


def test_fgsm_works_inside_no_grad():
    """Callers in an evaluation loop (torch.no_grad) still get the true gradient sign."""
    model = small_model()
    x, y = inputs(5, seed=11), torch.arange(5)
    with torch.no_grad():
        out = fgsm(model, x, y, 0.1)
    torch.testing.assert_close(out, reference_fgsm(model, x, y, 0.1), rtol=0, atol=1e-6)


def test_fgsm_uses_eval_mode_and_restores_the_mode():
    model = small_model(dropout=0.5)
    x, y = inputs(6), torch.arange(6)
    model.train()
    a = fgsm(model, x, y, 0.1)
    b = fgsm(model, x, y, 0.1)  # dropout would make two calls differ in training mode
    assert model.training
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, reference_fgsm(model, x, y, 0.1), rtol=0, atol=1e-6)
    model.eval()
    fgsm(model, x, y, 0.1)
    assert not model.training


def test_fgsm_leaves_parameter_gradients_untouched():
    model = small_model()
    x, y = inputs(4), torch.arange(4)
    # some parameters hold a gradient from "training", others none
    marker = {}
    for k, (name, p) in enumerate(model.named_parameters()):
        if k % 2 == 0:
            p.grad = torch.full_like(p, 0.25)
            marker[name] = p.grad.clone()
    fgsm(model, x, y, 0.1)
    for name, p in model.named_parameters():
        if name in marker:
            torch.testing.assert_close(p.grad, marker[name])
        else:
            assert p.grad is None


# -------------------------------------------------------------------------------------- paired loss


def naive_ce(logits_row: list[float], label: int) -> float:
    m = max(logits_row)
    return -(logits_row[label] - m - math.log(sum(math.exp(v - m) for v in logits_row)))


def test_paired_loss_hand_computed():
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(6, 4, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 3, 1, 1, 2, 0])
    paired = torch.tensor([True, False, True, False, False, True])
    logits_adv = torch.randn(3, 4, generator=g, dtype=torch.float64)  # rows 0, 2, 5 in order
    expected, k = 0.0, 0
    for i in range(6):
        ce = naive_ce(logits[i].tolist(), int(y[i]))
        if paired[i]:
            ce = 0.5 * (ce + naive_ce(logits_adv[k].tolist(), int(y[i])))
            k += 1
        expected += ce / 6
    got = paired_loss(logits, logits_adv, y, paired)
    assert float(got) == pytest.approx(expected, rel=1e-12)


def test_paired_loss_without_pairs_is_plain_mean_ce():
    g = torch.Generator().manual_seed(5)
    logits, y = torch.randn(5, 3, generator=g, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1])
    expected = sum(naive_ce(logits[i].tolist(), int(y[i])) for i in range(5)) / 5
    assert float(paired_loss(logits, None, y, None)) == pytest.approx(expected)
    none = torch.zeros(5, dtype=torch.bool)
    assert float(paired_loss(logits, logits[:0], y, none)) == pytest.approx(expected)


def test_paired_loss_gradient_flows_to_both_halves():
    logits = torch.randn(3, 4, requires_grad=True)
    logits_adv = torch.randn(1, 4, requires_grad=True)
    loss = paired_loss(logits, logits_adv, torch.tensor([1, 2, 3]), torch.tensor([False, True, False]))
    loss.backward()
    assert logits.grad.abs().sum() > 0 and logits_adv.grad.abs().sum() > 0
    # the counterpart's CE enters with weight 0.5 / B: its gradient is (softmax - onehot) / 6
    expected = (torch.softmax(logits_adv.detach(), 1) - F.one_hot(torch.tensor([2]), 4)) / 6
    torch.testing.assert_close(logits_adv.grad, expected)


# -------------------------------------------------------------------------------------- step function


def test_adversarial_pair_step_uses_only_the_paired_counterparts():
    model = small_model(dropout=0.0).eval()  # deterministic forward; no BatchNorm in the digit CNN
    x = inputs(8, seed=6)
    y = torch.arange(8) % 10
    paired = torch.tensor([True, False, False, True, True, False, False, False])
    x_adv = inputs(8, seed=7)
    x_adv[~paired] = float("nan")  # rows without a counterpart hold garbage: it must never be read
    loss = adversarial_pair_step(regenerate=False)(model, Batch(x, y, x_adv, paired)).detach()
    assert torch.isfinite(loss)
    # hand: per row CE on x, averaged with CE on its counterpart where paired
    with torch.no_grad():
        expected = 0.0
        for i in range(8):
            ce = naive_ce(model(x[i:i + 1])[0].tolist(), int(y[i]))
            if paired[i]:
                ce = 0.5 * (ce + naive_ce(model(x_adv[i:i + 1])[0].tolist(), int(y[i])))
            expected += ce / 8
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    # changing an unpaired counterpart row changes nothing
    x_adv2 = x_adv.clone()
    x_adv2[~paired] = 0.5
    loss2 = adversarial_pair_step(regenerate=False)(model, Batch(x, y, x_adv2, paired)).detach()
    assert float(loss2) == pytest.approx(float(loss), rel=1e-6)


def test_adversarial_pair_step_without_pairs_is_supervised():
    model = small_model(dropout=0.0).eval()
    x, y = inputs(5), torch.arange(5)
    step = adversarial_pair_step()
    with torch.no_grad():
        expected = float(F.cross_entropy(model(x), y))
    assert float(step(model, Batch(x, y)).detach()) == pytest.approx(expected, rel=1e-6)
    none = torch.zeros(5, dtype=torch.bool)
    loss = step(model, Batch(x, y, torch.rand(5, 1, 8, 8), none)).detach()
    assert float(loss) == pytest.approx(expected, rel=1e-6)


def test_adversarial_pair_step_regenerate_recomputes_fgsm_with_true_labels():
    model = small_model(dropout=0.0).eval()
    x, y = inputs(6, seed=8), torch.tensor([1, 2, 3, 4, 5, 6])
    paired = torch.tensor([True, True, False, False, True, False])
    stale = torch.zeros(6, 1, 8, 8)  # fixed counterparts that regenerate must ignore
    got = adversarial_pair_step(regenerate=True, epsilon=0.07)(model, Batch(x, y, stale, paired)).detach()
    fresh = torch.zeros(6, 1, 8, 8)
    fresh[paired] = reference_fgsm(model, x[paired], y[paired], 0.07)
    expected = adversarial_pair_step(regenerate=False)(model, Batch(x, y, fresh, paired)).detach()
    assert float(got) == pytest.approx(float(expected), rel=1e-5)


# ------------------------------------------------------------------------------------------ recipe


def test_recipe_predicted_label_uses_the_model_argmax():
    model = small_model(dropout=0.3, seed=9)
    x = inputs(12, seed=10)
    with torch.no_grad():
        pred = model.eval()(x).argmax(1)
    y_true = (pred + 1) % 10  # deliberately never the prediction
    eps = 0.05
    got_pred = AdversarialPairs(epsilon=eps, label="predicted").counterparts(model, x, y_true)
    got_true = AdversarialPairs(epsilon=eps, label="true").counterparts(model, x, y_true)
    torch.testing.assert_close(got_pred, reference_fgsm(model, x, pred, eps), rtol=0, atol=1e-6)
    torch.testing.assert_close(got_true, reference_fgsm(model, x, y_true, eps), rtol=0, atol=1e-6)
    assert not torch.allclose(got_pred, got_true)


def test_supervised_recipe_has_no_counterparts():
    recipe = create_recipe("supervised")
    assert recipe.counterparts(small_model(), inputs(2), torch.arange(2)) is None


@pytest.mark.parametrize("bad", [{"epsilon": 0.0}, {"epsilon": 1.5}, {"label": "oracle"}, {"steps": 3}])
def test_recipe_bad_options_raise_config_error(bad):
    with pytest.raises(ConfigError):
        create_recipe("adversarial", **bad)


# ------------------------------------------------------- epsilon units on feature rows (float pools)


def _features_model(seed: int = 0):
    from dalkit.models import FeatureMLP

    torch.manual_seed(seed)
    mean, std = [0.5, -3.0, 10.0, 0.0], [0.01, 2.0, 50.0, 1.0]  # embeddings' scales differ per dimension
    return FeatureMLP(4, 3, mean, std, hidden=6, depth=1, dropout=0.3).eval(), torch.tensor(mean), \
        torch.tensor(std)


def test_epsilon_in_std_units_is_a_step_of_epsilon_in_the_standardised_space():
    """Reference: FGSM run by hand on z = (x - mean) / std through the model's layers (no
    standardisation), z + eps * sign(grad_z), mapped back to x.  "input" units move every feature by eps
    whatever its scale (unclipped: a float pool has no [0, 1] range)."""
    model, mean, std = _features_model()
    g = torch.Generator().manual_seed(1)
    x = mean + std * torch.randn(16, 4, generator=g)
    y = torch.randint(0, 3, (16,), generator=g)
    z = ((x - mean) / std).requires_grad_(True)
    logits = model.classifier(F.relu(model.layers[0](z)))
    (grad_z,) = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), z)
    expected = (z.detach() + 0.25 * grad_z.sign()) * std + mean
    recipe = create_recipe("adversarial", epsilon=0.25, epsilon_units="std")
    h = recipe.counterparts(model, x, y)
    assert torch.allclose(h, expected, rtol=1e-5, atol=1e-6)
    assert torch.allclose((h - x).abs(), 0.25 * std.expand_as(x), rtol=1e-5, atol=1e-7)
    raw = create_recipe("adversarial", epsilon=0.25).counterparts(model, x, y)
    assert torch.allclose((raw - x).abs(), torch.full_like(x, 0.25), atol=1e-5)  # feature units, no clip
    assert torch.equal(torch.sign(raw - x), torch.sign(h - x))


def test_epsilon_units_std_also_regenerates_in_std_units_and_refuses_models_without_input_std():
    model, _, std = _features_model()
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(4, 4, generator=g) * std, torch.tensor([0, 1, 2, 0])
    batch = Batch(x, y, x_adv=x.clone(), paired=torch.tensor([True, True, False, False]))
    loss = adversarial_pair_step(regenerate=True, epsilon=0.5, units="std")(model, batch)
    h = fgsm(model, x[:2], y[:2], 0.5 * std)
    logits = model(torch.cat([x, h]))
    assert torch.allclose(loss, paired_loss(logits[:4], logits[4:], y, batch.paired))
    net = torch.nn.Sequential(torch.nn.Linear(4, 3))
    from dalkit.models import adapt_model

    adapted = adapt_model(net, x, input_range=None)
    recipe = create_recipe("adversarial", epsilon=0.1, epsilon_units="std")
    with pytest.raises(ConfigError, match="epsilon_units 'std' needs a model that standardises its inputs"):
        recipe.prepare(adapted, (4,))
    with pytest.raises(ConfigError, match="epsilon_units must be one of input, std"):
        create_recipe("adversarial", epsilon=0.1, epsilon_units="sigma")


def test_epsilon_units_at_its_default_is_left_out_of_the_resolved_options():
    """A run recorded before the option existed (its resolved.json without it) still resumes; a run with
    std units records them."""
    from dalkit.experiment import ExperimentConfig
    from dalkit.experiment.runner import resolved_options

    base = ExperimentConfig(dataset="digits", method="dm2-at")
    assert "epsilon_units" not in resolved_options(base)["recipe"]
    std = base.replace(recipe_options={"epsilon_units": "std"})
    assert resolved_options(std)["recipe"]["epsilon_units"] == "std"

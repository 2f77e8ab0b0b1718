"""The memory estimate that refuses impossible sizes before anything is allocated
(:mod:`dalkit.experiment.memory`): its parts against counts made another way, and the refusal."""

from __future__ import annotations

import pytest
import torch

from dalkit.errors import ConfigError
from dalkit.experiment import ExperimentConfig, memory
from dalkit.experiment import runner as runner_module
from dalkit.experiment.runner import _recipe_for, build_round_model, check_experiment, prepare_data
from dalkit.training import TrainConfig, create_recipe, prepare_model


def _config(method: str, **changes) -> ExperimentConfig:
    values = dict(dataset="digits", method=method, initial_size=20, budget=10, rounds=2, seeds=(0,),
                  pool_size=300, train=TrainConfig(epochs=1, batch_size=32), device="cpu")
    return ExperimentConfig(**{**values, **changes})


@pytest.mark.parametrize("hidden", [8, 300])
def test_meta_parameter_count_equals_the_real_models(digits, hidden):
    """Counted on the meta device (nothing allocated) = counted on the real model with its module."""
    cfg = _config("lplgrad", recipe_options={"hidden": hidden})
    data = prepare_data(cfg, digits)
    recipe = _recipe_for(cfg)
    meta = memory.parameter_count(lambda: prepare_model(recipe, build_round_model(cfg, data, "meta"),
                                                        data.pool.image_shape))
    real = prepare_model(recipe, build_round_model(cfg, data), data.pool.image_shape)
    assert meta == sum(p.numel() for p in real.parameters())
    # w_aux: one FC(C_l, hidden) per stage + FC(L * hidden, 1): grows linearly with hidden
    plain = sum(p.numel() for p in build_round_model(cfg, data).parameters())
    channels = [m.in_features for m in real.loss_module.blocks]
    assert meta - plain == sum((c + 1) * hidden for c in channels) + len(channels) * hidden + 1


def test_activation_floats_by_hand():
    """Linear(4, 3) -> ReLU -> Linear(3, 2) on one sample: 3 + 3 + 2 floats."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    assert memory.activation_floats(model, torch.zeros(1, 4)) == 8


def test_round_bytes_by_hand():
    parts = memory.round_bytes(params=10, act_per_sample=5, sample_floats=3, batch=2, unlabeled_ratio=7,
                               extra_views=1, recipe_state=11, eval_batch=4)
    images = 2 * 2 + 2 * 7 * 2  # labeled (weak + strong view) and mu * B unlabeled, weak and strong
    assert parts == {"training batch (batch_size, mu)": images * (3 + 2 * 5) * 4 + 7 * 2 * 8,
                     "inference batch (eval_batch_size)": 4 * (3 + 5) * 4,
                     "recipe state (fa_queue)": 11,
                     "model and recipe modules with gradients and optimiser state (hidden)": 4 * 10 * 4}


def test_fa_state_grows_with_the_queue_and_the_labeled_set():
    recipe = create_recipe("fixmatch", fa=True, fa_queue=10, mu=7)
    assert recipe.state_bytes(100, 128, 32) == 4 * (100 * 21 * 128 + 7 * 32 * 100 * 10)
    assert create_recipe("fixmatch", fa=False).state_bytes(100, 128, 32) == 0


def test_a_machine_too_small_refuses_before_the_recipe_module_is_built(digits, monkeypatch):
    """With 1 MiB available, an ordinary lplgrad run is refused naming the largest part, and the
    loss-prediction module was never allocated (prepare_model not called on a real model)."""
    cfg = _config("lplgrad")
    check_experiment(cfg, None, digits)  # fits this machine
    monkeypatch.setattr(memory, "available_bytes", lambda: 1 << 20)
    real_prepare = runner_module.prepare_model
    calls = []
    monkeypatch.setattr(runner_module, "prepare_model",
                        lambda recipe, model, shape: calls.append(str(next(model.parameters()).device))
                        or real_prepare(recipe, model, shape))
    with pytest.raises(ConfigError, match=r"needs about .* GiB of memory per round .* 0.0 GiB available"):
        check_experiment(cfg, None, digits)
    assert "cpu" not in calls

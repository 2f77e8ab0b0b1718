"""Every scoring path uses the model in eval mode: BatchNorm on its running statistics, dropout off
(DESIGN.md: MC dropout keeps the model in eval mode; BatchNorm untouched).

Registry-driven: every registered strategy (learning-loss included) queries a small pool with a model
that has BatchNorm and dropout and is handed over in *train* mode.  Each must (1) run every BatchNorm
forward in eval mode, (2) leave the running statistics as they were, and (3) select exactly what it
selects when handed the same model in eval mode.  The adversarial recipe's counterparts (made at
selection time) and the robust metrics are held to the same rule.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from dalkit.strategies import STRATEGIES, QueryContext, create_strategy, query
from dalkit.training import create_recipe
from dalkit.training.loss_prediction import attach_loss_module
from dalkit.training.robust import robust_metrics
from test_steps import TinyNet

# small, fast settings for the strategies that iterate (their default scoring path otherwise)
FAST = {"activeft": {"steps": 10}, "uncertain-gcn": {"epochs": 10}, "noise-stability": {"k": 4},
        "bald": {"k": 4}, "entropy-bayesian": {"k": 4}}


@pytest.fixture(scope="module")
def bn_model(digits_pool):
    """A 10-class TinyNet with BatchNorm (running statistics away from their initial values), dropout
    0.3 and a loss-prediction module; returned in eval mode."""
    torch.manual_seed(0)
    model = TinyNet(seed=7, bn=True, dropout=0.3, num_classes=10, scale=1.0)
    model = attach_loss_module(model, (1, 8, 8), hidden=4)
    model.train()
    with torch.no_grad():
        for start in range(0, 300, 50):  # running statistics from a few batches
            model(digits_pool.images[start:start + 50].float() / 255)
    return model.eval()


def make_ctx(model, pool, seed: int = 0) -> QueryContext:
    labeled = torch.cat([torch.nonzero(pool.labels == c).squeeze(1)[:1] for c in range(10)]).sort().values
    return QueryContext(model, pool.images[:90], labeled, pool.labels[labeled], 10,
                        torch.Generator().manual_seed(seed), "cpu", 32)


def bn_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: b.clone() for n, b in model.named_buffers() if "running" in n or "num_batches" in n}


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_every_strategy_scores_with_the_model_in_eval_mode(name, bn_model, digits_pool):
    pool = digits_pool.subset(torch.arange(90))
    eval_model = copy.deepcopy(bn_model).eval()
    expected = query(create_strategy(name, **FAST.get(name, {})), make_ctx(eval_model, pool), 8)

    model = copy.deepcopy(bn_model).train()  # as fit() leaves it
    before = bn_buffers(model)
    modes: list[bool] = []
    model.bn.register_forward_pre_hook(lambda m, args: modes.append(m.training))
    sel = query(create_strategy(name, **FAST.get(name, {})), make_ctx(model, pool), 8)
    assert not any(modes), f"{name}: {sum(modes)} of {len(modes)} BatchNorm passes in train mode"
    after = bn_buffers(model)
    for key, value in before.items():
        assert torch.equal(after[key], value), f"{name} changed the BatchNorm statistics ({key})"
    assert sel.indices.tolist() == expected.indices.tolist(), f"{name} depends on the mode it was handed"
    if expected.scores is not None:
        torch.testing.assert_close(sel.scores, expected.scores)


def test_learning_loss_scores_are_the_eval_mode_predicted_losses(bn_model, digits_pool):
    """learning-loss ranks by w_aux over the eval-mode stage features, computed here sample by sample."""
    pool = digits_pool.subset(torch.arange(90))
    model = copy.deepcopy(bn_model).train()
    ctx = make_ctx(model, pool)
    sel = query(create_strategy("learning-loss"), ctx, 8)
    ref = copy.deepcopy(bn_model).eval()
    with torch.no_grad():
        naive = []
        for i in ctx.unlabeled_idx.tolist():
            _, stages = ref.forward_features(pool.images[i:i + 1].float() / 255)
            naive.append(float(ref.loss_module(stages)))
    by_index = dict(zip(ctx.unlabeled_idx.tolist(), naive, strict=True))
    top = sorted(by_index, key=by_index.get, reverse=True)[:8]
    assert sorted(sel.indices.tolist()) == sorted(top)
    assert sel.scores.tolist() == pytest.approx([by_index[i] for i in sel.indices.tolist()], rel=1e-5)


def test_counterparts_and_robust_metrics_use_eval_mode(bn_model, digits_pool):
    x = digits_pool.images[:20].float() / 255
    y = digits_pool.labels[:20]
    recipe = create_recipe("adversarial", epsilon=0.1)
    expected = recipe.counterparts(copy.deepcopy(bn_model).eval(), x, y)
    model = copy.deepcopy(bn_model).train()
    before = bn_buffers(model)
    torch.testing.assert_close(recipe.counterparts(model, x, y), expected, rtol=0, atol=0)
    images, labels = digits_pool.images[:40], digits_pool.labels[:40]
    expected_metrics = robust_metrics(copy.deepcopy(bn_model).eval(), labels, {}, images, 0.1, pgd_steps=2)
    assert robust_metrics(model, labels, {}, images, 0.1, pgd_steps=2) == expected_metrics
    assert all(torch.equal(bn_buffers(model)[k], v) for k, v in before.items())

"""The strategy contract, for every registered strategy (strategies added later are covered too).

Each strategy is built with its default options and queried on a 300-sample pool of real digits, with
each of three models (conftest.MODEL_KINDS): dalkit's CNN, a plain nn.Sequential and a user module with
its own BatchNorm and dropout (the last two through the model adapter).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dalkit.errors import BudgetError
from dalkit.strategies import STRATEGIES, create_strategy, query

NAMES = STRATEGIES.names()
KINDS = ("dalkit", "sequential", "user-bn")  # conftest.MODEL_KINDS


def check_selection(ctx, idx: torch.Tensor, budget: int) -> None:
    assert idx.dtype == torch.int64 and idx.dim() == 1
    assert idx.numel() == budget
    assert torch.unique(idx).numel() == budget, "duplicate indices"
    assert int(idx.min()) >= 0 and int(idx.max()) < ctx.pool_size
    assert not bool(ctx.labeled_mask[idx].any()), "selected already-labeled samples"


def test_registry_is_not_empty():
    assert {"random", "entropy", "least-confidence", "margin", "dm2"} <= set(NAMES)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", NAMES)
def test_returns_budget_unique_unlabeled_indices(name, kind, make_context, model_for):
    ctx = make_context(extra_labeled=30, model=model_for(name, kind))
    params = [p.detach().clone() for p in ctx.model.parameters()]
    sel = query(create_strategy(name), ctx, 17)
    check_selection(ctx, sel.indices, 17)
    if sel.scores is not None:
        assert sel.scores.shape[0] == 17
    # the round's model is shared with the rest of the round (e.g. DM2-AT counterparts): untouched
    for before, after in zip(params, ctx.model.parameters(), strict=True):
        assert torch.equal(before, after)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", NAMES)
def test_deterministic_for_the_same_generator_seed(name, kind, make_context, model_for):
    # different global seeds: only the context's generator may drive the choice
    torch.manual_seed(1)
    np.random.seed(1)
    model = model_for(name, kind)
    a = query(create_strategy(name), make_context(seed=7, extra_labeled=30, model=model), 23).indices
    torch.manual_seed(2)
    np.random.seed(2)
    b = query(create_strategy(name), make_context(seed=7, extra_labeled=30, model=model), 23).indices
    assert a.tolist() == b.tolist()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", NAMES)
def test_budget_error_for_bad_budgets(name, kind, make_context, model_for):
    ctx = make_context(extra_labeled=30, model=model_for(name, kind))
    strategy = create_strategy(name)
    for budget in (ctx.n_unlabeled + 1, 0, -5):
        with pytest.raises(BudgetError):
            query(strategy, ctx, budget)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", NAMES)
def test_budget_equal_to_the_unlabeled_pool(name, kind, make_context, model_for):
    ctx = make_context(pool_size=120, extra_labeled=20, model=model_for(name, kind))
    sel = query(create_strategy(name), ctx, ctx.n_unlabeled)
    check_selection(ctx, sel.indices, ctx.n_unlabeled)
    assert sorted(sel.indices.tolist()) == ctx.unlabeled_idx.tolist()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", NAMES)
def test_one_labeled_sample_per_class(name, kind, make_context, model_for):
    ctx = make_context(per_class=1, model=model_for(name, kind))
    assert ctx.labeled_idx.numel() == 10
    assert sorted(ctx.labeled_labels.tolist()) == list(range(10))
    sel = query(create_strategy(name), ctx, 20)
    check_selection(ctx, sel.indices, 20)


# ------------------------------------------------------------------ the checks around every strategy


class Broken:
    """A strategy that breaks the contract in a chosen way."""

    def __init__(self, how: str) -> None:
        self.how = how

    def select(self, ctx, budget):
        from dalkit.strategies import Selection

        unl = ctx.unlabeled_idx
        if self.how == "duplicates":
            return Selection(torch.cat([unl[:1]] * budget))
        if self.how == "labeled":
            return Selection(torch.cat([ctx.labeled_idx[:1], unl[: budget - 1]]))
        return Selection(unl[: budget - 1])  # too few


@pytest.mark.parametrize("how", ["duplicates", "labeled", "short"])
def test_query_rejects_a_strategy_that_breaks_the_contract(how, make_context):
    with pytest.raises(RuntimeError):
        query(Broken(how), make_context(), 5)


def test_context_labels_follow_the_sorted_labeled_indices(digits_pool, digits_model):
    from dalkit.strategies import QueryContext

    labeled = torch.tensor([250, 3, 99, 17])  # unsorted on purpose
    ctx = QueryContext(digits_model, digits_pool.images, labeled, digits_pool.labels[labeled],
                       digits_pool.num_classes, torch.Generator().manual_seed(0))
    assert ctx.labeled_idx.tolist() == [3, 17, 99, 250]
    assert ctx.labeled_labels.tolist() == digits_pool.labels[torch.tensor([3, 17, 99, 250])].tolist()
    assert ctx.n_unlabeled == 296 and not bool(ctx.labeled_mask[ctx.unlabeled_idx].any())


def test_context_outputs_match_direct_model_calls(make_context):
    ctx = make_context(pool_size=60)
    x = ctx.inputs(ctx.unlabeled_idx)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    with torch.no_grad():
        logits, emb = ctx.model(x), ctx.model.embed(x)
    torch.testing.assert_close(ctx.logits(), logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ctx.embeddings(), emb, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ctx.probs().sum(1), torch.ones(ctx.n_unlabeled))
    assert ctx.probs() is ctx.probs()  # computed once per round, shared by strategies
    mc = ctx.mc_probs(4)
    assert mc.shape == (4, ctx.n_unlabeled, 10)
    torch.testing.assert_close(mc.sum(-1), torch.ones(4, ctx.n_unlabeled))
    assert not torch.allclose(mc[0], mc[1])  # dropout masks differ between the K passes
    assert not ctx.model.training

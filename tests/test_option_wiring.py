"""Every option of every recipe and every strategy is wired: changing it changes what the step or the
selection computes.

Registry-driven, like the selection oracles of tests/test_selection.py: a new option of a registered
recipe or strategy fails :func:`test_every_option_has_a_variant` until it gets a variant here (a base
configuration and another value that must change the result) or, for options that only trade speed
for memory, an entry in PERFORMANCE_ONLY (those must be *read* and must leave the result identical).
Every option must also be read (attribute access on the instance, traced) while the step is built and
run or the selection is made — an option read nowhere fails twice.

Recipe results: the loss of every step and every parameter after three SGD steps of :func:`fit` on a
tiny model (plain SGD, so the parameters carry the gradients), and the recipe's counterparts of a
probe batch.  Strategy results: the selected indices, their scores and ``Selection.info`` (timings
removed) on a small digits context.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from dalkit.strategies import STRATEGIES, create_strategy, query
from dalkit.training import RECIPES, TrainConfig, TrainSet, create_recipe, fit
from dalkit.training.recipes import prepare_model
from test_steps import SIDE, TinyNet, images

# recipe -> option -> (base options, another value)
RECIPE_VARIANTS: dict[str, dict[str, tuple[dict, object]]] = {
    "supervised": {},
    "adversarial": {
        "epsilon": ({"epsilon": 0.03}, 0.2),
        "label": ({"epsilon": 0.1}, "predicted"),
        "regenerate": ({"epsilon": 0.1}, True),
        "epsilon_units": ({"epsilon": 0.1, "regenerate": True}, "std"),
    },
    "loss-prediction": {
        "margin": ({}, 0.2),
        "weight": ({}, 3.0),
        "detach_after": ({"detach_after": 1.0}, 0.0),
        "hidden": ({"hidden": 8}, 4),
    },
}
_SSL_COMMON = {
    "mu": ({"mu": 2}, 3),
    "flip": ({"flip": False}, True),
    "n_ops": ({}, 0),
    "fa": ({}, True),
    "fa_similarity": ({"fa": True}, 3.0),
    "fa_contrastive": ({"fa": True}, 1.0),
    "fa_queue": ({"fa": True, "fa_queue": 10, "fa_contrastive": 0.0}, 1),
    "fa_norm": ({"fa": True, "fa_contrastive": 1.0}, "sample"),
    "lambda_u": ({}, 3.0),
    "ra_ranges": ({}, "google"),
}
RECIPE_VARIANTS["fixmatch"] = {**_SSL_COMMON, "tau": ({"tau": 0.95}, 0.6)}
RECIPE_VARIANTS["freematch"] = {**_SSL_COMMON, "momentum": ({"momentum": 0.999}, 0.3),
                                "fairness": ({"fairness": 0.01}, 1.0)}
_SSL_BASE = {"mu": 2, "flip": False}  # explicit flip: no dataset default to resolve

# strategy -> option -> (base options, another value); contexts carry user features for source=features
STRATEGY_VARIANTS: dict[str, dict[str, tuple[dict, object]]] = {
    "activeft": {
        "source": ({"steps": 20, "lr": 0.05}, "features"),
        "tau": ({"steps": 20, "lr": 0.05}, 1.0),
        "steps": ({"steps": 20, "lr": 0.05}, 0),
        "lr": ({"steps": 20, "lr": 0.05}, 0.005),
        "use_labeled": ({"steps": 20, "lr": 0.05}, False),
        "loss": ({"steps": 20, "lr": 0.05}, "code"),
        "balance": ({"steps": 20, "lr": 0.05, "loss": "code"}, 5.0),
    },
    "alphamix": {
        "epsilon": ({}, 0.05),
        "grow_epsilon": ({"epsilon": 0.05}, False),
        "closed_form": ({}, False),
        "clip_alpha": ({}, True),
        "learn_iters": ({"closed_form": False}, 0),
        "learn_lr": ({"closed_form": False}, 0.001),
        "l2_coef": ({"closed_form": False}, 1.0),
    },
    "badge": {},
    "bald": {"k": ({"k": 8}, 4), "p": ({"k": 8}, 0.6), "mc": ({"k": 8}, "blocks")},
    "coreset": {"source": ({}, "features")},
    "dm2": {
        "n_neighbors": ({}, 3),
        "mixing": ({}, "pairs"),
        "weights": ({}, "uniform"),
        "lam": ({}, 0.3),
        "alpha": ({"mixing": "pairs"}, 1.0),
        "metric": ({}, "l2"),
        "candidates": ({"candidates": 6}, None),
        "offset": ({}, 3),
        "recall_sample": ({}, 8),
    },
    "ent-gradnorm": {"norm": ({}, "frobenius")},
    "entropy": {},
    "entropy-bayesian": {"k": ({"k": 8}, 4), "p": ({"k": 8}, 0.6), "mc": ({"k": 8}, "blocks"),
                         "score": ({"k": 8}, "sum")},
    "learning-loss": {},
    "least-confidence": {},
    "lplgrad": {"norm": ({}, "layer-sum")},
    "margin": {},
    "noise-stability": {
        "k": ({"k": 4}, 2),
        "xi": ({"k": 4}, 0.05),
        "output": ({"k": 4}, "logits"),
        "perturb": ({"k": 4}, "all"),
        "normalize": ({"k": 4}, False),
        "selection": ({"k": 4}, "uncertainty"),
    },
    "probcover": {
        "source": ({}, "features"),
        "normalize": ({}, False),
        "delta": ({}, 0.3),
        "alpha": ({}, 0.5),
        "delta_grid": ({}, (0.2, 0.4)),
        "n_clusters": ({}, 3),
        "max_edges": ({}, 50),
    },
    "random": {},
    "uncertain-gcn": {
        "hidden": ({"epochs": 20}, 16),
        "dropout": ({"epochs": 20}, 0.0),
        "lr": ({"epochs": 20}, 0.01),
        "weight_decay": ({"epochs": 20}, 0.05),
        "epochs": ({"epochs": 20}, 5),
        "lam": ({"epochs": 20}, 0.5),
        "s_margin": ({"epochs": 20}, 0.4),
        "normalization": ({"epochs": 20}, "column"),
    },
}
# options that change only speed or memory: read, and the result is the same for both values
PERFORMANCE_ONLY: dict[tuple[str, str], tuple[dict, object]] = {
    ("dm2", "batch_size"): ({"batch_size": 512}, 7),
    ("lplgrad", "chunk_size"): ({}, 5),
    ("ent-gradnorm", "chunk_size"): ({}, 5),
    ("noise-stability", "batch_size"): ({"k": 4}, 7),
    ("probcover", "backend"): ({"backend": "torch"}, "faiss"),  # float64 decisions: the same picks
}


def _fields(registry, name: str) -> list[str]:
    cls = registry.get(name)
    return [f.name for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) else []


def test_every_option_has_a_variant():
    missing = []
    for registry, table, kind in ((RECIPES, RECIPE_VARIANTS, "recipe"),
                                  (STRATEGIES, STRATEGY_VARIANTS, "strategy")):
        for name in registry.names():
            for option in _fields(registry, name):
                if option not in table.get(name, {}) and (name, option) not in PERFORMANCE_ONLY:
                    missing.append(f"{kind} {name}.{option}")
    assert not missing, f"give each option a variant (base options, another value) here: {missing}"


def traced(registry, name: str, options: dict) -> tuple[object, set[str]]:
    """An instance whose option reads after construction are recorded (``__post_init__`` checks do
    not count: an option only validated is still read nowhere)."""
    cls = registry.get(name)
    fields = set(_fields(registry, name))
    reads: set[str] = set()

    class Traced(cls):  # type: ignore[misc, valid-type]
        def __getattribute__(self, attr):
            if attr in fields:
                reads.add(attr)
            return object.__getattribute__(self, attr)

    Traced.__name__ = cls.__name__
    registry.create(name, **options)  # the options are valid for the registered class itself
    obj = Traced(**options)
    reads.clear()
    return obj, reads


# ------------------------------------------------------------------------------------------ recipes


def recipe_result(recipe) -> list[torch.Tensor]:
    """Losses of three SGD steps, the parameters after them, and the counterparts of a probe batch."""
    torch.manual_seed(0)
    model = prepare_model(recipe, TinyNet(seed=5), (1, SIDE, SIDE))
    x = (images(40, 11) * 255).round().to(torch.uint8)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 1, 0])
    paired = torch.tensor([True, False] * 4)
    adv = images(8, 12)
    data = TrainSet(x[:8], labels, adv, paired, unlabeled=x[8:])
    losses = []

    def step(model, batch):
        loss = inner(model, batch)
        losses.append(loss.detach().clone())
        return loss

    inner = recipe.step()
    fit(model, data, step, TrainConfig(epochs=3, batch_size=4, optimizer="sgd", lr=0.05, momentum=0.0),
        torch.Generator().manual_seed(3), unlabeled_ratio=int(getattr(recipe, "unlabeled_ratio", 0)))
    out = losses + [p.detach().clone().flatten() for p in model.parameters()]
    cp = recipe.counterparts(model, images(6, 13), torch.tensor([0, 1, 2, 2, 1, 0]))
    if cp is not None:
        out.append(cp)
    return out


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(x.shape == y.shape and torch.equal(x, y)
                                    for x, y in zip(a, b, strict=True))


RECIPE_CASES = [(n, o) for n in sorted(RECIPE_VARIANTS) for o in sorted(RECIPE_VARIANTS[n])]


@pytest.mark.parametrize(("name", "option"), RECIPE_CASES)
def test_every_recipe_option_changes_the_training(name, option):
    base, value = RECIPE_VARIANTS[name][option]
    if name in ("fixmatch", "freematch"):
        base = {**_SSL_BASE, **base}
    recipe, reads = traced(RECIPES, name, base)
    first = recipe_result(recipe)
    assert option in reads, f"{name} option {option} is never read when the step is built or run"
    assert all(math.isfinite(float(t.float().sum())) for t in first)
    other = recipe_result(create_recipe(name, **{**base, option: value}))
    assert not same(first, other), f"{name} {option}={value!r} trains exactly like {base.get(option)!r}"


# --------------------------------------------------------------------------------------- strategies


@pytest.fixture(scope="module")
def wiring_context(make_context, digits_model_lp):
    features = torch.randn(300, 6, generator=torch.Generator().manual_seed(0))

    def build(name: str):
        model = digits_model_lp if getattr(STRATEGIES.get(name), "requires_recipe", ()) else None
        ctx = make_context(seed=0, pool_size=80, model=model)
        ctx.user_features = features[:80]
        return ctx

    return build


def selection_result(strategy, ctx, budget: int = 6):
    try:
        sel = query(strategy, ctx, budget)
    except Exception as exc:  # an option may make the same input an error (e.g. a graph too large)
        return ("error", type(exc).__name__, str(exc))
    info = {k: v for k, v in sel.info.items() if "second" not in k}
    scores = None if sel.scores is None else sel.scores.tolist()
    return (sel.indices.tolist(), scores, repr(info))


STRATEGY_CASES = [(n, o) for n in sorted(STRATEGY_VARIANTS) for o in sorted(STRATEGY_VARIANTS[n])]


@pytest.mark.parametrize(("name", "option"), STRATEGY_CASES)
def test_every_strategy_option_changes_the_selection(name, option, wiring_context):
    base, value = STRATEGY_VARIANTS[name][option]
    strategy, reads = traced(STRATEGIES, name, base)
    first = selection_result(strategy, wiring_context(name))
    assert first[0] != "error", first
    assert option in reads, f"{name} option {option} is never read when selecting"
    other = selection_result(create_strategy(name, **{**base, option: value}), wiring_context(name))
    assert other != first, f"{name} {option}={value!r} selects exactly like {base.get(option)!r}"


@pytest.mark.parametrize(("name", "option"), sorted(PERFORMANCE_ONLY))
def test_performance_options_are_read_and_leave_the_selection_unchanged(name, option, wiring_context):
    base, value = PERFORMANCE_ONLY[(name, option)]
    strategy, reads = traced(STRATEGIES, name, base)
    first = selection_result(strategy, wiring_context(name))
    assert option in reads, f"{name} option {option} is never read when selecting"
    other = selection_result(create_strategy(name, **{**base, option: value}), wiring_context(name))
    assert other[0] == first[0]
    if first[1] is not None:
        assert other[1] == pytest.approx(first[1], rel=1e-4, abs=1e-6)

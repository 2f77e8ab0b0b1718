"""A *method* is a strategy plus a training recipe.  Every strategy name is a method trained with the
supervised recipe; combinations such as ``dm2-at`` are registered here."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from dalkit.checks import short
from dalkit.errors import ConfigError, UnknownNameError
from dalkit.strategies import STRATEGIES
from dalkit.training.recipes import RECIPES


@dataclass(frozen=True)
class MethodSpec:
    """strategy + recipe, with default options for each.

    ``subset``: the runner-level random candidate subset the method uses unless the experiment sets
    one (None: the whole unlabeled pool).
    """

    strategy: str
    recipe: str = "supervised"
    strategy_options: dict[str, Any] = field(default_factory=dict)
    recipe_options: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    subset: int | None = None


METHODS: dict[str, MethodSpec] = {
    "dm2-at": MethodSpec("dm2", "adversarial",
                         description="DM2 selection + FGSM adversarial-pair training (DM2 paper, Alg. 2)"),
    "lplgrad": MethodSpec("lplgrad", "loss-prediction",
                          description="entropy-gradient-norm selection + loss-prediction training (LPLgrad)"),
    "learning-loss": MethodSpec("learning-loss", "loss-prediction",
                                description="predicted-loss selection + loss-prediction training"),
    "uncertain-gcn": MethodSpec("uncertain-gcn", subset=10000,
                                description="UncertainGCN on 10,000 random unlabeled nodes (its reference)"),
}


def resolve_method(name: str) -> MethodSpec:
    """The :class:`MethodSpec` of ``name`` (a registered combination or a plain strategy name).

    Raises:
        UnknownNameError: neither a method nor a strategy; lists both.
    """
    if isinstance(name, str) and name in METHODS:  # not a str (e.g. a YAML list): unknown, not a crash
        return METHODS[name]
    if isinstance(name, str) and name in STRATEGIES:
        return MethodSpec(name)
    if isinstance(name, str) and ":" in name:
        training, _, strategy = name.partition(":")
        recipe, options = resolve_training(training)
        if strategy not in STRATEGIES:
            raise UnknownNameError(f"unknown strategy {short(strategy)} in method {short(name)}; valid "
                                   f"strategies: {', '.join(STRATEGIES.names())}")
        return MethodSpec(strategy, recipe, recipe_options=options,
                          description=f"{strategy} selection + {training} training")
    valid = ", ".join(method_names())
    raise UnknownNameError(f"unknown method {short(name)}; valid method names: {valid}, or "
                           f"TRAINING:STRATEGY with TRAINING one of {', '.join(training_names())}")


def check_training_overrides(method: str, recipe: Any, recipe_options: Any) -> None:
    """Refuse settings that contradict the training a ``TRAINING:STRATEGY`` method names: ``--recipe``
    naming another recipe (``fixmatch:random`` with ``recipe: supervised``), or a recipe option the name
    fixes set otherwise (``fixmatch+fa:random`` with ``fa: false``).  A registered method's recipe and
    options are defaults, which ``recipe`` and ``recipe_options`` may override (``dm2-at`` with
    ``recipe: supervised`` is DM2's ablation).

    Raises:
        ConfigError: names both settings.
    """
    if not isinstance(method, str) or method in METHODS or ":" not in method:
        return
    training = method.partition(":")[0]
    base, fixed = resolve_training(training)
    if recipe is not None and recipe != base:
        raise ConfigError(f"method {method!r} trains with {training!r} but recipe is {short(recipe)}; drop "
                          f"the recipe or name the training in the method ({short(recipe)[1:-1]}:"
                          f"{method.partition(':')[2]})")
    if isinstance(recipe_options, dict):
        for key, value in fixed.items():
            if key in recipe_options and recipe_options[key] != value:
                other = base if key == "fa" else training
                raise ConfigError(f"method {method!r} sets the recipe option {key}={value} by its name but "
                                  f"recipe_options sets {key}={short(recipe_options[key])}; drop the option "
                                  f"or use the method {other + ':' + method.partition(':')[2]!r}")


def resolve_training(training: str) -> tuple[str, dict[str, Any]]:
    """The recipe and recipe options of a training name: a recipe (``fixmatch``), optionally with
    ``+fa`` for the feature re-alignment module (SSAL paper section 3.5): ``freematch+fa``.

    Raises:
        UnknownNameError: unknown recipe, or ``+fa`` on a recipe without it.
    """
    base, plus, extra = training.partition("+")
    if base not in RECIPES or (plus and (extra != "fa" or not _has_option(base, "fa"))):
        raise UnknownNameError(f"unknown training {short(training)}; valid trainings: "
                               f"{', '.join(training_names())}")
    return base, ({"fa": True} if plus else {})


def _has_option(recipe: str, option: str) -> bool:
    cls = RECIPES.get(recipe)
    return dataclasses.is_dataclass(cls) and option in {f.name for f in dataclasses.fields(cls)}


def training_names() -> list[str]:
    """Every training a method name may start with: each recipe, and RECIPE+fa where FA applies."""
    names = RECIPES.names()
    return sorted(names + [f"{n}+fa" for n in names if _has_option(n, "fa")])


def method_names() -> list[str]:
    return sorted(set(METHODS) | set(STRATEGIES.names()))

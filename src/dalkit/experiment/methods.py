"""A *method* is a strategy plus a training recipe.  Every strategy name is a method trained with the
supervised recipe; combinations such as ``dm2-at`` are registered here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dalkit.checks import short
from dalkit.errors import UnknownNameError
from dalkit.strategies import STRATEGIES


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
    valid = ", ".join(method_names())
    raise UnknownNameError(f"unknown method {short(name)}; valid method names: {valid}")


def method_names() -> list[str]:
    return sorted(set(METHODS) | set(STRATEGIES.names()))

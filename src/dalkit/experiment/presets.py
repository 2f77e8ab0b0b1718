"""Named presets: sets of config values that reproduce a paper's protocol at once.

``dm2-paper`` runs the DM2 paper's experiments the way its baselines were run (the NoiseStability
authors' code, lixingjian/AL-noise-stability: same method names, same recipes).  Where that protocol
differs from dalkit's defaults — which were chosen by measurement — the preset switches to it:

================================  ==========================  ==========================================
setting                           dalkit default              ``dm2-paper``
================================  ==========================  ==========================================
labels (MNIST / CIFAR-SVHN)       per config                  20 + 9 x 20 / 1,000 + 6 x 1,000: the code's
                                                              10 / 7 cycles are evaluations, the last
                                                              one queries nothing (MNIST: 200 labels)
initial set                       uniform draws               every class present (MNIST; redrawn)
MNIST network                     ``cnn`` (strided convs)     ``smallnet``: conv5-32/pool, conv5-64/pool,
                                                              fc 1024 -> 128, fc -> C (28 px digits)
MNIST learning rate               Adam 1e-3, constant         Adam 1e-3, x0.1 after epoch 20 of 50
class-balanced loss               off                         while the labeled set fits in one batch
candidate subset per round        whole pool                  1,000 (digits) / 25,000 (natural)
MC dropout (bald, ent.-bayesian)  embedding only, BN eval     every block, model in train mode
EntropyBayesian score             entropy of the mean         sum of per-pass entropies
ProbCover delta                   purity-chosen (alpha 0.95)  fixed 0.4 on normalised features
UncertainGCN normalisation        row (the paper's graph)     column (reference code)
DM2 mixing (dm2, dm2-at)          group, literal Eq. 7 sum    pairs, lambda ~ Beta(1, 1) (Alg. 2)
DM2-AT FGSM label / epsilon       true label / 0.03 MNIST     predicted label / 8/255 (revision)
================================  ==========================  ==========================================

The revision's text lost its numbers for alpha and the default epsilon; alpha = 1 (lambda uniform,
the usual MixUp setting) and epsilon = 8/255 (the top of its 1/255-8/255 grid, the closest to the
original 0.03) are dalkit's choices, written here and in the README.

``lplgrad-paper`` runs LPLgrad / LearningLoss as their codes do (Mephisto405/Learning-Loss-for-Active-
Learning, which LPLgrad's code follows): the model and its loss module kept across cycles
(``retrain: continue``, fresh optimiser per cycle), SGD lr 0.1, momentum 0.9, weight decay 5e-4,
batch 128, 200 epochs with the lr x0.1 at epoch 160, the loss module reading detached features after
epoch 120 (``detach_after: 0.6``).

Values the user sets explicitly always win over the preset's (a ``train`` mapping is merged key by key).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dalkit.errors import ConfigError

STRATEGY_OPTIONS: dict[str, dict[str, Any]] = {
    "bald": {"mc": "blocks"},
    "entropy-bayesian": {"mc": "blocks", "score": "sum"},
    "probcover": {"delta": 0.4, "normalize": True},
    "uncertain-gcn": {"normalization": "column"},
    "dm2": {"mixing": "pairs", "alpha": 1.0},
}
ADVERSARIAL_OPTIONS: dict[str, Any] = {"label": "predicted", "epsilon": 8 / 255}
PROTOCOL = {  # dataset family -> labels (rounds = the code's CYCLES - 1 queries), subset, initial set
    "digits": {"initial_size": 20, "budget": 20, "rounds": 9, "subset": 1000, "initial_set": "every-class"},
    "natural": {"initial_size": 1000, "budget": 1000, "rounds": 6, "subset": 25000},
}
TRAIN = {  # dataset family -> the code's training recipe (configs/config_mnist.py, config_cifar10.py)
    "digits": {"epochs": 50, "batch_size": 96, "optimizer": "adam", "lr": 1e-3, "lr_decay_at": 0.4,
               "class_balance": "one-batch"},
    "natural": {"epochs": 200, "batch_size": 128, "optimizer": "sgd", "lr": 0.1, "momentum": 0.9,
                "weight_decay": 5e-4, "lr_decay_at": 0.8, "crop_padding": 4, "hflip": True,
                "class_balance": "one-batch"},
}
MNIST_MODEL_DATASETS = ("mnist", "fashion-mnist")  # 28 px digits: the code's SmallNet fits them
LPLGRAD_TRAIN = {"epochs": 200, "batch_size": 128, "optimizer": "sgd", "lr": 0.1, "momentum": 0.9,
                 "weight_decay": 5e-4, "lr_decay_at": 0.8}


def _merge_options(preset: dict[str, dict[str, Any]], user: Any, methods: list[str]) -> Any:
    """Per-method preset options under the user's: the user's shared keys and per-method keys win."""
    if not isinstance(user, dict):
        return user  # a bad value: the config's own validation reports it
    shared = {k: v for k, v in user.items() if not (k in methods and isinstance(v, dict))}
    out = dict(user)
    for m, opts in preset.items():
        own = user.get(m) if isinstance(user.get(m), dict) else {}
        merged = {k: v for k, v in opts.items() if k not in shared}
        merged.update(own)
        if merged:
            out[m] = merged
    return out


def dm2_paper(values: dict[str, Any]) -> dict[str, Any]:
    """The ``dm2-paper`` preset applied under ``values`` (a config mapping; not modified)."""
    from dalkit.data import DATASETS
    from dalkit.experiment.methods import resolve_method

    family = DATASETS.get(values.get("dataset", "mnist")).family
    methods = values.get("method", "random")
    methods = methods if isinstance(methods, list) else [methods]
    strat_preset: dict[str, dict[str, Any]] = {}
    recipe_preset: dict[str, dict[str, Any]] = {}
    for m in methods:
        if not isinstance(m, str):
            continue  # reported by the config
        spec = resolve_method(m)
        if spec.strategy in STRATEGY_OPTIONS:
            strat_preset[m] = dict(STRATEGY_OPTIONS[spec.strategy])
        if (values.get("recipe") or spec.recipe) == "adversarial":
            recipe_preset[m] = dict(ADVERSARIAL_OPTIONS)
    protocol = dict(PROTOCOL.get(family, PROTOCOL["digits"]))
    pool_size = values.get("pool_size")
    if isinstance(pool_size, int) and pool_size <= protocol["subset"]:
        protocol["subset"] = "full"  # a pool no larger than the subset: every sample is a candidate
    if values.get("dataset", "mnist") in MNIST_MODEL_DATASETS:
        protocol["model"] = "smallnet"
    out = {**protocol, **values}
    out["train"] = _merge_train(TRAIN.get(family, TRAIN["digits"]), values.get("train"))
    out["strategy_options"] = _merge_options(strat_preset, values.get("strategy_options", {}), methods)
    out["recipe_options"] = _merge_options(recipe_preset, values.get("recipe_options", {}), methods)
    return out


def _merge_train(preset: dict[str, Any], user: Any) -> Any:
    """The preset's training recipe under the user's ``train`` mapping (key by key); a TrainConfig or a
    bad value is the user's whole choice (the config reports a bad one)."""
    if user is None:
        return dict(preset)
    return {**preset, **user} if isinstance(user, dict) else user


def lplgrad_paper(values: dict[str, Any]) -> dict[str, Any]:
    """The ``lplgrad-paper`` preset applied under ``values`` (a config mapping; not modified)."""
    methods = values.get("method", "random")
    methods = methods if isinstance(methods, list) else [methods]
    recipe_preset = {m: {"detach_after": 0.6} for m in methods if isinstance(m, str)
                     and (values.get("recipe") or _recipe_of(m)) == "loss-prediction"}
    out = {"retrain": "continue", **values}
    out["train"] = _merge_train(LPLGRAD_TRAIN, values.get("train"))
    out["recipe_options"] = _merge_options(recipe_preset, values.get("recipe_options", {}), methods)
    return out


def _recipe_of(method: str) -> str:
    from dalkit.experiment.methods import resolve_method

    return resolve_method(method).recipe


PRESETS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {"dm2-paper": dm2_paper,
                                                                   "lplgrad-paper": lplgrad_paper}


def apply_preset(values: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    """``values`` with the preset ``name`` (or ``values["preset"]``) filled in under them.

    Raises:
        ConfigError: unknown preset (lists the valid names).
    """
    values = dict(values)
    name = values.pop("preset", None) if name is None else name
    values.pop("preset", None)
    if name is None:
        return values
    if not isinstance(name, str) or name not in PRESETS:  # a YAML list or mapping is no name either
        from dalkit.checks import short

        raise ConfigError(f"unknown preset {short(name)}; valid presets: {', '.join(sorted(PRESETS))}")
    return PRESETS[name](values)


__all__ = ["ADVERSARIAL_OPTIONS", "LPLGRAD_TRAIN", "PRESETS", "PROTOCOL", "STRATEGY_OPTIONS", "TRAIN",
           "apply_preset", "dm2_paper", "lplgrad_paper"]

"""Models by name.  Every model has ``forward()`` (logits), ``embed()`` (penultimate features) and
``forward_features()`` (embedding + per-stage feature maps)."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor, nn

from dalkit.checks import short
from dalkit.errors import ConfigError
from dalkit.models.adapter import ModelAdapter, adapt_model, is_dalkit_model
from dalkit.models.base import DalkitModel
from dalkit.models.cnn import BaselineSmallNet, DigitCNN
from dalkit.models.features import FeatureMLP
from dalkit.models.mobilenet import MobileNet
from dalkit.models.resnet import ResNet, resnet18, resnet34
from dalkit.models.vgg import vgg16
from dalkit.registry import Registry

__all__ = ["ADAPTER_OPTIONS", "MODELS", "BaselineSmallNet", "DalkitModel", "DigitCNN", "FeatureMLP",
           "MobileNet", "ModelAdapter", "ResNet", "adapt_model", "build_model", "check_model_name",
           "create_model", "import_model_code", "is_dalkit_model", "is_import_path"]

MODELS: Registry[Callable[..., DalkitModel]] = Registry("model")
MODELS.register("cnn")(DigitCNN)
MODELS.register("smallnet")(BaselineSmallNet)
MODELS.register("resnet18")(resnet18)
MODELS.register("resnet34")(resnet34)
MODELS.register("mobilenet")(MobileNet)
MODELS.register("vgg16")(vgg16)
MODELS.register("features")(FeatureMLP)

ADAPTER_OPTIONS = ("embedding_layer", "stages")  # model options read by the adapter, not the builder


def create_model(
    name: str,
    in_channels: int,
    num_classes: int,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    dropout: float | None = None,
    image_size: int | None = None,
) -> DalkitModel:
    """Build a registered model.

    Args:
        name: registry name (``cnn``, ``resnet18``, ``resnet34``, ``mobilenet``, ...).
        in_channels, num_classes: data shape.
        mean, std: input normalisation (per channel, [0, 1] units).
        dropout: embedding dropout; None keeps the model's default.
        image_size: input side length (the digit CNN sizes its fully connected layer from it).
    Raises:
        UnknownNameError: unknown model name (the message lists the valid ones).
    """
    factory = MODELS.get(name)
    kw = {"in_channels": in_channels, "num_classes": num_classes, "mean": mean, "std": std}
    if dropout is not None:
        kw["dropout"] = dropout
    if image_size is not None:
        kw["image_size"] = image_size
    return factory(**kw)


def is_import_path(name: Any) -> bool:
    """True for ``"package.module:attribute"`` (a user's model builder), False for registry names."""
    return isinstance(name, str) and ":" in name


def _import_builder(path: str) -> Callable[..., Any]:
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"model {short(path)} must be a registered name or an import path "
                          "'package.module:function' (e.g. mypkg.nets:build)")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import model {short(path)}: {short(str(exc))[1:-1]} "
                          "(is the package on PYTHONPATH or installed?)") from None
    except Exception as exc:  # noqa: BLE001 - user code failing at import: one line, not a traceback
        raise ConfigError(f"importing model {short(path)} failed: {type(exc).__name__}: "
                          f"{short(str(exc))[1:-1]}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"model {short(path)}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if isinstance(obj, nn.Module) or not callable(obj):
        raise ConfigError(f"model {short(path)} must be a function or class that builds a fresh nn.Module "
                          f"(every round trains a new one), got a {type(obj).__name__}")
    return obj


def import_model_code(name: str) -> None:
    """Import a user builder's module now, before a round seeds the global RNG: code that runs at its
    import (a module-level layer, a seed call) would otherwise draw from, or reset, the round's stream
    the first time only."""
    if is_import_path(name):
        _import_builder(name)


def check_model_name(name: Any) -> None:
    """Raises ConfigError/UnknownNameError unless ``name`` is a registered model or an importable
    builder path."""
    if is_import_path(name):
        _import_builder(name)
    else:
        MODELS.get(name)


def _call_builder(builder: Callable[..., Any], path: str, offered: dict[str, Any],
                  options: dict[str, Any]) -> Any:
    """Call a user's builder with its own ``options`` plus whichever of ``offered`` (num_classes,
    input_shape, in_channels) its signature accepts."""
    try:
        params = inspect.signature(builder).parameters
    except (TypeError, ValueError):
        params = {}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kw = {k: v for k, v in offered.items() if takes_any or k in params}
    try:
        return builder(**kw, **options)
    except TypeError as exc:
        raise ConfigError(f"model {short(path)} could not be built with {sorted({**kw, **options})}: "
                          f"{short(str(exc))[1:-1]}") from None


def build_model(name: str, input_shape: Sequence[int], num_classes: int, example: Tensor,
                mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                dropout: float | None = None, options: dict[str, Any] | None = None,
                float_pool: bool = False) -> nn.Module:
    """A fresh model for a round: a registered dalkit model, or a user's ``nn.Module`` built from an
    import path and wrapped in :class:`ModelAdapter`.

    Args:
        name: registry name (``cnn``, ``features``, ...) or ``"package.module:builder"``.  The builder is
            called with whichever of ``num_classes``, ``input_shape`` (one sample's shape) and
            ``in_channels`` it accepts, plus ``options`` (except ``embedding_layer``/``stages``, which
            go to the adapter); it must return an ``nn.Module`` whose output is logits [B, C].
        input_shape: shape of one sample, (C, H, W) or (D,).
        example: a few model inputs [B, *input_shape] for the adapter's probe pass.
        mean, std: input normalisation for dalkit's models (user models normalise themselves).
        dropout: embedding dropout (dalkit's models; the adapter's MC-dropout p for a user model).
        options: model options: constructor keywords of a registered model (``features``: hidden,
            depth), or the builder's keywords and the adapter's ``embedding_layer`` / ``stages``.
        float_pool: inputs are a float pool (no [0, 1] clipping for FGSM).
    Raises:
        ConfigError, UnknownNameError: unknown name, failing import, options the model does not take, a
            model that cannot be adapted.
    """
    options = dict(options or {})
    if not is_import_path(name):
        factory = MODELS.get(name)
        kw: dict[str, Any] = {"in_channels": input_shape[0], "num_classes": num_classes, "mean": mean,
                              "std": std, "image_size": input_shape[-1]}
        if dropout is not None:
            kw["dropout"] = dropout
        try:
            return factory(**kw, **options)
        except TypeError as exc:
            raise ConfigError(f"model {name!r} does not take the options {sorted(options)} "
                              f"({short(str(exc))[1:-1]})") from None
    builder = _import_builder(name)
    adapter_kw = {k: options.pop(k) for k in ADAPTER_OPTIONS if k in options}
    offered = {"num_classes": num_classes, "input_shape": tuple(input_shape), "in_channels": input_shape[0]}
    net = _call_builder(builder, name, offered, options)
    if not isinstance(net, nn.Module):
        raise ConfigError(f"model {short(name)} returned a {type(net).__name__}, not a torch nn.Module")
    if is_dalkit_model(net):
        return net
    model = adapt_model(net, example, adapter_kw.get("embedding_layer"), adapter_kw.get("stages"), dropout,
                        None if float_pool else (0.0, 1.0))
    if model.num_classes != num_classes:
        raise ConfigError(f"model {short(name)} outputs {model.num_classes} logits per sample but the data "
                          f"has {num_classes} classes; build it with num_classes={num_classes}")
    return model

"""Models by name.  Every model has ``forward()`` (logits), ``embed()`` (penultimate features) and
``forward_features()`` (embedding + per-stage feature maps)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from dalkit.models.base import DalkitModel
from dalkit.models.cnn import BaselineSmallNet, DigitCNN
from dalkit.models.mobilenet import MobileNet
from dalkit.models.resnet import ResNet, resnet18, resnet34
from dalkit.models.vgg import vgg16
from dalkit.registry import Registry

__all__ = ["MODELS", "BaselineSmallNet", "DalkitModel", "DigitCNN", "MobileNet", "ResNet", "create_model"]

MODELS: Registry[Callable[..., DalkitModel]] = Registry("model")
MODELS.register("cnn")(DigitCNN)
MODELS.register("smallnet")(BaselineSmallNet)
MODELS.register("resnet18")(resnet18)
MODELS.register("resnet34")(resnet34)
MODELS.register("mobilenet")(MobileNet)
MODELS.register("vgg16")(vgg16)


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

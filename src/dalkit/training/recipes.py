"""Training recipes: a step function for :func:`fit` plus what happens to newly labeled samples."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from dalkit.errors import ConfigError
from dalkit.registry import Registry
from dalkit.training.adversarial import fgsm
from dalkit.training.evaluate import predict
from dalkit.training.fit import StepFn
from dalkit.training.loss_prediction import attach_loss_module, loss_prediction_step
from dalkit.training.steps import adversarial_pair_step, supervised_step

RECIPES: Registry[type] = Registry("recipe")


@RECIPES.register("supervised")
@dataclass(frozen=True)
class Supervised:
    """Cross-entropy on the labeled set."""

    def step(self) -> StepFn:
        return supervised_step

    def counterparts(self, model: nn.Module, x: Tensor, y_true: Tensor) -> Tensor | None:
        """No extra samples join the labeled pool."""
        return None


@RECIPES.register("adversarial")
@dataclass(frozen=True)
class AdversarialPairs:
    """DM2-AT (DM2 paper section 4): FGSM counterparts of the selected samples join the labeled pool,
    paired with their originals; pairs train on 0.5 * (L(x, y) + L(H, y)) (Eq. 14).

    Options:
        epsilon: FGSM step in [0, 1] pixel units; None = the dataset's default (0.03 MNIST/SVHN as in
            the paper's section 4.1; 8/255 CIFAR, the top of the revision's 1/255..8/255 grid, where
            section 4.1 said 0.1: ``dalkit.data.CIFAR_FGSM_EPSILON``).
        label: "true" (section 4.1, the oracle's label) or "predicted" (the revision's Algorithm 2:
            the model's prediction at selection time) as the label whose loss FGSM ascends.
        regenerate: False (the paper) keeps counterparts fixed from selection time; True recomputes
            them with the current weights at every step.
    """

    epsilon: float | None = None
    label: str = "true"
    regenerate: bool = False

    def __post_init__(self) -> None:
        if self.epsilon is not None and not 0 < self.epsilon <= 1:
            raise ConfigError(f"adversarial epsilon must lie in (0, 1], got {self.epsilon}")
        if self.label not in ("true", "predicted"):
            raise ConfigError(f"adversarial label must be 'true' or 'predicted', got {self.label!r}")

    @property
    def eps(self) -> float:
        if self.epsilon is None:
            raise ConfigError("adversarial epsilon is unset (the runner fills in the dataset default)")
        return self.epsilon

    def step(self) -> StepFn:
        return adversarial_pair_step(self.regenerate, self.eps)

    def counterparts(self, model: nn.Module, x: Tensor, y_true: Tensor) -> Tensor | None:
        """H = clip(x + eps * sign(grad_x L(theta, x, y))) for the newly labeled x (Eq. 13-16)."""
        y = y_true
        if self.label == "predicted":
            logits, _ = predict(model, x, device=x.device)
            y = logits.argmax(1).to(x.device)
        return fgsm(model, x, y, self.eps)


@RECIPES.register("loss-prediction")
@dataclass(frozen=True)
class LossPrediction:
    """Joint training of the model and a loss-prediction module w_aux (Yoo & Kweon 2019; LPLgrad
    section III-B, Eq. 1-4): L = l_main + lambda * l_aux, l_aux the pairwise margin ranking loss.

    Options:
        margin: M of Eq. 2 (1.0), > 0.
        weight: lambda of Eq. 4 (1.0), > 0.
        detach_after: fraction of the epochs after which w_aux reads detached features (0.6: 120 of
            Yoo & Kweon's 200 epochs), in [0, 1].
        hidden: width of w_aux's per-stage FC layers (128).
    """

    margin: float = 1.0
    weight: float = 1.0
    detach_after: float = 0.6
    hidden: int = 128

    def __post_init__(self) -> None:
        for name in ("margin", "weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ConfigError(f"loss-prediction {name} must be a positive number, got {value!r}")
        if isinstance(self.detach_after, bool) or not isinstance(self.detach_after, int | float) \
                or not 0 <= self.detach_after <= 1:
            raise ConfigError(f"loss-prediction detach_after must lie in [0, 1], got {self.detach_after!r}")
        if isinstance(self.hidden, bool) or not isinstance(self.hidden, int) or self.hidden < 1:
            raise ConfigError(f"loss-prediction hidden must be a positive integer, got {self.hidden!r}")

    def prepare(self, model: nn.Module, image_shape: Sequence[int]) -> nn.Module:
        """Attach a fresh w_aux as ``model.loss_module`` (trained by the same optimiser)."""
        return attach_loss_module(model, image_shape, self.hidden)

    def step(self) -> StepFn:
        return loss_prediction_step(self.margin, self.weight, self.detach_after)

    def counterparts(self, model: nn.Module, x: Tensor, y_true: Tensor) -> Tensor | None:
        """No extra samples join the labeled pool."""
        return None


def prepare_model(recipe: Any, model: nn.Module, image_shape: Sequence[int]) -> nn.Module:
    """The model a recipe trains: ``recipe.prepare(model, image_shape)`` where the recipe adds modules
    (loss prediction), else ``model`` itself.  Call before :func:`fit` builds the optimiser."""
    prepare = getattr(recipe, "prepare", None)
    return prepare(model, image_shape) if prepare is not None else model


def create_recipe(name: str, **options: Any):
    """Instantiate a registered recipe; unknown options or bad values raise ConfigError naming them."""
    return RECIPES.create(name, **options)


__all__ = ["RECIPES", "AdversarialPairs", "LossPrediction", "Supervised", "create_recipe", "prepare_model"]

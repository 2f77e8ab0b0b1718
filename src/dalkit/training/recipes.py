"""Training recipes: a step function for :func:`fit` plus what happens to newly labeled samples."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from dalkit.errors import ConfigError
from dalkit.registry import Registry
from dalkit.training.adversarial import fgsm
from dalkit.training.evaluate import predict
from dalkit.training.fit import StepFn
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


def create_recipe(name: str, **options: Any):
    """Instantiate a registered recipe; unknown options or bad values raise ConfigError naming them."""
    return RECIPES.create(name, **options)


__all__ = ["RECIPES", "AdversarialPairs", "Supervised", "create_recipe"]

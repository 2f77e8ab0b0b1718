"""One training loop (:func:`fit`) and the step functions that make the recipes."""

from dalkit.training.adversarial import fgsm, paired_loss
from dalkit.training.config import TrainConfig
from dalkit.training.evaluate import accuracy, predict
from dalkit.training.fit import Batch, StepFn, TrainSet, fit
from dalkit.training.steps import adversarial_pair_step, supervised_step

__all__ = [
    "Batch", "StepFn", "TrainConfig", "TrainSet", "accuracy", "adversarial_pair_step", "fgsm", "fit",
    "paired_loss", "predict", "supervised_step",
]

from dalkit.training.loss_prediction import (  # noqa: E402
    LossPredictionModule,
    attach_loss_module,
    loss_module,
    predicted_losses,
    ranking_loss,
)
from dalkit.training.recipes import (  # noqa: E402
    RECIPES,
    AdversarialPairs,
    FixMatch,
    FreeMatch,
    LossPrediction,
    Supervised,
    create_recipe,
    prepare_model,
)

__all__ += ["RECIPES", "AdversarialPairs", "FixMatch", "FreeMatch", "LossPrediction", "LossPredictionModule",
            "Supervised", "attach_loss_module", "create_recipe", "loss_module", "predicted_losses",
            "prepare_model", "ranking_loss"]

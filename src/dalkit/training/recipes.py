"""Training recipes: a step function for :func:`fit` plus what happens to newly labeled samples."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from dalkit.data.augment import RA_RANGES
from dalkit.errors import ConfigError
from dalkit.registry import Registry
from dalkit.training.adversarial import EPSILON_UNITS, fgsm, fgsm_step_size
from dalkit.training.evaluate import predict
from dalkit.training.fit import StepFn
from dalkit.training.loss_prediction import attach_loss_module, loss_prediction_step
from dalkit.training.ssl import FAOptions, FreeMatchThresholds, fixmatch_mask, ssl_step
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
        epsilon: FGSM step in (0, 1], in ``epsilon_units``; None = the dataset's default (0.03 MNIST/SVHN
            as in the paper's section 4.1; 8/255 CIFAR, the top of the revision's 1/255..8/255 grid, where
            section 4.1 said 0.1: ``dalkit.data.CIFAR_FGSM_EPSILON``).
        epsilon_units: "input" (default): the inputs' own units, pixels on the [0, 1] scale for images
            (the bound 1 is the pixel range) and the raw values of a float pool (feature rows: the
            features model, an adapted model on float inputs), perturbed unclipped; "std": epsilon
            standard deviations of each input feature (channel, for images), the pool statistics the
            model standardises with, i.e. a step of epsilon in the space the network sees (the bound 1:
            at most one standard deviation).  Use "std" on embeddings, whose scale is arbitrary.
        label: "true" (section 4.1, the oracle's label) or "predicted" (the revision's Algorithm 2:
            the model's prediction at selection time) as the label whose loss FGSM ascends.
        regenerate: False (the paper) keeps counterparts fixed from selection time; True recomputes
            them with the current weights at every step.
    """

    epsilon: float | None = None
    label: str = "true"
    regenerate: bool = False
    # added after runs were recorded: left out of resolved.json at its default (the behaviour before)
    epsilon_units: str = dataclasses.field(default="input", metadata={"resolved_at_default": False})

    def __post_init__(self) -> None:
        if self.epsilon_units not in EPSILON_UNITS:
            raise ConfigError(f"adversarial epsilon_units must be one of {', '.join(EPSILON_UNITS)}, "
                              f"got {self.epsilon_units!r}")
        if self.epsilon is not None and not 0 < self.epsilon <= 1:
            unit = "pixel units" if self.epsilon_units == "input" else "standard deviations"
            raise ConfigError(f"adversarial epsilon must lie in (0, 1] ({unit}), got {self.epsilon}")
        if self.label not in ("true", "predicted"):
            raise ConfigError(f"adversarial label must be 'true' or 'predicted', got {self.label!r}")

    @property
    def eps(self) -> float:
        if self.epsilon is None:
            raise ConfigError("adversarial epsilon is unset (the runner fills in the dataset default)")
        return self.epsilon

    extra_labeled_views = 1  # each labeled sample's FGSM counterpart rides in the same step

    def step(self) -> StepFn:
        return adversarial_pair_step(self.regenerate, self.eps, self.epsilon_units)

    def prepare(self, model: nn.Module, image_shape: Sequence[int]) -> nn.Module:
        """``model`` itself, once its inputs can be measured in ``epsilon_units`` (ConfigError if not)."""
        fgsm_step_size(model, 1.0, self.epsilon_units)
        return model

    def counterparts(self, model: nn.Module, x: Tensor, y_true: Tensor) -> Tensor | None:
        """H = clip(x + eps * sign(grad_x L(theta, x, y))) for the newly labeled x (Eq. 13-16)."""
        y = y_true
        if self.label == "predicted":
            logits, _ = predict(model, x, device=x.device)
            y = logits.argmax(1).to(x.device)
        return fgsm(model, x, y, fgsm_step_size(model, self.eps, self.epsilon_units))


def _check_ssl(name: str, r: Any) -> None:
    if not isinstance(r.n_ops, int) or isinstance(r.n_ops, bool) or r.n_ops < 0:
        raise ConfigError(f"{name} n_ops must be a non-negative integer, got {r.n_ops!r}")
    if r.flip is not None and not isinstance(r.flip, bool):
        raise ConfigError(f"{name} flip must be true, false or null, got {r.flip!r}")
    if not isinstance(r.mu, int) or isinstance(r.mu, bool) or r.mu < 1:
        raise ConfigError(f"{name} mu must be a positive integer, got {r.mu!r}")
    if not r.lambda_u >= 0:
        raise ConfigError(f"{name} lambda_u must be >= 0, got {r.lambda_u}")
    if not isinstance(r.fa, bool):
        raise ConfigError(f"{name} fa must be true or false, got {r.fa!r}")
    if not (r.fa_similarity >= 0 and r.fa_contrastive >= 0):
        raise ConfigError(f"{name} fa_similarity and fa_contrastive must be >= 0, got "
                          f"{r.fa_similarity}, {r.fa_contrastive}")
    if not isinstance(r.fa_queue, int) or isinstance(r.fa_queue, bool) or r.fa_queue < 1:
        raise ConfigError(f"{name} fa_queue (T) must be a positive integer, got {r.fa_queue!r}")
    if r.fa_norm not in ("batch", "sample"):
        raise ConfigError(f"{name} fa_norm must be 'batch' or 'sample', got {r.fa_norm!r}")
    if r.ra_ranges not in RA_RANGES:
        raise ConfigError(f"{name} ra_ranges must be 'fixmatch' (Table 12) or 'google', got {r.ra_ranges!r}")


@dataclass(frozen=True)
class _SSLRecipe:
    """Options and parts shared by the pseudo-label SSL recipes (``fixmatch``, ``freematch``)."""

    mu: int = 7
    flip: bool | None = None
    n_ops: int = 2
    fa: bool = False
    fa_similarity: float = 1.0
    fa_contrastive: float = 0.01
    fa_queue: int = 10
    fa_norm: str = "batch"
    ra_ranges: str = "fixmatch"

    @property
    def unlabeled_ratio(self) -> int:
        """mu: :func:`fit` hands the step mu unlabeled inputs per labeled one."""
        return self.mu

    def for_dataset(self, spec: Any):
        """Fill ``flip`` from the dataset: flips for natural images, never for digits."""
        if self.flip is not None:
            return self
        return dataclasses.replace(self, flip=getattr(spec, "family", "digits") == "natural")

    @property
    def extra_labeled_views(self) -> int:
        """Views of each labeled sample a step adds to the weak one (FA's strong view)."""
        return 1 if self.fa else 0

    def state_bytes(self, num_labeled: int, embed_dim: int, batch_size: int) -> int:
        """Bytes of the recipe's own state in a round of ``num_labeled`` labeled samples: FA's queues
        Q_w, Q_s [N_l, (1 + T), D], their normalised copy and the similarity matrix of Eq. 11
        [mu * B, N_l * T] (:class:`dalkit.training.ssl.FeatureQueues`)."""
        if not self.fa:
            return 0
        queues = num_labeled * (2 * self.fa_queue + 1) * embed_dim
        return 4 * (queues + self.mu * batch_size * num_labeled * self.fa_queue)

    def fa_options(self) -> FAOptions | None:
        if not self.fa:
            return None
        return FAOptions(self.fa_similarity, self.fa_contrastive, self.fa_queue, self.fa_norm)

    def counterparts(self, model: nn.Module, x: Tensor, y_true: Tensor) -> Tensor | None:
        """No extra samples join the labeled pool."""
        return None


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


@RECIPES.register("fixmatch")
@dataclass(frozen=True)
class FixMatch(_SSLRecipe):
    """FixMatch (Sohn et al. 2020): CE on weak labeled views + lambda_u * CE of strong unlabeled views
    against the weak views' pseudo-labels where their confidence >= tau (SSAL paper Eq. 2).

    Options (defaults from FixMatch section 4 / Table 12: tau = 0.95, lambda_u = 1, mu = 7, hard
    pseudo-labels, RandAugment with 2 ops + Cutout):
        tau: fixed confidence threshold.
        lambda_u: weight of the unlabeled loss.
        mu: unlabeled samples per labeled sample in a batch.
        flip: horizontal flips in the views; None = natural images only (digits are never flipped).
        n_ops: RandAugment ops per strong view.
        ra_ranges: RandAugment's ranges: "fixmatch" (Table 12: enhancement factors U[0.05, 0.95],
            posterize 4..7 bits; default) or "google" (RandAugment's 1 +- 0.95 m, 4..8 bits).
        fa: add the feature re-alignment module (method name ``fixmatch+fa``, SSAL section 3.5).
        fa_similarity, fa_contrastive: weights of L_s (Eq. 12) and L_c (Eq. 18).
        fa_queue: T, strong-view features queued per labeled sample (paper default 10, Figure 2).
        fa_norm: L_c's feature normalisation, "batch" (per-dimension standardisation) or "sample"
            (unit-norm vectors, the literal text); see :func:`dalkit.training.ssl.contrastive_loss`.
    """

    tau: float = 0.95
    lambda_u: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.tau <= 1:
            raise ConfigError(f"fixmatch tau must lie in (0, 1], got {self.tau}")
        _check_ssl("fixmatch", self)

    def step(self) -> StepFn:
        tau = self.tau
        return ssl_step(lambda p: fixmatch_mask(p, tau), self.lambda_u, bool(self.flip), self.fa_options(),
                        n_ops=self.n_ops, ra_ranges=self.ra_ranges)


@RECIPES.register("freematch")
@dataclass(frozen=True)
class FreeMatch(_SSLRecipe):
    """FreeMatch (Wang et al. 2023): FixMatch with self-adaptive thresholds (a global EMA of the mean
    confidence, scaled per class by the EMA of the class probabilities, Eq. 6-9) and a self-adaptive
    fairness term (Eq. 11).

    Options (FreeMatch section 4: EMA momentum 0.999, w_u = 1, mu = 7; the fairness weight 0.001 of
    every config the authors ship in microsoft/Semi-supervised-learning):
        momentum: EMA momentum lambda of the thresholds.
        lambda_u: w_u, weight of the unlabeled loss.
        fairness: w_f, weight of the fairness term (0 disables it).
        mu, flip, n_ops, ra_ranges, fa, fa_similarity, fa_contrastive, fa_queue, fa_norm: as for
            ``fixmatch``.
    """

    momentum: float = 0.999
    lambda_u: float = 1.0
    fairness: float = 0.001

    def __post_init__(self) -> None:
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"freematch momentum must lie in [0, 1), got {self.momentum}")
        if not self.fairness >= 0:
            raise ConfigError(f"freematch fairness must be >= 0, got {self.fairness}")
        _check_ssl("freematch", self)

    def step(self, thresholds: FreeMatchThresholds | None = None) -> StepFn:
        """The training step; pass ``thresholds`` to watch tau_t while it trains (a fresh state when None)."""
        thresholds = thresholds if thresholds is not None else FreeMatchThresholds(momentum=self.momentum)
        return ssl_step(thresholds.update, self.lambda_u, bool(self.flip), self.fa_options(), thresholds,
                        self.fairness, n_ops=self.n_ops, ra_ranges=self.ra_ranges)
def prepare_model(recipe: Any, model: nn.Module, image_shape: Sequence[int]) -> nn.Module:
    """The model a recipe trains: ``recipe.prepare(model, image_shape)`` where the recipe adds modules
    (loss prediction), else ``model`` itself.  Call before :func:`fit` builds the optimiser."""
    prepare = getattr(recipe, "prepare", None)
    return prepare(model, image_shape) if prepare is not None else model


def create_recipe(name: str, **options: Any):
    """Instantiate a registered recipe; unknown options or bad values raise ConfigError naming them."""
    return RECIPES.create(name, **options)


__all__ = ["RECIPES", "AdversarialPairs", "FixMatch", "FreeMatch", "LossPrediction", "Supervised",
           "create_recipe", "prepare_model"]

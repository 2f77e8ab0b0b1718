"""Shared fixtures: real data splits, a small trained model and a QueryContext factory.

Tests run from the repository root with ``DALKIT_DATA`` unset, so data paths are resolved from this
file, never from the environment.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from dalkit.data import DataSplits, ImageDataset, channel_stats, load_dataset
from dalkit.models import DalkitModel, create_model
from dalkit.strategies import QueryContext
from dalkit.training import TrainConfig, TrainSet, fit, supervised_step

# The suite's models are tiny (8x8 and 28x28 digits): one intra-op thread is as fast on an idle machine
# and much faster on a shared one, where two threads per process contend with other jobs.
torch.set_num_threads(1)

DATA_ROOT = Path(__file__).parents[1] / "data"
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte")


@pytest.fixture(scope="session")
def data_root() -> Path:
    return DATA_ROOT


@pytest.fixture(scope="session")
def digits() -> DataSplits:
    """scikit-learn's real 8x8 digits (1,497 train / 300 test); no files needed."""
    return load_dataset("digits")


@pytest.fixture(scope="session")
def mnist() -> DataSplits:
    """Real MNIST from ``<repo>/data/mnist``; skipped when the IDX files are absent."""
    folder = DATA_ROOT / "mnist"
    missing = [f for f in MNIST_FILES if not (folder / f).is_file() and not (folder / f"{f}.gz").is_file()]
    if missing:
        pytest.skip(f"MNIST files absent from {folder} ({', '.join(missing)}); run `make data`")
    return load_dataset("mnist", DATA_ROOT)


def train_model(data: ImageDataset, idx: torch.Tensor, epochs: int, seed: int = 0,
                dropout: float | None = None) -> DalkitModel:
    """A digit CNN trained briefly (seeded) on ``data[idx]``, returned in eval mode."""
    mean, std = channel_stats(data.images[idx])
    torch.manual_seed(seed)
    model = create_model("cnn", data.image_shape[0], data.num_classes, mean, std, dropout,
                         image_size=data.image_shape[-1])
    fit(model, TrainSet(data.images[idx], data.labels[idx]), supervised_step,
        TrainConfig(epochs=epochs, batch_size=64), torch.Generator().manual_seed(seed))
    return model.eval()


@pytest.fixture(scope="session")
def trainer() -> Callable[..., DalkitModel]:
    """The :func:`train_model` helper, for test modules (tests/ is not a package)."""
    return train_model


@pytest.fixture(scope="session")
def digits_model(digits: DataSplits) -> DalkitModel:
    """A digit CNN trained for a few epochs on 400 digits: accurate but not certain everywhere."""
    idx = torch.randperm(len(digits.train), generator=torch.Generator().manual_seed(1))[:400]
    return train_model(digits.train, idx, epochs=8)


@pytest.fixture(scope="session")
def digits_model_lp(digits: DataSplits) -> DalkitModel:
    """A digit CNN trained with the loss-prediction recipe (it carries ``loss_module``)."""
    from dalkit.training import create_recipe

    idx = torch.randperm(len(digits.train), generator=torch.Generator().manual_seed(1))[:400]
    data = digits.train
    mean, std = channel_stats(data.images[idx])
    torch.manual_seed(0)
    recipe = create_recipe("loss-prediction")
    model = create_model("cnn", 1, data.num_classes, mean, std, image_size=data.image_shape[-1])
    model = recipe.prepare(model, data.image_shape)
    fit(model, TrainSet(data.images[idx], data.labels[idx]), recipe.step(),
        TrainConfig(epochs=8, batch_size=64), torch.Generator().manual_seed(0))
    return model.eval()


# The three kinds of model the contract suite and the selection oracles run every strategy with:
# dalkit's own CNN, a plain nn.Sequential and a user module with its own BatchNorm and dropout (both
# wrapped by dalkit.models.adapter.ModelAdapter, as QueryContext and the runner do).
MODEL_KINDS = ("dalkit", "sequential", "user-bn")


class UserBNNet(torch.nn.Module):
    """A user's own classifier for 8x8 grey digits: conv + BatchNorm2d, a BatchNorm1d hidden layer and
    its own dropout before the final nn.Linear (nothing dalkit-specific)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        nn = torch.nn
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.MaxPool2d(2))
        self.hidden = nn.Sequential(nn.Flatten(), nn.Linear(8 * 4 * 4, 32), nn.BatchNorm1d(32), nn.ReLU())
        self.drop = nn.Dropout(0.25)
        self.out = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.drop(self.hidden(self.features(x))))


def user_net(kind: str) -> torch.nn.Module:
    """A fresh (seeded) user network of ``kind`` ("sequential" or "user-bn") for 8x8 digits."""
    torch.manual_seed(0)
    if kind == "sequential":
        nn = torch.nn
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.ReLU(), nn.Dropout(0.3), nn.Linear(48, 10))
    if kind == "user-bn":
        return UserBNNet()
    raise ValueError(kind)


def train_user_model(data: ImageDataset, idx: torch.Tensor, kind: str, recipe_name: str = "supervised",
                     epochs: int = 8) -> torch.nn.Module:
    """A user network of ``kind`` adapted and trained (seeded) by dalkit's fit() with a recipe; eval mode."""
    from dalkit.models import adapt_model
    from dalkit.training import create_recipe, prepare_model

    recipe = create_recipe(recipe_name)
    model = adapt_model(user_net(kind), data.images[:2].float() / 255)
    model = prepare_model(recipe, model, data.image_shape)
    fit(model, TrainSet(data.images[idx], data.labels[idx]), recipe.step(),
        TrainConfig(epochs=epochs, batch_size=64), torch.Generator().manual_seed(0))
    return model.eval()


@pytest.fixture(scope="session")
def user_models(digits: DataSplits) -> Callable[[str, bool], torch.nn.Module]:
    """``get(kind, loss_prediction)``: a user model trained on the 400 digits of ``digits_model``
    (built once per session and kind)."""
    cache: dict[tuple[str, bool], torch.nn.Module] = {}
    idx = torch.randperm(len(digits.train), generator=torch.Generator().manual_seed(1))[:400]

    def get(kind: str, loss_prediction: bool = False) -> torch.nn.Module:
        key = (kind, loss_prediction)
        if key not in cache:
            cache[key] = train_user_model(digits.train, idx, kind,
                                          "loss-prediction" if loss_prediction else "supervised")
        return cache[key]

    return get


@pytest.fixture(scope="session")
def model_for(digits_model_lp: DalkitModel, user_models) -> Callable[..., torch.nn.Module | None]:
    """The model a strategy's contract test queries, of a kind in MODEL_KINDS: one with a loss-prediction
    module for strategies that require that recipe (``requires_recipe``); for dalkit's kind, None means
    the shared ``digits_model``."""
    from dalkit.strategies import STRATEGIES

    def pick(name: str, kind: str = "dalkit") -> torch.nn.Module | None:
        needs_lp = bool(getattr(STRATEGIES.get(name), "requires_recipe", ()))
        if kind == "dalkit":
            return digits_model_lp if needs_lp else None
        return user_models(kind, needs_lp)

    return pick


@pytest.fixture(scope="session")
def digits_pool(digits: DataSplits) -> ImageDataset:
    """A fixed 300-sample pool from the digits training split (every class present)."""
    idx = torch.randperm(len(digits.train), generator=torch.Generator().manual_seed(2))[:300]
    return digits.train.subset(idx.sort().values)


def one_per_class(labels: torch.Tensor, per_class: int = 1) -> torch.Tensor:
    """The first ``per_class`` pool indices of every class, sorted."""
    picks = [torch.nonzero(labels == c).squeeze(1)[:per_class] for c in range(int(labels.max()) + 1)]
    return torch.cat(picks).sort().values


ContextFactory = Callable[..., QueryContext]


@pytest.fixture(scope="session")
def make_context(digits_model: DalkitModel, digits_pool: ImageDataset) -> ContextFactory:
    """Build a fresh :class:`QueryContext` (empty cache) on the digits pool.

    Args (keywords):
        seed: the generator seed.
        per_class: labeled samples per class (at least 1).
        extra_labeled: further random labeled samples.
        pool_size: use the first ``pool_size`` samples of the pool.
        subset: a random ``subset`` of the unlabeled samples are the candidates (the runner's option).
        model, pool: override the model or the pool.
    """

    def build(seed: int = 0, per_class: int = 1, extra_labeled: int = 0, pool_size: int | None = None,
              model: DalkitModel | None = None, pool: ImageDataset | None = None,
              subset: int | None = None) -> QueryContext:
        pool = pool if pool is not None else digits_pool
        if pool_size is not None:
            pool = pool.subset(torch.arange(pool_size))
        labeled = one_per_class(pool.labels, per_class)
        if extra_labeled:
            rest = torch.ones(len(pool), dtype=torch.bool)
            rest[labeled] = False
            cand = rest.nonzero().squeeze(1)
            order = torch.randperm(len(cand), generator=torch.Generator().manual_seed(99))
            pick = cand[order[:extra_labeled]]
            labeled = torch.cat([labeled, pick]).sort().values
        assert set(pool.labels[labeled].tolist()) == set(range(pool.num_classes))
        candidates = None
        if subset is not None:
            unl = torch.ones(len(pool), dtype=torch.bool)
            unl[labeled] = False
            unl_idx = unl.nonzero().squeeze(1)
            order = torch.randperm(len(unl_idx), generator=torch.Generator().manual_seed(7))
            candidates = unl_idx[order[:subset]]
        return QueryContext(model if model is not None else digits_model, pool.images, labeled,
                            pool.labels[labeled], pool.num_classes, torch.Generator().manual_seed(seed),
                            "cpu", 256, candidates=candidates)

    return build

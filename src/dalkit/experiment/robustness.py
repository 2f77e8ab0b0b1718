"""The robustness settings of an experiment (DM2 paper, Tables 3 and 5; CIFAR-10s): validation of the
config fields and the data they produce — corrupted test sets, a long-tailed pool, an open-set pool."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from dalkit.data.corruptions import corrupt, parse_corruptions
from dalkit.data.dataset import ImageDataset
from dalkit.data.poolnoise import add_open_set, long_tail_indices
from dalkit.errors import ConfigError

if TYPE_CHECKING:
    from dalkit.experiment.config import ExperimentConfig

OPEN_SET_ORACLES = ("discard", "random-label")
ROBUST_ROUNDS = ("every", "final")  # when the corrupted sets and the attacks are evaluated
# OOD images are generated beside the pool: n_ood = f / (1 - f) * N.  f = 0.9 makes 9 per pool image
# (a random pick is in-distribution 1 time in 10); beyond it the pool is mostly generated photo crops
# (0.999: 999 per image, ~8 minutes of crops for the 1,497 digits) and the experiment measures little.
MAX_OPEN_SET_FRACTION = 0.9
MAX_OOD_PER_IMAGE = MAX_OPEN_SET_FRACTION / (1 - MAX_OPEN_SET_FRACTION)
_CORRUPT_SEED = 777  # corrupted test sets are the same for every method and seed
_OPEN_SET_SEED = 4242


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_robustness_fields(cfg: ExperimentConfig) -> None:
    """Validate (and normalise ``test_corruptions`` of) a config in place.

    Raises:
        ConfigError: naming the field and the bad value.
    """
    object.__setattr__(cfg, "test_corruptions", parse_corruptions(
        list(cfg.test_corruptions) if isinstance(cfg.test_corruptions, tuple) else cfg.test_corruptions))
    eps = cfg.attack_epsilon
    if eps is not None and not (_number(eps) and 0 < eps <= 1):
        raise ConfigError(f"attack_epsilon must lie in (0, 1] (pixel units) or be null, got {eps!r}")
    if not isinstance(cfg.pgd_steps, int) or isinstance(cfg.pgd_steps, bool) or cfg.pgd_steps < 1:
        raise ConfigError(f"pgd_steps must be a positive integer, got {cfg.pgd_steps!r}")
    restarts = cfg.pgd_restarts
    if not isinstance(restarts, int) or isinstance(restarts, bool) or restarts < 0:
        raise ConfigError(f"pgd_restarts must be a non-negative integer (0: start at x), got {restarts!r}")
    if cfg.robust_rounds not in ROBUST_ROUNDS:
        raise ConfigError(f"robust_rounds must be one of {', '.join(ROBUST_ROUNDS)}, "
                          f"got {cfg.robust_rounds!r}")
    if cfg.robust_rounds != "every" and not cfg.test_corruptions and eps is None:
        raise ConfigError(f"robust_rounds {cfg.robust_rounds!r} needs test_corruptions (--test-corruptions) "
                          "or attack_epsilon (--attack-epsilon): without them nothing robust is evaluated")
    if not (_number(cfg.open_set_fraction) and 0 <= cfg.open_set_fraction <= MAX_OPEN_SET_FRACTION):
        raise ConfigError(f"open_set_fraction must lie in [0, {MAX_OPEN_SET_FRACTION}] (at most "
                          f"{MAX_OOD_PER_IMAGE:g} OOD images per pool image are generated), "
                          f"got {cfg.open_set_fraction!r}")
    if cfg.open_set_oracle not in OPEN_SET_ORACLES:
        raise ConfigError(f"open_set_oracle must be one of {', '.join(OPEN_SET_ORACLES)}, "
                          f"got {cfg.open_set_oracle!r}")
    if not isinstance(cfg.open_set_source, str):
        raise ConfigError(f"open_set_source must be 'photos' or a dataset name, got {cfg.open_set_source!r}")
    if cfg.open_set_source != "photos":
        from dalkit.data import DATASETS

        DATASETS.get(cfg.open_set_source)
    ratio = cfg.imbalance_ratio
    if ratio is not None and not (_number(ratio) and ratio >= 1):
        raise ConfigError(f"imbalance_ratio must be a number >= 1 (head/tail) or null, got {ratio!r}")
    # settings that only act through another one: set without it, they would be silently ignored
    if cfg.open_set_fraction == 0:
        for name, default in (("open_set_source", "photos"), ("open_set_oracle", "discard")):
            if getattr(cfg, name) != default:
                raise ConfigError(f"{name} {getattr(cfg, name)!r} needs an open-set pool: set "
                                  "open_set_fraction (--open-set-fraction) above 0, or drop it")
    if eps is None:
        for name, default in (("pgd_steps", 10), ("pgd_restarts", 0)):
            if getattr(cfg, name) != default:
                raise ConfigError(f"{name} {getattr(cfg, name)!r} needs attack_epsilon "
                                  "(--attack-epsilon): without it no attack runs")


@dataclass
class RobustData:
    """What the robustness settings add to the prepared data.

    Attributes:
        ood_mask: bool [N_pool], True for out-of-distribution pool images (all False without open set).
        corrupted: {"name:severity": uint8 corrupted test images}.
    """

    ood_mask: Tensor
    corrupted: dict[str, Tensor]


def perturb_pool(cfg: ExperimentConfig, pool: ImageDataset) -> tuple[ImageDataset, Tensor]:
    """Apply the long tail, then the open-set images, to the pool: (pool, ood_mask)."""
    if cfg.imbalance_ratio is not None and cfg.imbalance_ratio > 1:
        head = int(torch.bincount(pool.labels, minlength=pool.num_classes).min())
        if cfg.imbalance_ratio > head:  # the tail class would keep floor(head / ratio) = 0 samples
            raise ConfigError(f"imbalance_ratio {cfg.imbalance_ratio:g} empties the tail classes: the head "
                              f"class keeps {head} samples, so the ratio can be at most {head}")
        pool = pool.subset(long_tail_indices(pool.labels, pool.num_classes, float(cfg.imbalance_ratio),
                                             _OPEN_SET_SEED))
    if cfg.open_set_fraction > 0:
        return add_open_set(pool, float(cfg.open_set_fraction), cfg.open_set_source, _OPEN_SET_SEED,
                            cfg.data_root)
    return pool, torch.zeros(len(pool), dtype=torch.bool)


_CACHE: dict[tuple, Tensor] = {}  # (key, digest of the test images) -> corrupted images; the last set only


def corrupted_test_sets(cfg: ExperimentConfig, test: ImageDataset) -> dict[str, Tensor]:
    """The configured corruptions of the test images, each seeded by its position-independent name.

    The last test split's corrupted copies are kept in memory, so the methods of one process (a CLI run
    with several methods, a benchmark) generate them once: MNIST-C on 10,000 images takes ~70 s."""
    if not cfg.test_corruptions:
        return {}
    digest = hashlib.blake2b(test.images.contiguous().numpy().tobytes(), digest_size=16).hexdigest()
    if any(k[1] != digest for k in _CACHE):
        _CACHE.clear()
    out = {}
    for key in cfg.test_corruptions:
        if (key, digest) not in _CACHE:
            name, sev = key.split(":")
            seed = _CORRUPT_SEED + sum(map(ord, name)) * 10 + int(sev)
            _CACHE[(key, digest)] = corrupt(test.images, name, int(sev), seed=seed)
        out[key] = _CACHE[(key, digest)]
    return out


__all__ = ["OPEN_SET_ORACLES", "ROBUST_ROUNDS", "RobustData", "check_robustness_fields",
           "corrupted_test_sets",
           "perturb_pool"]

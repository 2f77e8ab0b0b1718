"""dalkit: deep active learning toolkit.

Library API::

    from dalkit import ExperimentConfig, run_experiment
    records = run_experiment(ExperimentConfig(dataset="mnist", method="dm2"), "runs/dm2")

The names below load on first use (PEP 562), so ``import dalkit.cli`` — what the ``dalkit`` console
script does before anything else — does not import torch; the command line can then answer a Ctrl-C
during start-up with one line.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "DataSplits": "dalkit.data", "ImageDataset": "dalkit.data", "load_dataset": "dalkit.data",
    "BudgetError": "dalkit.errors", "ConfigError": "dalkit.errors", "DalkitError": "dalkit.errors",
    "DatasetFormatError": "dalkit.errors", "DatasetNotFoundError": "dalkit.errors",
    "RunDirectoryError": "dalkit.errors", "UnknownNameError": "dalkit.errors",
    "ExperimentConfig": "dalkit.experiment", "load_config": "dalkit.experiment",
    "run_experiment": "dalkit.experiment", "create_model": "dalkit.models",
    "QueryContext": "dalkit.strategies", "Selection": "dalkit.strategies",
    "create_strategy": "dalkit.strategies", "query": "dalkit.strategies", "TrainConfig": "dalkit.training",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dalkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])

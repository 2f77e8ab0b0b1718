"""Typed errors.  Every error a user can cause derives from :class:`DalkitError`; the CLI turns them
into one line on stderr and exit code 2."""

from __future__ import annotations


class DalkitError(Exception):
    """Base class of all errors caused by user input (config, data, arguments)."""


class ConfigError(DalkitError, ValueError):
    """A configuration value is invalid; the message names the field and the bad value."""


class UnknownNameError(ConfigError, KeyError):
    """A name (strategy, dataset, model, method) is not registered; the message lists valid names."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return self.args[0] if self.args else ""


class BudgetError(DalkitError, ValueError):
    """The query budget cannot be met (larger than the unlabeled pool, or not positive)."""


class DatasetNotFoundError(DalkitError, FileNotFoundError):
    """The files of a dataset are missing; the message says which files to put where."""


class DatasetFormatError(DalkitError, ValueError):
    """A dataset file exists but is malformed (bad magic number, wrong shape, NaN/inf values...)."""


class RunDirectoryError(DalkitError):
    """A run directory belongs to a different configuration or is damaged."""


class OutputError(DalkitError):
    """An output path (run directory, --plot, --markdown) cannot be written; the message names it."""


class LabelError(DalkitError, ValueError):
    """A label, a label file or a labeling project is invalid (unknown class or item, duplicate or
    conflicting labels, a folder that is not a project); the message says what to fix."""


class ExecutorError(DalkitError):
    """A distributed run could not finish (a task kept dying); the run directory keeps its completed
    rounds and a re-run resumes."""


class TrainingDivergedError(DalkitError):
    """Training produced a non-finite loss (NaN or inf); the message names the epoch and the settings to
    change.  The round is not recorded: the run directory keeps only the rounds completed before it."""

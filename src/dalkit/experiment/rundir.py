"""The run directory: config, append-only ``rounds.jsonl``, per-seed state, summary.

Writes are ordered so that an interruption at any point leaves every completed round intact:
state files are written to a temporary name and renamed, then the round's line is appended and
fsynced; a torn last line (no newline yet) is discarded on resume, a complete damaged one refused.
A kill inside an atomic write leaves a ``.NAME.*.tmp`` file; the next run, holding the lock, removes it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import yaml

from dalkit.checks import short, yaml_load
from dalkit.errors import RunDirectoryError
from dalkit.experiment.config import ExperimentConfig, config_from_dict
from dalkit.files import (
    atomic_write_bytes,
    atomic_write_text,
    check_dir_writable,
    ensure_dir,
    remove_stale_temporaries,
)

__all__ = ["RunDirectory", "atomic_write_bytes", "atomic_write_text", "check_records", "check_replay",
           "expected_columns"]


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _fraction(v: Any) -> bool:  # an accuracy: a share of the test set
    return _number(v) and 0 <= v <= 1


def _seconds(v: Any) -> bool:
    return _number(v) and math.isfinite(v) and v >= 0


# every key a round record may hold: (is the value valid, what it must be); rounds.jsonl is read back by
# resume and report, so a damaged value is refused with its line instead of being shown or crashing
FIELDS: dict[str, tuple[Any, str]] = {
    "seed": (_count, "a non-negative integer"),
    "round": (_count, "a non-negative integer"),
    "n_labeled": (_count, "a non-negative integer"),
    "test_acc": (_fraction, "an accuracy in [0, 1]"),
    "selected": (lambda v: isinstance(v, list), "a list of pool indices"),
    "train_s": (_seconds, "a finite number of seconds >= 0"),
    "query_s": (_seconds, "a finite number of seconds >= 0"),
    "train_loss": (_number, "a number"),
    "n_adversarial": (_count, "a non-negative integer"),
    "n_candidates": (_count, "a non-negative integer"),
    "corrupt_acc_mean": (_fraction, "an accuracy in [0, 1]"),
    "corrupt_acc": (lambda v: isinstance(v, dict) and bool(v) and all(_fraction(a) for a in v.values()),
                    "a mapping of corruption: accuracy in [0, 1]"),
    "fgsm_acc": (_fraction, "an accuracy in [0, 1]"),
    "pgd_acc": (_fraction, "an accuracy in [0, 1]"),
    "attack_epsilon": (lambda v: _number(v) and 0 < v <= 1, "a number in (0, 1]"),
    "pgd_steps": (lambda v: _count(v) and v >= 1, "a positive integer"),
    "robust_s": (_seconds, "a finite number of seconds >= 0"),
    "n_trained": (_count, "a non-negative integer"),
    "n_ood_labeled": (_count, "a non-negative integer"),
    "n_ood_selected": (_count, "a non-negative integer"),
    "info": (lambda v: isinstance(v, dict), "a mapping"),
}
REQUIRED_KEYS = ("seed", "round", "n_labeled", "test_acc", "selected", "train_s", "query_s")
# written by every round of a run or by none (they depend on the experiment, not on the round)
RUN_COLUMNS = ("train_loss", "n_adversarial", "corrupt_acc_mean", "corrupt_acc", "fgsm_acc", "pgd_acc",
               "attack_epsilon", "pgd_steps", "robust_s", "n_trained", "n_ood_labeled", "n_ood_selected")
# the robustness columns: with ``robust_rounds: final`` only a seed's last round records them
ROBUST_COLUMNS = ("corrupt_acc_mean", "corrupt_acc", "fgsm_acc", "pgd_acc", "attack_epsilon", "pgd_steps",
                  "robust_s")
# counts bounded by another field of the same record
_BOUNDS = {"n_adversarial": "n_labeled", "n_trained": "n_labeled", "n_ood_labeled": "n_labeled"}


def check_records(records: list[Any], where: str | Path, robust_rounds: str | None = None) -> None:
    """Check the round records of a run directory: each is a mapping with the required keys, every key
    it holds of the right type and range (accuracies in [0, 1], counts non-negative and no larger than
    what they count), the experiment's columns in every round or in none (a robustness column may
    also be in each seed's last round only, ``robust_rounds: final``, and absent from a seed that was
    interrupted before it), and each seed's rounds
    0..k-1, each exactly once.

    Args:
        robust_rounds: the run's setting where its config is known: "every" allows a robustness column
            in every round or none only; None (no config) also allows each seed's last round only.
    Raises:
        RunDirectoryError: says which line and what is wrong.
    """
    by_seed: dict[int, list[int]] = {}
    first_with: dict[str, int] = {}
    for line, rec in enumerate(records, 1):
        if not isinstance(rec, dict):
            raise RunDirectoryError(f"{where}: line {line} is not a round record (a JSON object)")
        for key in REQUIRED_KEYS:
            if key not in rec:
                raise RunDirectoryError(f"{where}: line {line} has no valid {key!r} (it is missing)")
        for key, value in rec.items():
            valid, what = FIELDS.get(key, (None, ""))
            if valid is not None and not valid(value):
                raise RunDirectoryError(f"{where}: line {line} has no valid {key!r}: it must be {what}, "
                                        f"got {short(value)}")
        if not all(_count(i) for i in rec["selected"]):
            raise RunDirectoryError(f"{where}: line {line} selects something that is not a pool index")
        for key, bound in (*_BOUNDS.items(), ("n_ood_selected", "selected")):
            limit = rec[bound] if bound != "selected" else len(rec["selected"])
            if key in rec and rec[key] > limit:
                raise RunDirectoryError(f"{where}: line {line} has {key} = {rec[key]}, more than its "
                                        f"{bound} ({limit})")
        for key in RUN_COLUMNS:
            if key in rec:
                first_with.setdefault(key, line)
        by_seed.setdefault(rec["seed"], []).append(rec["round"])
    last = {seed: max(rounds) for seed, rounds in by_seed.items()}  # seed -> its highest round
    final_only = {k for k in first_with if k in ROBUST_COLUMNS and robust_rounds != "every"
                  and all(k not in rec or rec["round"] == last[rec["seed"]] for rec in records)}
    # a final-only column may be absent from a seed altogether: a seed interrupted before its last round
    # (the config's round count, which check_replay knows, tells a finished seed from it)
    seeds_with = {k: {rec["seed"] for rec in records if k in rec} for k in final_only}
    for line, rec in enumerate(records, 1):
        missing = [k for k in first_with if k not in rec
                   and not (k in final_only and (rec["round"] < last[rec["seed"]]
                                                 or rec["seed"] not in seeds_with[k]))]
        if missing:
            raise RunDirectoryError(f"{where}: line {line} lacks {missing[0]!r}, which line "
                                    f"{first_with[missing[0]]} records (every round of a run records the "
                                    "same columns)")
    for seed, rounds in by_seed.items():
        if sorted(rounds) != list(range(len(rounds))):
            dup = sorted({r for r in rounds if rounds.count(r) > 1})
            what = f"round {dup[0]} more than once" if dup else \
                f"rounds {short(sorted(rounds))} instead of 0..{len(rounds) - 1}"
            raise RunDirectoryError(f"{where}: seed {seed} has {what} (two runs into one directory?); "
                                    "delete the directory or restore it")


def expected_columns(config: ExperimentConfig, open_set: bool) -> tuple[str, ...]:
    """The record keys every round of ``config`` writes beyond the required ones."""
    cols = ["train_loss", "n_adversarial"]
    if config.test_corruptions:
        cols += ["corrupt_acc", "corrupt_acc_mean", "robust_s"]
    if config.attack_epsilon is not None:
        cols += ["fgsm_acc", "pgd_acc", "attack_epsilon", "pgd_steps", "robust_s"]
    if open_set:
        cols += ["n_trained", "n_ood_labeled", "n_ood_selected"]
    return tuple(dict.fromkeys(cols))


def check_replay(records: list[dict[str, Any]], config: ExperimentConfig, pool_size: int,
                 initial: Any, where: str | Path, ood: Any = None) -> None:
    """Check that one seed's completed rounds can be replayed under ``config``: round r labeled
    initial_size + r * budget samples and selected ``budget`` new, distinct, in-range pool indices
    (none on the last round); each round holds the columns the experiment writes, and with an open-set
    pool its OOD counts are those of its labeled set and picks.

    Args:
        records: the seed's records, rounds 0..k-1 in order (after :func:`check_records`).
        initial: the round-0 labeled pool indices of the seed.
        ood: bool [N] out-of-distribution mask of the pool, or None (no open set).
    Raises:
        RunDirectoryError: the first inconsistency, named.
    """
    labeled = {int(i) for i in initial}
    is_ood = [bool(b) for b in ood.tolist()] if ood is not None and bool(ood.any()) else None
    columns = expected_columns(config, is_ood is not None)
    if len(records) > config.rounds + 1:
        raise RunDirectoryError(f"{where}: seed {records[0]['seed']} has {len(records)} rounds, more than "
                                f"the {config.rounds + 1} of this experiment")
    for rec in records:
        r, sel = rec["round"], rec["selected"]
        what = f"{where}: seed {rec['seed']} round {r}"
        final_only = config.robust_rounds == "final" and r < config.rounds
        missing = [c for c in columns if c not in rec and not (final_only and c in ROBUST_COLUMNS)]
        if missing:
            when = "in its final round" if missing[0] in ROBUST_COLUMNS and config.robust_rounds == "final" \
                else "every round"
            raise RunDirectoryError(f"{what} lacks {missing[0]!r}, which this experiment records {when}")
        extra = [c for c in ROBUST_COLUMNS if final_only and c in rec]
        if extra:
            raise RunDirectoryError(f"{what} records {extra[0]!r}, which robust_rounds: final records in "
                                    "the final round only")
        if rec["n_labeled"] != config.initial_size + r * config.budget:
            raise RunDirectoryError(f"{what} records {rec['n_labeled']} labeled samples, expected "
                                    f"{config.initial_size + r * config.budget}")
        expected = config.budget if r < config.rounds else 0
        if len(sel) != expected:
            raise RunDirectoryError(f"{what} selected {len(sel)} samples, expected {expected}")
        if any(i >= pool_size for i in sel):
            raise RunDirectoryError(f"{what} selects index {max(sel)}, outside the pool of {pool_size}")
        if len(set(sel)) != len(sel) or labeled & set(sel):
            raise RunDirectoryError(f"{what} selects an index twice or one already labeled")
        if is_ood is not None:
            n_ood = sum(is_ood[i] for i in labeled)
            counts = {"n_ood_labeled": n_ood, "n_ood_selected": sum(is_ood[i] for i in sel),
                      "n_trained": len(labeled) - (n_ood if config.open_set_oracle == "discard" else 0)}
            for key, value in counts.items():
                if rec[key] != value:
                    raise RunDirectoryError(f"{what} records {key} = {rec[key]}, but its labeled set and "
                                            f"picks give {value}")
        labeled |= set(sel)


class RunDirectory:
    """Files of one experiment (one method, several seeds)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def rounds_path(self) -> Path:
        return self.path / "rounds.jsonl"

    @property
    def resolved_path(self) -> Path:
        return self.path / "resolved.json"

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.json"

    def state_path(self, seed: int) -> Path:
        return self.path / "state" / f"seed{seed}.pt"

    # -- config ----------------------------------------------------------------------------------
    def read_config(self) -> ExperimentConfig:
        try:
            values = yaml_load(self.config_path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise RunDirectoryError(f"{self.config_path}: unreadable run config ({exc})") from None
        return config_from_dict(values)[0]

    def check(self, config: ExperimentConfig, resolved: dict[str, Any] | None = None) -> None:
        """Raise unless the directory is new or holds the same experiment as ``config``.

        Args:
            resolved: the strategy and recipe with every option resolved (defaults included); when the
                directory recorded them, they must match, so a changed default is never resumed silently.
        Raises:
            RunDirectoryError: it holds a different experiment, its config is unreadable, or its
                rounds are damaged.
            OutputError: the directory cannot be created or written.
        """
        check_dir_writable(self.path)
        if self.config_path.exists():
            old = self.read_config()
            if not old.same_experiment(config):
                raise RunDirectoryError(
                    f"{self.path} holds a different experiment (method {old.method!r} on {old.dataset!r}); "
                    "choose another output directory or delete this one"
                )
        if resolved is not None and self.resolved_path.exists():
            try:
                old_resolved = json.loads(self.resolved_path.read_text())
            except (OSError, ValueError) as exc:
                raise RunDirectoryError(f"{self.resolved_path}: unreadable ({exc})") from None
            if old_resolved != resolved:
                raise RunDirectoryError(
                    f"{self.path} was run with {old_resolved} but the method now resolves to {resolved} "
                    "(a default changed?); choose another output directory or delete this one"
                )
        check_records(self.read_rounds(), self.rounds_path, config.robust_rounds)

    def prepare(self, config: ExperimentConfig, resolved: dict[str, Any] | None = None) -> None:
        """Create the directory (after :meth:`check`), remove temporaries a killed run left, and write the
        config and resolved options.  Call while holding :meth:`locked`.

        Raises:
            RunDirectoryError: it holds a different experiment.
        """
        self.check(config, resolved)
        ensure_dir(self.path / "state")
        for folder in (self.path, self.path / "state"):  # left by a kill inside an atomic write
            remove_stale_temporaries(folder)
        atomic_write_text(self.config_path, yaml.safe_dump(config.to_dict(), sort_keys=False))
        if resolved is not None:
            atomic_write_text(self.resolved_path, json.dumps(resolved, indent=1))

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold an exclusive lock on the directory (``.lock``, released on exit or process death).

        Raises:
            RunDirectoryError: another process holds it (a second run into the same directory).
        """
        ensure_dir(self.path)
        try:
            fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            from dalkit.files import output_error

            raise output_error(self.path / ".lock", exc) from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunDirectoryError(f"{self.path} is in use by another dalkit run; wait for it to "
                                        "finish or choose another output directory") from None
            yield
        finally:
            os.close(fd)  # closing releases the lock

    # -- rounds ----------------------------------------------------------------------------------
    def read_rounds(self, repair: bool = False) -> list[dict[str, Any]]:
        """Completed round records.  A torn last line (an interrupted append: the bytes after the last
        newline) is ignored, and removed when ``repair`` is True.

        Raises:
            RunDirectoryError: a complete (newline-ended) line is not valid JSON; an append writes its
                line and newline at once, so such a line is damage, not an interruption.
        """
        if not self.rounds_path.exists():
            return []
        raw = self.rounds_path.read_bytes()
        lines = raw.split(b"\n")
        records, good_bytes = [], 0
        for i, line in enumerate(lines[:-1]):  # every newline-ended line
            if line.strip():
                try:
                    records.append(json.loads(line))
                except ValueError:
                    raise RunDirectoryError(
                        f"{self.rounds_path}: line {i + 1} is corrupt (a complete line that is not JSON, "
                        "not an interrupted write); restore the file or delete the run directory") from None
            good_bytes += len(line) + 1
        if repair and good_bytes < len(raw):  # lines[-1]: after the last newline, torn (or blank)
            with open(self.rounds_path, "r+b") as fh:
                fh.truncate(good_bytes)
        return records

    def append_round(self, record: dict[str, Any]) -> None:
        with open(self.rounds_path, "ab") as fh:
            fh.write((json.dumps(record) + "\n").encode())
            fh.flush()
            os.fsync(fh.fileno())

    # -- per-seed state (adversarial counterparts) ------------------------------------------------
    def load_state(self, seed: int) -> dict[str, Any]:
        path = self.state_path(seed)
        if not path.exists():
            return {}
        try:
            return torch.load(path, weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is a damaged run dir
            raise RunDirectoryError(f"{path}: unreadable state file ({exc})") from None

    def save_state(self, seed: int, state: dict[str, Any]) -> None:
        import io

        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(self.state_path(seed), buf.getvalue())

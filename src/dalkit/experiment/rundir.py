"""The run directory: config, append-only ``rounds.jsonl``, per-seed state, summary.

Writes are ordered so that an interruption at any point leaves every completed round intact:
state files are written to a temporary name and renamed, then the round's line is appended and
fsynced; a torn last line is discarded on resume.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import yaml

from dalkit.checks import short, yaml_load
from dalkit.errors import RunDirectoryError
from dalkit.experiment.config import ExperimentConfig, config_from_dict
from dalkit.files import atomic_write_bytes, atomic_write_text, check_dir_writable, ensure_dir

__all__ = ["RunDirectory", "atomic_write_bytes", "atomic_write_text", "check_records", "check_replay"]


REQUIRED_KEYS = {"seed": int, "round": int, "n_labeled": int, "test_acc": float, "selected": list}


def check_records(records: list[Any], where: str | Path) -> None:
    """Check the round records of a run directory: each is a mapping with the required keys of the
    right types, and each seed's rounds are 0..k-1, each exactly once.

    Raises:
        RunDirectoryError: says which line and what is wrong.
    """
    by_seed: dict[int, list[int]] = {}
    for line, rec in enumerate(records, 1):
        if not isinstance(rec, dict):
            raise RunDirectoryError(f"{where}: line {line} is not a round record (a JSON object)")
        for key, tp in REQUIRED_KEYS.items():
            value = rec.get(key)
            ok = isinstance(value, tp) and not isinstance(value, bool)
            if tp is float:
                ok = isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1
            if not ok:
                raise RunDirectoryError(f"{where}: line {line} has no valid {key!r} (got {short(value)})")
        if rec["seed"] < 0 or rec["round"] < 0 or rec["n_labeled"] < 0:
            raise RunDirectoryError(f"{where}: line {line} has a negative seed, round or n_labeled")
        if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in rec["selected"]):
            raise RunDirectoryError(f"{where}: line {line} selects something that is not a pool index")
        by_seed.setdefault(rec["seed"], []).append(rec["round"])
    for seed, rounds in by_seed.items():
        if sorted(rounds) != list(range(len(rounds))):
            dup = sorted({r for r in rounds if rounds.count(r) > 1})
            what = f"round {dup[0]} more than once" if dup else \
                f"rounds {short(sorted(rounds))} instead of 0..{len(rounds) - 1}"
            raise RunDirectoryError(f"{where}: seed {seed} has {what} (two runs into one directory?); "
                                    "delete the directory or restore it")


def check_replay(records: list[dict[str, Any]], config: ExperimentConfig, pool_size: int,
                 initial: Any, where: str | Path) -> None:
    """Check that one seed's completed rounds can be replayed under ``config``: round r labeled
    initial_size + r * budget samples and selected ``budget`` new, distinct, in-range pool indices
    (none on the last round).

    Args:
        records: the seed's records, rounds 0..k-1 in order (after :func:`check_records`).
        initial: the round-0 labeled pool indices of the seed.
    Raises:
        RunDirectoryError: the first inconsistency, named.
    """
    labeled = {int(i) for i in initial}
    if len(records) > config.rounds + 1:
        raise RunDirectoryError(f"{where}: seed {records[0]['seed']} has {len(records)} rounds, more than "
                                f"the {config.rounds + 1} of this experiment")
    for rec in records:
        r, sel = rec["round"], rec["selected"]
        what = f"{where}: seed {rec['seed']} round {r}"
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
        check_records(self.read_rounds(), self.rounds_path)

    def prepare(self, config: ExperimentConfig, resolved: dict[str, Any] | None = None) -> None:
        """Create the directory (after :meth:`check`) and write the config and resolved options.

        Raises:
            RunDirectoryError: it holds a different experiment.
        """
        self.check(config, resolved)
        ensure_dir(self.path / "state")
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
        """Completed round records.  A torn last line (an interrupted append) is ignored, and removed
        when ``repair`` is True.

        Raises:
            RunDirectoryError: a complete line in the middle is not valid JSON.
        """
        if not self.rounds_path.exists():
            return []
        raw = self.rounds_path.read_bytes()
        lines = raw.split(b"\n")
        records, good_bytes = [], 0
        for i, line in enumerate(lines):
            if not line.strip():
                good_bytes += len(line) + (1 if i < len(lines) - 1 else 0)
                continue
            last = i == len(lines) - 1 or (i == len(lines) - 2 and not lines[-1])
            try:
                rec = json.loads(line)
                if i == len(lines) - 1:  # no trailing newline: the append did not finish
                    raise ValueError("torn line")
            except ValueError:
                if last:
                    break
                raise RunDirectoryError(f"{self.rounds_path}: line {i + 1} is corrupt") from None
            records.append(rec)
            good_bytes += len(line) + 1
        if repair and good_bytes < len(raw):
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

"""Atomic file writes: every file dalkit writes goes through here.

The bytes go to a uniquely named temporary file in the destination's directory, are fsynced, and the
file is renamed over the destination, so a reader (or a crash) sees the old file or the new one, never
half of one.  Any OSError becomes an :class:`~dalkit.errors.OutputError` naming the path.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from dalkit.errors import OutputError


def output_error(path: str | Path, exc: OSError, action: str = "cannot write") -> OutputError:
    """A one-line OutputError for an OSError met at ``path``."""
    reason = exc.strerror or type(exc).__name__
    return OutputError(f"{action} {path}: {reason}")


def ensure_dir(path: str | Path) -> Path:
    """``mkdir -p`` with an OSError turned into an OutputError."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a component is a file, read-only folder, disk full...
        raise output_error(path, exc, "cannot create directory") from None
    if not path.is_dir():
        raise OutputError(f"cannot create directory {path}: a file of that name exists")
    return path


def check_writable(path: str | Path) -> Path:
    """Raise OutputError unless a file could be written at ``path`` (its folder exists or can be made,
    is writable, and ``path`` is not a directory).  Writes nothing."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a directory")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"cannot write {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {path}: {parent} is not writable")
    return path


def check_dir_writable(path: str | Path) -> Path:
    """Raise OutputError unless ``path`` is a writable directory or could be created as one.
    Writes nothing."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"cannot use {path} as a directory: it is a file")
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise OutputError(f"cannot write in {path}: permission denied")
        return path
    check_writable(path / "x")
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file + fsync + rename).

    Raises:
        OutputError: the folder cannot be created or written, or ``path`` is a directory.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a directory")
    ensure_dir(path.parent)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise output_error(path, exc) from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """:func:`atomic_write_bytes` of UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files that :func:`atomic_write_bytes` left in ``folder`` when the process
    was killed between creating one and renaming it (``.NAME.XXXXXXXX.tmp``).  Call only while holding
    the folder's lock: another writer's temporary would otherwise vanish under it.

    Returns:
        the paths removed.
    Raises:
        OutputError: one cannot be removed.
    """
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for path in sorted(folder.glob(".*.tmp")):
        if path.is_file() and not path.is_symlink():
            try:
                path.unlink()
            except OSError as exc:
                raise output_error(path, exc, "cannot remove the stale temporary file") from None
            removed.append(path)
    return removed

"""Atomic file writes: every file dalkit writes goes through here.

The bytes go to a uniquely named temporary file in the destination's directory, are fsynced, and the
file is renamed over the destination, so a reader (or a crash) sees the old file or the new one, never
half of one.  Any OSError becomes an :class:`~dalkit.errors.OutputError` naming the path.

A process killed between creating its temporary and renaming it cannot remove it, so every temporary
name carries its owner, ``.NAME.HOST.PID.XXXXXXXX.tmp``, and the next write of the same target removes
the temporaries of that target whose process on this host is gone (:func:`remove_dead_temporaries`):
a plot, report or export rewritten after a kill leaves nothing behind, and a write in flight in another
live process is never touched.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
import time
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


def owner_tag() -> str:
    """``HOST.PID`` of this process, for temporary names (the host reduced to letters, digits and -)."""
    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:24] or "host"
    return f"{host}.{os.getpid()}"


def _process_gone(pid: int) -> bool:
    """True when no live process on this host has ``pid`` (a zombie, killed but not reaped, is gone)."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # EPERM: it exists, under another user
        return False
    try:  # Linux: "pid (comm) STATE ..."; Z (zombie) and X (dead) no longer write anything
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return False


TEMP_RANDOM = r"[a-z0-9_]{8}"  # tempfile's random part
LEGACY_AGE_S = 3600.0  # a temporary without an owner (older dalkit) is stale once this old


def remove_dead_temporaries(folder: str | Path, prefix: str, rest: str = "", suffix: str = "",
                            legacy: str | None = None) -> list[Path]:
    """Remove the entries (files or folders) ``folder/{prefix}HOST.PID{rest}{suffix}`` whose process
    on this host is gone, and the ownerless ``folder/{prefix}{legacy}{suffix}`` older than an hour.
    ``rest`` and ``legacy`` are regular expressions.  Best effort: an entry that cannot be removed is
    left (it never blocks the write that called this).

    Returns:
        the paths removed.
    """
    host = owner_tag().rsplit(".", 1)[0]
    owned = re.compile(re.escape(prefix) + r"([A-Za-z0-9-]+)\.(\d+)" + rest + re.escape(suffix))
    ownerless = re.compile(re.escape(prefix) + legacy + re.escape(suffix)) if legacy is not None else None
    removed = []
    try:
        with os.scandir(folder) as it:
            entries = [Path(e.path) for e in it if e.name.startswith(prefix)]
    except OSError:
        return removed
    for entry in entries:
        try:
            m = owned.fullmatch(entry.name)
            if m is not None:
                stale = m.group(1) == host and _process_gone(int(m.group(2)))
            else:
                stale = (ownerless is not None and ownerless.fullmatch(entry.name) is not None
                         and time.time() - entry.lstat().st_mtime > LEGACY_AGE_S)
            if not stale:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError:
            continue
        removed.append(entry)
    return removed


def atomic_write_bytes(path: str | Path, data: bytes, clean: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file + fsync + rename), first removing the
    temporaries that earlier writes of ``path`` left when their process was killed before the rename.

    Args:
        clean: look for those temporaries (one scan of the folder); False for a write of many new files
            into a folder that was empty (an export), where the scans would cost O(files^2).

    Raises:
        OutputError: the folder cannot be created or written, or ``path`` is a directory.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a directory")
    ensure_dir(path.parent)
    if clean:
        remove_dead_temporaries(path.parent, f".{path.name}.", r"\." + TEMP_RANDOM, ".tmp",
                                legacy=TEMP_RANDOM)
    tmp = None
    try:
        prefix = f".{path.name}.{owner_tag()}."
        if len(os.fsencode(prefix)) + 12 > 255:  # no room for the owner: the ownerless name, cleaned by age
            prefix = f".{path.name}."
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
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


def atomic_write_text(path: str | Path, text: str, clean: bool = True) -> Path:
    """:func:`atomic_write_bytes` of UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"), clean)


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files that :func:`atomic_write_bytes` left in ``folder`` when the process
    was killed between creating one and renaming it (``.NAME.HOST.PID.XXXXXXXX.tmp``), whatever their
    owner.  Call only while holding the folder's lock: another writer's temporary would otherwise
    vanish under it.

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

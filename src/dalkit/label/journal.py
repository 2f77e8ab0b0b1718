"""The label journal: an append-only, fsynced JSON-lines file, the only record of what a person said.

One entry per line::

    {"seq": 17, "time": "2026-12-05T15:40:01.123Z", "op": "label", "item": "3fa1...", "label": "cat",
     "round": 2, "source": "page"}

``op`` is ``label`` (``label`` names a class), ``ood`` (the item is none of the classes: never trained
on, never offered again) or ``undo`` (takes back the item's latest entry that is still in force).
Nothing is ever edited: an undo is one more line.  Every append is written in one ``write`` call and
``fsync``-ed before it returns, under an exclusive ``flock`` (several processes may append: the page's
server, ``dalkit label import``), so a label the caller was told about survives a SIGKILL or a power
cut.  A torn last line (a crash during the write) is ignored when read and cut off before the next
append.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dalkit.errors import DatasetFormatError

OPS = ("label", "ood", "undo")
SOURCES = ("page", "file", "label-studio", "init", "oracle")


@dataclass(frozen=True)
class LabelState:
    """An item's label in force: a class name, or ``ood`` True (out of distribution)."""

    label: str | None
    ood: bool
    seq: int
    round: int | None
    source: str


def _now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


class Journal:
    """Append-only label journal at ``path``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @contextmanager
    def _locked(self) -> Iterator[int]:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)  # releases the lock

    def read(self) -> list[dict[str, Any]]:
        """Every complete entry, in order.  A torn (unterminated) last line is left out.

        Raises:
            DatasetFormatError: a damaged line before the last one (the file was edited by hand).
        """
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        entries = []
        lines = data.split(b"\n")
        complete = lines[:-1]  # the part after the last newline is torn or empty
        for k, line in enumerate(complete):
            if not line.strip():
                continue
            try:
                entries.append(json.loads(line))
            except ValueError:
                raise DatasetFormatError(f"label journal {self.path} line {k + 1} is damaged; it is "
                                         "append-only: restore it from a backup") from None
        return entries

    def append(self, entries: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Append ``entries`` (each with op, item and, for ``label``, label; round and source) in one
        write, fsynced.  Returns them with ``seq`` and ``time`` filled in."""
        entries = list(entries)
        if not entries:
            return []
        with self._locked() as fd:
            size = os.fstat(fd).st_size
            seq = 0
            if size:
                size = self._cut_torn_tail(fd, size)
                seq = self._last_seq(fd, size) + 1
            stamp = _now()
            out = []
            for i, e in enumerate(entries):
                full = {"seq": seq + i, "time": stamp, **e}
                out.append(full)
            blob = "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in out).encode()
            os.lseek(fd, size, os.SEEK_SET)
            view = memoryview(blob)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        return out

    @staticmethod
    def _cut_torn_tail(fd: int, size: int) -> int:
        """Truncate an unterminated last line (a write cut short by a crash); returns the new size."""
        os.lseek(fd, size - 1, os.SEEK_SET)
        if os.read(fd, 1) == b"\n":
            return size
        back = min(size, 1 << 20)
        os.lseek(fd, size - back, os.SEEK_SET)
        cut = os.read(fd, back).rfind(b"\n")
        keep = size - back + cut + 1 if cut >= 0 else 0
        os.ftruncate(fd, keep)
        return keep

    @staticmethod
    def _last_seq(fd: int, size: int) -> int:
        """The seq of the last complete line (-1 for an empty journal)."""
        if size == 0:
            return -1
        back = min(size, 1 << 20)
        os.lseek(fd, size - back, os.SEEK_SET)
        lines = [ln for ln in os.read(fd, back).split(b"\n") if ln.strip()]
        try:
            return int(json.loads(lines[-1])["seq"])
        except (ValueError, KeyError, TypeError, IndexError):
            raise DatasetFormatError("the label journal's last line is damaged; it is append-only: "
                                     "restore it from a backup") from None

    def state(self, entries: list[dict[str, Any]] | None = None) -> dict[str, LabelState]:
        """The label in force per item: replay, undo popping the item's latest entry in force."""
        stacks: dict[str, list[dict[str, Any]]] = {}
        for e in self.read() if entries is None else entries:
            stack = stacks.setdefault(e["item"], [])
            if e["op"] == "undo":
                if stack:
                    stack.pop()
            else:
                stack.append(e)
        return {item: LabelState(s[-1].get("label"), s[-1]["op"] == "ood", s[-1]["seq"], s[-1].get("round"),
                                 s[-1].get("source", "")) for item, s in stacks.items() if s}

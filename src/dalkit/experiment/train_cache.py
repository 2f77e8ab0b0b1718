"""A content-addressed store of trained rounds, so that a sweep trains each distinct model once.

Every method of a sweep trains the same round-0 model on the same seed (the same initial set, the same
``(seed, 0)`` streams, the same recipe): with ``--train-cache DIR`` the first run stores it and the others
load it.  A round's training is a function of its inputs, so the key is a hash of all of them: the model
spec, the recipe and training settings (their dataclass reprs), seed and round, the device, dalkit's and
torch's versions, the model's weights before training (architecture, initialisation and a warm start in
one), and the bytes the training reads (labeled images and labels, adversarial counterparts, the
unlabeled images of a semi-supervised recipe).  An entry holds the trained weights, each module's
train/eval flag, ``fit()``'s statistics, the seconds the training took, and the global RNG state after
training (MC-dropout strategies draw their masks from it), so a run that loads an entry selects and
records exactly what a run that trains would (tested for every recipe).

What the key cannot see: the *code* of a forward pass.  Edit a user model's ``forward`` (or dalkit's
training code without a version bump) and the cache must be emptied by hand; it is a plain folder.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from dalkit.errors import OutputError
from dalkit.files import atomic_write_bytes, ensure_dir


class TrainCache:
    """A folder of ``<key>.pt`` entries (see the module docstring)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise OutputError(f"train cache {root} is a file, not a folder; give a folder for --train-cache")

    def key(self, settings: list[Any], model: nn.Module, tensors: list[Tensor | None]) -> str:
        """The hex digest of a round's training inputs: ``settings`` (reprs), ``model``'s weights before
        training, and ``tensors`` (the data it trains on; None entries count as absent)."""
        h = hashlib.sha256()
        for item in settings:
            h.update(repr(item).encode("utf-8") + b"\0")
        for name, value in model.state_dict().items():
            h.update(name.encode("utf-8"))
            _update(h, value)
        for t in tensors:
            h.update(b"\1" if t is None else b"\2")
            if t is not None:
                _update(h, t)
        return h.hexdigest()

    def path(self, key: str) -> Path:
        return self.root / f"{key}.pt"

    def load(self, key: str, model: nn.Module) -> tuple[dict[str, float], float] | None:
        """Put a stored training into ``model`` (weights, modes) and the global RNG; return (stats,
        seconds), or None when ``key`` is not stored (a torn or unreadable entry counts as absent)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(entry["state"])
        except Exception:  # noqa: BLE001 - a damaged entry is retrained and overwritten, never trusted
            return None
        for module, training in zip(model.modules(), entry["training"], strict=True):
            module.training = bool(training)
        torch.set_rng_state(entry["rng"])
        if "cuda_rng" in entry and torch.cuda.is_available():
            torch.cuda.set_rng_state(entry["cuda_rng"])
        return {k: float(v) for k, v in entry["stats"].items()}, float(entry["seconds"])

    def store(self, key: str, model: nn.Module, stats: dict[str, float], seconds: float,
              device: torch.device | str) -> None:
        """Record a training (atomically: a killed writer leaves no entry)."""
        entry: dict[str, Any] = {
            "state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "training": [m.training for m in model.modules()],
            "stats": {k: float(v) for k, v in stats.items()},
            "seconds": float(seconds),
            "rng": torch.get_rng_state(),
        }
        if torch.device(device).type == "cuda":
            entry["cuda_rng"] = torch.cuda.get_rng_state()
        buf = io.BytesIO()
        torch.save(entry, buf)
        ensure_dir(self.root)
        atomic_write_bytes(self.path(key), buf.getvalue())


def _update(h: Any, t: Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    if t.numel():
        h.update(t.reshape(-1).view(torch.uint8).numpy().data)


__all__ = ["TrainCache"]

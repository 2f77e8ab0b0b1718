"""A labeling project on disk: the human active-learning loop.

    PROJECT/
      project.json     classes, source, model, method, input size, training recipe, seed
      manifest.json    one item per image: content hash, path, original size; the cache file's name
      cache-G.u8       uint8 [N, C, S, S], every image decoded and resized once (memory-mapped)
      journal.jsonl    append-only, fsynced labels (see journal.py): the only record of what was said
      rounds.jsonl     append-only, fsynced: one line per queried batch (items, guesses, timings)
      batches/         batch-NNNN.csv / .json for the user; adv/ counterparts (DM2-AT); model.pt
      .lock            flock held while a round trains

A round is :func:`dalkit.experiment.round.run_round`, the simulated runner's round: the labeled set is
ordered as the runner orders it (labels known before any batch, then each batch's items by pool
position), the round index is the number of trained batches, and the first batch of a project without
labels is the runner's random initial set, so an oracle that answers from the true labels makes this
loop select exactly what ``dalkit run`` selects with the same seed and settings.

Every action of the CLI and of the page's server goes through this class.
"""

from __future__ import annotations

import csv
import dataclasses
import fcntl
import io
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from dalkit.checks import short
from dalkit.data import CIFAR_FGSM_EPSILON, channel_stats, to_float
from dalkit.errors import BudgetError, ConfigError, LabelError, OutputError
from dalkit.experiment.methods import resolve_method
from dalkit.experiment.round import ModelSpec, OnProgress, initial_labeled, run_round
from dalkit.files import (
    atomic_write_bytes,
    atomic_write_text,
    check_dir_writable,
    ensure_dir,
    owner_tag,
    remove_dead_temporaries,
)
from dalkit.label.journal import Journal, LabelState
from dalkit.label.sources import Item, Source, build_cache, list_source
from dalkit.strategies import create_strategy
from dalkit.training import TrainConfig, create_recipe
from dalkit.training.evaluate import predict

# Alpha-Mix: the best AUBC on the clean MNIST table (89.42 ± 0.44, BADGE 88.99, margin 88.49) and on the
# open-set table (75.22 ± 2.02, random 74.40), where it spent 42 of 200 labels on OOD images against
# margin's 97 — a person's folder has such images; its query costs 3.25 s on a 60k pool (margin 2.29 s).
DEFAULT_METHOD = "alphamix"
PROJECT_FILE = "project.json"
VERSION = 1


def _append_line(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line and fsync (the rounds log)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(record, separators=(",", ":")) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    raw = path.read_bytes().split(b"\n")[:-1]  # a torn last line (no newline) is dropped
    return [json.loads(line) for line in raw if line.strip()]


def parse_classes(text: str | list[str]) -> list[str]:
    """Class names from ``a,b,c`` (or a list): stripped, non-empty, unique.

    Raises:
        ConfigError: fewer than two, an empty or repeated name.
    """
    names = [c.strip() for c in (text.split(",") if isinstance(text, str) else text)]
    if any(not n for n in names):
        raise ConfigError(f"--classes has an empty name: {short(text)}")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"--classes repeats {', '.join(dup)}")
    if len(names) < 2:
        raise ConfigError(f"--classes needs at least two classes, got {short(text)}")
    return names


@dataclasses.dataclass(frozen=True)
class ProjectConfig:
    """What a project trains and how.  Validated on creation; stored in ``project.json``."""

    classes: tuple[str, ...]
    model: str = "cnn"
    method: str = DEFAULT_METHOD
    image_size: int = 28
    channels: int = 1
    family: str = "digits"  # training recipe and augmentation defaults: digits (Adam) or natural (SGD)
    seed: int = 0
    initial_size: int = 50
    budget: int = 50
    val_fraction: float = 0.0
    subset: int | None = None
    device: str = "cpu"
    features: bool = False  # the model's input is features.npy (user embeddings), not the image cache
    model_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    train: dict[str, Any] = dataclasses.field(default_factory=dict)
    strategy_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    recipe_options: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("image_size", "initial_size", "budget"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {short(v)}")
        if self.channels not in (1, 3):
            raise ConfigError(f"channels must be 1 or 3, got {short(self.channels)}")
        if self.family not in ("digits", "natural"):
            raise ConfigError(f"family must be 'digits' or 'natural', got {short(self.family)}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must lie in [0, 1), got {self.val_fraction}")
        self.train_config()
        self.strategy()
        self.recipe()

    def train_config(self) -> TrainConfig:
        base = dataclasses.asdict(TrainConfig.for_family(self.family))
        try:
            return TrainConfig(**{**base, **self.train})
        except TypeError as exc:
            raise ConfigError(f"train: {short(str(exc))[1:-1]}") from None

    def strategy(self) -> Any:
        spec = resolve_method(self.method)
        return create_strategy(spec.strategy, **{**spec.strategy_options, **self.strategy_options})

    def recipe(self) -> Any:
        spec = resolve_method(self.method)
        options = {**spec.recipe_options, **self.recipe_options}
        if spec.recipe == "adversarial" and options.get("epsilon") is None:
            options["epsilon"] = 0.03 if self.family == "digits" else CIFAR_FGSM_EPSILON
        recipe = create_recipe(spec.recipe, **options)
        if hasattr(recipe, "for_dataset"):
            recipe = recipe.for_dataset(SimpleNamespace(family=self.family))
        return recipe

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "classes": list(self.classes)}

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> ProjectConfig:
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: (tuple(v) if k == "classes" else v) for k, v in values.items() if k in fields})


class Project:
    """An existing labeling project (see the module docstring).

    Raises:
        LabelError: ``path`` is not a labeling project.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        meta = self.path / PROJECT_FILE
        if not meta.is_file():
            raise LabelError(f"{self.path} is not a labeling project (no {PROJECT_FILE}); create one with "
                             "dalkit label init")
        try:
            raw = json.loads(meta.read_text(encoding="utf-8"))
            self.config = ProjectConfig.from_json(raw["config"])
            self.source = raw["source"]
            manifest = json.loads((self.path / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise LabelError(f"labeling project {self.path} is damaged: {short(str(exc))[1:-1]}") from None
        self.cache_file = self.path / manifest["cache"]
        self.items = [Item(*row) for row in manifest["items"]]
        self.skipped = [tuple(s) for s in manifest.get("skipped", [])]
        self.index = {it.item: k for k, it in enumerate(self.items)}
        self.classes = list(self.config.classes)
        self.class_index = {c: i for i, c in enumerate(self.classes)}
        self.journal = Journal(self.path / "journal.jsonl")
        self.rounds_path = self.path / "rounds.jsonl"
        self._images: torch.Tensor | None = None
        self._features: torch.Tensor | None = None

    # ------------------------------------------------------------------ creation and scanning
    @classmethod
    def create(cls, path: str | Path, source: str | Path, classes: str | list[str], *,
               labels_file: str | Path | None = None, image_size: int | None = None,
               channels: int | None = None, family: str | None = None,
               features: str | Path | None = None, **options: Any) -> Project:
        """Scan ``source``, build the cache and write a new project at ``path``; ``labels_file`` (CSV:
        item or path, label) adds labels already known; ``features`` (a ``.npy`` [N, D], one row per
        listed image in the source's order: sorted paths, CSV rows or array rows) makes the model train
        on those embeddings (the ``features`` MLP head unless ``model`` names another) instead of the
        pixels.  Everything is checked before ``path`` is created: a refused call leaves the disk as it
        was.

        Raises:
            ConfigError, LabelError, DatasetNotFoundError, DatasetFormatError, OutputError.
        """
        path = Path(path)
        if (path / PROJECT_FILE).exists():
            raise LabelError(f"{path} is already a labeling project; use dalkit label scan to re-scan its "
                             "images")
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise OutputError(f"cannot create a project in {path}: it exists and is not an empty folder")
        check_dir_writable(path)
        names = parse_classes(classes)
        src = list_source(source)
        ch = channels if channels is not None else (1 if src.grey else 3)
        fam = family or ("digits" if ch == 1 else "natural")
        if features is not None:
            options.setdefault("model", "features")
        model = options.get("model", "cnn")
        size = image_size if image_size is not None else (28 if model == "cnn" else 32)
        config = ProjectConfig(tuple(names), image_size=size, channels=ch, family=fam,
                               features=features is not None, **options)
        rows = _load_feature_rows(features, len(src.entries), src) if features is not None else None
        labels_rows = _read_label_csv(labels_file) if labels_file is not None else None
        # a kill while building leaves this folder; the next init of ``path`` removes it (its process is gone)
        remove_dead_temporaries(path.parent, f".{path.name}.init-", legacy=r"\d+")
        tmp = path.parent / f".{path.name}.init-{owner_tag()}"
        try:
            ensure_dir(tmp)
            items, skipped = build_cache(src, ch, size, tmp / "cache-0.u8")
            _write_manifest(tmp, "cache-0.u8", items, skipped)
            if rows is not None:
                _save_features(tmp / "features.npy", rows, src, items)
            atomic_write_text(tmp / PROJECT_FILE, json.dumps(
                {"version": VERSION, "config": config.to_json(),
                 "source": {"kind": src.kind, "path": str(Path(source).resolve())}}, indent=2))
            (tmp / ".lock").touch()
            project = cls(tmp)
            project._check_model()
            entries = project._label_entries(labels_rows, labels_file) if labels_rows is not None else []
            project.journal.append(dict(e, source="init", round=None) for e in entries)
            if path.exists():
                path.rmdir()
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                _rmtree(tmp)
        return cls(path)

    def _check_model(self) -> None:
        """Build the model and run one image through it (a size it cannot take is refused now)."""
        pool = self.pool()
        what = (f"features of width {pool.shape[1]}" if self.config.features else
                f"{self.config.channels}x{self.config.image_size}x{self.config.image_size} images")
        try:
            model = self.model_spec().build(pool.shape[1:], to_float(pool[:2])).eval()
            with torch.inference_mode():
                model(to_float(pool[:1]))
        except (RuntimeError, ValueError) as exc:
            raise ConfigError(f"model {self.config.model!r} cannot take {what}: "
                              f"{short(str(exc).splitlines()[0])[1:-1]}") from None

    def rescan(self) -> dict[str, int]:
        """Re-read the source: new images become items, removed ones leave the manifest, a changed
        file is a new item; the journal (every label) is untouched.  Returns counts.

        Raises:
            LabelError: a ``--features`` project (new images would have no feature row; the message says
                how to start a new project that keeps the labels), nothing read or written.
        """
        if self.config.features:  # new images would have no feature row: refused before anything is read
            raise LabelError(
                "a --features project cannot be re-scanned (new images would have no feature row); to add "
                f"images: dalkit label export {self.path} --format csv --out labels.csv, then dalkit label "
                f"init NEW --images {self.source['path']} --features NEW.npy --labels labels.csv")
        src: Source = list_source(self.source["path"])
        old = self.images()
        gen = int(self.cache_file.stem.split("-")[1]) + 1
        name = f"cache-{gen}.u8"

        def reuse(cid: str) -> np.ndarray | None:
            k = self.index.get(cid)
            return None if k is None else old[k].numpy()

        with self.locked():
            try:
                items, skipped = build_cache(src, self.config.channels, self.config.image_size,
                                             self.path / name, reuse)
            except BaseException:
                (self.path / name).unlink(missing_ok=True)
                raise
            before = set(self.index)
            _write_manifest(self.path, name, items, skipped)
            previous = self.cache_file
            self.__init__(self.path)
            try:
                previous.unlink()
            except OSError:
                pass
        after = set(self.index)
        return {"items": len(items), "added": len(after - before), "removed": len(before - after),
                "skipped": len(skipped)}

    # ------------------------------------------------------------------ data
    def images(self) -> torch.Tensor:
        """uint8 [N, C, S, S], memory-mapped from the cache (copy-on-write: never written back)."""
        if self._images is None:
            c, s = self.config.channels, self.config.image_size
            n = len(self.items)
            arr = np.memmap(self.cache_file, np.uint8, mode="c", shape=(n, c, s, s)) if n else \
                np.zeros((0, c, s, s), np.uint8)
            self._images = torch.from_numpy(arr)
        return self._images

    def pool(self) -> torch.Tensor:
        """What the model takes: the image cache, or the user's features [N, D] (memory-mapped)."""
        if not self.config.features:
            return self.images()
        if getattr(self, "_features", None) is None:
            self._features = torch.from_numpy(np.load(self.path / "features.npy", mmap_mode="c"))
        return self._features

    def model_spec(self) -> ModelSpec:
        """The round's model: the pool's statistics as the runner computes them (first 10,000)."""
        pool = self.pool()
        mean, std = channel_stats(pool[: min(len(self.items), 10000)])
        return ModelSpec(self.config.model, len(self.classes), mean, std, None,
                         dict(self.config.model_options), self.config.features)

    def is_validation(self, item: str) -> bool:
        """A fixed fraction of items (by their hash) are held out for the model's accuracy."""
        return self.config.val_fraction > 0 and int(item[:8], 16) / 16**8 < self.config.val_fraction

    # ------------------------------------------------------------------ labels
    def state(self) -> dict[str, LabelState]:
        return self.journal.state()

    def _check_item(self, item: str) -> None:
        if item not in self.index:
            raise LabelError(f"unknown item {short(item)}: not in this project's manifest")

    def _check_label(self, label: str) -> None:
        if label not in self.class_index:
            raise LabelError(f"unknown class {short(label)}; the classes are {', '.join(self.classes)}")

    def label(self, item: str, label: str, source: str = "page") -> dict[str, Any]:
        """Record ``item`` = ``label`` (fsynced before returning).  Raises LabelError."""
        self._check_item(item)
        self._check_label(label)
        return self.journal.append([{"op": "label", "item": item, "label": label, "round": self.n_batches(),
                                     "source": source}])[0]

    def mark_ood(self, item: str, source: str = "page") -> dict[str, Any]:
        """Record that ``item`` is none of the classes: never trained on, never offered again."""
        self._check_item(item)
        return self.journal.append([{"op": "ood", "item": item, "round": self.n_batches(),
                                     "source": source}])[0]

    def undo(self, item: str, source: str = "page") -> dict[str, Any]:
        """Take back ``item``'s latest entry in force (an entry of its own, never an edit).

        Raises:
            LabelError: unknown item, or nothing to undo for it.
        """
        self._check_item(item)
        if item not in self.state():
            raise LabelError(f"item {short(item)} has no label to undo")
        return self.journal.append([{"op": "undo", "item": item, "round": self.n_batches(),
                                     "source": source}])[0]

    def _resolve_item(self, key: str) -> str | None:
        if key in self.index:
            return key
        return self._paths().get(key)

    def _paths(self) -> dict[str, str]:
        if not hasattr(self, "_path_index"):
            self._path_index = {it.path: it.item for it in self.items}
        return self._path_index

    def _label_entries(self, rows: list[tuple[int, str, str]], where: str | Path,
                       unit: str = "line") -> list[dict[str, Any]]:
        """Journal entries for (line, item-or-path, label) rows, every row checked first.

        Raises:
            LabelError: unknown item/path or class, an item twice (duplicate or conflicting labels).
        """
        seen: dict[str, tuple[int, str]] = {}
        entries = []
        state = self.state()
        for line, key, label in rows:
            item = self._resolve_item(key)
            if item is None:
                raise LabelError(f"{where} {unit} {line}: unknown item {short(key)} (neither an item id nor "
                                 "a path of this project)")
            if label not in self.class_index:
                raise LabelError(f"{where} {unit} {line}: unknown class {short(label)}; the classes are "
                                 f"{', '.join(self.classes)}")
            if item in seen:
                first_line, first = seen[item]
                kind = "duplicate label" if first == label else f"conflicting labels {first!r} and {label!r}"
                raise LabelError(f"{where} {unit} {line}: {kind} for item {short(key)} (first at {unit} "
                                 f"{first_line}); give each item once")
            seen[item] = (line, label)
            now = state.get(item)
            if now is not None and not now.ood and now.label == label:
                continue  # already in force: nothing changes
            entries.append({"op": "label", "item": item, "label": label})
        return entries

    def import_labels(self, file: str | Path, fmt: str | None = None) -> int:
        """Add the labels of a CSV (``item`` or ``path``, ``label``) or a Label Studio JSON export to the
        journal, all or none.  Returns the number of journal entries written (labels already in force
        are not repeated).

        Raises:
            LabelError, DatasetFormatError.
        """
        file = Path(file)
        fmt = fmt or ("label-studio" if file.suffix.lower() == ".json" else "csv")
        if fmt == "csv":
            rows, source = _read_label_csv(file), "file"
        elif fmt == "label-studio":
            from dalkit.label.labelstudio import read_export

            rows, source = read_export(file, self.classes), "label-studio"
        else:
            raise ConfigError(f"--format must be csv or label-studio, got {short(fmt)}")
        entries = self._label_entries(rows, file, "line" if fmt == "csv" else "task")
        r = self.n_batches()
        return len(self.journal.append(dict(e, round=r, source=source) for e in entries))

    # ------------------------------------------------------------------ batches and rounds
    def batches(self) -> list[dict[str, Any]]:
        return _read_lines(self.rounds_path)

    def n_batches(self) -> int:
        return len(self.batches())

    def current_batch(self) -> dict[str, Any] | None:
        b = self.batches()
        return b[-1] if b else None

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive lock on the project's rounds (a kernel flock: released even on SIGKILL).

        Raises:
            LabelError: a round is already running.
        """
        fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LabelError(f"a round is already running in {self.path}; wait for it to finish") \
                    from None
            yield
        finally:
            os.close(fd)

    def training_view(self) -> dict[str, Any]:
        """The pool as the round sees it: labels, the labeled order, the excluded mask."""
        n = len(self.items)
        state = self.state()
        labels = torch.full((n,), -1, dtype=torch.long)
        excluded = torch.zeros(n, dtype=torch.bool)
        known = torch.zeros(n, dtype=torch.bool)
        val = torch.zeros(n, dtype=torch.bool)
        for item, st in state.items():
            k = self.index.get(item)
            if k is None:
                continue  # a label of an image no longer in the source: kept in the journal, unused
            known[k] = True
            if st.ood:
                excluded[k] = True
            else:
                labels[k] = self.class_index[st.label]
                if self.is_validation(item):
                    val[k] = True
                    excluded[k] = True
        # the runner's order: labels known before any batch (pool order), then batch by batch
        order: list[int] = []
        placed = torch.zeros(n, dtype=torch.bool)
        batches = self.batches()
        in_batches = torch.zeros(n, dtype=torch.bool)
        for b in batches:
            for it in b["items"]:
                k = self.index.get(it)
                if k is not None:
                    in_batches[k] = True
        order += (known & ~in_batches).nonzero().squeeze(1).tolist()
        placed[order] = True
        for b in batches:
            ks = sorted(k for k in (self.index.get(it) for it in b["items"]) if k is not None)
            for k in ks:
                if known[k] and not placed[k]:
                    order.append(k)
                    placed[k] = True
        return {"labels": labels, "labeled": torch.tensor(order, dtype=torch.long), "excluded": excluded,
                "known": known, "val": val, "batches": batches}

    def next_batch(self, budget: int | None = None, method: str | None = None,
                   on_stage: Callable[[str], None] | None = None,
                   on_progress: OnProgress | None = None) -> dict[str, Any]:
        """Train on the journal's labels and query the next batch (or, with no labels yet, draw the
        random initial batch); write it to ``batches/`` and ``rounds.jsonl``.

        ``on_stage`` is told each stage in words; ``on_progress`` gets the round's
        ``(phase, done, total)`` from :func:`~dalkit.experiment.round.run_round` (every epoch, the query).

        Raises:
            BudgetError: fewer unlabeled items than the budget; LabelError: a round is running.
        """
        stage = on_stage or (lambda _s: None)
        config = self.config if method is None else dataclasses.replace(self.config, method=method)
        with self.locked():
            view = self.training_view()
            n = len(self.items)
            known, excluded, labeled = view["known"], view["excluded"], view["labeled"]
            trainable = known & ~excluded
            batches = view["batches"]
            r = sum(1 for b in batches if b.get("round") is not None)
            t0 = time.perf_counter()
            record: dict[str, Any] = {"batch": len(batches), "method": config.method, "seed": config.seed}
            if not bool(trainable.any()):
                size = budget or config.initial_size
                free = int((~known).sum())
                if size > free:
                    raise BudgetError(f"the initial batch of {size} exceeds the {free} unlabeled items; "
                                      f"use --budget {free}")
                stage("drawing the random initial batch")
                picked = initial_labeled(n, size, config.seed, known if bool(known.any()) else None)
                record.update(round=None, n_trained=0)
                guess = conf = None
            else:
                size = budget or config.budget
                free = int((~known).sum())
                if size > free:
                    raise BudgetError(f"budget {size} exceeds the {free} unlabeled items; use --budget "
                                      f"{free}" if free else "every item is labeled: nothing to query")
                images = self.pool()
                spec = self.model_spec()
                adv_index, adv_images = self._counterparts(view)
                val = view["val"]

                def evaluate(model: torch.nn.Module) -> float | None:
                    stage("querying")
                    if not bool(val.any()):
                        return None
                    logits, _ = predict(model, images[val], config.train_config().eval_batch_size)
                    return float((logits.argmax(1) == view["labels"][val]).float().mean())

                stage(f"training on {int(trainable.sum())} labels")
                res = run_round(spec, config.strategy(), config.recipe(), config.train_config(), images,
                                view["labels"].clamp_min(0), labeled, config.seed, r, size, excluded,
                                config.device, None, config.subset, adv_index, adv_images,
                                after_train=evaluate, on_progress=on_progress)
                picked = res.selected
                model = res.model
                logits, _ = predict(model, images[picked], config.train_config().eval_batch_size)
                probs = torch.softmax(logits, 1)
                guess, conf = probs.argmax(1).tolist(), [round(float(p), 4) for p in probs.max(1).values]
                counter = config.recipe().counterparts(model, to_float(images[picked]),
                                                       torch.tensor(guess, dtype=torch.long))
                if counter is not None:
                    buf = io.BytesIO()
                    torch.save({"items": [self.items[k].item for k in picked.tolist()], "images": counter},
                               buf)
                    atomic_write_bytes(self.path / "adv" / f"batch-{len(batches):04d}.pt", buf.getvalue())
                buf = io.BytesIO()
                torch.save(model.state_dict(), buf)
                atomic_write_bytes(self.path / "model.pt", buf.getvalue())
                record.update(round=r, n_trained=int(trainable.sum()), val_acc=res.evaluation,
                              train_loss=res.stats.get("loss"), train_s=round(res.train_s, 3),
                              query_s=round(res.query_s, 3))
            items = [self.items[k].item for k in picked.tolist()]
            record.update(items=items, guess=guess, confidence=conf,
                          seconds=round(time.perf_counter() - t0, 3),
                          time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            self._write_batch_files(record)
            _append_line(self.rounds_path, record)
            stage("done")
        return record

    def _counterparts(self, view: dict[str, Any]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The fixed counterparts of trainable items (DM2-AT), built when their batch was queried."""
        folder = self.path / "adv"
        if not folder.is_dir():
            return None, None
        trainable = (view["known"] & ~view["excluded"])
        idx, imgs = [], []
        taken: set[int] = set()
        for f in sorted(folder.glob("batch-*.pt")):
            saved = torch.load(f, weights_only=True)
            for it, img in zip(saved["items"], saved["images"], strict=True):
                k = self.index.get(it)
                if k is not None and bool(trainable[k]) and k not in taken:
                    idx.append(k)
                    imgs.append(img)
                    taken.add(k)
        if not idx:
            return None, None
        return torch.tensor(idx, dtype=torch.long), torch.stack(imgs)

    def _write_batch_files(self, record: dict[str, Any]) -> None:
        rows = ["item,path" + (",guess,confidence" if record["guess"] is not None else "")]
        for j, it in enumerate(record["items"]):
            row = [it, self.items[self.index[it]].path]
            if record["guess"] is not None:
                row += [self.classes[record["guess"][j]], str(record["confidence"][j])]
            rows.append(",".join(_csv_field(v) for v in row))
        stem = self.path / "batches" / f"batch-{record['batch']:04d}"
        atomic_write_text(stem.with_suffix(".csv"), "\n".join(rows) + "\n")
        atomic_write_text(stem.with_suffix(".json"), json.dumps(record, indent=1))

    # ------------------------------------------------------------------ reports and export
    def status(self) -> dict[str, Any]:
        view = self.training_view()
        state = self.state()
        per_class = {c: 0 for c in self.classes}
        n_ood = 0
        for item, st in state.items():
            if item not in self.index:
                continue
            if st.ood:
                n_ood += 1
            else:
                per_class[st.label] += 1
        batches = view["batches"]
        last = next((b for b in reversed(batches) if b.get("round") is not None), None)
        return {"items": len(self.items), "labeled": sum(per_class.values()), "ood": n_ood,
                "unlabeled": len(self.items) - int(view["known"].sum()), "per_class": per_class,
                "batches": len(batches), "rounds": sum(1 for b in batches if b.get("round") is not None),
                "validation_labeled": int(view["val"].sum()),
                "val_acc": last.get("val_acc") if last else None, "skipped": len(self.skipped),
                "labels_of_removed_items": sum(1 for it in state if it not in self.index)}

    def labeled_rows(self) -> list[tuple[str, str, str]]:
        """(item, path, label) of every item labeled with a class, in pool order."""
        state = self.state()
        return [(it.item, it.path, state[it.item].label) for it in self.items
                if it.item in state and not state[it.item].ood]

    def export(self, fmt: str, out: str | Path, image_url: str | None = None) -> int:
        """Write the labels (csv, imagefolder) or the current batch as Label Studio tasks.  Returns the
        number of rows / files / tasks written."""
        out = Path(out)
        if fmt == "csv":
            rows = self.labeled_rows()
            buf = io.StringIO()
            w = csv.writer(buf, lineterminator="\n")
            w.writerow(["item", "path", "label"])
            w.writerows(rows)
            atomic_write_text(out, buf.getvalue())
            return len(rows)
        if fmt == "imagefolder":
            return self._export_imagefolder(out)
        if fmt == "label-studio":
            from dalkit.label.labelstudio import batch_tasks

            tasks = batch_tasks(self, image_url)
            atomic_write_text(out, json.dumps(tasks, indent=1))
            return len(tasks)
        raise ConfigError(f"--format must be csv, label-studio or imagefolder, got {short(fmt)}")

    def _export_imagefolder(self, out: Path) -> int:
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise OutputError(f"cannot export to {out}: it exists and is not an empty folder")
        rows = self.labeled_rows()
        for item, _path, label in rows:
            data, suffix = self.image_bytes(item)
            atomic_write_bytes(out / label / f"{item}{suffix}", data, clean=False)  # into an empty folder
        return len(rows)

    def image_bytes(self, item: str, max_side: int | None = None) -> tuple[bytes, str]:
        """The item's image file (a folder or CSV source) or a PNG of its cached pixels (arrays; or
        when ``max_side`` asks for a thumbnail of a larger file).  Raises LabelError for an unknown item."""
        from PIL import Image

        self._check_item(item)
        it = self.items[self.index[item]]
        if self.source["kind"] in ("folder", "csv"):
            path = Path(self.source["path"])
            path = (path if self.source["kind"] == "folder" else path.parent) / it.path
            try:
                data = path.read_bytes()
            except OSError:
                data = None
            if data is not None and (max_side is None or max(it.width, it.height) <= max_side):
                return data, path.suffix.lower()
            if data is not None:
                with Image.open(io.BytesIO(data)) as im:
                    im.thumbnail((max_side, max_side))
                    buf = io.BytesIO()
                    im.convert("RGB" if im.mode not in ("L", "RGB") else im.mode).save(buf, "PNG")
                    return buf.getvalue(), ".png"
        arr = self.images()[self.index[item]].numpy()
        img = Image.fromarray(arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0))
        buf = io.BytesIO()
        img.save(buf, "PNG")
        return buf.getvalue(), ".png"


def _csv_field(v: str) -> str:
    return '"' + v.replace('"', '""') + '"' if any(c in v for c in ',"\n') else v


def _read_label_csv(file: str | Path) -> list[tuple[int, str, str]]:
    """(line, item-or-path, label) rows of a label CSV with a header naming ``label`` and ``item`` or
    ``path``.

    Raises:
        DatasetFormatError: unreadable, or the columns are missing.
    """
    from dalkit.errors import DatasetFormatError

    try:
        with open(file, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else short(str(exc))[1:-1]
        raise DatasetFormatError(f"cannot read label file {file}: {reason}") from None
    if not rows:
        raise DatasetFormatError(f"label file {file} is empty; it needs a header: item,label or path,label")
    header = [h.strip().lower() for h in rows[0]]
    key = "item" if "item" in header else ("path" if "path" in header else None)
    if key is None or "label" not in header:
        raise DatasetFormatError(f"label file {file} needs a header with a label column and an item or path "
                                 f"column, got {short(','.join(rows[0]))}")
    ki, li = header.index(key), header.index("label")
    out = []
    for line, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        if len(row) <= max(ki, li):
            raise DatasetFormatError(f"label file {file} line {line} has {len(row)} columns; expected "
                                     f"{len(header)}")
        out.append((line, row[ki].strip(), row[li].strip()))
    return out


def _load_feature_rows(path: str | Path, n_entries: int, src: Source) -> np.ndarray:
    """A user's embeddings, one finite row per listed source entry.

    Raises:
        LabelError: not a numeric 2-D .npy, the wrong number of rows, NaN/inf.
    """
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else short(str(exc))[1:-1]
        raise LabelError(f"cannot read --features {path}: {reason}") from None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf" or arr.ndim != 2 or not arr.shape[1]:
        shape = getattr(arr, "shape", "an .npz archive")
        raise LabelError(f"--features {path} must be one numeric .npy array [N, D], got {shape}")
    if arr.shape[0] != n_entries:
        order = {"folder": "the sorted image files", "csv": "the CSV's rows", "array": "the array's rows",
                 "idx": "the IDX file's rows"}[src.kind]
        raise LabelError(f"--features {path} has {arr.shape[0]} rows but the source lists {n_entries} "
                         f"images; give one row per image, in the order of {order}")
    bad = ~np.isfinite(np.asarray(arr, dtype=np.float64)).all(1)
    if bad.any():
        raise LabelError(f"--features {path}: {int(bad.sum())} rows hold NaN or inf (first: row "
                         f"{int(bad.argmax())})")
    return arr


def _save_features(out: Path, rows: np.ndarray, src: Source, items: list[Item]) -> None:
    """features.npy in manifest order (rows of skipped or duplicate entries dropped)."""
    position = {e: k for k, e in enumerate(src.entries)}
    keep = np.array([position[it.path] for it in items], dtype=np.int64)
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(rows[keep], dtype=np.float32))
    atomic_write_bytes(out, buf.getvalue())


def _write_manifest(folder: Path, cache: str, items: list[Item], skipped: list[tuple[str, str]]) -> None:
    atomic_write_text(folder / "manifest.json", json.dumps(
        {"cache": cache, "items": [[it.item, it.path, it.width, it.height] for it in items],
         "skipped": [list(s) for s in skipped]}, separators=(",", ":")))


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


__all__ = ["DEFAULT_METHOD", "Project", "ProjectConfig", "parse_classes"]

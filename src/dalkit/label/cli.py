"""``dalkit label ...``: argument parsing only; everything else is :class:`~dalkit.label.project.Project`.

    dalkit label init PROJECT --images SOURCE --classes a,b,c [--labels FILE.csv] [options]
    dalkit label next PROJECT [--budget 50] [--method NAME]
    dalkit label import PROJECT FILE [--format csv|label-studio]
    dalkit label export PROJECT --format csv|label-studio|imagefolder --out PATH
    dalkit label status PROJECT
    dalkit label scan PROJECT
    dalkit label serve PROJECT [--host 127.0.0.1] [--port 8765]
    dalkit label map PROJECT --out map.png
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from dalkit.errors import ConfigError


def _yaml_pairs(pairs: list[str] | None, flag: str) -> dict[str, Any]:
    from dalkit.cli import _parse_options

    out = _parse_options(pairs, flag)
    if any(isinstance(v, dict) for v in out.values()):
        raise ConfigError(f"{flag} takes KEY=VALUE (no METHOD. prefix) in a labeling project")
    return out


_TRAIN_FLAGS = ("epochs", "batch_size", "lr", "optimizer", "min_steps")


def _cmd_init(args: argparse.Namespace) -> int:
    from dalkit.label.project import Project

    options: dict[str, Any] = {}
    for name in ("model", "method", "seed", "initial_size", "budget", "val_fraction", "subset", "device"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    train = {k: getattr(args, k) for k in _TRAIN_FLAGS if getattr(args, k) is not None}
    if train:
        options["train"] = train
    options["strategy_options"] = _yaml_pairs(args.option, "--option")
    options["recipe_options"] = _yaml_pairs(args.recipe_option, "--recipe-option")
    options["model_options"] = _yaml_pairs(args.model_option, "--model-option")
    project = Project.create(args.project, args.images, args.classes, labels_file=args.labels,
                             image_size=args.image_size, channels=args.channels, family=args.family,
                             features=args.features, **options)
    st = project.status()
    print(f"{args.project}: {st['items']} items ({project.config.channels}x{project.config.image_size}x"
          f"{project.config.image_size}), {len(project.classes)} classes, {st['labeled']} labeled, "
          f"method {project.config.method}")
    for path, why in project.skipped:
        print(f"  skipped {path}: {why}", file=sys.stderr)
    return 0


def _cmd_next(args: argparse.Namespace) -> int:
    from dalkit.label.project import Project

    project = Project(args.project)
    quiet = args.quiet

    def stage(text: str) -> None:
        if not quiet:
            print(f"[dalkit] {text}", file=sys.stderr)

    batch = project.next_batch(args.budget, args.method, stage)
    stem = project.path / "batches" / f"batch-{batch['batch']:04d}"
    acc = f", held-out accuracy {100 * batch['val_acc']:.2f}%" if batch.get("val_acc") is not None else ""
    kind = "random initial batch" if batch["round"] is None else f"round {batch['round']}"
    print(f"batch {batch['batch']} ({kind}, {len(batch['items'])} items{acc}): {stem}.csv")
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from dalkit.label.project import Project

    n = Project(args.project).import_labels(args.file, args.format)
    print(f"{n} labels added to the journal")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from dalkit.label.project import Project

    n = Project(args.project).export(args.format, args.out, args.image_url)
    unit = {"csv": "labels", "imagefolder": "images", "label-studio": "tasks"}[args.format]
    print(f"{n} {unit} written to {args.out}")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from dalkit.label.project import Project

    st = Project(args.project).status()
    if args.json:
        print(json.dumps(st, indent=1))
        return 0
    print(f"items {st['items']}: {st['labeled']} labeled, {st['unlabeled']} unlabeled, {st['ood']} out of "
          f"distribution; {st['batches']} batches, {st['rounds']} trained rounds")
    width = max(len(c) for c in st["per_class"])
    for c, n in st["per_class"].items():
        print(f"  {c:<{width}} {n}")
    if st["val_acc"] is not None:
        print(f"held-out accuracy (last round, {st['validation_labeled']} validation labels): "
              f"{100 * st['val_acc']:.2f}%")
    if st["labels_of_removed_items"]:
        print(f"{st['labels_of_removed_items']} labels belong to images no longer in the source (kept)")
    return 0


def _cmd_scan(args: argparse.Namespace) -> int:
    from dalkit.label.project import Project

    project = Project(args.project)
    counts = project.rescan()
    print(f"{counts['items']} items: {counts['added']} added, {counts['removed']} removed, "
          f"{counts['skipped']} skipped; every label kept")
    for path, why in project.skipped:
        print(f"  skipped {path}: {why}", file=sys.stderr)
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from dalkit.label.server import serve

    serve(args.project, args.host, args.port, args.token)
    return 0


def _cmd_map(args: argparse.Namespace) -> int:
    from dalkit.label.selection_map import project_map

    path = project_map(args.project, args.out)
    print(f"selection map: {path}")
    return 0


def add_label_parser(sub: Any) -> None:
    """Register ``dalkit label`` and its commands on the top-level sub-parser set."""
    lab = sub.add_parser("label", help="label your own images: the human active-learning loop")
    lsub = lab.add_subparsers(dest="label_command", required=True)

    i = lsub.add_parser("init", help="create a labeling project from a folder, CSV of paths, array or IDX")
    i.add_argument("project")
    i.add_argument("--images", required=True, help="folder, .csv of paths, .npy/.npz uint8 array, IDX file")
    i.add_argument("--classes", required=True, help="comma-separated class names")
    i.add_argument("--labels", help="CSV of labels already known (item or path, label)")
    i.add_argument("--model", help="model name or package.module:builder (default cnn; features with "
                   "--features)")
    i.add_argument("--features", help=".npy [N, D] embeddings, one row per listed image: the model trains "
                   "on them (the features MLP head by default)")
    i.add_argument("--model-option", action="append", metavar="KEY=VALUE",
                   help="model option, e.g. hidden=256, depth=1 for features")
    i.add_argument("--method", help="AL method (default alphamix; see the README)")
    i.add_argument("--image-size", type=int, help="model input side (default 28 for cnn, else 32)")
    i.add_argument("--channels", type=int, choices=[1, 3], help="default: 1 if every image is grey")
    i.add_argument("--family", choices=["digits", "natural"], help="training recipe defaults")
    i.add_argument("--seed", type=int)
    i.add_argument("--initial-size", type=int, help="size of the random first batch (default 50)")
    i.add_argument("--budget", type=int, help="batch size of each round (default 50)")
    i.add_argument("--val-fraction", type=float, help="labeled items held out for accuracy (default 0)")
    i.add_argument("--subset", type=int, help="score a random R of the unlabeled pool each round")
    i.add_argument("--device")
    i.add_argument("--epochs", type=int)
    i.add_argument("--batch-size", type=int)
    i.add_argument("--lr", type=float)
    i.add_argument("--optimizer", choices=["adam", "sgd"])
    i.add_argument("--min-steps", type=int)
    i.add_argument("--option", action="append", metavar="KEY=VALUE", help="strategy option")
    i.add_argument("--recipe-option", action="append", metavar="KEY=VALUE", help="recipe option")
    i.set_defaults(func=_cmd_init)

    n = lsub.add_parser("next", help="train on the labels and write the next batch to label")
    n.add_argument("project")
    n.add_argument("--budget", type=int)
    n.add_argument("--method")
    n.add_argument("--quiet", action="store_true")
    n.set_defaults(func=_cmd_next)

    im = lsub.add_parser("import", help="add labels from a CSV or a Label Studio JSON export")
    im.add_argument("project")
    im.add_argument("file")
    im.add_argument("--format", choices=["csv", "label-studio"], help="default: by the file's suffix")
    im.set_defaults(func=_cmd_import)

    ex = lsub.add_parser("export", help="write the labels, or the current batch as Label Studio tasks")
    ex.add_argument("project")
    ex.add_argument("--format", required=True, choices=["csv", "label-studio", "imagefolder"])
    ex.add_argument("--out", required=True)
    ex.add_argument("--image-url", help="Label Studio tasks: URL prefix the image path is appended to")
    ex.set_defaults(func=_cmd_export)

    s = lsub.add_parser("status", help="labeled / unlabeled counts per class, rounds, held-out accuracy")
    s.add_argument("project")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_cmd_status)

    sc = lsub.add_parser("scan", help="re-scan the images (added, removed, changed); labels are kept")
    sc.add_argument("project")
    sc.set_defaults(func=_cmd_scan)

    sv = lsub.add_parser("serve", help="the labeling page on 127.0.0.1 (URL with a random token)")
    sv.add_argument("project")
    sv.add_argument("--host", default="127.0.0.1", help="listen address (other hosts still need the token)")
    sv.add_argument("--port", type=int, default=8765)
    sv.add_argument("--token", help="use this token instead of a random one")
    sv.set_defaults(func=_cmd_serve)

    m = lsub.add_parser("map", help="PNG of the pool's embeddings: labeled / queried / unlabeled")
    m.add_argument("project")
    m.add_argument("--out", required=True)
    m.set_defaults(func=_cmd_map)

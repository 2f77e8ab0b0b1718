"""Command line: argument parsing only; everything else is the library.

    dalkit run [CONFIG] [--flags]     run (or resume) experiments, print the table
    dalkit strategies                 list strategies and methods
    dalkit datasets                   list datasets and whether their files are present
    dalkit report RUN_DIR...          mean ± std per round, AUBC, learning-curve PNG
    dalkit fetch NAME                 download a dataset (checksummed) into the data root
    dalkit label ...                  label your own images (see dalkit/label/cli.py)
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import typing
from pathlib import Path
from typing import Any

import yaml

# Only the standard library and the light modules below load with this module: the console script
# imports it before main() runs, and torch (imported by the commands) takes seconds to load, so a
# Ctrl-C then must land inside main()'s handler, not in an import at the top of this file.
from dalkit.checks import count_values, short, yaml_load
from dalkit.errors import ConfigError, DalkitError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _parse_options(pairs: list[str] | None, flag: str) -> dict[str, Any]:
    """``KEY=VALUE`` pairs (values parsed as YAML scalars); ``METHOD.KEY=VALUE`` applies to one method."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"{flag} expects KEY=VALUE or METHOD.KEY=VALUE, got {short(pair)}")
        key, value = (part.strip() for part in pair.split("=", 1))
        try:
            parsed = yaml_load(value)
        except yaml.YAMLError:
            parsed = value
        if count_values(parsed, 10_000) >= 10_000:
            raise ConfigError(f"{flag} {short(key)[1:-1]}: the value expands to more than 10000 values")
        if "." in key:
            method, key = key.split(".", 1)
            out.setdefault(method, {})[key] = parsed
        else:
            out[key] = parsed
    return out


_RUN_FLAGS = {  # flag dest -> config field
    "dataset": "dataset", "model": "model", "initial_size": "initial_size", "budget": "budget",
    "rounds": "rounds", "pool_size": "pool_size", "test_size": "test_size", "device": "device",
    "data_root": "data_root", "recipe": "recipe", "features": "features_path",
    "model_dropout": "model_dropout", "subset": "subset", "attack_epsilon": "attack_epsilon",
    "pgd_steps": "pgd_steps", "pgd_restarts": "pgd_restarts",
    "robust_rounds": "robust_rounds", "open_set_fraction": "open_set_fraction",
    "open_set_source": "open_set_source",
    "open_set_oracle": "open_set_oracle", "imbalance_ratio": "imbalance_ratio",
    "initial_set": "initial_set", "retrain": "retrain",
}
_EXECUTOR_FLAGS = {"executor": "executor", "address": "address", "cpus_per_run": "cpus_per_run",
                   "score_workers": "score_workers", "train_cache": "train_cache"}
_TRAIN_FLAGS = ("epochs", "batch_size", "lr", "optimizer", "min_steps")


def _cmd_run(args: argparse.Namespace) -> int:
    from dalkit.experiment import config_from_dict
    from dalkit.experiment.config import _build, read_config_values
    from dalkit.experiment.executors import Job, executor_from_values, run_jobs
    from dalkit.experiment.runner import check_experiment
    from dalkit.report import plot_learning_curves, runs_table
    from dalkit.training import TrainConfig

    values: dict[str, Any] = read_config_values(args.config) if args.config else {}
    for dest, field in _RUN_FLAGS.items():
        if getattr(args, dest) is not None:
            values[field] = getattr(args, dest)
    if args.method is not None:
        methods = [m.strip() for m in args.method.split(",")]
        if not all(methods):
            raise ConfigError(f"--method expects a name or a comma-separated list, got {short(args.method)}")
        values["method"] = methods if len(methods) != 1 else methods[0]
    if args.preset is not None:
        values["preset"] = args.preset
    if args.test_corruptions is not None:
        items = [c.strip() for c in args.test_corruptions.split(",")]
        if not all(items):
            raise ConfigError(f"--test-corruptions expects NAME:SEVERITY,... with no empty entry, got "
                              f"{short(args.test_corruptions)}")
        values["test_corruptions"] = items
    for flag, dest in (("--open-set-source", "open_set_source"), ("--open-set-oracle", "open_set_oracle")):
        if getattr(args, dest) is not None and not values.get("open_set_fraction"):
            raise ConfigError(f"{flag} needs an open-set pool: add --open-set-fraction (above 0)")
    if args.seeds is not None:
        try:
            values["seeds"] = [int(s) for s in args.seeds.split(",")]
        except ValueError:
            raise ConfigError(f"--seeds expects comma-separated integers, got {short(args.seeds)}") from None
    if args.out is not None and not args.out.strip():
        raise ConfigError("--out expects a directory, got an empty string")
    for field, pairs, flag in (("strategy_options", args.option, "--option"),
                               ("recipe_options", args.recipe_option, "--recipe-option"),
                               ("model_options", args.model_option, "--model-option")):
        base = values.get(field) or {}
        if not isinstance(base, dict):
            raise ConfigError(f"{field} must be a mapping of option: value, got {short(base)}")
        values[field] = {**base, **_parse_options(pairs, flag)}
    train_over = {k: getattr(args, k) for k in _TRAIN_FLAGS if getattr(args, k) is not None}
    if train_over:
        from dalkit.data import DATASETS

        base = values.get("train")
        if base is not None and not isinstance(base, dict):
            raise ConfigError(f"train must be a mapping of TrainConfig fields, got {short(base)}")
        if base is None and values.get("preset"):
            base = {}  # the preset supplies the rest of its training recipe
        if base is None:
            family = DATASETS.get(values.get("dataset", "mnist")).family
            base = TrainConfig.for_family(family).__dict__
        values["train"] = {**base, **train_over}
        if not values.get("preset"):
            _build(TrainConfig, values["train"], "train")
    for dest, field in _EXECUTOR_FLAGS.items():
        if getattr(args, dest) is not None:
            values[field] = getattr(args, dest)
    values, executor = executor_from_values(values)
    if executor.name == "ray":
        from dalkit.experiment.executors import import_ray

        import_ray()  # refuse a missing Ray before any work
    configs = config_from_dict(values)
    first = configs[0]
    out_root = Path(args.out) if args.out else Path("runs") / f"{first.dataset}-{first.model}"
    # one method: --out is its run directory; several: one sub-directory per method
    run_dirs = [out_root if (args.out and len(configs) == 1) else out_root / cfg.method for cfg in configs]
    # validate every experiment (options, data, budget, run directories) before running any
    prepared = [check_experiment(cfg, d) for cfg, d in zip(configs, run_dirs, strict=True)]
    jobs = [Job(cfg, run_dir, data) for cfg, run_dir, data in zip(configs, run_dirs, prepared, strict=True)]
    if executor.name == "local":
        for job in jobs:
            _announce(args, job)
            run_jobs([job], executor, progress=not args.quiet, on_round=None if args.quiet else _print_round)
    else:  # every (method, seed) at once, one progress bar per run
        for job in jobs:
            _announce(args, job)
        run_jobs(jobs, executor, progress=not args.quiet)
    table, summaries = runs_table(run_dirs)
    print(table)
    if len(run_dirs) > 1:
        png = plot_learning_curves(summaries, out_root / "learning_curves.png",
                                   title=f"{configs[0].dataset} / {configs[0].model}")
        print(f"learning curves: {png}", file=sys.stderr)
    return 0


def _announce(args: argparse.Namespace, job: Any) -> None:
    if not args.quiet:  # progress output: with --quiet an error is the only line on stderr
        cfg = job.config
        print(f"[dalkit] {cfg.method} on {cfg.dataset} ({cfg.model}), seeds {list(cfg.seeds)} "
              f"-> {job.run_dir}", file=sys.stderr)


def _print_round(rec: dict[str, Any]) -> None:
    robust = (("corrupt_acc_mean", "corrupted"), ("fgsm_acc", "FGSM"), ("pgd_acc", "PGD"))
    print(f"  seed {rec['seed']} round {rec['round']:>2}: {rec['n_labeled']:>6} labeled, "
          f"acc {100 * rec['test_acc']:.2f}%, train {rec['train_s']:.1f}s, query {rec['query_s']:.2f}s"
          + "".join(f", {label} {100 * rec[key]:.2f}%" for key, label in robust if key in rec),
          file=sys.stderr)


def _cmd_strategies(_args: argparse.Namespace) -> int:
    from dalkit.experiment import METHODS
    from dalkit.experiment.methods import training_names
    from dalkit.strategies import STRATEGIES, strategy_doc
    from dalkit.training import RECIPES

    print("strategies (each is also a method trained with the supervised recipe):")
    for name in STRATEGIES.names():
        print(f"  {name:<20} {strategy_doc(name)}")
    print("methods (strategy + training recipe):")
    for name, spec in sorted(METHODS.items()):
        print(f"  {name:<20} {spec.description}")
    print("TRAINING:STRATEGY runs any strategy under a training recipe, e.g. freematch+fa:coreset; "
          "trainings:")
    for name in training_names():
        base = name.partition("+")[0]
        doc = (RECIPES.get(base).__doc__ or "").strip().split("\n")[0]
        print(f"  {name:<20} {'feature re-alignment (SSAL section 3.5) on ' + base if '+' in name else doc}")
    return 0


def _cmd_datasets(args: argparse.Namespace) -> int:
    from dalkit.data import DATASETS, default_data_root, load_dataset

    root = Path(args.data_root) if args.data_root else default_data_root()
    for name in DATASETS.names():
        spec = DATASETS.get(name)
        status = "built in"
        if spec.needs_files:
            try:
                load_dataset(name, root) if args.check else None
                present = (root / spec.subdir).is_dir()
                status = ("ok" if args.check else "present") if present else f"missing ({root / spec.subdir})"
            except DalkitError as exc:
                status = f"error: {exc}"
        print(f"  {name:<15} {status:<30} {spec.description}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from dalkit.files import atomic_write_text, check_writable
    from dalkit.report import plot_format, plot_learning_curves, runs_table

    plot = Path(args.plot) if args.plot else Path(args.run_dirs[0]).parent / "learning_curves.png"
    for path in (plot, Path(args.markdown) if args.markdown else None,
                 Path(args.map) if args.map else None):  # before anything is written
        if path is not None:
            check_writable(path)
    plot_format(plot)  # .png, .pdf or .svg
    table, summaries = runs_table(args.run_dirs)
    if args.map:
        from dalkit.report.maps import run_map

        run_map(args.run_dirs[0], args.map)
        print(f"selection map: {args.map}", file=sys.stderr)
    if args.markdown:
        atomic_write_text(args.markdown, table + "\n")
    plot_learning_curves(summaries, plot)
    print(table)
    print(f"learning curves: {plot}", file=sys.stderr)
    return 0


def _cmd_fetch(args: argparse.Namespace) -> int:
    from dalkit.data.fetch import fetch_dataset

    path = fetch_dataset(args.name, args.data_root)
    print(f"{args.name}: ready in {path}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit code 2), like every other dalkit error."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(EXIT_USAGE, f"dalkit: error: {one_line(message)} (see {self.prog} --help)\n")


def one_line(message: str, limit: int = 400) -> str:
    """``message`` on one line, at most ``limit`` characters."""
    text = " ".join(str(message).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="dalkit", description="Deep active learning toolkit")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run or resume experiments")
    r.add_argument("config", nargs="?", help="YAML config (flags override its fields)")
    r.add_argument("--dataset")
    r.add_argument("--model", help="registered model (cnn, resnet18, features, ...) or your own: "
                                    "package.module:builder")
    r.add_argument("--model-option", action="append", metavar="KEY=VALUE",
                   help="model option (repeatable): features hidden=/depth=; your builder's keywords, "
                        "embedding_layer=, stages=")
    r.add_argument("--method", help="method name, or a comma-separated list")
    r.add_argument("--initial-size", type=int)
    r.add_argument("--budget", type=int)
    r.add_argument("--rounds", type=int)
    r.add_argument("--seeds", help="comma-separated, e.g. 0,1,2")
    r.add_argument("--pool-size", type=int)
    r.add_argument("--test-size", type=int)
    r.add_argument("--epochs", type=int)
    r.add_argument("--batch-size", type=int)
    r.add_argument("--lr", type=float)
    r.add_argument("--optimizer", choices=["adam", "sgd"])
    r.add_argument("--min-steps", type=int)
    r.add_argument("--model-dropout", type=float)
    r.add_argument("--recipe", help="override the method's training recipe")
    r.add_argument("--option", action="append", metavar="KEY=VALUE", help="strategy option (repeatable)")
    r.add_argument("--recipe-option", action="append", metavar="KEY=VALUE", help="recipe option")
    r.add_argument("--subset", type=lambda v: int(v) if v.strip().isdigit() else v, metavar="R",
                   help="score a random R of the unlabeled pool each round ('full': all of it)")
    r.add_argument("--features", help="with --model features: your embeddings, the model's inputs (.npy "
                                       "[N_train, D] or .npz with train/test); otherwise .npy features for "
                                       "strategies with source=features")
    r.add_argument("--device")
    r.add_argument("--preset", help="named protocol preset, e.g. dm2-paper (explicit values win)")
    r.add_argument("--test-corruptions", metavar="NAME:SEV,...",
                   help="corrupted test sets evaluated every round, e.g. fog:3,rotate:2 or all:3")
    r.add_argument("--attack-epsilon", type=float, help="FGSM/PGD test accuracy at this L-inf radius")
    r.add_argument("--pgd-steps", type=int)
    r.add_argument("--pgd-restarts", type=int, help="PGD from k random starts (worst case); 0: start at x")
    r.add_argument("--robust-rounds", help="evaluate corruptions and attacks every round (default) or only "
                   "the final one: every | final")
    r.add_argument("--open-set-fraction", type=float, help="fraction of OOD images in the pool")
    r.add_argument("--open-set-source", help="'photos' (default) or a dataset name")
    r.add_argument("--open-set-oracle", choices=["discard", "random-label"])
    r.add_argument("--imbalance-ratio", type=float, help="long-tailed pool, head/tail ratio")
    r.add_argument("--initial-set", choices=["random", "every-class"],
                   help="round-0 labels: uniform draws, or redrawn until every class is in them")
    r.add_argument("--retrain", choices=["scratch", "continue"],
                   help="each round trains a fresh model (scratch) or the previous round's (continue)")
    r.add_argument("--data-root")
    r.add_argument("--out", help="run directory (one method) or parent directory (several)")
    r.add_argument("--quiet", action="store_true", help="no progress output")
    r.add_argument("--executor", choices=["local", "ray"],
                   help="local (default): runs one after the other here; ray: one Ray task per method x seed")
    r.add_argument("--address", help="with --executor ray: join this cluster ('auto' or HOST:PORT); "
                   "default: start Ray on this machine")
    r.add_argument("--cpus-per-run", type=int, metavar="N", help="with --executor ray: CPUs per run")
    r.add_argument("--score-workers", type=int, metavar="K",
                   help="with --executor ray: K actors split the pool's forward passes each round")
    r.add_argument("--train-cache", metavar="DIR",
                   help="a folder of trained rounds shared between runs: a training already stored there "
                   "(e.g. round 0, the same for every method) is loaded instead of repeated")
    r.set_defaults(func=_cmd_run)

    s = sub.add_parser("strategies", help="list strategies and methods")
    s.set_defaults(func=_cmd_strategies)

    d = sub.add_parser("datasets", help="list datasets")
    d.add_argument("--data-root")
    d.add_argument("--check", action="store_true", help="load each dataset to check its files")
    d.set_defaults(func=_cmd_datasets)

    rep = sub.add_parser("report", help="tables and learning curves of run directories")
    rep.add_argument("run_dirs", nargs="+")
    rep.add_argument("--plot", help="learning-curve image, .png, .pdf or .svg (default: "
                     "learning_curves.png next to the first run directory)")
    rep.add_argument("--markdown", help="also write the table to this file")
    rep.add_argument("--map", help="PNG: the first run's selection map (PCA of the pool, picks by round)")
    rep.set_defaults(func=_cmd_report)

    f = sub.add_parser("fetch", help="download a dataset into the data root (checksummed)")
    f.add_argument("name")
    f.add_argument("--data-root")
    f.set_defaults(func=_cmd_fetch)

    from dalkit.label.cli import add_label_parser

    add_label_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; user errors print one line and exit with code 2, an interruption exits 130."""
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        _refuse_empty_values(args)
        logging.basicConfig(level=logging.WARNING, format="%(message)s")
        return int(args.func(args) or 0)
    except DalkitError as exc:
        return _fail(str(exc))
    except OSError as exc:  # an output path that cannot be written, a disk that filled up...
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        return _fail(f"{where}{exc.strerror or type(exc).__name__}")
    except KeyboardInterrupt:
        with _interrupts_ignored():  # a second Ctrl-C must not add a traceback to the one line
            print("dalkit: interrupted; re-run the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED


@contextlib.contextmanager
def _interrupts_ignored() -> typing.Iterator[None]:
    import signal

    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # main() called outside the main thread: nothing to protect
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _refuse_empty_values(args: argparse.Namespace) -> None:
    """Every value given on the command line must say something: an empty or blank string (``--preset
    ''``, ``--plot ''``, a config path '') would otherwise read as "not given" and be ignored.

    Raises:
        ConfigError: names the flag.
    """
    for dest, value in vars(args).items():
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, str) and not v.strip() for v in values):
            flag = dest if dest in ("config", "run_dirs", "name") else "--" + dest.replace("_", "-")
            raise ConfigError(f"{flag} expects a value, got an empty string")


def _fail(message: str) -> int:
    print(f"dalkit: error: {one_line(message)}", file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())

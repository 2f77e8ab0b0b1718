"""Label-efficiency benchmark: run several methods on one dataset over seeds, print and save a
Markdown table (accuracy mean ± std per round, AUBC, query seconds per round) and a learning-curve PNG.

Methods are given as ``LABEL=METHOD[:KEY=VALUE,...]``, e.g. ``dm2-pairs=dm2:mixing=pairs,alpha=1.0``;
a bare ``METHOD`` is its own label; ``subset=R`` is the runner's candidate subset (``full``: all),
``recipe=NAME`` overrides the method's training recipe, ``recipe.KEY=VALUE`` sets a recipe option,
anything else is a strategy option.  Runs resume: re-running the
same command skips finished rounds.

    python benchmarks/al_table.py --name mnist_dm2 --methods random entropy dm2 dm2-at
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import yaml

from dalkit.experiment import ExperimentConfig, run_experiment
from dalkit.report import plot_learning_curves, runs_table
from dalkit.training import TrainConfig


def parse_method(spec: str) -> tuple[str, str, dict]:
    label, _, rest = spec.partition("=") if "=" in spec.split(":")[0] else (spec.split(":")[0], "", spec)
    method, _, opts = (rest or spec).partition(":")
    options = {}
    for pair in filter(None, opts.split(",")):
        key, _, value = pair.partition("=")
        options[key] = yaml.safe_load(value)
    return label, method, options


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", required=True, help="table name (runs/bench/NAME, benchmarks/results/NAME.md)")
    p.add_argument("--methods", nargs="+", required=True)
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--model", default="cnn")
    p.add_argument("--initial-size", type=int, default=20)
    p.add_argument("--budget", type=int, default=20)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--pool-size", type=int, default=None)
    p.add_argument("--test-size", type=int, default=None)
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=96)
    p.add_argument("--device", default="auto")
    p.add_argument("--report-only", action="store_true",
                   help="run nothing: tabulate the methods whose runs have finished")
    args = p.parse_args()

    train = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, optimizer="adam", lr=1e-3)
    run_dirs = []
    for spec in args.methods:
        label, method, options = parse_method(spec)
        recipe_opts = {k[len("recipe."):]: v for k, v in options.items() if k.startswith("recipe.")}
        subset = options.pop("subset", None)
        recipe = options.pop("recipe", None)
        strat_opts = {k: v for k, v in options.items() if not k.startswith("recipe.")}
        cfg = ExperimentConfig(
            dataset=args.dataset, model=args.model, method=method, initial_size=args.initial_size,
            budget=args.budget, rounds=args.rounds, seeds=tuple(int(s) for s in args.seeds.split(",")),
            pool_size=args.pool_size, test_size=args.test_size, train=train,
            strategy_options=strat_opts, recipe_options=recipe_opts, device=args.device, subset=subset,
            recipe=recipe,
        )
        run_dir = Path("runs/bench") / args.name / label
        if args.report_only:
            if (run_dir / "summary.json").exists():
                run_dirs.append(run_dir)
            continue
        t0 = time.perf_counter()
        print(f"== {label} ({method} {options})", file=sys.stderr, flush=True)
        run_experiment(cfg, run_dir, progress=False)
        print(f"   done in {time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)
        run_dirs.append(run_dir)
    table, summaries = runs_table(run_dirs)
    # label rows by the benchmark label, not the method name
    relabeled = {Path(d).name: s for d, s in zip(run_dirs, summaries.values(), strict=True)}
    from dalkit.report import markdown_table

    table = markdown_table(relabeled)
    pool = args.pool_size or "full"
    header = (f"{args.dataset} / {args.model}: pool {pool}, test {args.test_size or 'full'}, initial "
              f"{args.initial_size}, +{args.budget} per round x {args.rounds} rounds, seeds {args.seeds}; "
              f"Adam 1e-3, batch {args.batch_size}, {args.epochs} epochs per round. Accuracy (%) by labeled "
              "count, mean ± std over seeds; AUBC = area under the budget curve (%); query s/round = mean "
              "seconds per selection.")
    out = Path("benchmarks/results") / f"{args.name}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"# {args.name}\n\n{header}\n\n{table}\n")
    (out.with_suffix(".json")).write_text(json.dumps(relabeled, indent=1))
    plot_learning_curves(relabeled, out.with_suffix(".png"), title=f"{args.dataset} / {args.model}")
    print(header)
    print(table)


if __name__ == "__main__":
    main()

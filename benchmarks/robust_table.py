"""DM2 paper Table 3 / Table 5 shape on real MNIST: clean and robust AUBC (corrupted test sets, FGSM and
PGD) per method, the DM2-AT ablation, and an open-set pool (CIFAR-10s style) with the discarding oracle.

Every run uses ``--preset dm2-paper`` (20 initial labels + 10 rounds x 20, candidate subset 1,000, Adam
1e-3, batch 96, 50 epochs per round: the paper's MNIST protocol, which fits a CPU) plus:
15 MNIST-C-style corruptions at severity 3 on a fixed 2,000-image test subset, FGSM and PGD-10 accuracy
at eps = 0.1.  Runs resume (runs/bench/robust_<table>/<label>); the Markdown/JSON tables are rewritten
after every finished method, so the script can be split over several invocations:

    python benchmarks/robust_table.py --table mnistc --methods random margin
    python benchmarks/robust_table.py --table mnistc            # all methods, skipping finished ones
    python benchmarks/robust_table.py --table openset --report  # only rewrite the table
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from dalkit.experiment.config import config_from_dict
from dalkit.experiment.runner import run_experiment
from dalkit.report import markdown_table, plot_learning_curves
from dalkit.report.tables import load_run, summarize

# label -> (method, strategy options, recipe options); all on top of the dm2-paper preset
METHODS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "random": ("random", {}, {}),
    "margin": ("margin", {}, {}),
    "badge": ("badge", {}, {}),
    "alphamix": ("alphamix", {}, {}),
    "dm2 (paper)": ("dm2", {}, {}),
    "dm2-at (paper)": ("dm2-at", {}, {}),
    # dalkit's defaults: group mixing with the literal Eq. 7 sum, lambda 0.5, true label, eps 0.03
    "dm2-at (dalkit)": ("dm2-at", {"mixing": "group", "alpha": None}, {"label": "true", "epsilon": 0.03}),
    # Table 5 ablations of the paper reading
    "dm2-at -distance": ("dm2-at", {"metric": "l2"}, {}),
    "dm2-at -fusion ratio": ("dm2-at", {"alpha": None, "lam": 0.5}, {}),
    "dm2-at -perturbation": ("dm2-at", {}, {"epsilon": 0.05}),
}
TABLES = {
    "mnistc": {"methods": list(METHODS), "extra": {}},
    "openset": {"methods": ["random", "margin", "badge", "dm2-at (paper)", "dm2-at (dalkit)", "alphamix"],
                "extra": {"open_set_fraction": 0.2, "open_set_source": "photos",
                          "open_set_oracle": "discard"}},
}
BASE = {"preset": "dm2-paper", "dataset": "mnist", "model": "cnn", "test_size": 500,
        "test_corruptions": "all:3", "attack_epsilon": 0.1, "pgd_steps": 10}


def slug(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in label)


def config_for(label: str, table: str, seeds: list[int], device: str):
    method, strat, recipe = METHODS[label]
    values = {**BASE, **TABLES[table]["extra"], "method": method, "seeds": seeds, "device": device,
              "strategy_options": dict(strat), "recipe_options": dict(recipe)}
    (cfg,) = config_from_dict(values)
    return cfg


def write_tables(table: str, labels: list[str], root: Path) -> None:
    summaries: dict[str, dict] = {}
    for label in labels:
        run_dir = root / slug(label)
        if (run_dir / "rounds.jsonl").exists():
            _, records = load_run(run_dir)
            if records:
                summaries[label] = summarize(records)
    if not summaries:
        return
    out = Path("benchmarks/results") / f"robust_{table}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    extra = TABLES[table]["extra"]
    header = ("MNIST / CNN, `--preset dm2-paper` (20 + 10 x 20 labels, "
              "candidate subset 1,000 of the 60k pool, "
              "Adam 1e-3, batch 96, 50 epochs per round), test: 500 fixed images; corrupted = mean over "
              "15 generated MNIST-C-style corruptions at severity 3; FGSM / PGD-10 at eps = 0.1; "
              + (f"open-set pool: {int(100 * extra['open_set_fraction'])} % OOD photo crops, oracle "
                 f"{extra['open_set_oracle']} (budget charged); " if extra else "")
              + "seeds: " + ", ".join(str(s) for s in next(iter(summaries.values()))["seeds"])
              + ". Accuracy (%) mean ± std over seeds; AUBC (%) over the 11 evaluations.")
    per_corruption = corruption_table(labels, root)
    out.write_text(f"# robust_{table}\n\n{header}\n\n{markdown_table(summaries)}\n\n"
                   f"## Final round (220 labels), mean ± std over seeds (%)\n\n{final_table(summaries)}\n\n"
                   f"## Final-round accuracy on each corruption (%)\n\n{per_corruption}\n")
    out.with_suffix(".json").write_text(json.dumps(summaries, indent=1))
    plot_learning_curves(summaries, out.with_suffix(".png"), title=f"MNIST robust ({table}), clean accuracy")
    print(out.read_text())


def final_table(summaries: dict[str, dict]) -> str:
    """Final-round clean / corrupted-mean / FGSM / PGD accuracy (the paper's Table 3 reports the last
    round), and the OOD images labeled with an open-set pool."""
    ood = any("n_ood_labeled" in s["robust"] for s in summaries.values())
    head = ["method", "clean", "corrupted (mean of 15)", "FGSM", "PGD", *(["OOD labeled"] if ood else [])]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, s in summaries.items():
        r = s["robust"]
        cells = [f"{100 * s['final_acc_mean']:.2f} ± {100 * s['final_acc_std']:.2f}"]
        cells += [f"{100 * r[m]['final_mean']:.2f} ± {100 * r[m]['final_std']:.2f}" if m in r else ""
                  for m in ("corrupt_acc_mean", "fgsm_acc", "pgd_acc")]
        if ood:
            o = r.get("n_ood_labeled")
            cells.append(f"{o['final_mean']:.1f} ± {o['final_std']:.1f}" if o else "")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def corruption_table(labels: list[str], root: Path) -> str:
    """Final-round accuracy per corruption (mean over seeds), one row per method."""
    rows, names = {}, None
    for label in labels:
        run_dir = root / slug(label)
        if not (run_dir / "rounds.jsonl").exists():
            continue
        _, records = load_run(run_dir)
        last = max((r["round"] for r in records), default=None)
        finals = [r for r in records if r["round"] == last and "corrupt_acc" in r]
        if not finals:
            continue
        names = names or sorted(finals[0]["corrupt_acc"])
        rows[label] = {n: 100 * sum(r["corrupt_acc"][n] for r in finals) / len(finals) for n in names}
        rows[label]["clean"] = 100 * sum(r["test_acc"] for r in finals) / len(finals)
    if not rows or names is None:
        return ""
    cols = ["clean", *names]
    lines = ["| method | " + " | ".join(c.replace(":3", "") for c in cols) + " |",
             "|" + "---|" * (len(cols) + 1)]
    for label, vals in rows.items():
        lines.append(f"| {label} | " + " | ".join(f"{vals[c]:.1f}" for c in cols) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table", choices=sorted(TABLES), required=True)
    p.add_argument("--methods", nargs="*", help="labels to run (default: all of the table's)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--device", default="cpu")
    p.add_argument("--max-minutes", type=float, default=18.0, help="stop starting new runs after this")
    p.add_argument("--report", action="store_true", help="only rewrite the tables from finished runs")
    args = p.parse_args()
    labels = TABLES[args.table]["methods"]
    todo = args.methods or labels
    unknown = [m for m in todo if m not in labels]
    if unknown:
        p.error(f"unknown method label {unknown[0]!r}; valid: {', '.join(labels)}")
    root = Path("runs/bench") / f"robust_{args.table}"
    seeds = [int(s) for s in args.seeds.split(",")]
    t_start = time.perf_counter()
    if not args.report:
        for label in todo:
            for seed in seeds:  # one seed at a time: each finished seed is saved, the table refreshed
                if (time.perf_counter() - t_start) / 60 > args.max_minutes:
                    print(f"time limit reached before {label} seed {seed}; re-run to continue",
                          file=sys.stderr)
                    write_tables(args.table, labels, root)
                    return
                cfg = config_for(label, args.table, seeds, args.device)
                t0 = time.perf_counter()
                run_experiment(cfg.replace(seeds=(seed,)), root / slug(label), progress=False)
                print(f"== {label} seed {seed}: {time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)
            write_tables(args.table, labels, root)
    write_tables(args.table, labels, root)


if __name__ == "__main__":
    main()

"""Semi-supervised active learning benchmark (the SSAL paper's Table 1 / Table 2 / Figure 2 shape).

Setting: ``--per-class`` labeled samples per class at round 0 (class-balanced, seeded), one selection
round of the same size, accuracy after retraining.  Each training (supervised, fixmatch, fixmatch+fa,
freematch, freematch+fa, or a labelled variant with recipe options) is crossed with each strategy.
The round-0 model of (training, seed) does not depend on the strategy: it is trained once, saved, and
every strategy selects from it.

Results go to ``benchmarks/results/NAME.json`` after every finished cell (resumable: finished cells
are skipped, a saved round-0 model is reused); ``--report`` writes ``NAME.md``.

    python benchmarks/ssal_table.py --name ssal_mnist --per-class 1 \
        --trainings supervised fixmatch fixmatch+fa freematch freematch+fa --max-minutes 18
    python benchmarks/ssal_table.py --name ssal_mnist --report
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml

from dalkit.data import DATASETS, channel_stats, load_dataset
from dalkit.experiment.methods import resolve_training
from dalkit.experiment.runner import derive_seed, generator, unlabeled_mask
from dalkit.models import create_model
from dalkit.strategies import QueryContext, create_strategy, query
from dalkit.training import TrainConfig, TrainSet, accuracy, create_recipe, fit

RESULTS = Path(__file__).parent / "results"
STRATEGIES = ["random", "coreset", "alphamix", "activeft", "noise-stability"]


def parse_training(spec: str) -> tuple[str, str, dict]:
    """``LABEL=TRAINING:k=v,k=v`` or ``TRAINING`` -> (label, training, options)."""
    head, _, opts = spec.partition(":")
    label, _, training = head.rpartition("=")  # the label may itself hold "=" (e.g. "fa[T=1]")
    options = {}
    for pair in filter(None, opts.split(",")):
        key, _, value = pair.partition("=")
        options[key] = yaml.safe_load(value)
    return label or training, training, options


def per_class_initial(labels: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    g = generator(seed, 0, 11)
    picks = []
    for c in range(int(labels.max()) + 1):
        idx = torch.nonzero(labels == c).squeeze(1)
        picks.append(idx[torch.randperm(idx.numel(), generator=g)[:per_class]])
    return torch.cat(picks).sort().values


def load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def save(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def train_round(pool, labeled, recipe, train_cfg, mean, std, seed, r):
    torch.manual_seed(derive_seed(seed, r, 1))
    model = create_model("cnn", pool.image_shape[0], pool.num_classes, mean, std,
                         image_size=pool.image_shape[-1])
    ratio = int(getattr(recipe, "unlabeled_ratio", 0))
    data = TrainSet(pool.images[labeled], pool.labels[labeled],
                    unlabeled=pool.images[unlabeled_mask(len(pool), labeled)] if ratio else None)
    t0 = time.perf_counter()
    fit(model, data, recipe.step(), train_cfg, generator(seed, r, 2), unlabeled_ratio=ratio)
    return model, time.perf_counter() - t0


def run(args: argparse.Namespace) -> None:
    out = RESULTS / f"{args.name}.json"
    results = load(out)
    splits = load_dataset("mnist")
    g = torch.Generator().manual_seed(12345)
    pool = splits.train.subset(torch.randperm(len(splits.train), generator=g)[: args.pool_size].sort().values)
    test = splits.test.subset(torch.randperm(len(splits.test), generator=g)[: args.test_size].sort().values)
    mean, std = channel_stats(pool.images)
    train_cfg = TrainConfig(epochs=1, min_steps=args.steps, batch_size=args.batch_size, optimizer="adam",
                            lr=1e-3)
    meta = {"pool": args.pool_size, "test": args.test_size, "steps": args.steps,
            "batch_size": args.batch_size, "mu": args.mu, "optimizer": "adam 1e-3", "model": "cnn"}
    results.setdefault("_meta", meta)
    if args.reuse:  # same settings, deterministic: cells another table already holds are copied, not rerun
        other = load(RESULTS / f"{args.reuse}.json")
        if {k: v for k, v in other.get("_meta", {}).items()} == meta:
            labels = {parse_training(spec)[0] for spec in args.trainings}
            for key, cell in other.items():
                if key != "_meta" and key.startswith(f"pc{args.per_class}/") and key.split("/")[1] in labels:
                    mine = results.setdefault(key, {**cell, "strategies": {}})
                    for name in args.strategies:
                        if name in cell["strategies"] and name not in mine["strategies"]:
                            mine["strategies"][name] = cell["strategies"][name]
    cache = Path("runs/bench") / args.name
    cache.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if args.stop_at:  # turn a UTC wall-clock deadline into a budget from now
        now = time.gmtime()
        hh, mm = (int(v) for v in args.stop_at.split(":"))
        left = (hh * 60 + mm) - (now.tm_hour * 60 + now.tm_min + now.tm_sec / 60)
        args.max_minutes = min(args.max_minutes, max(0.0, left))
    recipes = []
    for spec in args.trainings:
        label, training, options = parse_training(spec)
        base, fa_opts = resolve_training(training)
        opts = {**fa_opts, **options}
        if base in ("fixmatch", "freematch"):
            opts.setdefault("mu", args.mu)
        recipe = create_recipe(base, **opts)
        if hasattr(recipe, "for_dataset"):
            recipe = recipe.for_dataset(DATASETS.get("mnist"))
        recipes.append((label, training, opts, recipe))
    # seeds outermost: a partial run has every training on the first seeds
    for seed in (int(s) for s in args.seeds.split(",")):
        for label, training, opts, recipe in recipes:
            key = f"pc{args.per_class}/{label}/{seed}"
            cell = results.setdefault(key, {"training": training, "options": opts, "strategies": {}})
            todo = [s for s in args.strategies if s not in cell["strategies"]]
            if not todo:
                continue
            if (time.perf_counter() - start) / 60 > args.max_minutes:
                print(f"time budget reached before {key}; re-run to continue", file=sys.stderr)
                save(out, results)
                return
            labeled = per_class_initial(pool.labels, args.per_class, seed)
            ckpt = cache / f"{key.replace('/', '_')}_round0.pt"
            model0 = create_model("cnn", 1, 10, mean, std, image_size=28)
            if ckpt.exists() and "round0" in cell:
                model0.load_state_dict(torch.load(ckpt))
            else:
                model0, secs = train_round(pool, labeled, recipe, train_cfg, mean, std, seed, 0)
                torch.save(model0.state_dict(), ckpt)
                cell["round0"] = {"acc": accuracy(model0, test.images, test.labels),
                                  "train_s": round(secs, 2)}
                save(out, results)
            model0.eval()
            for name in todo:
                if (time.perf_counter() - start) / 60 > args.max_minutes:
                    print(f"time budget reached in {key}; re-run to continue", file=sys.stderr)
                    save(out, results)
                    return
                ctx = QueryContext(model0, pool.images, labeled, pool.labels[labeled], pool.num_classes,
                                   generator(seed, 0, 3), "cpu", 1024)
                t0 = time.perf_counter()
                sel = query(create_strategy(name), ctx, args.per_class * pool.num_classes)
                query_s = time.perf_counter() - t0
                new = torch.cat([labeled, sel.indices]).sort().values
                model1, secs = train_round(pool, new, recipe, train_cfg, mean, std, seed, 1)
                acc = accuracy(model1, test.images, test.labels)
                cell["strategies"][name] = {"acc": acc, "train_s": round(secs, 2),
                                            "query_s": round(query_s, 3),
                                            "selected": sel.indices.sort().values.tolist()}
                save(out, results)
                print(f"{key} {name}: {100 * acc:.2f}% (round 0 {100 * cell['round0']['acc']:.2f}%), "
                      f"train {secs:.1f}s", file=sys.stderr, flush=True)


def _fmt(values: list[float]) -> str:
    if not values:
        return "–"
    m = statistics.mean(values)
    s = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * m:.1f} ± {100 * s:.1f}" + ("" if len(values) >= 3 else f" (n={len(values)})")


def report(args: argparse.Namespace) -> None:
    results = load(RESULTS / f"{args.name}.json")
    meta = results.pop("_meta", {})
    wanted = [parse_training(spec)[0] for spec in args.trainings]
    if args.reuse:  # rows of another table with the same settings (e.g. the baselines of an ablation)
        other = load(RESULTS / f"{args.reuse}.json")
        if other.pop("_meta", None) == meta:
            for key, cell in other.items():
                if key.split("/")[1] in wanted and key not in results:
                    results[key] = cell
        keep = {k: v for k, v in results.items() if k.split("/")[1] in wanted}
        results = {k: keep[k] for k in sorted(keep, key=lambda k: wanted.index(k.split("/")[1]))}
    lines = [f"MNIST / {meta.get('model')}: pool {meta.get('pool')}, test {meta.get('test')}; every round "
             f"trains a fresh model for {meta.get('steps')} steps, labeled batch {meta.get('batch_size')}"
             f" (the whole labeled set when smaller), mu = {meta.get('mu')} (SSL only), "
             f"{meta.get('optimizer')}. "
             "Accuracy (%) after one selection round, mean ± std over seeds; round 0 = the shared model "
             "before selection; s/round = mean training seconds of the selection round (1 CPU thread).", ""]
    settings = sorted({k.split("/")[0] for k in results})
    for setting in settings:
        labels = list(dict.fromkeys(k.split("/")[1] for k in results if k.startswith(setting + "/")))
        strategies = [s for s in args.strategies if any(s in results[k]["strategies"] for k in results
                                                   if k.startswith(setting + "/"))]
        lines += [f"**{setting[2:]} label(s) per class** ({int(setting[2:]) * 10} initial + "
                  f"{int(setting[2:]) * 10} selected)", "",
                  "| training | round 0 | " + " | ".join(strategies) + " | avg | s/round |",
                  "|---" * (len(strategies) + 4) + "|"]
        for label in labels:
            cells = [results[k] for k in results if k.startswith(f"{setting}/{label}/")]
            r0 = [c["round0"]["acc"] for c in cells if "round0" in c]
            row = [label, _fmt(r0)]
            per_seed_avg = []
            for s in strategies:
                row.append(_fmt([c["strategies"][s]["acc"] for c in cells if s in c["strategies"]]))
            for c in cells:
                if all(s in c["strategies"] for s in strategies):
                    per_seed_avg.append(statistics.mean(c["strategies"][s]["acc"] for s in strategies))
            secs = [v["train_s"] for c in cells for v in c["strategies"].values()]
            row += [_fmt(per_seed_avg), f"{statistics.mean(secs):.1f}" if secs else "–"]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
        # the paper's claim: FA improves every SSL + AL pair (paired by seed)
        gains = []
        for base in ("fixmatch", "freematch"):
            if base not in labels or f"{base}+fa" not in labels:
                continue
            for strat in strategies:
                diffs = []
                for k, c in results.items():
                    if not k.startswith(f"{setting}/{base}/"):
                        continue
                    fa_cell = results.get(k.replace(f"/{base}/", f"/{base}+fa/"), {"strategies": {}})
                    if strat in c["strategies"] and strat in fa_cell["strategies"]:
                        diffs.append(fa_cell["strategies"][strat]["acc"] - c["strategies"][strat]["acc"])
                if diffs:
                    gains.append((base, strat, diffs))
        if gains:
            better = sum(statistics.mean(d) > 0 for _, _, d in gains)
            lines += ["FA gain (points, TRAINING+fa − TRAINING, paired by seed): "
                      f"{better} of {len(gains)} SSL+AL pairs improve on average.", "",
                      "| pair | gain | seeds |", "|---|---|---|"]
            lines += [f"| {b}:{s} | {100 * statistics.mean(d):+.1f} | {len(d)} |" for b, s, d in gains]
            lines.append("")
    text = "\n".join(lines)
    (RESULTS / f"{args.name}.md").write_text(text)
    print(text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", required=True)
    p.add_argument("--report", action="store_true")
    p.add_argument("--per-class", type=int, default=1)
    p.add_argument("--trainings", nargs="+", default=["supervised", "fixmatch", "fixmatch+fa", "freematch",
                                                       "freematch+fa"])
    p.add_argument("--strategies", nargs="+", default=STRATEGIES)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--mu", type=int, default=2)
    p.add_argument("--pool-size", type=int, default=10000)
    p.add_argument("--test-size", type=int, default=5000)
    p.add_argument("--max-minutes", type=float, default=18.0)
    p.add_argument("--stop-at", help="UTC HH:MM after which no new cell starts (a shared deadline)")
    p.add_argument("--reuse", help="copy finished cells of the same settings from this results table")
    args = p.parse_args()
    report(args) if args.report else run(args)


if __name__ == "__main__":
    main()

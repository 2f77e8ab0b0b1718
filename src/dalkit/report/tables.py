"""Aggregation of round records into tables."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from dalkit.errors import RunDirectoryError


def aubc(n_labeled: list[float] | np.ndarray, acc: list[float] | np.ndarray) -> float:
    """Area under the budget curve: trapezoidal area of accuracy over labeled count, divided by the
    labeled range, so it is a mean accuracy in [0, 1].  A single point returns its accuracy."""
    x, y = np.asarray(n_labeled, dtype=float), np.asarray(acc, dtype=float)
    if len(x) == 1 or x[-1] == x[0]:
        return float(y.mean())
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0) / (x[-1] - x[0]))


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-round mean/std over seeds of accuracy and timings, and the AUBC over seeds.

    Only rounds that every seed has completed enter the per-round rows.
    """
    by_seed: dict[int, dict[int, dict[str, Any]]] = defaultdict(dict)
    for r in records:
        by_seed[r["seed"]][r["round"]] = r
    seeds = sorted(by_seed)
    if not seeds:
        return {"seeds": [], "rounds": [], "aubc_mean": float("nan"), "aubc_std": float("nan")}
    common = sorted(set.intersection(*(set(v) for v in by_seed.values())))
    rows = []
    for rnd in common:
        recs = [by_seed[s][rnd] for s in seeds]
        acc = np.array([r["test_acc"] for r in recs])
        rows.append({
            "round": rnd,
            "n_labeled": int(np.mean([r["n_labeled"] for r in recs])),
            "acc_mean": float(acc.mean()), "acc_std": float(acc.std(ddof=0)),
            "train_s": float(np.mean([r["train_s"] for r in recs])),
            "query_s": float(np.mean([r["query_s"] for r in recs])),
        })
    per_seed = [
        aubc([by_seed[s][k]["n_labeled"] for k in common], [by_seed[s][k]["test_acc"] for k in common])
        for s in seeds
    ]
    robust: dict[str, dict[str, float]] = {}
    for metric in ROBUST_METRICS:  # corrupted-set mean, FGSM, PGD accuracy: AUBC like the clean one
        if not common or not all(metric in by_seed[s][common[-1]] for s in seeds):
            continue
        entry = robust[metric] = {}
        if all(metric in by_seed[s][k] for s in seeds for k in common):  # robust_rounds: final has no AUBC
            vals = [aubc([by_seed[s][k]["n_labeled"] for k in common],
                         [by_seed[s][k][metric] for k in common]) for s in seeds]
            entry.update(aubc_mean=float(np.mean(vals)), aubc_std=float(np.std(vals)))
        finals = [by_seed[s][common[-1]][metric] for s in seeds]
        entry.update(final_mean=float(np.mean(finals)), final_std=float(np.std(finals)))
    if common and all("n_ood_labeled" in by_seed[s][common[-1]] for s in seeds):
        ood = [by_seed[s][common[-1]]["n_ood_labeled"] for s in seeds]
        robust["n_ood_labeled"] = {"final_mean": float(np.mean(ood)), "final_std": float(np.std(ood))}
    return {
        "robust": robust,
        "seeds": seeds, "rounds": rows,
        "aubc_mean": float(np.mean(per_seed)), "aubc_std": float(np.std(per_seed)),
        "final_acc_mean": rows[-1]["acc_mean"] if rows else float("nan"),
        "final_acc_std": rows[-1]["acc_std"] if rows else float("nan"),
        "query_s_mean": float(np.mean([r["query_s"] for r in rows[:-1]])) if len(rows) > 1 else 0.0,
    }


ROBUST_METRICS = ("corrupt_acc_mean", "fgsm_acc", "pgd_acc")
_ROBUST_HEADS = {"corrupt_acc_mean": "corrupted", "fgsm_acc": "FGSM", "pgd_acc": "PGD"}


def load_run(path: str | Path) -> tuple[str, list[dict[str, Any]]]:
    """(label, records) of a run directory.

    Raises:
        RunDirectoryError: not a run directory, no completed round, or damaged records.
    """
    from dalkit.experiment.rundir import RunDirectory, check_records

    rd = RunDirectory(path)
    if not rd.rounds_path.is_file():
        raise RunDirectoryError(f"{path} is not a run directory (no rounds.jsonl)")
    config = rd.read_config() if rd.config_path.exists() else None
    label = config.method if config is not None else Path(path).name
    records = rd.read_rounds()
    if not records:
        raise RunDirectoryError(f"{rd.rounds_path} has no completed rounds yet")
    check_records(records, rd.rounds_path, config.robust_rounds if config is not None else None)
    return label, records


def _pm(mean: float, std: float) -> str:
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def markdown_table(summaries: dict[str, dict[str, Any]]) -> str:
    """Markdown: one row per method; accuracy (%) mean ± std per labeled count, AUBC, query s/round."""
    counts = sorted({row["n_labeled"] for s in summaries.values() for row in s["rounds"]})
    extra = [m for m in ROBUST_METRICS if any(m in s.get("robust", {}) for s in summaries.values())]
    # AUBC where every round evaluated it (robust_rounds: every), else the final value (robust_rounds: final)
    kind = {m: "aubc" if all("aubc_mean" in s["robust"][m] for s in summaries.values()
                             if m in s.get("robust", {})) else "final" for m in extra}
    ood = any("n_ood_labeled" in s.get("robust", {}) for s in summaries.values())
    robust_heads = [f"{'AUBC' if kind[m] == 'aubc' else 'final'} {_ROBUST_HEADS[m]}" for m in extra]
    head = ["method", *[str(c) for c in counts], "AUBC", *robust_heads,
            *(["OOD labeled"] if ood else []), "query s/round"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, s in summaries.items():
        by_n = {row["n_labeled"]: row for row in s["rounds"]}
        cells = [_pm(by_n[c]["acc_mean"], by_n[c]["acc_std"]) if c in by_n else "" for c in counts]
        rob = s.get("robust", {})
        cells += [_pm(rob[m][f"{kind[m]}_mean"], rob[m][f"{kind[m]}_std"]) if m in rob else "" for m in extra]
        if ood:
            o = rob.get("n_ood_labeled")
            cells.append(f"{o['final_mean']:.1f} ± {o['final_std']:.1f}" if o else "")
        lines.append("| " + " | ".join([name, *cells[:len(counts)], _pm(s["aubc_mean"], s["aubc_std"]),
                                         *cells[len(counts):], f"{s['query_s_mean']:.2f}"]) + " |")
    return "\n".join(lines)


def runs_table(paths: list[str | Path]) -> tuple[str, dict[str, dict[str, Any]]]:
    """Load run directories and return (markdown table, {label: summary})."""
    summaries: dict[str, dict[str, Any]] = {}
    for p in paths:
        label, records = load_run(p)
        if label in summaries:
            label = f"{label} ({Path(p).name})"
        summaries[label] = summarize(records)
    return markdown_table(summaries), summaries

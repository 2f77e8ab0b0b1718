"""Shared machinery of the claim benchmarks (``claim_dm2at.py``, ``claim_ssl_fa.py``,
``claim_lplgrad.py``): resumable arms x seeds, raw records in ``benchmarks/results/claim_<name>/``, and a
power statement computed from those records (:mod:`dalkit.report.power`).

An arm is a label and the config values of one method; every arm runs one seed at a time into
``runs/claims/<name>/<arm>`` (``run_experiment`` resumes a half-finished seed round by round; trainings
shared between arms, e.g. round 0, load from ``runs/claims/<name>/_train_cache``), and its
seed's records are merged into ``benchmarks/results/claim_<name>/<arm>.jsonl`` after every seed, so the
raw records survive even when ``runs/`` is deleted (and a run dir started afresh adds to them).  The
report is rebuilt from those files only.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dalkit.errors import TrainingDivergedError
from dalkit.experiment.config import config_from_dict
from dalkit.experiment.runner import run_experiment
from dalkit.report.plots import plot_paired_comparisons
from dalkit.report.power import PairedComparison, paired_comparison
from dalkit.report.tables import aubc

RESULTS = Path(__file__).parent / "results"


@dataclass(frozen=True)
class Arm:
    label: str
    values: dict[str, Any]


@dataclass(frozen=True)
class Claim:
    """A paper's claim as a paired comparison: ``a`` beats ``b`` by ``margin`` (percentage points) on
    ``metric`` (a round-record key, e.g. ``test_acc`` or ``corrupt_acc_mean``) read as ``kind``
    ("final": the last evaluation; "aubc": area under the budget curve)."""

    text: str
    a: str
    b: str
    metric: str
    kind: str
    margin: float


@dataclass
class Bench:
    name: str
    arms: list[Arm]
    claims: list[Claim] = field(default_factory=list)
    header: str = ""
    runs_root: Path = Path("runs/claims")
    results_root: Path = RESULTS

    @property
    def results_dir(self) -> Path:
        return self.results_root / f"claim_{self.name}"

    def run_dir(self, arm: Arm) -> Path:
        return self.runs_root / self.name / slug(arm.label)

    @property
    def train_cache(self) -> Path:
        """Trainings shared by the arms (every arm with the same recipe trains the same round 0)."""
        return self.runs_root / self.name / "_train_cache"


def slug(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in label)


def finished_seeds(path: Path, rounds: int) -> set[int]:
    if not path.exists():
        return set()
    done: set[int] = set()
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn last line: the run resumes it
        if rec.get("round") == rounds:
            done.add(int(rec["seed"]))
    return done


def run(bench: Bench, seeds: list[int], only: list[str] | None, max_minutes: float,
        on_seed: Callable[[], None] | None = None) -> bool:
    """Run every (arm, seed) not yet finished, one seed at a time; False when stopped by the time limit."""
    torch.set_num_threads(1)
    t_start = time.perf_counter()
    labels = [a.label for a in bench.arms]
    unknown = [m for m in only or [] if m not in labels]
    if unknown:
        raise SystemExit(f"unknown arm {unknown[0]!r}; valid: {', '.join(labels)}")
    bench.results_dir.mkdir(parents=True, exist_ok=True)
    for seed in seeds:  # seed-major: every arm gains a seed before any gets the next, so a stopped run
        for arm in bench.arms:  # still yields paired comparisons
            if only and arm.label not in only:
                continue
            (cfg,) = config_from_dict({**arm.values, "seeds": [seed]})
            raw = bench.results_dir / f"{slug(arm.label)}.jsonl"
            if seed in finished_seeds(raw, cfg.rounds) or seed in diverged_seeds(bench, arm.label):
                continue
            if (time.perf_counter() - t_start) / 60 > max_minutes:
                print(f"time limit: stopped before {arm.label} seed {seed}; re-run to continue",
                      file=sys.stderr)
                return False
            t0 = time.perf_counter()
            try:
                run_experiment(cfg, bench.run_dir(arm), progress=False, train_cache=bench.train_cache)
            except TrainingDivergedError as e:  # an outcome of the arm, not of the benchmark: note it, go on
                note_divergence(bench, arm, seed, str(e))
                print(f"== {bench.name}: {arm.label} seed {seed}: diverged ({e})", file=sys.stderr,
                      flush=True)
                continue
            merge_seed(raw, bench.run_dir(arm) / "rounds.jsonl", seed)
            print(f"== {bench.name}: {arm.label} seed {seed}: {time.perf_counter() - t0:.0f} s",
                  file=sys.stderr,
                  flush=True)
            if on_seed is not None:
                on_seed()
    return True


def merge_seed(raw: Path, rounds: Path, seed: int) -> None:
    """Put ``seed``'s records from a run dir's ``rounds.jsonl`` into the raw file, keeping every other
    seed's records there (the run dir may be younger than the raw file: ``runs/`` deleted, a fresh
    checkout); written to a temporary file and renamed, so a stop mid-write leaves the old file whole."""
    def records(path: Path) -> list[str]:
        return path.read_text().splitlines() if path.exists() else []

    def seed_of(line: str) -> int | None:
        try:
            return int(json.loads(line)["seed"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            return None  # a torn line: dropped with the seed it would have belonged to

    kept = [ln for ln in records(raw) if seed_of(ln) not in (seed, None)]
    new = [ln for ln in records(rounds) if seed_of(ln) == seed]
    tmp = raw.with_suffix(raw.suffix + ".tmp")
    tmp.write_text("".join(ln + "\n" for ln in kept + new))
    tmp.replace(raw)


def note_divergence(bench: Bench, arm: Arm, seed: int, message: str) -> None:
    """Note a diverged run in ``claim_<name>/<arm>.diverged.jsonl`` (:func:`run` skips the seeds noted
    there); the report lists it."""
    with (bench.results_dir / f"{slug(arm.label)}.diverged.jsonl").open("a") as f:
        f.write(json.dumps({"seed": seed, "error": message}) + "\n")


def diverged_seeds(bench: Bench, label: str) -> dict[int, str]:
    path = bench.results_dir / f"{slug(label)}.diverged.jsonl"
    if not path.exists():
        return {}
    return {int(r["seed"]): r["error"] for r in map(json.loads, path.read_text().splitlines())}


def load_records(bench: Bench, label: str) -> list[dict[str, Any]]:
    path = bench.results_dir / f"{slug(label)}.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out


def per_seed(records: list[dict[str, Any]], metric: str, kind: str) -> dict[int, float]:
    """seed -> the metric in percent: its first evaluation ("first", round 0), its last ("final") or its
    AUBC ("aubc"), for the seeds whose run is complete (every round up to the largest round present)."""
    last = max((r["round"] for r in records), default=-1)
    out: dict[int, float] = {}
    for seed in sorted({r["seed"] for r in records}):
        recs = sorted((r for r in records if r["seed"] == seed), key=lambda r: r["round"])
        if not recs or recs[-1]["round"] != last or len(recs) != last + 1:
            continue  # not complete
        if kind == "first":
            if metric in recs[0]:
                out[seed] = 100 * recs[0][metric]
        elif kind == "final":  # (robust_rounds: final records the robust metrics in the last round only)
            if metric in recs[-1]:
                out[seed] = 100 * recs[-1][metric]
        elif all(metric in r for r in recs):
            out[seed] = 100 * aubc([r["n_labeled"] for r in recs], [r[metric] for r in recs])
    return out


def per_seed_table(bench: Bench, columns: list[tuple[str, str, str, str]]) -> str:
    """A markdown table, a row per seed: one cell per (heading, arm label, metric, kind) column, the
    metric in percent as ``per_seed`` reads it, empty where that arm has no complete run of the seed."""
    cols = [per_seed(load_records(bench, label), metric, kind) for _, label, metric, kind in columns]
    seeds = sorted(set().union(*cols)) if cols else []
    lines = ["| seed | " + " | ".join(c[0] for c in columns) + " |", "|" + "---|" * (len(columns) + 1)]
    lines += [f"| {seed} | " + " | ".join(f"{c[seed]:.2f}" if seed in c else "" for c in cols) + " |"
              for seed in seeds]
    return "\n".join(lines)


def _mean_sd(vals: list[float]) -> str:
    if not vals:
        return ""
    m = sum(vals) / len(vals)
    sd = (sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5 if len(vals) > 1 else 0.0
    return f"{m:.2f} ± {sd:.2f}"


def report(bench: Bench, columns: list[tuple[str, str, str]], echo: bool = True) -> list[PairedComparison]:
    """Write ``benchmarks/results/claim_<name>.md`` and ``.json``: per arm the mean ± sd over seeds of
    each (heading, metric, kind) column, then every claim's paired comparison and power statement."""
    head = ["arm", "seeds", *[c[0] for c in columns]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    table: dict[str, dict[str, Any]] = {}
    for arm in bench.arms:
        recs = load_records(bench, arm.label)
        if not recs:
            continue
        cells, row = [], {}
        seeds = set()
        for heading, metric, kind in columns:
            vals = per_seed(recs, metric, kind)
            seeds |= set(vals)
            row[heading] = vals
            cells.append(_mean_sd(list(vals.values())))
        table[arm.label] = row
        lines.append(f"| {arm.label} | {len(seeds)} | " + " | ".join(cells) + " |")
    comparisons = []
    for claim in bench.claims:
        a = per_seed(load_records(bench, claim.a), claim.metric, claim.kind)
        b = per_seed(load_records(bench, claim.b), claim.metric, claim.kind)
        comparisons.append(paired_comparison(a, b, claim.margin, claim.a, claim.b,
                                             f"{claim.kind} {claim.metric}"))
    claim_lines = [f"- **{c.text}** {p.sentence()}" for c, p in zip(bench.claims, comparisons, strict=True)]
    diverged = [f"- {arm.label}, seed {s}: {err}" for arm in bench.arms
                for s, err in sorted(diverged_seeds(bench, arm.label).items())]
    if diverged:
        claim_lines += ["", "Runs stopped by a diverged training (left out of the table and the "
                        "comparisons):", "", *diverged]
    out = bench.results_root / f"claim_{bench.name}.md"
    out.write_text(f"# claim_{bench.name}\n\n{bench.header}\n\nMean ± sd over seeds (%):\n\n"
                   + "\n".join(lines)
                   + "\n\nPaired comparisons (per-seed differences; verdict from the 95 % t-interval; seeds "
                   "needed = a paired t-test with 80 % power against the claimed margin at the observed "
                   "spread):\n\n" + "\n".join(claim_lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps(
        {"arms": table, "comparisons": [p.to_dict() for p in comparisons],
         "claims": [c.__dict__ for c in bench.claims]}, indent=1))
    plot_paired_comparisons(comparisons, [f"{p.a} − {p.b}" for p in comparisons], out.with_suffix(".png"),
                            f"claim_{bench.name}: paired differences over seeds")
    if echo:
        print(out.read_text())
    return comparisons


def parse_seeds(text: str) -> list[int]:
    if "-" in text and "," not in text:
        lo, hi = text.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(s) for s in text.split(",")]


__all__ = ["Arm", "Bench", "Claim", "RESULTS", "load_records", "merge_seed", "parse_seeds", "per_seed",
           "per_seed_table", "report", "run", "slug"]

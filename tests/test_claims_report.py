"""The claim benchmarks' report helpers (benchmarks/claims_common.py, claim_ssl_fa.py) on hand-made
round records: which seeds count, what each cell holds, and the paper's "FA helps k of 4" count."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import claim_ssl_fa  # noqa: E402
from claims_common import Bench, merge_seed, per_seed, per_seed_table, slug  # noqa: E402


def write(bench: Bench, label: str, runs: dict[int, list[float]]) -> None:
    """seed -> test accuracy per round (fractions), as the runner's round records."""
    bench.results_dir.mkdir(parents=True, exist_ok=True)
    with (bench.results_dir / f"{slug(label)}.jsonl").open("a") as f:
        for seed, accs in runs.items():
            for r, acc in enumerate(accs):
                rec = {"seed": seed, "round": r, "n_labeled": 10 * (r + 1), "test_acc": acc}
                f.write(json.dumps(rec) + "\n")


def test_per_seed_reads_first_final_aubc_of_complete_runs_only():
    recs = [{"seed": 0, "round": 0, "n_labeled": 10, "test_acc": 0.5},
            {"seed": 0, "round": 1, "n_labeled": 20, "test_acc": 0.7},
            {"seed": 1, "round": 0, "n_labeled": 10, "test_acc": 0.9}]  # seed 1 stopped after round 0
    assert per_seed(recs, "test_acc", "first") == {0: 50.0}
    assert per_seed(recs, "test_acc", "final") == {0: 70.0}
    assert per_seed(recs, "test_acc", "aubc") == {0: pytest.approx(60.0)}  # one trapezoid


def test_per_seed_table_rows_per_seed_blank_where_missing(tmp_path):
    b = Bench("t", [], results_root=tmp_path)
    write(b, "x:a", {0: [0.5, 0.75], 1: [0.6, 0.8]})
    write(b, "x:b", {1: [0.6, 0.9]})
    table = per_seed_table(b, [("r0", "x:a", "test_acc", "first"), ("a", "x:a", "test_acc", "final"),
                               ("b", "x:b", "test_acc", "final")])
    assert table.splitlines() == ["| seed | r0 | a | b |", "|---|---|---|---|",
                                  "| 0 | 50.00 | 75.00 |  |", "| 1 | 60.00 | 80.00 | 90.00 |"]


def test_fa_count_counts_on_the_seeds_all_arms_share(tmp_path):
    b = Bench("t", [], results_root=tmp_path)
    # seeds 0-1 for every arm; seed 2 only for coreset with FA (a huge gain there must not count)
    finals = {"coreset": ([0.90, 0.90, 0.99], [0.91, 0.92]),      # FA behind on both shared seeds
              "alphamix": ([0.95, 0.70], [0.80, 0.80]),           # ahead on 1 of 2, mean +3.25
              "activeft": ([0.97, 0.97], [0.96, 0.96]),           # ahead on 2
              "noise-stability": ([0.50, 0.96], [0.96, 0.50])}    # ahead on 1, mean difference 0
    for s, (fa, no) in finals.items():
        write(b, f"freematch+fa:{s}", {k: [0.5, v] for k, v in enumerate(fa)})
        write(b, f"freematch:{s}", {k: [0.5, v] for k, v in enumerate(no)})
    line = claim_ssl_fa.fa_count(b, ["freematch"])
    assert "FA helps 2 of 4 AL methods** on their means over seeds 0, 1" in line
    assert "of 2: coreset 0, alphamix 1, activeft 2, noise-stability 1" in line
    # the average over the 4 methods, per seed: FA (90+95+97+50)/4 = 83, (90+70+97+96)/4 = 88.25;
    # without (91+80+96+96)/4 = 90.75, (92+80+96+50)/4 = 79.5 -> differences -7.75, +8.75, mean +0.50
    assert "(final test_acc): +0.50" in line


def test_merge_seed_keeps_other_seeds_replaces_this_one(tmp_path):
    # the raw file holds seeds 0-1, a half-written seed 2 and a torn line; a run dir started afresh
    # (runs/ deleted) holds only seed 2, plus a stale seed 0 that must not replace the raw one
    def rec(seed, r, acc):
        return json.dumps({"seed": seed, "round": r, "test_acc": acc})

    raw, rounds = tmp_path / "arm.jsonl", tmp_path / "rounds.jsonl"
    raw.write_text("\n".join([rec(0, 0, 0.1), rec(0, 1, 0.2), rec(1, 0, 0.3), rec(1, 1, 0.4),
                              rec(2, 0, 0.99), '{"seed": 2, "rou']) + "\n")
    rounds.write_text("\n".join([rec(0, 1, 0.77), rec(2, 0, 0.5), rec(2, 1, 0.6)]) + "\n")
    merge_seed(raw, rounds, 2)
    got = [(r["seed"], r["round"], r["test_acc"]) for r in map(json.loads, raw.read_text().splitlines())]
    assert got == [(0, 0, 0.1), (0, 1, 0.2), (1, 0, 0.3), (1, 1, 0.4), (2, 0, 0.5), (2, 1, 0.6)]
    assert not raw.with_suffix(".jsonl.tmp").exists()
    merge_seed(tmp_path / "new.jsonl", rounds, 2)  # no raw file yet
    assert [json.loads(ln)["seed"] for ln in (tmp_path / "new.jsonl").read_text().splitlines()] == [2, 2]

"""Reports: AUBC against a hand trapezoid, mean/std over seeds against numpy, tables, the PNG."""

from __future__ import annotations

import numpy as np
import pytest

from dalkit.cli import main
from dalkit.experiment import ExperimentConfig, RunDirectory
from dalkit.report import aubc, markdown_table, runs_table, summarize


def test_aubc_hand_trapezoid():
    # (10, .5) -> (20, .7): 10 * .6 = 6;  (20, .7) -> (40, .8): 20 * .75 = 15;  21 / 30 = 0.7
    assert aubc([10, 20, 40], [0.5, 0.7, 0.8]) == pytest.approx(0.7)
    assert aubc([0, 10], [0.0, 1.0]) == pytest.approx(0.5)
    assert aubc([20, 30, 40, 50], [0.6, 0.6, 0.6, 0.6]) == pytest.approx(0.6)


def test_aubc_matches_a_loop_on_uneven_steps():
    rng = np.random.default_rng(0)
    x = np.cumsum(rng.integers(1, 50, size=9))
    y = rng.random(9)
    area = 0.0
    for i in range(8):
        area += (x[i + 1] - x[i]) * (y[i] + y[i + 1]) / 2
    assert aubc(x, y) == pytest.approx(area / (x[-1] - x[0]))


def test_aubc_single_point_is_its_accuracy():
    assert aubc([100], [0.83]) == pytest.approx(0.83)


def record(seed: int, rnd: int, acc: float, budget: int = 10, initial: int = 20) -> dict:
    return {"seed": seed, "round": rnd, "n_labeled": initial + rnd * budget, "n_adversarial": 0,
            "test_acc": acc, "train_loss": 0.1, "train_s": 1.0 + seed + rnd, "query_s": 0.1 * (seed + 1),
            "selected": []}


ACC = {0: [0.50, 0.60, 0.70], 1: [0.40, 0.65, 0.72], 2: [0.55, 0.58]}  # seed 2 stopped after round 1


def hand_records() -> list[dict]:
    return [record(seed, rnd, acc) for seed, accs in ACC.items() for rnd, acc in enumerate(accs)]


def test_summarize_mean_std_over_seeds_against_numpy():
    s = summarize(hand_records())
    assert s["seeds"] == [0, 1, 2]
    assert [row["round"] for row in s["rounds"]] == [0, 1]  # only rounds every seed completed
    for row in s["rounds"]:
        accs = np.array([ACC[seed][row["round"]] for seed in (0, 1, 2)])
        assert row["acc_mean"] == pytest.approx(accs.mean())
        assert row["acc_std"] == pytest.approx(accs.std())  # population std (ddof 0)
        assert row["n_labeled"] == 20 + 10 * row["round"]
        assert row["train_s"] == pytest.approx(np.mean([1.0 + seed + row["round"] for seed in (0, 1, 2)]))
        assert row["query_s"] == pytest.approx(0.2)
    per_seed = [(ACC[seed][0] + ACC[seed][1]) / 2 for seed in (0, 1, 2)]  # one trapezoid each
    assert s["aubc_mean"] == pytest.approx(np.mean(per_seed))
    assert s["aubc_std"] == pytest.approx(np.std(per_seed))
    assert s["final_acc_mean"] == pytest.approx(np.mean([0.60, 0.65, 0.58]))
    assert s["final_acc_std"] == pytest.approx(np.std([0.60, 0.65, 0.58]))
    assert s["query_s_mean"] == pytest.approx(0.2)  # rounds but the last (which queries nothing)


def test_summarize_one_seed_and_order_independence():
    recs = [record(0, r, a) for r, a in enumerate([0.3, 0.5, 0.9])]
    s = summarize(recs[::-1])
    assert [row["acc_mean"] for row in s["rounds"]] == pytest.approx([0.3, 0.5, 0.9])
    assert all(row["acc_std"] == 0.0 for row in s["rounds"])
    assert s["aubc_mean"] == pytest.approx(aubc([20, 30, 40], [0.3, 0.5, 0.9]))
    assert s["aubc_std"] == 0.0


def test_summarize_no_records():
    s = summarize([])
    assert s["rounds"] == [] and np.isnan(s["aubc_mean"])


def test_markdown_table_one_row_per_method():
    summaries = {
        "random": summarize(hand_records()),
        "entropy": summarize([record(0, r, a) for r, a in enumerate([0.5, 0.7, 0.9])]),
        "dm2": summarize([record(s, r, 0.8) for s in (0, 1) for r in range(2)]),
    }
    table = markdown_table(summaries)
    lines = table.splitlines()
    assert len(lines) == 2 + 3
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["method", "20", "30", "40", "AUBC", "query s/round"]
    for name in summaries:
        rows = [ln for ln in lines[2:] if ln.startswith(f"| {name} |")]
        assert len(rows) == 1
        assert len(rows[0].strip("|").split("|")) == len(header)
    entropy = next(ln for ln in lines if ln.startswith("| entropy |"))
    assert "70.00 ± 0.00" in entropy  # 0.7 at 30 labeled, one seed
    dm2 = next(ln for ln in lines if ln.startswith("| dm2 |"))
    assert [c.strip() for c in dm2.strip("|").split("|")][3] == ""  # dm2 has no 40-labeled round


def make_run_dir(path, method: str, accs: dict[int, list[float]]):
    rd = RunDirectory(path)
    rd.prepare(ExperimentConfig(dataset="digits", method=method, initial_size=20, budget=10,
                                rounds=len(next(iter(accs.values()))) - 1, seeds=tuple(accs)))
    for seed, values in accs.items():
        for rnd, acc in enumerate(values):
            rd.append_round(record(seed, rnd, acc))
    return path


def test_runs_table_reads_run_directories(tmp_path):
    a = make_run_dir(tmp_path / "a", "random", {0: [0.5, 0.6], 1: [0.4, 0.7]})
    b = make_run_dir(tmp_path / "b", "random", {0: [0.5, 0.9]})
    table, summaries = runs_table([a, b])
    assert list(summaries) == ["random", "random (b)"]  # same method twice: labels stay distinct
    assert summaries["random"]["rounds"][1]["acc_mean"] == pytest.approx(0.65)
    assert len(table.splitlines()) == 4


def test_cli_report_writes_png_and_markdown(tmp_path, capsys):
    a = make_run_dir(tmp_path / "runs" / "random", "random", {0: [0.5, 0.6, 0.7], 1: [0.4, 0.6, 0.75]})
    b = make_run_dir(tmp_path / "runs" / "dm2", "dm2", {0: [0.5, 0.7, 0.8], 1: [0.45, 0.72, 0.82]})
    png, md = tmp_path / "plots" / "curves.png", tmp_path / "table.md"
    rc = main(["report", str(a), str(b), "--plot", str(png), "--markdown", str(md)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    assert "| random |" in out and "| dm2 |" in out
    assert md.read_text().strip() == out.strip()
    # default plot location: next to the first run directory
    rc = main(["report", str(a), str(b)])
    capsys.readouterr()
    assert rc == 0
    assert (tmp_path / "runs" / "learning_curves.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(("suffix", "magic"), [(".pdf", b"%PDF"), (".svg", b"<?xml"), (".PNG", b"\x89PNG")])
def test_report_plot_format_follows_the_suffix(tmp_path, capsys, suffix, magic):
    """--plot curves.pdf writes a PDF, .svg an SVG (an unknown suffix is refused: the bad-input corpus)."""
    a = make_run_dir(tmp_path / "runs" / "random", "random", {0: [0.5, 0.6, 0.7]})
    path = tmp_path / f"curves{suffix}"
    assert main(["report", str(a), "--plot", str(path)]) == 0, capsys.readouterr().err
    assert path.read_bytes().startswith(magic)

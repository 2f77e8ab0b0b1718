"""The paired power statement of the claim benchmarks, worked by hand."""

from __future__ import annotations

import math

import pytest

from dalkit.report.power import paired_comparison, seeds_needed


def test_paired_interval_and_verdicts_by_hand():
    a = {0: 1.0, 1: 2.0, 2: 3.0, 7: 9.0}  # seed 7 has no partner: ignored
    b = {0: 0.5, 1: 1.0, 2: 1.5, 3: 0.0}
    c = paired_comparison(a, b, claimed=0.71, a_name="dm2-at", b_name="alphamix", metric="final corrupted")
    # differences 0.5, 1.0, 1.5: mean 1, sd 0.5; t_{0.975, 2} = 4.3027 (tables)
    assert c.n == 3 and c.mean_diff == pytest.approx(1.0) and c.sd_diff == pytest.approx(0.5)
    half = 4.302653 * 0.5 / math.sqrt(3)
    assert (c.ci_low, c.ci_high) == (pytest.approx(1 - half, abs=1e-5), pytest.approx(1 + half, abs=1e-5))
    assert c.verdict == "undecided"
    assert paired_comparison({0: 2.0, 1: 2.1, 2: 2.2}, {0: 1.0, 1: 1.0, 2: 1.0}, 0.5).verdict == "holds"
    worse = paired_comparison({0: 0.0, 1: 0.1, 2: 0.2}, {0: 1.0, 1: 1.0, 2: 1.0}, 0.5)
    assert worse.verdict == "contradicted"
    # interval (-0.06, 0.26) straddles 0 but lies below a claimed +1.0
    below = paired_comparison({0: 1.0, 1: 1.1, 2: 1.2}, {0: 1.0, 1: 1.0, 2: 1.0}, 1.0)
    assert below.verdict == "margin excluded"
    # differences 0.2, 0.3, 0.4: interval 0.3 -+ 4.3027 * 0.1 / sqrt 3 = (0.05, 0.55): above 0, below +1.0
    smaller = paired_comparison({0: 1.2, 1: 1.3, 2: 1.4}, {0: 1.0, 1: 1.0, 2: 1.0}, 1.0)
    assert smaller.ci_low > 0 and smaller.verdict == "holds, smaller than claimed"
    assert paired_comparison({0: 1.2, 1: 1.3, 2: 1.4}, {0: 1.0, 1: 1.0, 2: 1.0}, 0.5).verdict == "holds"
    assert paired_comparison({0: 1.0}, {0: 0.0}, 0.5).verdict == "too few seeds"
    assert "95 % CI" in c.sentence()


def test_seeds_needed_by_hand():
    # sd 1, margin 1: n = 10 gives (t_.975,9 = 2.262 + t_.8,9 = 0.883) / sqrt(10) = 0.9946 <= 1, while
    # n = 9 gives (2.306 + 0.889) / 3 = 1.065 > 1 (t tables)
    assert seeds_needed(1.0, 1.0) == 10
    assert seeds_needed(0.0, 0.3) == 2
    assert seeds_needed(2.0, 1.0) > seeds_needed(1.0, 1.0)  # more spread, more seeds
    with pytest.raises(ValueError):
        seeds_needed(1.0, 0.0)


def test_the_forest_plot_draws_each_interval_and_skips_single_seed_comparisons(tmp_path):
    from dalkit.report.plots import forest_rows, plot_paired_comparisons

    two = paired_comparison({0: 1.0, 1: 2.0, 2: 3.0}, {0: 0.5, 1: 1.0, 2: 1.5}, 0.71)  # the hand case above
    one = paired_comparison({0: 1.0}, {0: 0.0}, 0.5)
    half = 4.302653 * 0.5 / math.sqrt(3)
    rows = forest_rows([one, two], ["single", "three seeds"])
    assert [r[0] for r in rows] == ["three seeds"]
    assert rows[0][1:] == (pytest.approx(1.0), pytest.approx(1 - half, abs=1e-5),
                           pytest.approx(1 + half, abs=1e-5), 0.71)
    path = plot_paired_comparisons([one, two], ["single", "three seeds"], tmp_path / "claims.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_paired_comparisons([one], ["single"], tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_the_forest_plot_colours_each_interval_by_its_verdict(tmp_path, monkeypatch):
    from matplotlib.colors import to_hex

    from dalkit.report import plots

    seeds = range(4)
    cases = {  # per-seed differences -> the verdict paired_comparison gives them
        "holds": [2.0, 2.1, 1.9, 2.0],
        "holds, smaller than claimed": [0.4, 0.5, 0.45, 0.5],
        "margin excluded": [-0.1, 0.1, 0.0, 0.05],
        "contradicted": [-2.0, -2.1, -1.9, -2.0],
        "undecided": [-3.0, 3.0, 2.0, -1.0],
    }
    comps = [paired_comparison(dict(zip(seeds, d, strict=True)), dict.fromkeys(seeds, 0.0), 1.0)
             for d in cases.values()]
    assert [c.verdict for c in comps] == list(cases)
    figures = []
    monkeypatch.setattr(plots.plt, "close", figures.append)
    plots.plot_paired_comparisons(comps, list(cases), tmp_path / "f.png")
    ax = figures[0].axes[0]
    intervals = ax.lines[0::3][:5]  # per row: the interval, its mean, the claimed margin
    assert [to_hex(line.get_color()) for line in intervals] == [
        to_hex(plots.VERDICT_COLOURS[v]) for v in cases]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(plots.VERDICT_COLOURS)

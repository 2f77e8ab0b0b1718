"""Learning-curve plots."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dalkit.files import atomic_write_bytes  # noqa: E402


def plot_learning_curves(summaries: dict[str, dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Accuracy vs labeled samples, mean line with a ±1 std band per method; saved as PNG, PDF or SVG
    by the suffix of ``path``.

    Raises:
        ConfigError: another suffix (checked before anything is drawn).
    """
    from dalkit.report import plot_format

    fmt = plot_format(path)
    many = len(summaries) > 8
    fig, ax = plt.subplots(figsize=(10 if many else 7, 5 if many else 4.5), dpi=120)
    colours = plt.get_cmap("tab20" if many else "tab10")
    styles = ["-", "--", ":", "-."]
    for k, (name, s) in enumerate(summaries.items()):
        x = np.array([r["n_labeled"] for r in s["rounds"]])
        m = 100 * np.array([r["acc_mean"] for r in s["rounds"]])
        sd = 100 * np.array([r["acc_std"] for r in s["rounds"]])
        colour = colours(k % colours.N)
        ax.plot(x, m, marker="o", ms=3, color=colour, linestyle=styles[(k // colours.N) % len(styles)],
                label=f"{name} (AUBC {100 * s['aubc_mean']:.1f})")
        ax.fill_between(x, m - sd, m + sd, color=colour, alpha=0.12)
    ax.set_xlabel("labeled samples")
    ax.set_ylabel("test accuracy (%)")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    if many:  # outside the axes, so it never hides a curve
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    else:
        ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())  # a reader never sees half an image


def forest_rows(comparisons: list[Any], labels: list[str]) -> list[tuple[str, float, float, float, float]]:
    """(label, mean difference, CI low, CI high, claimed margin) per comparison that has an interval
    (two or more common seeds), in the given order."""
    return [(label, c.mean_diff, c.ci_low, c.ci_high, c.claimed)
            for label, c in zip(labels, comparisons, strict=True) if c.n >= 2]


VERDICT_COLOURS = {"holds": "tab:green", "holds, smaller than claimed": "tab:olive",
                   "margin excluded": "tab:orange", "contradicted": "tab:red", "undecided": "tab:grey"}
"""The forest plot's colour per verdict of :func:`dalkit.report.power.paired_comparison`."""


def plot_paired_comparisons(comparisons: list[Any], labels: list[str], path: str | Path,
                            title: str = "") -> Path | None:
    """A forest plot of paired comparisons (:class:`dalkit.report.power.PairedComparison`): per claim the
    mean per-seed difference with its 95 % interval, the paper's claimed margin as a diamond and zero as
    a line, so whether an interval excludes 0 (holds) or the margin (margin excluded) reads at a glance.
    Comparisons with fewer than two common seeds are left out; None when none is left."""
    from dalkit.report import plot_format

    fmt = plot_format(path)
    rows = forest_rows(comparisons, labels)
    if not rows:
        return None
    verdicts = [c.verdict for c in comparisons if c.n >= 2]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.6), dpi=120)
    y = np.arange(len(rows))[::-1]
    for yi, (_, m, lo, hi, claimed), verdict in zip(y, rows, verdicts, strict=True):
        colour = VERDICT_COLOURS.get(verdict, "tab:grey")
        ax.plot([lo, hi], [yi, yi], color=colour, lw=2)
        ax.plot(m, yi, "o", color=colour)
        ax.plot(claimed, yi, "D", color="black", ms=5, fillstyle="none")
    ax.axvline(0, color="black", lw=0.8)
    shown = [v for v in VERDICT_COLOURS if v in verdicts]
    ax.legend(handles=[plt.Line2D([], [], color=VERDICT_COLOURS[v], lw=2, label=v) for v in shown],
              fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.07 - 0.6 / (len(rows) + 2)),
              ncol=len(shown), frameon=False)
    ax.set_yticks(y, [r[0] for r in rows], fontsize=7)
    ax.set_xlabel("A − B, points (mean over seeds, 95 % t-interval; ◇ the paper's margin)")
    if title:
        ax.set_title(title, fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())

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

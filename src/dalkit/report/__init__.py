"""Reports: per-round mean ± std over seeds, area under the budget curve, learning-curve plots."""

from dalkit.report.tables import (
    aubc,
    load_run,
    markdown_table,
    runs_table,
    summarize,
)

__all__ = ["PLOT_FORMATS", "aubc", "load_run", "markdown_table", "plot_format", "plot_learning_curves",
           "runs_table", "summarize"]


PLOT_FORMATS = ("png", "pdf", "svg")


def plot_format(path) -> str:
    """The image format a plot path asks for by its suffix.

    Raises:
        ConfigError: a suffix other than .png, .pdf or .svg (a PNG written under another name would
            be mislabelled).
    """
    from pathlib import Path

    from dalkit.errors import ConfigError

    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in PLOT_FORMATS:
        raise ConfigError(f"cannot tell the image format of {path}: a plot path must end in "
                          f"{', '.join('.' + f for f in PLOT_FORMATS)}")
    return suffix


def plot_learning_curves(*args, **kwargs):
    """Lazy import so that matplotlib loads only when a plot is drawn."""
    from dalkit.report.plots import plot_learning_curves as _plot

    return _plot(*args, **kwargs)

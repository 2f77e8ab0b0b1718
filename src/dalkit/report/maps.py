"""Selection maps: a 2-D PCA projection of a pool, labeled / queried / unlabeled coloured.

PCA: deterministic, linear and fast (a 60k pool projects in about a second); large unlabeled sets are
thinned to 20,000 points for drawing, never the labeled or queried ones.  Used by ``dalkit report --map``
(a simulated run: the pool's pixels, each round's picks by round) and by the labeling project's map.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

MAX_BACKGROUND = 20_000


def pca_2d(x: np.ndarray) -> np.ndarray:
    """[N, D] -> [N, 2]: projection on the two leading principal axes (sign fixed: largest |loading|
    positive), computed from the D×D covariance so memory is O(N·D + D²)."""
    x = x.astype(np.float64, copy=False)
    mean = x.mean(0)
    cov = np.zeros((x.shape[1], x.shape[1]))
    for s in range(0, len(x), 8192):
        c = x[s:s + 8192] - mean
        cov += c.T @ c
    vals, vecs = np.linalg.eigh(cov)
    axes = vecs[:, ::-1][:, :2]
    axes *= np.sign(axes[np.abs(axes).argmax(0), [0, 1]])
    return np.concatenate([(x[s:s + 8192] - mean) @ axes for s in range(0, len(x), 8192)])


def map_figure(xy: np.ndarray, groups: list[tuple[str, np.ndarray, str, str]], title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 6), dpi=100)
    for name, mask, colour, marker in groups:
        if mask.any():
            size = 4 if name.startswith("unlabeled") else 14
            ax.scatter(xy[mask, 0], xy[mask, 1], s=size, c=[colour], marker=marker,
                       label=f"{name} ({int(mask.sum())})", linewidths=1.5 if marker == "x" else 0,
                       alpha=0.35 if name.startswith("unlabeled") else 0.9)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(loc="best", fontsize=8, markerscale=2)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def thin_background(mask: np.ndarray, seed: int = 0) -> np.ndarray:
    idx = mask.nonzero()[0]
    if len(idx) <= MAX_BACKGROUND:
        return mask
    keep = np.zeros_like(mask)
    keep[np.random.default_rng(seed).choice(idx, MAX_BACKGROUND, replace=False)] = True
    return keep


def run_map_png(pool_images: torch.Tensor, initial: list[int], rounds: list[list[int]], title: str) -> bytes:
    """A simulated run's selection map: the pool's pixels by PCA, the initial set and each round's picks."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import colormaps

    n = pool_images.shape[0]
    flat = pool_images.reshape(n, -1).numpy().astype(np.float32)
    xy = pca_2d(flat / 255 if pool_images.dtype == torch.uint8 else flat)
    picked = np.zeros(n, bool)
    groups = []
    init = np.zeros(n, bool)
    init[initial] = True
    picked |= init
    cmap = colormaps["viridis"]
    round_groups = []
    for r, sel in enumerate(rounds):
        m = np.zeros(n, bool)
        m[sel] = True
        picked |= m
        round_groups.append((f"round {r} picks", m, cmap(r / max(len(rounds) - 1, 1)), "^"))
    groups = [("unlabeled", thin_background(~picked), "#bbbbbb", "o"), ("initial", init, "#2b6cb0", "o"),
              *round_groups]
    return map_figure(xy, groups, title)


def run_map(run_dir: str | Path, out: str | Path, seed: int | None = None) -> Path:
    """Write the selection map of a simulated run (``dalkit report --map``): the pool rebuilt from the
    run's config, the seed's initial set and each round's picks (``seed``: the first seed on disk).

    Raises:
        RunDirectoryError, DatasetNotFoundError, ConfigError: as reading the run and its data does.
    """
    from dalkit.errors import RunDirectoryError
    from dalkit.experiment import RunDirectory, initial_labeled, prepare_data
    from dalkit.files import atomic_write_bytes

    rundir = RunDirectory(run_dir)
    config = rundir.read_config()
    records = rundir.read_rounds()
    if not records:
        raise RunDirectoryError(f"{run_dir} holds no completed round to map")
    seed = records[0]["seed"] if seed is None else seed
    mine = sorted((r for r in records if r["seed"] == seed), key=lambda r: r["round"])
    data = prepare_data(config)
    initial = initial_labeled(len(data.pool), config.initial_size, seed, data.ood_mask).tolist()
    png = run_map_png(data.pool.images, initial, [r["selected"] for r in mine if r["selected"]],
                      f"{config.method} on {config.dataset}, seed {seed}: PCA of the pool's pixels")
    return atomic_write_bytes(out, png)

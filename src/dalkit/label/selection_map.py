"""A labeling project's selection map: PCA of the last round's model embeddings (``model.pt``; the
pixels before any round), labeled / out-of-distribution / queried / unlabeled coloured."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from dalkit.files import atomic_write_bytes, check_writable
from dalkit.report.maps import map_figure, pca_2d, thin_background

if TYPE_CHECKING:
    from dalkit.label.project import Project

def project_embeddings(project: Project) -> np.ndarray:
    """[N, D] float: the last round's model embeddings of the pool, or its pixels before any round."""
    images = project.pool()
    model_file = project.path / "model.pt"
    if model_file.exists():
        from dalkit.training.evaluate import predict

        model = project.model_spec().build(images.shape[1:])
        model.load_state_dict(torch.load(model_file, weights_only=True), strict=False)
        _, emb = predict(model, images, 1024, with_embeddings=True)
        return emb.numpy()
    flat = images.reshape(len(images), -1).numpy().astype(np.float32)
    return flat if project.config.features else flat / 255


def map_groups(project: Project) -> dict[str, np.ndarray]:
    """bool [N] masks: ``labeled`` (with a class), ``ood`` (none of these), ``queried`` (the current
    batch, not yet answered) and ``unlabeled`` (the rest)."""
    view = project.training_view()
    n = len(project.items)
    known = view["known"].numpy()
    ood = view["excluded"].numpy() & ~view["val"].numpy()
    batch = project.current_batch()
    queried = np.zeros(n, bool)
    if batch is not None:
        queried[[project.index[i] for i in batch["items"] if i in project.index]] = True
    labeled = known & ~ood
    queried &= ~known
    return {"labeled": labeled, "ood": ood, "queried": queried, "unlabeled": ~known & ~queried}


def project_map_png(project: Project) -> bytes:
    """The PNG bytes of a project's selection map: labeled, out-of-distribution, the current batch
    (queried) and the rest of the pool (thinned to 20,000 points)."""
    g = map_groups(project)
    labeled, ood, queried, unlabeled = g["labeled"], g["ood"], g["queried"], thin_background(g["unlabeled"])
    xy = pca_2d(project_embeddings(project))
    src = "model embeddings" if (project.path / "model.pt").exists() else "pixels"
    groups = [("unlabeled", unlabeled, "#bbbbbb", "o"), ("labeled", labeled, "#2b6cb0", "o"),
              ("none of these", ood, "#c53030", "x"), ("queried (current batch)", queried, "#dd8800", "^")]
    return map_figure(xy, groups, f"selection map: PCA of the pool's {src}")


def project_map(project_dir: str | Path, out: str | Path) -> Path:
    """Write a project's selection map PNG to ``out``."""
    from dalkit.label.project import Project

    check_writable(out)
    return atomic_write_bytes(out, project_map_png(Project(project_dir)))



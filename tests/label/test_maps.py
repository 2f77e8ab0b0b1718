"""Selection maps: PCA against scikit-learn, the project's groups, the PNGs of `dalkit label map` and
`dalkit report --map`."""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA

from dalkit.cli import main
from dalkit.label import Project
from dalkit.label.selection_map import map_groups
from dalkit.report.maps import pca_2d

PNG = b"\x89PNG\r\n\x1a\n"


def test_pca_matches_scikit_learn_up_to_sign(mnist):
    x = mnist.train.images[:2000].reshape(2000, -1).numpy().astype(np.float32) / 255
    ours = pca_2d(x)
    ref = PCA(n_components=2, svd_solver="full").fit_transform(x.astype(np.float64))
    for k in range(2):
        sign = np.sign(ours[:, k] @ ref[:, k])
        np.testing.assert_allclose(ours[:, k], sign * ref[:, k], atol=1e-6 * np.abs(ref).max())


def test_project_map_groups_and_png(tmp_path, mnist_pngs):
    folder, labels = mnist_pngs
    p = Project.create(tmp_path / "p", folder, [str(c) for c in range(10)], initial_size=10, budget=5,
                       method="margin", train={"epochs": 1})
    first = p.next_batch()["items"]
    for item in first[:7]:
        p.label(item, str(labels[p.index[item]]))
    p.mark_ood(first[7])
    g = map_groups(p)
    idx = {name: set(np.flatnonzero(mask).tolist()) for name, mask in g.items()}
    assert idx["labeled"] == {p.index[i] for i in first[:7]} and idx["ood"] == {p.index[first[7]]}
    assert idx["queried"] == {p.index[i] for i in first[8:]}
    assert len(idx["unlabeled"]) == 290 and not idx["unlabeled"] & (idx["labeled"] | idx["queried"])
    p.next_batch()  # a model now: its embeddings
    assert main(["label", "map", str(tmp_path / "p"), "--out", str(tmp_path / "map.png")]) == 0
    assert (tmp_path / "map.png").read_bytes()[:8] == PNG


def test_report_map_of_a_simulated_run(tmp_path):
    run = tmp_path / "run"
    assert main(["run", "--dataset", "digits", "--method", "margin", "--initial-size", "20", "--budget", "10",
                 "--rounds", "2", "--seeds", "0", "--epochs", "1", "--out", str(run), "--quiet"]) == 0
    plot, png = str(tmp_path / "c.png"), str(tmp_path / "m.png")
    assert main(["report", str(run), "--plot", plot, "--map", png]) == 0
    assert (tmp_path / "m.png").read_bytes()[:8] == PNG

"""The round's progress: run_round's callback (the one fit() loop's epochs, then the query) reaches the
project and the page's status endpoint; epoch counts rise one by one and end at the configured epochs."""

from __future__ import annotations

import time

import pytest
from starlette.testclient import TestClient

from dalkit.label import Project
from dalkit.label.server import TRAIN_SHARE, create_app

CLASSES = [str(c) for c in range(10)]
TOKEN = "progress-token"


def labeled_project(tmp_path, mnist_pngs, train: dict, **kw) -> Project:
    """A project whose random first batch of 12 is labeled with MNIST's true labels."""
    folder, labels = mnist_pngs
    p = Project.create(tmp_path / "p", folder, CLASSES, initial_size=12, budget=8, method="margin",
                       train=train, **kw)
    events: list = []
    first = p.next_batch(on_progress=lambda *e: events.append(e))
    assert events == []  # the random initial batch trains nothing
    for item in first["items"]:
        p.label(item, str(labels[p.index[item]]))
    return p


def test_next_batch_reports_every_epoch_then_the_query(tmp_path, mnist_pngs):
    p = labeled_project(tmp_path, mnist_pngs, {"epochs": 3})
    events: list = []
    stages: list = []
    batch = p.next_batch(on_stage=stages.append, on_progress=lambda *e: events.append(e))
    assert events == [("train", 1, 3), ("train", 2, 3), ("train", 3, 3), ("query", 0, 1), ("query", 1, 1)]
    assert batch["round"] == 0 and len(batch["items"]) == 8
    assert stages[-1] == "done"


def test_min_steps_raises_the_epoch_count_the_bar_counts_to(tmp_path, mnist_pngs):
    # 12 labels in batches of 5: 3 steps an epoch; min_steps 10 needs ceil(10 / 3) = 4 epochs, not 2
    p = labeled_project(tmp_path, mnist_pngs, {"epochs": 2, "batch_size": 5, "min_steps": 10})
    events: list = []
    p.next_batch(on_progress=lambda *e: events.append(e))
    assert [e for e in events if e[0] == "train"] == [("train", k, 4) for k in (1, 2, 3, 4)]


def test_status_endpoint_reports_rising_epochs_that_end_at_the_configured_count(tmp_path, mnist_pngs):
    epochs = 40
    p = labeled_project(tmp_path, mnist_pngs, {"epochs": epochs})
    with TestClient(create_app(p.path, TOKEN), headers={"X-Dalkit-Token": TOKEN}) as c:
        idle = c.get("/api/round").json()
        assert idle["progress"] is None and not idle["running"]
        r = c.post("/api/next", json={})
        assert r.status_code == 202
        assert r.json()["round"]["progress"] == {"phase": "starting", "epoch": 0, "epochs": None,
                                                 "fraction": 0.0}
        seen = []
        deadline = time.time() + 120
        while time.time() < deadline:
            snap = c.get("/api/round").json()
            seen.append(snap["progress"])
            if not snap["running"]:
                break
        assert not snap["running"] and snap["error"] is None and snap["stage"] == "done", snap
    order = {"starting": 0, "train": 1, "query": 2, "done": 3}
    phases = [order[s["phase"]] for s in seen]
    assert phases == sorted(phases) and seen[-1]["phase"] == "done"
    train = [s for s in seen if s["phase"] == "train"]
    counts = [s["epoch"] for s in train]
    assert counts == sorted(counts) and all(1 <= k <= epochs for k in counts)
    assert all(s["epochs"] == epochs for s in seen if s["phase"] != "starting")
    assert len(set(counts)) >= 2, f"the poll saw too few epochs: {counts}"  # it moved, not just jumped
    assert seen[-1]["epoch"] == epochs and seen[-1]["fraction"] == 1.0
    # the bar: non-decreasing, training fills TRAIN_SHARE (no earlier trained round measured the split)
    fractions = [s["fraction"] for s in seen]
    assert fractions == sorted(fractions)
    assert all(s["fraction"] == pytest.approx(TRAIN_SHARE * s["epoch"] / epochs, abs=1e-4) for s in train)
    assert all(s["fraction"] >= TRAIN_SHARE for s in seen if s["phase"] == "query")


def test_the_bar_splits_by_the_last_rounds_measured_times(tmp_path, mnist_pngs):
    from dalkit.label.server import RoundWorker

    p = labeled_project(tmp_path, mnist_pngs, {"epochs": 1})
    w = RoundWorker(p)
    assert w._measured_share() == TRAIN_SHARE
    rec = p.next_batch()
    share = rec["train_s"] / (rec["train_s"] + rec["query_s"])
    assert w._measured_share() == pytest.approx(min(0.95, max(0.05, share)))
    w.share = 0.25
    w.status["progress"] = {"phase": "starting", "epoch": 0, "epochs": None, "fraction": 0.0}
    w._progress("train", 2, 4)
    assert w.status["progress"] == {"phase": "train", "epoch": 2, "epochs": 4, "fraction": 0.125}
    w._progress("query", 0, 1)
    assert w.status["progress"] == {"phase": "query", "epoch": 2, "epochs": 4, "fraction": 0.25}
    w._progress("query", 1, 1)
    assert w.status["progress"]["fraction"] == 1.0

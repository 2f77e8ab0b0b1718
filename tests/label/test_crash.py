"""Crash safety: SIGKILL the page's server while labels are being posted and while a round trains.
Every label the page was told about is in the journal; the next start resumes; the interrupted round,
run again, selects what an uninterrupted one selects."""

from __future__ import annotations

import json
import shutil
import signal
import threading
import time
import urllib.error
import urllib.request

from tests.label.conftest import start_server

from dalkit.label import Project

TOKEN = "crash-test-token"


def post(base: str, path: str, body: dict, timeout: float = 10) -> dict:
    req = urllib.request.Request(f"{base}{path}", data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", "X-Dalkit-Token": TOKEN})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def get(base: str, path: str) -> dict:
    req = urllib.request.Request(f"{base}{path}", headers={"X-Dalkit-Token": TOKEN})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def make_project(tmp_path, mnist_pngs, **kw):
    folder, labels = mnist_pngs
    Project.create(tmp_path / "p", folder, [str(c) for c in range(10)], method="margin", **kw)
    return tmp_path / "p", labels


def test_sigkill_while_labels_are_posted_loses_no_confirmed_label(tmp_path, mnist_pngs):
    project, labels = make_project(tmp_path, mnist_pngs, initial_size=120, budget=10, train={"epochs": 1})
    Project(project).next_batch()  # 120 items in one batch
    items = Project(project).current_batch()["items"]
    proc, base = start_server(project, TOKEN)
    confirmed: dict[str, str] = {}
    lock = threading.Lock()

    def worker(part: list[str]) -> None:
        for item in part:
            label = str(labels[int(proj.items[proj.index[item]].path[:5])])
            try:
                post(base, "/api/label", {"item": item, "label": label})
            except (OSError, urllib.error.URLError):
                return  # the server died: this label was never confirmed
            with lock:
                confirmed[item] = label

    proj = Project(project)
    threads = [threading.Thread(target=worker, args=(items[k::4],)) for k in range(4)]
    for t in threads:
        t.start()
    while len(confirmed) < 30:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for t in threads:
        t.join()
    assert 30 <= len(confirmed) < 120
    state = Project(project).state()
    for item, label in confirmed.items():  # every confirmed label is on disk
        assert state[item].label == label
    assert set(state) - set(confirmed) <= set(items)  # at most the in-flight ones beyond
    # the next start resumes: the page answers and the rest is labeled on top of the same journal
    proc, base = start_server(project, TOKEN)
    try:
        rest = [i for i in items if i not in Project(project).state()]
        for item in rest:
            label = str(labels[int(proj.items[proj.index[item]].path[:5])])
            post(base, "/api/label", {"item": item, "label": label})
        assert get(base, "/api/state")["status"]["labeled"] == 120
        seqs = [e["seq"] for e in Project(project).journal.read()]
        assert seqs == list(range(len(seqs)))
    finally:
        proc.kill()
        proc.wait()


def test_sigkill_while_a_round_trains_then_the_rerun_matches(tmp_path, mnist_pngs):
    project, labels = make_project(tmp_path, mnist_pngs, initial_size=30, budget=10,
                                   train={"epochs": 20, "batch_size": 6})
    p = Project(project)
    p.next_batch()
    for item in p.current_batch()["items"]:
        p.label(item, str(labels[int(p.items[p.index[item]].path[:5])]))
    shutil.copytree(project, tmp_path / "twin")  # the same project, for an uninterrupted round
    journal = (project / "journal.jsonl").read_bytes()
    proc, base = start_server(project, TOKEN)
    post(base, "/api/next", {})
    deadline = time.time() + 60
    snap = get(base, "/api/round")
    while (snap["progress"] or {}).get("epoch", 0) < 2 and time.time() < deadline:
        time.sleep(0.01)  # inside fit(): 20 epochs of 5 steps; kill it after its second epoch
        snap = get(base, "/api/round")
    proc.send_signal(signal.SIGKILL)
    assert snap["running"] and snap["progress"]["phase"] == "train" and snap["progress"]["epoch"] < 20, snap
    proc.wait()
    assert (project / "journal.jsonl").read_bytes() == journal  # labels untouched
    assert Project(project).n_batches() == 1  # the interrupted round left no batch behind
    # the next start resumes: the lock died with the process, the round runs again
    proc, base = start_server(project, TOKEN)
    try:
        post(base, "/api/next", {})
        deadline = time.time() + 120
        while get(base, "/api/round")["running"] and time.time() < deadline:
            time.sleep(0.1)
        assert get(base, "/api/round")["stage"] == "done"
    finally:
        proc.kill()
        proc.wait()
    rerun = Project(project).current_batch()
    uninterrupted = Project(tmp_path / "twin").next_batch()
    assert rerun["batch"] == uninterrupted["batch"] == 1
    assert rerun["items"] == uninterrupted["items"] and rerun["train_loss"] == uninterrupted["train_loss"]

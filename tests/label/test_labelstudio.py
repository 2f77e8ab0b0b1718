"""Label Studio round trip against a real Label Studio (its own virtual environment, `make labelstudio`;
`make test-labelstudio` runs this file): dalkit's batch goes out as tasks with the model's guesses,
a person's annotations are posted through label-studio-sdk, Label Studio's JSON export comes back through
`dalkit label import`: every label arrives, nothing else changes."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from tests.label.conftest import free_port

from dalkit.cli import main
from dalkit.label import Project
from dalkit.label.labelstudio import labeling_config

LS_VENV = Path(os.environ.get("DALKIT_LABELSTUDIO_VENV", Path(__file__).parents[2] / ".venv-labelstudio"))
LS_TOKEN = "0123456789abcdef0123456789abcdef01234567"

pytestmark = pytest.mark.labelstudio


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory):
    exe = LS_VENV / "bin" / "label-studio"
    if not exe.exists():  # only selected by `make test-labelstudio`, which installs it first
        pytest.fail(f"Label Studio is not installed in {LS_VENV}; run make labelstudio")
    data = tmp_path_factory.mktemp("ls-data")
    port = free_port()
    env = {**os.environ, "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
           "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": "/", "PYTHONPATH": ""}
    log = open(data / "ls.log", "w")
    proc = subprocess.Popen([str(exe), "start", "--no-browser", "--data-dir", str(data), "--internal-host",
                             "127.0.0.1", "-p", str(port), "--username", "dalkit@example.com", "--password",
                             "dalkit-test-pass", "--user-token", LS_TOKEN, "--enable-legacy-api-token"],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    t0 = time.time()
    while not _healthy(url):
        if proc.poll() is not None or time.time() - t0 > 300:
            proc.kill()
            raise RuntimeError(f"Label Studio did not start: {(data / 'ls.log').read_text()[-2000:]}")
        time.sleep(1)
    print(f"Label Studio started in {time.time() - t0:.1f} s")
    yield url
    proc.terminate()
    proc.wait(30)
    log.close()


def test_round_trip_through_a_real_label_studio(label_studio, tmp_path, mnist_pngs):
    folder, labels = mnist_pngs
    project = tmp_path / "p"
    classes = [str(c) for c in range(10)]
    p = Project.create(project, folder, classes, initial_size=10, budget=6, method="margin",
                       train={"epochs": 2})
    p.next_batch()
    for item in p.current_batch()["items"]:  # the random first batch, labeled on the page
        p.label(item, str(labels[int(p.items[p.index[item]].path[:5])]))
    p.next_batch()  # round 0: a batch with the model's guesses
    assert main(["label", "export", str(project), "--format", "label-studio", "--out",
                 str(tmp_path / "tasks.json")]) == 0
    tasks = json.loads((tmp_path / "tasks.json").read_text())
    batch = Project(project).current_batch()
    assert [t["data"]["item"] for t in tasks] == batch["items"]
    assert all(t["predictions"][0]["result"][0]["value"]["choices"] == [classes[g]]
               for t, g in zip(tasks, batch["guess"], strict=True))
    items = batch["items"]
    truth = {i: str(labels[int(p.items[p.index[i]].path[:5])]) for i in items}
    wrong = str((int(truth[items[1]]) + 1) % 10)
    answers = {items[0]: [truth[items[0]]],
               items[1]: [wrong, truth[items[1]]],  # relabeled: the latest annotation wins
               items[2]: ["SKIP"],  # skipped: ignored
               items[3]: [truth[items[3]]], items[4]: [truth[items[4]]]}  # items[5]: never annotated
    (tmp_path / "answers.json").write_text(json.dumps(answers))
    (tmp_path / "config.xml").write_text(labeling_config(classes))
    journal_before = (project / "journal.jsonl").read_bytes()
    other = {f: (project / f).read_bytes() for f in ("manifest.json", "project.json", "rounds.jsonl")}
    client = Path(__file__).parent / "labelstudio_client.py"
    argv = [str(LS_VENV / "bin" / "python"), str(client), label_studio, LS_TOKEN]
    argv += [str(tmp_path / f) for f in ("tasks.json", "config.xml", "answers.json", "export.json")]
    run = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ""},
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    exported = json.loads((tmp_path / "export.json").read_text())
    # Label Studio's JSON export lists the annotated tasks: 5 (one skipped), 6 annotations
    assert len(exported) == 5 and sum(len(t["annotations"]) for t in exported) == 6
    assert main(["label", "import", str(project), str(tmp_path / "export.json")]) == 0
    # every label arrived, as a journal entry from Label Studio, appended after the old journal
    assert (project / "journal.jsonl").read_bytes().startswith(journal_before)
    new = Project(project).journal.read()[len(journal_before.splitlines()):]
    assert sorted((e["item"], e["label"]) for e in new) == sorted(
        (i, truth[i]) for i in (items[0], items[1], items[3], items[4]))
    assert all(e["op"] == "label" and e["source"] == "label-studio" for e in new)
    state = Project(project).state()
    assert items[2] not in state and items[5] not in state
    # nothing else changed
    assert {f: (project / f).read_bytes() for f in other} == other
    # importing the same export again adds nothing
    assert Project(project).import_labels(tmp_path / "export.json") == 0

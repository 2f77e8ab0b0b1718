"""The page's server: token on every request, 4xx with a message for bad input and nothing written,
paths outside the static folder refused, a label answered only once it is in the journal."""

from __future__ import annotations

import time

import pytest
from starlette.testclient import TestClient
from tests.label.conftest import tree

from dalkit.label import Project
from dalkit.label.server import create_app, safe_path

TOKEN = "t0ken-for-tests"


@pytest.fixture
def client(tmp_path, mnist_pngs):
    folder, _ = mnist_pngs
    Project.create(tmp_path / "p", folder, [str(c) for c in range(10)], initial_size=12, budget=8,
                   method="margin", train={"epochs": 1})
    Project(tmp_path / "p").next_batch()
    app = create_app(tmp_path / "p", TOKEN)
    with TestClient(app) as c:
        c.headers["X-Dalkit-Token"] = TOKEN
        yield c, tmp_path / "p"


def test_every_request_needs_the_token(client):
    c, _ = client
    for path in ("/", "/api/state", "/static/app.js", "/api/map.png"):
        r = c.get(path, headers={"X-Dalkit-Token": ""})
        assert r.status_code == 401 and "token" in r.json()["error"], path
        assert c.get(path, headers={"X-Dalkit-Token": "wrong"}).status_code == 401
    assert c.post("/api/label", json={}, headers={"X-Dalkit-Token": ""}).status_code == 401
    assert c.get(f"/api/state?token={TOKEN}", headers={"X-Dalkit-Token": ""}).status_code == 200
    assert c.get("/").status_code == 200 and "dalkit label" in c.get("/").text


def test_bad_requests_are_4xx_with_a_message_and_change_nothing(client):
    c, project = client
    item = c.get("/api/state").json()["batch"]["items"][0]["item"]
    before = tree(project)
    cases = [
        ("/api/label", {"item": item, "label": "cat"}, 400, "unknown class 'cat'"),
        ("/api/label", {"item": "f" * 20, "label": "3"}, 400, "unknown item"),
        ("/api/label", {"item": item}, 400, "needs 'label'"),
        ("/api/ood", {"item": "../../etc/passwd"}, 400, "unknown item"),
        ("/api/undo", {"item": item}, 400, "no label to undo"),
        ("/api/next", {"budget": -1}, 400, "budget must be a positive integer"),
    ]
    for path, body, status, match in cases:
        r = c.post(path, json=body)
        assert r.status_code == status and match in r.json()["error"], (path, body, r.text)
    assert c.post("/api/label", content=b"{not json").status_code == 400
    assert c.get("/api/image/" + "0" * 20).status_code == 404
    assert tree(project) == before


def test_paths_outside_the_static_folder_are_refused(client, tmp_path):
    c, project = client
    static = tmp_path / "static"
    static.mkdir()
    (static / "app.js").write_text("// page script")
    (static / "link-out.js").symlink_to(project / "project.json")  # a link leading out of the folder
    c = TestClient(create_app(project, TOKEN, static), headers={"X-Dalkit-Token": TOKEN})
    for name in ("../server.py", "..%2Fserver.py", "%2Fetc%2Fpasswd", "link-out.js", "static/../../server.py",
                 "%2E%2E/project.json"):
        r = c.get("/static/" + name)
        assert r.status_code in (400, 404), (name, r.status_code)
    assert c.get("/static/app.js").text == "// page script"
    assert safe_path(static, "/etc/passwd") is None and safe_path(static, "..") is None
    assert safe_path(static, "./app.js") is None and safe_path(static, "link-out.js") is None
    assert safe_path(static, "app.js") == (static / "app.js").resolve()
    # images are served by item id only: a path, relative or absolute, is no item
    for name in ("..%2Fproject.json", "%2Fetc%2Fpasswd", "..", "00000.png", "%2E%2E%2Fjournal.jsonl"):
        r = c.get("/api/image/" + name)
        assert r.status_code == 404 and b"config" not in r.content and b"PNG" not in r.content, name


def test_serve_listens_on_localhost_unless_told_and_always_needs_the_token(tmp_path, mnist_pngs, monkeypatch,
                                                                           capsys):
    import uvicorn

    from dalkit.cli import main

    folder, _ = mnist_pngs
    Project.create(tmp_path / "p", folder, [str(c) for c in range(10)], initial_size=12)
    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    assert main(["label", "serve", str(tmp_path / "p"), "--port", "9123"]) == 0
    assert main(["label", "serve", str(tmp_path / "p"), "--host", "0.0.0.0", "--port", "9124"]) == 0
    assert [kw["host"] for _, kw in calls] == ["127.0.0.1", "0.0.0.0"]
    urls = [line for line in capsys.readouterr().out.splitlines() if "open http" in line]
    tokens = [u.rsplit("token=", 1)[1] for u in urls]
    assert urls[0].startswith("dalkit label: open http://127.0.0.1:9123/?token=")
    assert len(tokens[0]) >= 20 and tokens[0] != tokens[1]  # random, one per start
    for (app, _), token in zip(calls, tokens, strict=True):  # another host still needs the token
        c = TestClient(app)
        assert c.get("/api/state").status_code == 401
        assert c.get(f"/api/state?token={token}").status_code == 200


def test_label_ood_undo_and_a_round_in_the_background(client):
    c, project = client
    state = c.get("/api/state").json()
    items = [it["item"] for it in state["batch"]["items"]]
    assert len(items) == 12 and state["batch"]["round"] is None
    for k, item in enumerate(items[:-1]):
        r = c.post("/api/label", json={"item": item, "label": str(k % 10)})
        assert r.status_code == 200
        assert Project(project).state()[item].label == str(k % 10)  # in the journal when answered
    c.post("/api/ood", json={"item": items[-1]})
    r = c.post("/api/undo", json={"item": items[0]})
    assert r.json()["label"] is None and items[0] not in Project(project).state()
    assert c.post("/api/next", json={}).status_code == 202
    deadline = time.time() + 60
    while c.get("/api/round").json()["running"] and time.time() < deadline:
        assert c.get("/api/state").status_code == 200  # the page keeps answering
        time.sleep(0.05)
    rnd = c.get("/api/round").json()
    assert rnd["stage"] == "done" and rnd["error"] is None, rnd
    batch = c.get("/api/state").json()["batch"]
    assert batch["round"] == 0 and len(batch["items"]) == 8
    assert not set(items[1:]) & {it["item"] for it in batch["items"]}
    assert all(it["guess"] is not None for it in batch["items"])
    png = c.get("/api/map.png")
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"

"""Bad input to `dalkit label`: one line on stderr, exit 2, nothing changed on disk."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tests.label.conftest import tree

from dalkit.cli import main
from dalkit.label import Project

CLASSES = ",".join(str(c) for c in range(10))


@pytest.fixture
def project(tmp_path, mnist_pngs) -> Path:
    folder, _ = mnist_pngs
    assert main(["label", "init", str(tmp_path / "p"), "--images", str(folder), "--classes", CLASSES,
                 "--initial-size", "10"]) == 0
    return tmp_path / "p"


def refused(argv: list[str], capsys, match: str, root: Path) -> None:
    before = tree(root)
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("dalkit: error: "), err
    assert match in err, err
    assert tree(root) == before


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_label_files_with_bad_rows_change_nothing(project, tmp_path, capsys):
    p = Project(project)
    a, b = p.items[0], p.items[1]
    cases = {
        "unknown class 'cat'": f"item,label\n{a.item},3\n{b.item},cat\n",
        "unknown item 'ffffffffffffffffffff'": f"item,label\n{a.item},3\nffffffffffffffffffff,4\n",
        "unknown item 'nope.png'": f"path,label\n{a.path},3\nnope.png,4\n",
        "line 3: duplicate label for item": f"path,label\n{a.path},3\n{a.path},3\n",
        "line 4: conflicting labels '3' and '5'": f"path,label\n{a.path},3\n{b.path},1\n{a.path},5\n",
        "needs a header with a label column": f"{a.path},3\n",
        # paths outside the project's source: a label file names items by id or by manifest path only
        "unknown item '../p/00000.png'": f"path,label\n{a.path},3\n../p/00000.png,4\n",
        f"unknown item '{project / '00000.png'}'": f"path,label\n{a.path},3\n{project / '00000.png'},4\n",
    }
    for k, (match, text) in enumerate(cases.items()):
        refused(["label", "import", str(project), write(tmp_path / f"bad{k}.csv", text)], capsys, match,
                project)
    assert Project(project).state() == {}


def test_bad_init_writes_nothing(tmp_path, mnist_pngs, capsys):
    folder, _ = mnist_pngs
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.png").write_bytes(b"not a png")
    (tmp_path / "junk" / "b.txt").write_text("x")
    np.save(tmp_path / "emb.npy", np.zeros((299, 4), np.float32))
    np.save(tmp_path / "nan.npy", np.full((300, 4), np.nan, np.float32))
    for argv, match in [
        (["--images", str(folder), "--classes", CLASSES, "--features", str(tmp_path / "emb.npy")],
         "has 299 rows but the source lists 300 images"),
        (["--images", str(folder), "--classes", CLASSES, "--features", str(tmp_path / "nan.npy")],
         "300 rows hold NaN or inf"),
        (["--images", str(tmp_path / "empty"), "--classes", CLASSES], "no images in"),
        (["--images", str(tmp_path / "junk"), "--classes", CLASSES], "no readable image"),
        (["--images", str(tmp_path / "missing"), "--classes", CLASSES], "does not exist"),
        (["--images", str(folder), "--classes", "cat,cat"], "--classes repeats cat"),
        (["--images", str(folder), "--classes", CLASSES, "--method", "nope"], "unknown method 'nope'"),
        (["--images", str(folder), "--classes", CLASSES, "--budget", "0"], "budget must be a positive"),
        (["--images", str(folder), "--classes", CLASSES, "--image-size", "0"], "image_size must be a"),
    ]:
        refused(["label", "init", str(tmp_path / "proj"), *argv], capsys, match, tmp_path)
        assert not (tmp_path / "proj").exists()


def test_project_commands_refuse_cleanly(project, tmp_path, capsys):
    refused(["label", "status", str(tmp_path)], capsys, "is not a labeling project", tmp_path)
    refused(["label", "next", str(project), "--budget", "301"], capsys, "exceeds the 300 unlabeled", project)
    refused(["label", "export", str(project), "--format", "label-studio", "--out", str(project / "t.json")],
            capsys, "no batch yet", project)
    refused(["label", "init", str(project), "--images", str(project), "--classes", "a,b"], capsys,
            "already a labeling project", project)


def test_cli_exit_code_in_a_real_process(project):
    out = subprocess.run([sys.executable, "-m", "dalkit", "label", "import", str(project),
                          "/nonexistent.csv"], capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0
    assert "cannot read label file /nonexistent.csv" in out.stderr


def test_scan_of_a_features_project_is_refused_and_its_advice_keeps_the_labels(tmp_path, mnist_pngs, capsys):
    src, labels = mnist_pngs
    folder = tmp_path / "imgs"
    shutil.copytree(src, folder)
    rng = np.random.default_rng(0)
    np.save(tmp_path / "emb.npy", rng.standard_normal((300, 8)).astype(np.float32))
    proj = tmp_path / "p"
    assert main(["label", "init", str(proj), "--images", str(folder), "--classes", CLASSES,
                 "--features", str(tmp_path / "emb.npy")]) == 0
    p = Project(proj)
    for it in p.items[:5]:
        p.label(it.item, str(labels[int(it.path[:5])]), "file")
    p.mark_ood(p.items[5].item, "file")
    Image.fromarray(np.full((28, 28), 200, np.uint8)).save(folder / "zz-new.png")  # an image added
    expected = ("dalkit: error: a --features project cannot be re-scanned (new images would have no feature "
                f"row); to add images: dalkit label export {proj} --format csv --out labels.csv, then dalkit "
                f"label init NEW --images {folder.resolve()} --features NEW.npy --labels labels.csv\n")
    before = tree(proj)
    capsys.readouterr()
    assert main(["label", "scan", str(proj)]) == 2
    assert capsys.readouterr().err == expected
    assert tree(proj) == before  # byte for byte: no cache, manifest or journal written
    # the advice works: the labels come back in a new project with a row for the added image
    assert main(["label", "export", str(proj), "--format", "csv", "--out", str(tmp_path / "labels.csv")]) == 0
    np.save(tmp_path / "new.npy", rng.standard_normal((301, 8)).astype(np.float32))
    assert main(["label", "init", str(tmp_path / "new"), "--images", str(folder), "--classes", CLASSES,
                 "--features", str(tmp_path / "new.npy"), "--labels", str(tmp_path / "labels.csv")]) == 0
    new = Project(tmp_path / "new")
    assert len(new.items) == 301 and new.items[-1].path == "zz-new.png"
    assert {i: s.label for i, s in new.state().items()} == {
        it.item: str(labels[int(it.path[:5])]) for it in p.items[:5]}


def test_label_studio_exports_with_bad_tasks_change_nothing(project, tmp_path, capsys):
    p = Project(project)
    a, b = p.items[0].item, p.items[1].item

    def task(tid: int, item: str | None, *choices: str) -> dict:
        result = [{"type": "choices", "value": {"choices": list(choices)}}]
        return {"id": tid, "data": {} if item is None else {"item": item},
                "annotations": [{"id": tid, "result": result}]}

    cases = {
        "task 2: unknown class 'cat'": [task(1, a, "3"), task(2, b, "cat")],
        "task 2: unknown item 'ffffffffffffffffffff'": [task(1, a, "3"), task(2, "f" * 20, "4")],
        "task 2 has no data.item": [task(1, a, "3"), task(2, None, "4")],
        "task 2: 2 choices ['4', '5']": [task(1, a, "3"), task(2, b, "4", "5")],
        "task 2: conflicting labels '3' and '4'": [task(1, a, "3"), task(2, a, "4")],
        "is not a Label Studio JSON export": {"tasks": []},
    }
    for k, (match, export) in enumerate(cases.items()):
        file = write(tmp_path / f"ls{k}.json", json.dumps(export))
        refused(["label", "import", str(project), file], capsys, match, project)
    assert Project(project).state() == {}


def test_init_with_a_bad_labels_file_writes_nothing(tmp_path, mnist_pngs, capsys):
    folder, _ = mnist_pngs
    for name, text, match in [
        ("dup.csv", "path,label\n00000.png,3\n00000.png,3\n", "line 3: duplicate label for item"),
        ("conflict.csv", "path,label\n00000.png,3\n00001.png,1\n00000.png,5\n",
         "line 4: conflicting labels '3' and '5'"),
        ("cls.csv", "path,label\n00000.png,cat\n", "line 2: unknown class 'cat'"),
        ("out.csv", "path,label\n../00000.png,3\n", "line 2: unknown item '../00000.png'"),
    ]:
        refused(["label", "init", str(tmp_path / "proj"), "--images", str(folder), "--classes", CLASSES,
                 "--labels", write(tmp_path / name, text)], capsys, match, tmp_path)
        assert not (tmp_path / "proj").exists()


def test_bad_files_in_the_folder_are_reported_and_skipped_not_fatal(tmp_path, mnist_pngs, capsys):
    src, _ = mnist_pngs
    folder = tmp_path / "imgs"
    folder.mkdir()
    for k in range(20):
        shutil.copy(src / f"{k:05d}.png", folder)
    outside = tmp_path / "outside.png"
    shutil.copy(src / "00100.png", outside)
    (folder / "link-out.png").symlink_to(outside)  # a symbolic link leading out of the folder
    (folder / "absolute-link.png").symlink_to("/etc/hostname")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # a PNG signature, no image
    (folder / "notes.txt").write_text("not an image")
    capsys.readouterr()
    assert main(["label", "init", str(tmp_path / "p"), "--images", str(folder), "--classes", CLASSES]) == 0
    err = capsys.readouterr().err.splitlines()
    assert sorted(err) == sorted([
        "  skipped absolute-link.png: symbolic link to outside the folder",
        "  skipped link-out.png: symbolic link to outside the folder",
        "  skipped notes.txt: not an image file",
        f"  skipped corrupt.png: {dict(Project(tmp_path / 'p').skipped)['corrupt.png']}",
    ])
    assert dict(Project(tmp_path / "p").skipped)["corrupt.png"].startswith("not a readable image")
    assert [it.path for it in Project(tmp_path / "p").items] == [f"{k:05d}.png" for k in range(20)]
    # a re-scan reports them the same way and still keeps going
    (folder / "also-bad.jpg").write_bytes(b"nope")
    assert main(["label", "scan", str(tmp_path / "p")]) == 0
    out, err = capsys.readouterr()
    assert "20 items: 0 added, 0 removed, 5 skipped; every label kept" in out
    assert "  skipped also-bad.jpg: not a readable image" in err and "link-out.png" in err

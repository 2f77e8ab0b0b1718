"""A labeling project on disk: sources, cache, rescans that keep labels, import/export, OOD items."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dalkit.errors import LabelError
from dalkit.label import Project
from dalkit.label.labelstudio import read_export

CLASSES = [str(c) for c in range(10)]


def make(tmp_path: Path, folder: Path, **kw) -> Project:
    return Project.create(tmp_path / "p", folder, CLASSES, **{"initial_size": 20, "budget": 10,
                                                               "train": {"epochs": 1}, **kw})


def test_folder_scan_caches_exact_pixels_and_skips_bad_files(tmp_path, mnist_pngs):
    src, labels = mnist_pngs
    folder = tmp_path / "imgs"
    shutil.copytree(src, folder)
    (folder / "readme.txt").write_text("not an image")
    (folder / "broken.png").write_bytes((folder / "00000.png").read_bytes()[:60])  # truncated PNG
    (folder / "copy.png").write_bytes((folder / "00007.png").read_bytes())  # same content as 00007
    p = make(tmp_path, folder)
    assert len(p.items) == 300
    reasons = dict(p.skipped)
    assert reasons["readme.txt"] == "not an image file"
    assert reasons["broken.png"].startswith("not a readable image")
    assert reasons["copy.png"] == "same content as 00007.png"
    assert p.items[0].path == "00000.png"
    assert p.items[0].item == hashlib.sha256((folder / "00000.png").read_bytes()).hexdigest()[:20]
    for k in (0, 123, 299):  # a 28x28 PNG is cached with its exact pixels (no resize)
        ref = np.asarray(Image.open(folder / f"{k:05d}.png"))
        assert np.array_equal(p.images()[k, 0].numpy(), ref)
    assert p.config.channels == 1 and (tmp_path / "p" / "cache-0.u8").stat().st_size == 300 * 28 * 28


def test_other_sources_and_resizing(tmp_path, mnist):
    imgs = mnist.train.images[:12]
    np.save(tmp_path / "x.npy", imgs.numpy()[:, 0])  # [N, H, W]
    np.savez(tmp_path / "x.npz", x_train=imgs.numpy().transpose(0, 2, 3, 1))  # NHWC
    a = Project.create(tmp_path / "a", tmp_path / "x.npy", "a,b")
    b = Project.create(tmp_path / "b", tmp_path / "x.npz", "a,b")
    assert np.array_equal(a.images().numpy(), imgs.numpy())
    assert [it.item for it in a.items] == [it.item for it in b.items]
    assert a.items[3].path == "x.npy#3"
    # IDX: the real MNIST test file
    c = Project.create(tmp_path / "c", Path(__file__).parents[2] / "data/mnist/t10k-images-idx3-ubyte", "a,b")
    assert len(c.items) == len({it.item for it in c.items}) and c.images().shape[1:] == (1, 28, 28)
    # colour images of another size are resized once, with Pillow's bilinear filter, RGB kept
    folder = tmp_path / "rgb"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for k in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(folder / f"{k}.png")
    with open(tmp_path / "list.csv", "w") as fh:
        fh.write("path\nrgb/0.png\nrgb/2.png\n")
    d = Project.create(tmp_path / "d", folder, "a,b", model="resnet18", train={"epochs": 1})
    assert d.images().shape == (3, 3, 32, 32)
    ref = np.asarray(Image.open(folder / "1.png").resize((32, 32), Image.BILINEAR)).transpose(2, 0, 1)
    assert np.array_equal(d.images()[1].numpy(), ref)
    e = Project.create(tmp_path / "e", tmp_path / "list.csv", "a,b", model="resnet18")
    assert [it.path for it in e.items] == ["rgb/0.png", "rgb/2.png"]
    assert np.array_equal(e.images()[1].numpy(), d.images()[2].numpy())


def test_rescan_keeps_every_label_and_a_changed_file_is_a_new_item(tmp_path, mnist_pngs):
    src, _ = mnist_pngs
    folder = tmp_path / "imgs"
    folder.mkdir()
    for k in range(30):
        shutil.copy(src / f"{k:05d}.png", folder)
    p = make(tmp_path, folder)
    ids = {it.path: it.item for it in p.items}
    p.label(ids["00001.png"], "3")
    p.label(ids["00002.png"], "4")
    p.mark_ood(ids["00003.png"])
    journal_before = (tmp_path / "p" / "journal.jsonl").read_bytes()
    (folder / "00002.png").unlink()  # removed
    shutil.copy(src / "00100.png", folder / "00001.png")  # changed content: a new item
    shutil.copy(src / "00200.png", folder / "new.png")  # added
    counts = Project(tmp_path / "p").rescan()
    assert counts == {"items": 30, "added": 2, "removed": 2, "skipped": 0}
    q = Project(tmp_path / "p")
    assert (tmp_path / "p" / "journal.jsonl").read_bytes() == journal_before  # labels untouched
    new_ids = {it.path: it.item for it in q.items}
    assert new_ids["00001.png"] != ids["00001.png"] and new_ids["00001.png"] not in q.state()
    assert q.state()[ids["00002.png"]].label == "4"  # kept, for an image no longer there
    assert q.status()["labels_of_removed_items"] == 2 and q.status()["ood"] == 1
    assert not (tmp_path / "p" / "cache-0.u8").exists()
    k = q.index[new_ids["new.png"]]
    assert np.array_equal(q.images()[k, 0].numpy(), np.asarray(Image.open(src / "00200.png")))


def test_import_export_csv_and_label_studio(tmp_path, mnist_pngs):
    folder, labels = mnist_pngs
    p = make(tmp_path, folder)
    with open(tmp_path / "in.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label"])
        for k in range(0, 40, 2):
            w.writerow([f"{k:05d}.png", labels[k]])
    assert p.import_labels(tmp_path / "in.csv") == 20
    assert p.import_labels(tmp_path / "in.csv") == 0  # labels in force are not repeated
    p.export("csv", tmp_path / "out.csv")
    rows = list(csv.DictReader(open(tmp_path / "out.csv")))
    expected = [(f"{k:05d}.png", labels[k]) for k in range(0, 40, 2)]
    assert [(r["path"], int(r["label"])) for r in rows] == expected
    assert all(r["item"] == p.items[p.index[r["item"]]].item for r in rows)
    assert p.export("imagefolder", tmp_path / "folder") == 20
    one = tmp_path / "folder" / str(labels[0]) / f"{p.items[0].item}.png"
    assert one.read_bytes() == (folder / "00000.png").read_bytes()
    # Label Studio export: the latest annotation wins, cancelled and empty ones are ignored
    items = [p.items[k].item for k in (1, 3, 5)]
    def choice(c: str) -> list[dict]:
        return [{"type": "choices", "value": {"choices": [c]}}]

    export = [
        {"id": 11, "data": {"item": items[0]}, "annotations": [
            {"id": 1, "result": choice("7"), "updated_at": "2026-01-01T10:00"},
            {"id": 2, "result": choice("8"), "updated_at": "2026-01-01T11:00"},
        ]},
        {"id": 12, "data": {"item": items[1]}, "annotations": [
            {"id": 3, "result": [{"type": "choices", "value": {"choices": ["2"]}}], "was_cancelled": True}]},
        {"id": 13, "data": {"item": items[2]}, "annotations": []},
    ]
    (tmp_path / "ls.json").write_text(json.dumps(export))
    assert read_export(tmp_path / "ls.json", CLASSES) == [(1, items[0], "8")]
    assert p.import_labels(tmp_path / "ls.json") == 1
    st = p.state()[items[0]]
    assert st.label == "8" and st.source == "label-studio" and items[1] not in p.state()


def test_ood_items_are_never_trained_on_nor_offered_again(tmp_path, mnist_pngs, monkeypatch):
    folder, labels = mnist_pngs
    p = make(tmp_path, folder)
    first = p.next_batch()
    assert first["round"] is None and len(first["items"]) == 20
    ood = first["items"][:3]
    for item in first["items"]:
        k = p.index[item]
        p.mark_ood(item) if item in ood else p.label(item, str(labels[k]))
    import dalkit.experiment.round as round_module

    seen = {}
    real = round_module.train_round

    def spy(spec, recipe, cfg, images, lab, train_idx, *a, **kw):
        seen["train"] = train_idx.tolist()
        return real(spec, recipe, cfg, images, lab, train_idx, *a, **kw)

    monkeypatch.setattr(round_module, "train_round", spy)
    second = p.next_batch()
    ood_idx = {p.index[i] for i in ood}
    assert len(seen["train"]) == 17 and not ood_idx & set(seen["train"])
    assert not set(ood) & set(second["items"]) and not set(first["items"]) & set(second["items"])
    assert second["round"] == 0 and len(second["guess"]) == 10
    assert all(0 < c <= 1 for c in second["confidence"])
    st = p.status()
    assert st["labeled"] == 17 and st["ood"] == 3 and st["unlabeled"] == 280 and st["rounds"] == 1
    with pytest.raises(LabelError, match="unknown class 'cat'"):
        p.label(second["items"][0], "cat")


def test_features_project_trains_the_mlp_head_on_the_users_rows(tmp_path, mnist_pngs, monkeypatch):
    folder, labels = mnist_pngs
    rng = np.random.default_rng(0)
    # the user's embeddings: a random projection of each file's pixels (one row per sorted file)
    proj = rng.standard_normal((784, 32)).astype(np.float32)
    files = sorted(folder.glob("*.png"))
    emb = np.stack([np.asarray(Image.open(f), np.float32).reshape(-1) / 255 @ proj for f in files])
    np.save(tmp_path / "emb.npy", emb)
    p = Project.create(tmp_path / "p", folder, CLASSES, features=tmp_path / "emb.npy", initial_size=20,
                       budget=10, method="margin", model_options={"hidden": 16}, train={"epochs": 2})
    assert p.config.model == "features" and p.config.features
    assert np.array_equal(p.pool().numpy(), emb)  # manifest order = sorted files here
    first = p.next_batch()
    for item in first["items"]:
        p.label(item, str(labels[p.index[item]]))
    import dalkit.experiment.round as round_module

    built = {}
    real = round_module.train_round

    def spy(spec, recipe, cfg, images, *a, **kw):
        built["pool"] = images
        trained = real(spec, recipe, cfg, images, *a, **kw)
        built["model"] = trained.model
        return trained

    monkeypatch.setattr(round_module, "train_round", spy)
    second = p.next_batch()
    from dalkit.models.features import FeatureMLP

    assert isinstance(built["model"], FeatureMLP) and built["model"].hidden == 16
    assert built["pool"].shape == (300, 32) and built["pool"].dtype == torch.float32
    assert second["round"] == 0 and len(second["items"]) == 10


def test_dm2_at_counterparts_are_built_at_query_time_and_trained_on_next_round(tmp_path, mnist_pngs,
                                                                                monkeypatch):
    folder, labels = mnist_pngs
    p = make(tmp_path, folder, method="dm2-at")
    for _ in range(2):
        for item in p.next_batch()["items"]:
            p.label(item, str(labels[p.index[item]]))
    batch1 = p.batches()[1]
    saved = torch.load(tmp_path / "p" / "adv" / "batch-0001.pt", weights_only=True)
    assert saved["items"] == batch1["items"] and saved["images"].shape == (10, 1, 28, 28)
    import dalkit.experiment.round as round_module

    seen = {}
    real = round_module.train_round

    def spy(*a, **kw):
        seen["adv_index"], seen["adv_images"] = a[9], a[10]
        return real(*a, **kw)

    monkeypatch.setattr(round_module, "train_round", spy)
    p.next_batch()
    assert sorted(seen["adv_index"].tolist()) == sorted(p.index[i] for i in batch1["items"])
    order = [p.index[i] for i in saved["items"]]
    got = dict(zip(seen["adv_index"].tolist(), seen["adv_images"], strict=True))
    assert all(torch.equal(got[k], img) for k, img in zip(order, saved["images"], strict=True))


def test_held_out_accuracy_is_the_saved_models_accuracy_on_validation_items(tmp_path, mnist_pngs, monkeypatch,
                                                                          capsys):
    folder, labels = mnist_pngs
    p = make(tmp_path, folder, initial_size=40, val_fraction=0.4, method="margin", train={"epochs": 3})
    val_items = {it.item for it in p.items if int(it.item[:8], 16) / 16**8 < 0.4}
    first = p.next_batch()
    for item in first["items"]:
        p.label(item, str(labels[p.index[item]]))
    held = [i for i in first["items"] if i in val_items]
    assert 5 <= len(held) <= 30  # the hash split holds out about 40 % of the labeled items
    import dalkit.experiment.round as round_module

    seen = {}
    real = round_module.train_round

    def spy(spec, recipe, cfg, images, lab, train_idx, *a, **kw):
        seen["train"] = sorted(train_idx.tolist())
        return real(spec, recipe, cfg, images, lab, train_idx, *a, **kw)

    monkeypatch.setattr(round_module, "train_round", spy)
    rec = p.next_batch()
    assert seen["train"] == sorted(p.index[i] for i in first["items"] if i not in val_items)
    assert not set(rec["items"]) & set(first["items"])  # held-out items are labeled: never offered again
    # the accuracy, recomputed from the saved model on the held-out items
    model = p.model_spec().build(p.images().shape[1:])
    model.load_state_dict(torch.load(tmp_path / "p" / "model.pt", weights_only=True))
    model.eval()
    idx = torch.tensor(sorted(p.index[i] for i in held))
    with torch.inference_mode():
        pred = model(p.images()[idx].float() / 255).argmax(1)
    truth = torch.tensor([labels[k] for k in idx.tolist()])
    acc = float((pred == truth).float().mean())
    assert rec["val_acc"] == pytest.approx(acc, abs=1e-6)
    st = p.status()
    assert st["validation_labeled"] == len(held) and st["val_acc"] == rec["val_acc"]
    from dalkit.cli import main

    capsys.readouterr()
    assert main(["label", "status", str(tmp_path / "p")]) == 0
    out = capsys.readouterr().out
    assert f"held-out accuracy (last round, {len(held)} validation labels): {100 * acc:.2f}%" in out
    assert out.startswith("items 300: 40 labeled, 260 unlabeled, 0 out of distribution; 2 batches, 1 trained")


def test_images_of_any_mode_become_the_projects_channels(tmp_path):
    """Each Pillow mode is read into uint8 grey by a rule written out here: bilevel 0/255, alpha dropped,
    16-bit and float scaled from their own range, colour by the ITU-R 601 luma."""
    rng = np.random.default_rng(1)
    folder = tmp_path / "modes"
    folder.mkdir()
    expect = {}
    bits = rng.integers(0, 2, (28, 28)).astype(bool)
    Image.fromarray(bits).convert("1").save(folder / "a_bilevel.png")
    expect["a_bilevel.png"] = np.where(bits, 255, 0)
    grey = rng.integers(0, 256, (28, 28), dtype=np.uint8)
    Image.fromarray(np.stack([grey, rng.integers(0, 256, (28, 28), dtype=np.uint8)], 2), "LA").save(
        folder / "b_la.png")
    expect["b_la.png"] = grey
    wide = rng.integers(1000, 3001, (28, 28)).astype(np.uint16)
    wide[0, 0], wide[0, 1] = 1000, 3000
    Image.frombytes("I;16", (28, 28), wide.astype("<u2").tobytes()).save(folder / "c_16bit.png")
    expect["c_16bit.png"] = np.round((wide.astype(float) - 1000) * 255 / 2000)
    flt = rng.uniform(-1, 1, (28, 28)).astype(np.float32)
    Image.fromarray(flt, "F").save(folder / "d_float.tif")
    expect["d_float.tif"] = np.round((flt.astype(float) - flt.min()) * 255 / (flt.max() - flt.min()))
    palette = rng.integers(0, 256, (4, 3))
    idx = rng.integers(0, 4, (28, 28)).astype(np.uint8)
    pim = Image.fromarray(idx, "P")
    pim.putpalette(palette.astype(np.uint8).ravel().tolist())
    pim.save(folder / "e_palette.png")
    rgb = palette[idx]
    expect["e_palette.png"] = (rgb[..., 0] * 299 + rgb[..., 1] * 587 + rgb[..., 2] * 114) / 1000
    rgba = rng.integers(0, 256, (28, 28, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(folder / "f_rgba.png")
    expect["f_rgba.png"] = (rgba[..., 0] * 299.0 + rgba[..., 1] * 587.0 + rgba[..., 2] * 114.0) / 1000
    p = Project.create(tmp_path / "p", folder, "a,b", channels=1)
    assert [it.path for it in p.items] == sorted(expect) and not p.skipped
    for k, it in enumerate(p.items):
        got = p.images()[k, 0].numpy().astype(float)
        assert np.abs(got - expect[it.path]).max() <= 1, it.path  # luma rounding: within 1 grey level
    # the same folder in colour: grey images repeat their one channel, RGBA drops alpha
    q = Project.create(tmp_path / "q", folder, "a,b")
    assert q.config.channels == 3
    assert np.array_equal(q.images()[q.index[q.items[1].item]].numpy(), np.stack([grey] * 3))
    assert np.array_equal(q.images()[5].numpy(), rgba[..., :3].transpose(2, 0, 1))

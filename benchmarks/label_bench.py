"""Labeling-project performance on a folder of MNIST training digits written as PNG files.

Measures: `dalkit label init` time and cache size; the page's first batch of 50 thumbnails (Playwright +
Debian's chromium, from navigation to every image decoded); a label click's round trip measured in the
browser (click -> POST -> fsynced journal entry -> card repainted), p50/p95 over the batch; a round of
`next` (train + query) with the digit CNN and with the `features` MLP head (on 128-d stand-in embeddings:
a fixed random projection of the pixels, since what is timed is the head and the query).

    python benchmarks/label_bench.py --n 60000 --out benchmarks/results/label_bench
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "src"))

from dalkit.data import load_dataset  # noqa: E402
from dalkit.label import Project  # noqa: E402

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TOKEN = "bench-token"

CLICK_JS = """async (i) => {
  const card = document.querySelector(`.card[data-index="${i}"]`);
  const label = card.dataset.truth;
  const button = card.querySelector(`button[data-label="${label}"]`);
  const t0 = performance.now();
  const done = new Promise((resolve) => {
    const obs = new MutationObserver(() => {
      if (card.classList.contains("done")) { obs.disconnect(); resolve(performance.now() - t0); }
    });
    obs.observe(card, { attributes: true, attributeFilter: ["class"] });
  });
  button.click();
  return await done;
}"""


def port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=60000)
    ap.add_argument("--work", default="/tmp/dalkit_label_bench")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/label_bench"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--note", default="", help="a line on the machine's state, printed under the title")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    res: dict[str, object] = {"n": args.n, "threads": args.threads, "note": args.note,
                              "load_start": [round(v, 2) for v in os.getloadavg()]}
    mnist = load_dataset("mnist", ROOT / "data")
    images, labels = mnist.train.images[: args.n], mnist.train.labels[: args.n]
    folder = work / "images"
    folder.mkdir()
    t0 = time.perf_counter()
    for k, x in enumerate(images.numpy()):
        Image.fromarray(x[0]).save(folder / f"{k:05d}.png")
    res["write_pngs_s"] = round(time.perf_counter() - t0, 1)
    res["folder_bytes"] = du(folder)
    print(f"wrote {args.n} PNGs in {res['write_pngs_s']} s", flush=True)

    t0 = time.perf_counter()
    p = Project.create(work / "cnn", folder, [str(c) for c in range(10)], budget=50, initial_size=50)
    res["init_s"] = round(time.perf_counter() - t0, 1)
    res["cache_bytes"] = p.cache_file.stat().st_size
    res["project_bytes"] = du(work / "cnn")
    res["items"] = len(p.items)
    print(f"init {res['init_s']} s, cache {res['cache_bytes'] / 2**20:.1f} MiB", flush=True)
    t0 = time.perf_counter()
    p.next_batch()
    res["first_batch_s"] = round(time.perf_counter() - t0, 2)
    truth = {it.item: str(int(labels[int(it.path[:5])])) for it in p.items}

    # the page: first 50 thumbnails, then 50 label clicks timed in the browser
    from playwright.sync_api import sync_playwright

    pt = port()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(ROOT / "src")}
    server = subprocess.Popen([sys.executable, "-m", "dalkit", "label", "serve", str(work / "cnn"), "--port",
                               str(pt), "--token", TOKEN], env=env, stdout=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{pt}"
    for _ in range(300):
        try:
            urllib.request.urlopen(f"{base}/api/round?token={TOKEN}", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                                         args=CHROMIUM_ARGS)
            wait_js = ("() => { const im = [...document.querySelectorAll('.card img')];"
                       " return im.length === 50 && im.every((i) => i.complete && i.naturalWidth > 0); }")
            cold, warm = [], []
            for k in range(3):  # cold: a fresh browser context each time (empty cache, new renderer)
                ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
                page = ctx.new_page()
                t0 = time.perf_counter()
                page.goto(f"{base}/?token={TOKEN}")
                page.wait_for_function(wait_js, timeout=60_000)
                cold.append(round(time.perf_counter() - t0, 3))
                if k < 2:
                    ctx.close()
            for _ in range(2):  # warm: reloads (the browser's image cache filled)
                t0 = time.perf_counter()
                page.reload()
                page.wait_for_function(wait_js, timeout=60_000)
                warm.append(round(time.perf_counter() - t0, 3))
            loads = cold + warm
            res["first_50_thumbnails_s"] = loads
            res["first_50_thumbnails_cold_s"] = cold
            res["first_50_thumbnails_warm_s"] = warm
            items = [page.locator(".card").nth(i).get_attribute("data-item") for i in range(50)]
            page.evaluate("(t) => document.querySelectorAll('.card').forEach((c, i) => "
                          "c.dataset.truth = t[i])", [truth[i] for i in items])
            clicks = [page.evaluate(CLICK_JS, i) for i in range(50)]
            res["click_ms"] = {"p50": round(float(np.percentile(clicks, 50)), 1),
                               "p95": round(float(np.percentile(clicks, 95)), 1),
                               "max": round(float(np.max(clicks)), 1)}
            print(f"thumbnails {loads} s, clicks {res['click_ms']}", flush=True)
            browser.close()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    state = Project(work / "cnn").state()
    assert all(state[i].label == truth[i] for i in items), "a confirmed label is missing from the journal"

    # a round of next: CNN (default method and recipe), then the features head
    t0 = time.perf_counter()
    batch = Project(work / "cnn").next_batch()
    res["cnn_round"] = {"method": Project(work / "cnn").config.method,
                        "total_s": round(time.perf_counter() - t0, 1), "train_s": batch["train_s"],
                        "query_s": batch["query_s"]}
    print(f"cnn round {res['cnn_round']}", flush=True)
    rng = np.random.default_rng(0)
    proj = rng.standard_normal((784, 128)).astype(np.float32) / 28
    emb = (images.reshape(len(images), -1).float().numpy() / 255) @ proj
    np.save(work / "emb.npy", emb)
    np.save(work / "pixels.npy", images.numpy()[:, 0])
    t0 = time.perf_counter()
    f = Project.create(work / "feat", work / "pixels.npy", [str(c) for c in range(10)], budget=50,
                       initial_size=50, features=work / "emb.npy")
    res["features_init_s"] = round(time.perf_counter() - t0, 1)
    first = f.next_batch()
    for item in first["items"]:
        f.label(item, str(int(labels[int(f.items[f.index[item]].path.rsplit("#", 1)[1])])), "oracle")
    t0 = time.perf_counter()
    batch = f.next_batch()
    res["features_round"] = {"method": f.config.method, "total_s": round(time.perf_counter() - t0, 1),
                             "train_s": batch["train_s"], "query_s": batch["query_s"]}
    print(f"features round {res['features_round']}", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    res["load_end"] = [round(v, 2) for v in load]
    out.with_suffix(".json").write_text(json.dumps(res, indent=1))
    md = [f"# dalkit label on {args.n:,} MNIST PNGs ({args.threads} torch threads)", "",
          f"Load average (1/5/15 min) at the start: {' / '.join(f'{v:.1f}' for v in res['load_start'])}, "
          f"at the end: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}, on 2 cores.",
          *([args.note] if args.note else []),
          "",
          "| measurement | value |", "|---|---|",
          f"| folder of PNGs | {res['folder_bytes'] / 2**20:.1f} MiB |",
          f"| `dalkit label init` (scan, hash, decode, cache) | {res['init_s']} s |",
          f"| cache (uint8 1x28x28, memory-mapped) | {res['cache_bytes'] / 2**20:.1f} MiB |",
          f"| first batch of 50 thumbnails in the page, cold (3 fresh browser contexts) | "
          f"{', '.join(f'{s:.3f}' for s in cold)} s |",
          f"| the same, warm (2 reloads) | {', '.join(f'{s:.3f}' for s in warm)} s |",
          f"| label click round trip (browser, 50 clicks) | p50 {res['click_ms']['p50']} ms, "
          f"p95 {res['click_ms']['p95']} ms, max {res['click_ms']['max']} ms |",
          f"| round of `next`, CNN, {res['cnn_round']['method']} | {res['cnn_round']['total_s']} s "
          f"(train {res['cnn_round']['train_s']} s, query {res['cnn_round']['query_s']} s) |",
          f"| round of `next`, features head (128-d), {res['features_round']['method']} | "
          f"{res['features_round']['total_s']} s (train {res['features_round']['train_s']} s, "
          f"query {res['features_round']['query_s']} s) |"]
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()

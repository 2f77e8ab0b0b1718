"""Scale benchmarks (issue 14).  Each part appends to benchmarks/results/scale.json (a finished
measurement is skipped on a re-run, so the script resumes) and rewrites benchmarks/results/scale.md.

    # selection time and peak memory of every strategy on a memory-mapped features pool [N, 512]
    python benchmarks/scale.py selection --sizes 60000 250000 1000000
    # the same 4-method x 3-seed experiment with --executor local and --executor ray
    python benchmarks/scale.py executors
    # one pool forward pass (CNN on a uint8 image pool) with 1 vs 2 score workers
    python benchmarks/scale.py score-workers --n 250000
    # exact L2 kNN of a features pool: the torch path vs faiss
    python benchmarks/scale.py knn --n 60000
    # one ProbCover selection with its torch and its faiss backend (same picks?)
    python benchmarks/scale.py probcover --n 20000

Selection runs each strategy in its own process (so its peak resident memory is its own), on a
``features`` model (a linear head, depth 0) trained for 5 epochs on 1,000 labeled rows with the recipe
the strategy requires (``learning-loss``: the loss-prediction recipe, which attaches the loss-prediction
module and trains it with the head, as the runner does), else supervised: the measurement is the
selection, not a backbone.  A strategy that passes ``--timeout`` seconds is recorded as such; one whose
selection-memory estimate (dalkit.experiment.memory, the runner's check) exceeds ``--limit-gib`` is
recorded as refused with its message, without running; ``--subset STRATEGY=R`` ranks a random R of the
unlabeled pool for that strategy (the runner's --subset).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
STORE = RESULTS / "scale.json"


def load() -> dict:
    return json.loads(STORE.read_text()) if STORE.exists() else {}


def save(key: str, value: dict) -> None:
    data = load()
    data[key] = value
    STORE.write_text(json.dumps(data, indent=1, sort_keys=True))
    write_markdown(data)


def features_file(n: int, dim: int, cache: Path) -> Path:
    """A [n, dim] float32 .npy of 10 Gaussian clusters (labels = cluster), written once, in chunks."""
    path = cache / f"features_{n}x{dim}.npy"
    labels = cache / f"labels_{n}.npy"
    if path.exists() and labels.exists():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (10, dim)).astype(np.float32)
    y = rng.integers(0, 10, n)
    arr = np.lib.format.open_memmap(str(path) + ".tmp", mode="w+", dtype=np.float32, shape=(n, dim))
    for s in range(0, n, 65536):
        e = min(n, s + 65536)
        arr[s:e] = centres[y[s:e]] + rng.normal(0, 1.5, (e - s, dim)).astype(np.float32)
    arr.flush()
    del arr
    os.replace(str(path) + ".tmp", path)
    np.save(labels, y)
    return path


def selection_one(path: str, labels_path: str, strategy: str, budget: int, subset: int | None,
                  limit_gib: float) -> dict:
    """One query of ``strategy`` on the memory-mapped pool (run in a child process): refused up front
    when dalkit's selection-memory estimate exceeds ``limit_gib`` (the runner's check), else timed."""
    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from query_cost import PeakRSS

    from dalkit.errors import ConfigError
    from dalkit.experiment import memory
    from dalkit.models.features import FeatureMLP
    from dalkit.strategies import QueryContext, create_strategy, query
    from dalkit.training import TrainConfig, TrainSet, create_recipe, fit, prepare_model

    torch.set_num_threads(1)
    pool = torch.from_numpy(np.load(path, mmap_mode="c"))  # copy-on-write map: pages come in as read
    y = torch.from_numpy(np.load(labels_path))
    n = pool.shape[0]
    labeled = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:1000].sort().values
    candidates = None
    if subset is not None and subset < n - 1000:  # the runner's --subset: a random R of the unlabeled
        free = torch.ones(n, dtype=torch.bool)
        free[labeled] = False
        unl = free.nonzero().squeeze(1)
        candidates = unl[torch.randperm(unl.numel(), generator=torch.Generator().manual_seed(4))[:subset]]
    chosen = create_strategy(strategy)
    shape = memory.SelectionShape(n - 1000 if candidates is None else subset, 1000, pool.shape[1], 10, budget,
                                  pool.shape[1], 4, batch=8192)
    estimate = sum(memory.selection_parts(chosen, shape).values())
    try:
        memory.check_selection_memory(chosen, strategy, shape, int(limit_gib * memory.GIB))
    except ConfigError as exc:
        return {"refused": str(exc), "estimate_mib": round(estimate / 2**20)}
    # the training a run of this strategy gets: the recipe it requires (learning-loss: loss-prediction,
    # whose prepare() attaches a fresh loss-prediction module that fit() trains with the model, as the
    # runner does), else supervised
    recipe = create_recipe((getattr(chosen, "requires_recipe", ()) or ("supervised",))[0])
    torch.manual_seed(0)
    model = prepare_model(recipe, FeatureMLP(pool.shape[1], 10, depth=0, dropout=0.3), (pool.shape[1],))
    fit(model, TrainSet(pool[labeled].clone(), y[labeled]), recipe.step(),
        TrainConfig(epochs=5, batch_size=64), torch.Generator().manual_seed(0))
    model.eval()
    ctx = QueryContext(model, pool, labeled, y[labeled], 10, torch.Generator().manual_seed(1), "cpu", 8192,
                       candidates=candidates)
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        query(chosen, ctx, budget)
        seconds = time.perf_counter() - t0
    out = {"seconds": round(seconds, 2), "peak_mib": round(mem.peak / 2**20),
           "estimate_mib": round(estimate / 2**20)}
    if subset is not None:
        out["subset"] = subset
    return out


def part_selection(args: argparse.Namespace) -> None:
    from dalkit.strategies import STRATEGIES

    names = args.strategies or STRATEGIES.names()
    subsets = dict(item.split("=") for item in args.subset or [])
    for n in args.sizes:
        path = features_file(n, args.dim, Path(args.cache))
        labels = Path(args.cache) / f"labels_{n}.npy"
        for name in names:
            key = f"selection/{n}x{args.dim}/{name}"
            if key in load() and not args.redo:
                continue
            cmd = [sys.executable, __file__, "_one", str(path), str(labels), name, str(args.budget),
                   subsets.get(name, "none"), str(args.limit_gib)]
            env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
            try:
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env)
                result = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else \
                    {"error": (out.stderr.strip().splitlines() or ["?"])[-1][:200]}
            except subprocess.TimeoutExpired:
                result = {"timeout": args.timeout}
            if name in subsets and "seconds" not in result and "refused" not in result:
                result["subset"] = int(subsets[name])  # a timeout or an error, on the subset
            print(key, result, flush=True)
            save(key, result)


def part_estimates(args: argparse.Namespace) -> None:
    """Recompute ``estimate_mib`` of every stored selection with the current estimate (arithmetic only)."""
    from dalkit.experiment import memory
    from dalkit.strategies import create_strategy

    for key, value in sorted(load().items()):
        if not key.startswith("selection/") or "estimate_mib" not in value:
            continue
        size, name = key.split("/")[1:]
        n, dim = map(int, size.split("x"))
        shape = memory.SelectionShape(value.get("subset", n - 1000), 1000, dim, 10, args.budget, dim, 4,
                                      batch=8192)
        parts = memory.selection_parts(create_strategy(name), shape)
        value["estimate_mib"] = round(sum(parts.values()) / 2**20)
        save(key, value)


def part_executors(args: argparse.Namespace) -> None:
    import shutil
    import tempfile

    methods = "entropy,coreset,badge,dm2-at"
    common = ["--dataset", args.dataset, "--method", methods, "--pool-size", str(args.pool),
              "--test-size", "300", "--initial-size", "20", "--budget", "20", "--rounds", "3",
              "--seeds", "0,1,2", "--epochs", str(args.epochs), "--device", "cpu", "--quiet"]
    rows = {}
    tmp = Path(tempfile.mkdtemp())
    for executor in ("local", "ray"):
        key = f"executors/{args.dataset}-{args.pool}-e{args.epochs}/{executor}"
        if key in load():
            rows[executor] = load()[key]
            continue
        out = tmp / executor
        extra = ["--executor", "ray"] if executor == "ray" else []
        env = {**os.environ, "OMP_NUM_THREADS": "1"}  # a local run with the threads of one Ray task
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "dalkit.cli", "run", *common, "--out", str(out), *extra],
                       check=True, env=env)
        rows[executor] = {"seconds": round(time.perf_counter() - t0, 1), "dir": str(out)}
        save(key, rows[executor])
    same = None
    if all(Path(r["dir"]).exists() for r in rows.values()):
        def recs(d: str) -> list:
            out = []
            for m in methods.split(","):
                for line in (Path(d) / m / "rounds.jsonl").read_text().splitlines():
                    r = json.loads(line)
                    out.append({k: v for k, v in r.items() if not k.endswith("_s")})
            return sorted(out, key=lambda r: (json.dumps(r, sort_keys=True)))
        same = recs(rows["local"]["dir"]) == recs(rows["ray"]["dir"])
        save(f"executors/{args.dataset}-{args.pool}-e{args.epochs}/identical", {"identical": same})
    print(rows, "identical records:", same)
    shutil.rmtree(tmp, ignore_errors=True)


def part_score_workers(args: argparse.Namespace) -> None:
    import ray
    import torch

    from dalkit.experiment.executors import RayScorer
    from dalkit.models import create_model
    from dalkit.strategies import QueryContext

    torch.set_num_threads(1)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    g = torch.Generator().manual_seed(0)
    pool = torch.randint(0, 256, (args.n, 1, 28, 28), dtype=torch.uint8, generator=g)
    torch.manual_seed(0)
    model = create_model("cnn", 1, 10, (0.13,), (0.31,), image_size=28).eval()
    results, outputs = {}, {}
    for workers in (1, 2):
        key = f"score-workers/{args.n}/{workers}"
        scorer = RayScorer(workers) if workers > 1 else None
        ctx = QueryContext(model, pool, torch.arange(10), torch.zeros(10, dtype=torch.long), 10,
                           torch.Generator().manual_seed(0), "cpu", 1024, scorer=scorer)
        if scorer is not None:  # actors started (and warm) before the clock
            ray.get([a.pid.remote() for a in scorer.actors])
        t0 = time.perf_counter()
        outputs[workers] = ctx.embeddings()
        results[workers] = {"seconds": round(time.perf_counter() - t0, 2)}
        if scorer is not None:
            scorer.close()
        save(key, results[workers])
    same = torch.equal(outputs[1], outputs[2])
    save(f"score-workers/{args.n}/identical", {"identical": same})
    print(results, "identical embeddings:", same)
    ray.shutdown()


def part_knn(args: argparse.Namespace) -> None:
    """Exact L2 top-k of every pool row among the pool (DM2's shortlist, k-center's distances): dalkit's
    chunked torch path vs faiss ``IndexFlatL2``, one thread each; the neighbour sets are compared."""
    import faiss
    import torch

    from dalkit.strategies.pairwise import knn

    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    path = features_file(args.n, args.dim, Path(args.cache))
    x = torch.from_numpy(np.load(path, mmap_mode="r")[:args.n].copy())
    key = f"knn/{args.n}x{args.dim}/k{args.k}"
    t0 = time.perf_counter()
    _, idx_t = knn(x, None, args.k, "l2", True, None)
    torch_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x.numpy())
    _, idx_f = index.search(x.numpy(), args.k + 1)
    faiss_s = time.perf_counter() - t0
    rows = np.arange(args.n)[:, None]
    idx_f = np.stack([r[r != i][: args.k] for i, r in zip(rows[:, 0], idx_f, strict=True)])
    agree = float(np.mean([len(set(a) & set(b)) / args.k for a, b in zip(idx_t.numpy(), idx_f, strict=True)]))
    result = {"torch_s": round(torch_s, 2), "faiss_s": round(faiss_s, 2), "same_neighbours": round(agree, 4)}
    print(key, result)
    save(key, result)


def part_probcover(args: argparse.Namespace) -> None:
    """One ProbCover selection (delta by purity, its graph, the greedy) on the first ``n`` rows of the
    features pool, with the torch and the faiss backend, 1 thread each: seconds per stage and whether
    the picks are the same."""
    import faiss
    import torch

    from dalkit.models.features import FeatureMLP
    from dalkit.strategies import QueryContext, create_strategy, query

    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    path = features_file(max(args.n, 20000), args.dim, Path(args.cache))
    x = torch.from_numpy(np.load(path, mmap_mode="r")[:args.n].copy())
    y = torch.from_numpy(np.load(Path(args.cache) / f"labels_{max(args.n, 20000)}.npy")[:args.n])
    labeled = torch.arange(0, args.n, args.n // 1000)
    torch.manual_seed(0)
    model = FeatureMLP(args.dim, 10, depth=0).eval()
    picks = {}
    for backend in ("torch", "faiss"):
        key = f"probcover/{args.n}x{args.dim}/{backend}"
        ctx = QueryContext(model, x, labeled, y[labeled], 10, torch.Generator().manual_seed(1), "cpu", 8192)
        t0 = time.perf_counter()
        sel = query(create_strategy("probcover", backend=backend), ctx, args.budget)
        result = {"seconds": round(time.perf_counter() - t0, 2), "stages": sel.info["seconds"],
                  "n_edges": sel.info["n_edges"], "delta": sel.info["delta"]}
        picks[backend] = sel.indices.tolist()
        print(key, result, flush=True)
        save(key, result)
    save(f"probcover/{args.n}x{args.dim}/identical", {"identical": picks["torch"] == picks["faiss"]})
    print("identical picks:", picks["torch"] == picks["faiss"])


def write_markdown(data: dict) -> None:
    lines = ["# Scale benchmarks (benchmarks/scale.py)", ""]
    sel = {k: v for k, v in data.items() if k.startswith("selection/")}
    if sel:
        sizes = sorted({k.split("/")[1] for k in sel}, key=lambda s: int(s.split("x")[0]))
        names = sorted({k.split("/")[2] for k in sel})
        lines += ["## Selection on a features pool, 1 thread (seconds / peak MiB [estimate MiB])", "",
                  "| strategy | " + " | ".join(sizes) + " |", "|---|" + "---|" * len(sizes)]

        def cell(v: dict | None) -> str:
            if v is None:
                return ""
            sub = f" (subset {v['subset']:,})" if "subset" in v else ""
            if "seconds" in v:
                est = f" [{v['estimate_mib']}]" if "estimate_mib" in v else ""
                return f"{v['seconds']} s / {v['peak_mib']} MiB{est}{sub}"
            if "refused" in v:
                return "refused: " + v["refused"].split("; ")[-1]
            if "timeout" in v:
                return f"> {v['timeout']} s{sub}"
            return "error: " + v["error"].split("Error: ", 1)[-1][:160] + sub  # the message, not the class

        for name in names:
            cells = [cell(sel.get(f"selection/{s}/{name}")) for s in sizes]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    for prefix, title in (("executors/", "local vs ray executor"), ("score-workers/", "score workers"),
                          ("knn/", "exact L2 kNN: torch vs faiss (1 thread)"),
                          ("probcover/", "ProbCover selection: torch vs faiss backend (1 thread)")):
        rows = {k: v for k, v in data.items() if k.startswith(prefix)}
        if rows:
            lines += [f"## {title}", "", "| run | result |", "|---|---|"]
            lines += [f"| {k} | {json.dumps({a: b for a, b in v.items() if a != 'dir'})} |"
                      for k, v in sorted(rows.items())]
            lines.append("")
    (RESULTS / "scale.md").write_text("\n".join(lines))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_one":
        subset = None if sys.argv[6] == "none" else int(sys.argv[6])
        print(json.dumps(selection_one(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), subset,
                                       float(sys.argv[7]))))
        return
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="part", required=True)
    s = sub.add_parser("selection")
    s.add_argument("--sizes", type=int, nargs="+", default=[60000, 250000, 1000000])
    s.add_argument("--dim", type=int, default=512)
    s.add_argument("--budget", type=int, default=100)
    s.add_argument("--strategies", nargs="*")
    s.add_argument("--timeout", type=int, default=300)
    s.add_argument("--cache", default="/tmp/dalkit-scale")
    s.add_argument("--subset", nargs="*", metavar="STRATEGY=R",
                   help="rank a random R of the unlabeled pool for these strategies (the runner's --subset)")
    s.add_argument("--limit-gib", type=float, default=24.0, help="memory the selection may use (refusal)")
    s.add_argument("--redo", action="store_true", help="measure again what the store already holds")
    e = sub.add_parser("executors")
    e.add_argument("--dataset", default="digits")
    e.add_argument("--pool", type=int, default=1400)
    e.add_argument("--epochs", type=int, default=5)
    w = sub.add_parser("score-workers")
    w.add_argument("--n", type=int, default=250000)
    k = sub.add_parser("knn")
    k.add_argument("--n", type=int, default=60000)
    k.add_argument("--dim", type=int, default=512)
    k.add_argument("--k", type=int, default=20)
    k.add_argument("--cache", default="/tmp/dalkit-scale")
    m = sub.add_parser("estimates")
    m.add_argument("--budget", type=int, default=100)
    c = sub.add_parser("probcover")
    c.add_argument("--n", type=int, default=20000)
    c.add_argument("--dim", type=int, default=512)
    c.add_argument("--budget", type=int, default=100)
    c.add_argument("--cache", default="/tmp/dalkit-scale")
    args = p.parse_args()
    parts = {"probcover": part_probcover, "selection": part_selection,
             "executors": part_executors, "score-workers": part_score_workers,
             "knn": part_knn, "estimates": part_estimates}
    parts[args.part](args)


if __name__ == "__main__":
    main()

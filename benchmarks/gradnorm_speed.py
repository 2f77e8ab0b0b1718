"""Scoring speed of per-sample entropy-gradient norms (LPLgrad Eq. 6-8): dalkit's vectorised
``torch.func`` path against the reference codes' loop of one backward pass per sample, in one run, on
the same model and inputs.  Checks that both give the same numbers and reports the speed-up.

- ``cnn``: the digit CNN trained briefly on 1,000 real MNIST images, scoring MNIST test images.
- ``resnet18``: CIFAR-style ResNet-18 (random init, BatchNorm statistics from a few training-mode
  passes) on 3x32x32 inputs in [0, 1].

Three ways: ``factored`` (dalkit's default: vmap(grad) to the layer outputs, weight-gradient norms
from outputs' gradients and inputs), ``vmap`` (vmap(grad) materialising every per-sample gradient) and
``loop``.  When ``--loop-n`` is smaller than ``--n``, ``vmap`` and ``loop`` are timed on the first
``--loop-n`` samples and their time for ``--n`` is extrapolated linearly (marked in the table).  Results go to
``benchmarks/results/gradnorm_speed.{json,md}``, one model at a time (re-running skips finished models
unless ``--force``).

    python benchmarks/gradnorm_speed.py --n 2000 --models cnn resnet18 --loop-n 2000 500
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from dalkit.data import channel_stats, load_dataset, to_float
from dalkit.models import create_model
from dalkit.strategies._gradnorm import main_parameters, per_sample_grad_norms
from dalkit.training import TrainConfig, TrainSet, fit, supervised_step

OUT = Path("benchmarks/results/gradnorm_speed")


def loop_grad_norms(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The reference codes' way: one forward + backward of the entropy per sample, a norm per tensor."""
    model.eval()
    names = set(main_parameters(model))
    params = [p for n, p in model.named_parameters() if n in names]
    out = torch.empty(x.shape[0], len(params))
    for i in range(x.shape[0]):
        model.zero_grad(set_to_none=True)
        logp = torch.log_softmax(model(x[i:i + 1]), dim=1)
        entropy = -(logp.exp() * logp).sum()
        entropy.backward()
        out[i] = torch.stack([p.grad.norm() if p.grad is not None else torch.zeros(()) for p in params]).cpu()
    model.zero_grad(set_to_none=True)
    return out


def build(name: str, n: int, device: torch.device) -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    if name == "cnn":
        mnist = load_dataset("mnist")
        idx = torch.arange(1000)
        mean, std = channel_stats(mnist.train.images[idx])
        model = create_model("cnn", 1, 10, mean, std, image_size=28)
        fit(model, TrainSet(mnist.train.images[idx], mnist.train.labels[idx]), supervised_step,
            TrainConfig(epochs=5, batch_size=64), torch.Generator().manual_seed(0))
        x = to_float(mnist.test.images[:n])
    else:
        model = create_model("resnet18", 3, 10, image_size=32)
        model.train()
        with torch.no_grad():
            for _ in range(2):
                model(torch.rand(32, 3, 32, 32))
        x = torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    return model.to(device).eval(), x.to(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--models", nargs="+", default=["cnn", "resnet18"])
    p.add_argument("--loop-n", type=int, nargs="+", default=None,
                   help="samples timed in the loop, one per model (default: all n)")
    p.add_argument("--chunk-size", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--force", action="store_true")
    args = p.parse_args()
    device = torch.device(args.device)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    path = OUT.with_suffix(".json")
    results = json.loads(path.read_text()) if path.exists() else {}
    loop_ns = args.loop_n or [args.n] * len(args.models)
    for name, loop_n in zip(args.models, loop_ns, strict=True):
        if name in results and not args.force:
            print(f"{name}: done already (use --force)")
            continue
        model, x = build(name, args.n, device)
        per_sample_grad_norms(model, x[:4], args.chunk_size)  # warm-up (first-call set-up)
        per_sample_grad_norms(model, x[:4], args.chunk_size, method="vmap")
        loop_grad_norms(model, x[:4])
        m = min(loop_n, args.n)
        timings, norms = {}, {}
        for way, count in (("factored", args.n), ("vmap", m), ("loop", m)):
            sync(device)
            t0 = time.perf_counter()
            if way == "loop":
                norms[way] = loop_grad_norms(model, x[:count])
            else:
                norms[way] = per_sample_grad_norms(model, x[:count], args.chunk_size, method=way)
            sync(device)
            timings[way] = (time.perf_counter() - t0) * args.n / count
            print(f"  {name} {way}: {timings[way]:.1f} s for {args.n}", flush=True)
        slow = norms["loop"]
        fro_slow = slow.pow(2).sum(1).sqrt()
        k = max(1, m // 20)
        top_slow = set(fro_slow.topk(k).indices.tolist())
        results[name] = {
            "n": args.n, "loop_timed_on": m, "extrapolated": m < args.n,
            "factored_s": round(timings["factored"], 2), "vmap_s": round(timings["vmap"], 2),
            "loop_s": round(timings["loop"], 2),
            "speedup_factored": round(timings["loop"] / timings["factored"], 2),
            "speedup_vmap": round(timings["loop"] / timings["vmap"], 2),
            "max_abs_diff": max(float((norms[w][:m] - slow).abs().max()) for w in ("factored", "vmap")),
            "max_rel_diff_score": max(
                float(((norms[w][:m].pow(2).sum(1).sqrt() - fro_slow).abs() / fro_slow.clamp_min(1e-12)
                       ).max())
                for w in ("factored", "vmap")),
            "top5pct_agreement": min(
                len(set(norms[w][:m].pow(2).sum(1).sqrt().topk(k).indices.tolist()) & top_slow) / k
                for w in ("factored", "vmap")),
            "n_params": sum(p.numel() for p in main_parameters(model).values()),
            "device": str(device), "threads": torch.get_num_threads(), "cpu": platform.processor() or "cpu",
            "torch": torch.__version__,
        }
        print(name, results[name], flush=True)
        path.write_text(json.dumps(results, indent=1))
    rows = ["| model | params | samples | factored s | vmap s | loop s | speed-up factored | speed-up vmap | "
            "max abs diff | max rel diff of score | top-5 % same |", "|---" * 11 + "|"]
    for name, r in results.items():
        mark = f" (timed on {r['loop_timed_on']}, extrapolated)" if r["extrapolated"] else ""
        rows.append(f"| {name} | {r['n_params'] / 1e6:.2f} M | {r['n']} | {r['factored_s']:.1f} | "
                    f"{r['vmap_s']:.1f}{mark} | {r['loop_s']:.1f}{mark} | {r['speedup_factored']:.2f}x | "
                    f"{r['speedup_vmap']:.2f}x | {r['max_abs_diff']:.1e} | {r['max_rel_diff_score']:.1e} | "
                    f"{100 * r['top5pct_agreement']:.0f} % |")
    any_r = next(iter(results.values()))
    text = (f"# Per-sample entropy-gradient norms: vectorised vs loop\n\n{any_r['device']}, "
            f"{any_r['threads']} thread(s), torch {any_r['torch']}.\n\n" + "\n".join(rows) + "\n")
    OUT.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()

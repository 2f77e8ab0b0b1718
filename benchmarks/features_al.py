"""Active learning on your own embeddings: the ``features`` model on real MNIST CNN embeddings.

1. The "foundation model": dalkit's digit CNN trained on the 10,000 MNIST *test* images (never on the
   pool), ``--encoder-epochs`` epochs; its 128-d embeddings of the 60,000 training images are written to
   ``runs/bench/features_mnist/emb.npy`` (one row per training image, as a user would bring them).
2. ``dalkit run --dataset mnist --model features --features emb.npy`` for each method over 3 seeds: the
   .npy's held-out rows are the test set (``--test-size``), the pool is a random ``--pool-size`` of the rest.

Writes ``benchmarks/results/features_mnist.md`` (the CLI's table) and prints it.

    python benchmarks/features_al.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from dalkit.cli import main as dalkit_main
from dalkit.data import channel_stats, load_dataset, to_float
from dalkit.models import create_model
from dalkit.training import TrainConfig, TrainSet, fit, supervised_step


def embeddings(out: Path, epochs: int) -> Path:
    path = out / "emb.npy"
    if path.is_file():
        return path
    mnist = load_dataset("mnist")
    enc = mnist.test
    mean, std = channel_stats(enc.images)
    torch.manual_seed(0)
    cnn = create_model("cnn", 1, 10, mean, std, image_size=28)
    t0 = time.perf_counter()
    fit(cnn, TrainSet(enc.images, enc.labels), supervised_step, TrainConfig(epochs=epochs, batch_size=128),
        torch.Generator().manual_seed(0))
    cnn.eval()
    with torch.inference_mode():
        z = torch.cat([cnn.embed(to_float(mnist.train.images[i:i + 4096]))
                       for i in range(0, len(mnist.train), 4096)])
    out.mkdir(parents=True, exist_ok=True)
    np.save(path, z.numpy())
    print(f"encoder: {epochs} epochs on the 10k test images + 60k embeddings in "
          f"{time.perf_counter() - t0:.0f} s -> {path} {tuple(z.shape)}", file=sys.stderr)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default="random,margin,entropy,badge,coreset,dm2,dm2-at")
    p.add_argument("--encoder-epochs", type=int, default=3)
    p.add_argument("--pool-size", default="10000")
    p.add_argument("--test-size", default="5000")
    p.add_argument("--initial-size", default="20")
    p.add_argument("--budget", default="20")
    p.add_argument("--rounds", default="5")
    p.add_argument("--seeds", default="0,1,2")
    args = p.parse_args()
    torch.set_num_threads(1)
    out = Path("runs/bench/features_mnist")
    emb = embeddings(out, args.encoder_epochs)
    results = Path(__file__).parent / "results" / "features_mnist.md"
    rc = dalkit_main(["run", "--dataset", "mnist", "--model", "features", "--features", str(emb),
                      "--method", args.methods, "--pool-size", args.pool_size, "--test-size", args.test_size,
                      "--initial-size", args.initial_size, "--budget", args.budget, "--rounds", args.rounds,
                      "--seeds", args.seeds, "--device", "cpu", "--out", str(out / "runs"), "--quiet"])
    if rc:
        sys.exit(rc)
    dirs = [str(out / "runs" / m) for m in args.methods.split(",")]
    rc = dalkit_main(["report", *dirs, "--markdown", str(results), "--plot", str(out / "curves.png")])
    sys.exit(rc)


if __name__ == "__main__":
    main()

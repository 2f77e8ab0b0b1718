"""Labeling-project fixtures: real MNIST digits written as PNG files, as a person's folder would hold."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from dalkit.data import DataSplits


def write_pngs(images, folder: Path) -> list[str]:
    """uint8 [N, 1, H, W] -> folder/00000.png ...; returns the file names in pool order."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i, x in enumerate(images.numpy()):
        name = f"{i:05d}.png"
        Image.fromarray(x[0]).save(folder / name)
        names.append(name)
    return names


@pytest.fixture(scope="session")
def mnist_pngs(tmp_path_factory, mnist: DataSplits) -> tuple[Path, list[int]]:
    """300 real MNIST training digits as PNGs (the first 300, pool order = file order) and labels."""
    folder = tmp_path_factory.mktemp("mnist_pngs")
    write_pngs(mnist.train.images[:300], folder)
    return folder, mnist.train.labels[:300].tolist()


def tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` with the SHA-256 of its bytes (to check that nothing changed)."""
    import hashlib

    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(project: Path, token: str, timeout: float = 60.0):
    """`dalkit label serve` in its own process (real uvicorn); returns (process, base URL) once it
    answers."""
    import os
    import subprocess
    import sys
    import time
    import urllib.request

    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "dalkit", "label", "serve", str(project), "--port",
                             str(port), "--token", token], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stdout.read().decode()}")
        try:
            with urllib.request.urlopen(f"{base}/api/round?token={token}", timeout=1):
                return proc, base
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

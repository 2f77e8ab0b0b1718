"""The Ray executor on a simulated two-node cluster on this machine (``ray.cluster_utils.Cluster``):
identical run directories to a local run for a supervised, an adversarial and a semi-supervised method;
a killed worker process, a killed node and a killed driver all end with the records of an uninterrupted
local run.  Kept few and tiny: the cluster starts once for the module (2 CPUs in all)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray  # never skipped: make install installs the ray extra
import torch
from ray.cluster_utils import Cluster

from dalkit.experiment import ExperimentConfig, check_experiment, run_experiment
from dalkit.experiment.executors import ExecutorConfig, Job, RayExecutor, RayScorer
from dalkit.training import TrainConfig

QUICK = TrainConfig(epochs=1, batch_size=32, min_steps=8, lr=3e-3)
TIMING = ("train_s", "query_s", "robust_s")
SRC = str(Path(__file__).parents[1] / "src")


def config(method: str, **changes) -> ExperimentConfig:
    values = dict(dataset="digits", model="cnn", method=method, initial_size=20, budget=10, rounds=2,
                  seeds=(0,), pool_size=300, train=QUICK, device="cpu")
    values.update(changes)
    return ExperimentConfig(**values)


def strip(records: list[dict]) -> list[dict]:
    """Records without wall-clock fields, in (seed, round) order."""
    return sorted(({k: v for k, v in r.items() if k not in TIMING} for r in records),
                  key=lambda r: (r["seed"], r["round"]))


def untimed(value):
    """A summary without its wall-clock fields (``*_s``, ``*_s_mean``)."""
    if isinstance(value, dict):
        return {k: untimed(v) for k, v in value.items() if not (k.endswith("_s") or k.endswith("_s_mean"))}
    if isinstance(value, list):
        return [untimed(v) for v in value]
    return value


def read_rounds(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines() if line]


@pytest.fixture(scope="module")
def cluster():
    """A head and a second node, one CPU each; node deaths are noticed within ~2 s."""
    if ray.is_initialized():
        ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "object_store_memory": 80 << 20, "include_dashboard": False,
        "_system_config": {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500,
                           "health_check_failure_threshold": 3}})
    c.add_node(num_cpus=1, object_store_memory=80 << 20)
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False, logging_level="WARNING")
    yield c
    ray.shutdown()
    c.shutdown()


@pytest.fixture(scope="module")
def local_runs(tmp_path_factory, digits) -> dict[str, Path]:
    """The local reference run directory of each method the Ray runs are compared with."""
    root = tmp_path_factory.mktemp("local")
    out = {}
    for method, changes in (("entropy", {}), ("dm2-at", {"rounds": 3}), ("fixmatch:random", {})):
        out[method] = root / method.replace(":", "_")
        run_experiment(config(method, **changes), out[method], splits=digits, progress=False)
    return out


def run_ray(cfgs: list[ExperimentConfig], dirs: list[Path], digits, on_round=None,
            executor: RayExecutor | None = None) -> RayExecutor:
    executor = executor or RayExecutor(ExecutorConfig(name="ray"))
    jobs = [Job(c, d, check_experiment(c, d, digits)) for c, d in zip(cfgs, dirs, strict=True)]
    executor.run(jobs, progress=False, on_round=on_round)
    return executor


def test_ray_run_directories_equal_local_ones(cluster, local_runs, digits, tmp_path):
    """Supervised, adversarial (state files) and semi-supervised: same records, config, resolved
    options, state and summary as a local run; every task ran once."""
    methods = ["entropy", "dm2-at", "fixmatch:random"]
    cfgs = [config(m, rounds=3) if m == "dm2-at" else config(m) for m in methods]
    dirs = [tmp_path / m.replace(":", "_") for m in methods]
    executor = run_ray(cfgs, dirs, digits)
    assert all(not f for f in executor.failures.values())
    for method, run_dir in zip(methods, dirs, strict=True):
        local = local_runs[method]
        assert strip(read_rounds(run_dir)) == strip(read_rounds(local)), method
        for name in ("config.yaml", "resolved.json"):
            assert (run_dir / name).read_bytes() == (local / name).read_bytes()
        sums = [untimed(json.loads((d / "summary.json").read_text())) for d in (run_dir, local)]
        assert sums[0] == sums[1] and sums[0]["rounds"]
        states = sorted(p.name for p in (local / "state").iterdir())
        assert sorted(p.name for p in (run_dir / "state").iterdir()) == states
        for name in states:
            a, b = (torch.load(d / "state" / name, weights_only=True) for d in (run_dir, local))
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "dm2-at" / "state" / "seed0.pt").exists()  # the adversarial state was written


def test_a_killed_worker_is_retried_from_its_last_round(cluster, local_runs, digits, tmp_path):
    """SIGKILL the task's worker process once round 0 is recorded: the task is submitted again from
    round 1 (replaying the state file) and ends with the local records."""
    killed: list[int] = []
    executor = RayExecutor(ExecutorConfig(name="ray"))
    cfg = config("dm2-at", rounds=3)

    def kill_after_round0(record: dict) -> None:
        if record["round"] == 0 and not killed:
            pid = executor.workers[(str(tmp_path / "run"), 0)]["pid"]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    run_ray([cfg], [tmp_path / "run"], digits, kill_after_round0, executor)
    assert killed and executor.workers[(str(tmp_path / "run"), 0)]["pid"] != killed[0]
    assert len(executor.failures[(str(tmp_path / "run"), 0)]) == 1
    assert strip(read_rounds(tmp_path / "run")) == strip(read_rounds(local_runs["dm2-at"]))


def test_a_killed_driver_resumes_on_rerun(cluster, digits, tmp_path):
    """`dalkit run --executor ray --address HOST:PORT` killed (SIGKILL) after its first round: the same
    command again finishes the run with the local records.  Rounds of 150 steps (about a second each),
    so the three left cannot all finish while a loaded machine keeps this process from killing the
    driver (8-step rounds sometimes did)."""
    steps, rounds = 150, 3
    local = tmp_path / "local"
    train = TrainConfig(epochs=1, batch_size=32, min_steps=steps, lr=3e-3)
    run_experiment(config("entropy", rounds=rounds, train=train), local, splits=digits, progress=False)
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "dalkit.cli", "run", "--dataset", "digits", "--method", "entropy",
            "--initial-size", "20", "--budget", "10", "--rounds", str(rounds), "--seeds", "0",
            "--pool-size", "300", "--epochs", "1", "--batch-size", "32", "--min-steps", str(steps),
            "--lr", "0.003", "--device", "cpu", "--out", str(out), "--quiet", "--executor", "ray",
            "--address", cluster.address]
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}
    driver = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300  # Ray's start-up on a loaded 2-core machine can take minutes
    wrote = False
    while time.monotonic() < deadline and driver.poll() is None:
        if (out / "rounds.jsonl").exists() and (out / "rounds.jsonl").read_bytes().count(b"\n") >= 1:
            wrote = True
            break
        time.sleep(0.05)
    assert driver.poll() is None, f"the driver ended before it could be killed: {driver.stderr.read()[-800:]}"
    assert wrote, "the driver wrote no round within 300 s"
    driver.kill()
    driver.wait()
    partial = read_rounds(out)
    assert 1 <= len(partial) <= rounds
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert strip(read_rounds(out)) == strip(read_rounds(local))
    assert read_rounds(out)[: len(partial)] == partial  # resumed, not redone


def test_score_workers_select_exactly_as_one_process(cluster, make_context, model_for):
    """Every registered strategy (and the gradient-norm ones with a set vmap chunk): the selection with
    the pool's forward passes split over 2 Ray actors equals the single-process one, index for index."""
    from dalkit.strategies import STRATEGIES, create_strategy, query
    from dalkit.strategies.scoring import use_scorer

    scorer = RayScorer(2)
    calls: list[int] = []
    real_map = scorer.map

    def counting_map(fn, model, images, align, *args):
        calls.append(images.shape[0])
        return real_map(fn, model, images, align, *args)

    scorer.map = counting_map
    cases = [(name, {}) for name in STRATEGIES.names()]
    cases += [("lplgrad", {"chunk_size": 64}), ("ent-gradnorm", {"chunk_size": 64})]
    unused: list[str] = []
    try:
        for name, options in cases:
            strategy = create_strategy(name, **options)
            alone = query(strategy, make_context(seed=3, extra_labeled=10, model=model_for(name)), 10)
            before = len(calls)
            with use_scorer(scorer):
                split = query(strategy, make_context(seed=3, extra_labeled=10, model=model_for(name)), 10)
            assert torch.equal(split.indices, alone.indices), name
            if len(calls) == before:
                unused.append(name)
    finally:
        scorer.close()
    # random needs no model; learning-loss and noise-stability run their own passes in the task; the
    # default gradient-norm slice (4,096) holds the whole 290-sample pool (their chunk_size=64 runs split)
    assert unused == ["ent-gradnorm", "learning-loss", "lplgrad", "noise-stability", "random"]


def test_a_run_with_score_workers_equals_a_local_run(cluster, local_runs, digits, tmp_path):
    executor = RayExecutor(ExecutorConfig(name="ray", score_workers=2))
    run_ray([config("entropy")], [tmp_path / "run"], digits, executor=executor)
    assert strip(read_rounds(tmp_path / "run")) == strip(read_rounds(local_runs["entropy"]))


def test_a_killed_node_is_retried_elsewhere(cluster, local_runs, digits, tmp_path):
    """Kill the second node's raylet (by its process id) once a task on it has recorded round 0: that
    task is submitted again, runs on the head, and both seeds end with the records of local runs."""
    from ray._private import ray_constants
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    victim = cluster.list_all_nodes()[1]
    raylet_pid = victim.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid
    executor = RayExecutor(ExecutorConfig(name="ray"))
    cfg = config("entropy", seeds=(0, 1))
    killed: list[int] = []
    release, started = tmp_path / "release", tmp_path / "started"

    @ray.remote(num_cpus=1)
    def hold_head_cpu(started: str, release: str) -> None:  # so the first task must go to the victim
        Path(started).touch()
        while not Path(release).exists():
            time.sleep(0.05)

    head_id = cluster.head_node.node_id
    holder = hold_head_cpu.options(scheduling_strategy=NodeAffinitySchedulingStrategy(head_id, soft=False)
                                   ).remote(str(started), str(release))
    deadline = time.monotonic() + 60
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.05)

    def kill_node(record: dict) -> None:
        info = executor.workers[(str(tmp_path / "run"), record["seed"])]
        if record["round"] == 0 and info["node_id"] == victim.node_id and not killed:
            release.touch()
            os.kill(raylet_pid, signal.SIGKILL)
            killed.append(record["seed"])

    try:
        run_ray([cfg], [tmp_path / "run"], digits, kill_node, executor)
    finally:
        release.touch()
    ray.get(holder)
    assert killed, "no task ran on the second node"
    assert len(executor.failures[(str(tmp_path / "run"), killed[0])]) >= 1
    reference = tmp_path / "local"
    run_experiment(cfg.replace(seeds=(1,)), reference, splits=digits, progress=False)
    expected = strip(read_rounds(local_runs["entropy"]) + read_rounds(reference))
    assert strip(read_rounds(tmp_path / "run")) == expected

"""Executors: where the (method, seed) runs of an experiment execute.

``local`` (the default) runs them one after the other in this process, as :func:`run_experiment` always
has.  ``ray`` runs each (method, seed) as a Ray task on whatever node of a Ray cluster has room
(``pip install 'dalkit[ray]'``).  Both write the same run directories:

* one writer per file: the driver (this process) holds every run directory's lock and is the only
  process that writes to it.  A task streams each completed round (its record, and the per-seed state
  when the round produced some) back to the driver, which saves the state, then appends the record and
  fsyncs, exactly as a local run does;
* a task that dies (its worker process or its whole node killed) is submitted again from the last round
  the driver recorded; rounds are seeded by (seed, round), so the retry ends with the same records as an
  uninterrupted run.  A killed driver leaves a run directory a re-run of the same command resumes;
* nothing about the executor is written into a run directory: ``dalkit report`` cannot tell them apart.

Records are bit-identical to a local run that uses the same number of torch threads (``cpus_per_run``
sets a task's threads; torch's CPU kernels may split a reduction differently with another count).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import queue
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dalkit.checks import short
from dalkit.errors import ConfigError, ExecutorError
from dalkit.experiment.config import ExperimentConfig
from dalkit.experiment.rundir import RunDirectory
from dalkit.experiment.runner import (
    Prepared,
    close_run,
    done_rounds,
    open_run,
    run_experiment,
    run_seed,
)
from dalkit.experiment.train_cache import TrainCache

EXECUTORS = ("local", "ray")
RAY_HINT = "pip install 'dalkit[ray]'"


@dataclass(frozen=True)
class ExecutorConfig:
    """How to execute the runs of an experiment (never part of what a run directory records).

    Attributes:
        name: "local" (this process, one run after the other) or "ray" (one Ray task per method x seed).
        address: the Ray cluster to join: "auto" (the one ``ray start`` began on this machine) or the
            head's "HOST:PORT"; None starts Ray on this machine with its CPU count.
        cpus_per_run: CPUs Ray reserves for each (method, seed) task; also its torch threads.
        score_workers: K Ray actors that split the pool's forward passes each round (1: the task itself).
        max_retries: times a (method, seed) task is submitted again after its worker or node died.
        train_cache: a folder of trained rounds the runs share (:mod:`dalkit.experiment.train_cache`):
            a training whose inputs match a stored one is loaded, not repeated (e.g. every method's
            round 0).  With Ray on several machines it must be a folder they all see.
    """

    name: str = "local"
    address: str | None = None
    cpus_per_run: int = 1
    score_workers: int = 1
    max_retries: int = 3
    train_cache: str | None = None

    def __post_init__(self) -> None:
        if self.name not in EXECUTORS:
            raise ConfigError(f"executor must be one of {', '.join(EXECUTORS)}, got {short(self.name)}")
        for name in ("cpus_per_run", "score_workers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be a positive integer, got {short(value)}")
        retries = self.max_retries
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ConfigError(f"max_retries must be a non-negative integer, got {short(self.max_retries)}")
        if self.train_cache is not None:
            if not isinstance(self.train_cache, str) or not self.train_cache.strip():
                raise ConfigError(f"train-cache must be a folder, got {short(self.train_cache)}")
            TrainCache(self.train_cache)  # refuses a file
        if self.address is not None:
            if not isinstance(self.address, str) or not self.address.strip():
                raise ConfigError(f"address must be 'auto' or HOST:PORT, got {short(self.address)}")
            if self.address != "auto":
                parse_address(self.address)
        if self.name == "local":
            for name, default in (("address", None), ("score_workers", 1), ("cpus_per_run", 1)):
                if getattr(self, name) != default:
                    raise ConfigError(f"{name.replace('_', '-')} needs the Ray executor "
                                      "(--executor ray, or executor: ray in the config)")


_EXECUTOR_KEYS = {"executor": "name", "address": "address", "cpus_per_run": "cpus_per_run",
                  "score_workers": "score_workers", "max_retries": "max_retries",
                  "train_cache": "train_cache"}


def executor_from_values(values: dict[str, Any]) -> tuple[dict[str, Any], ExecutorConfig]:
    """Split a config mapping into the experiment's fields and the executor's.

    The executor is given as ``executor: ray`` (with ``address``, ``cpus_per_run``, ``score_workers``
    beside it) or as a mapping ``executor: {name: ray, address: auto, ...}``.

    Raises:
        ConfigError: unknown executor field or bad value.
    """
    rest = dict(values)
    found: dict[str, Any] = {}
    executor = rest.pop("executor", None)
    if isinstance(executor, dict):
        fields = {f.name for f in dataclasses.fields(ExecutorConfig)}
        unknown = [k for k in executor if k not in fields]
        if unknown:
            raise ConfigError(f"unknown field executor.{short(unknown[0])[1:-1]}; valid fields: "
                              f"{', '.join(sorted(fields))}")
        found.update(executor)
    elif executor is not None:
        found["name"] = executor
    for key, name in _EXECUTOR_KEYS.items():
        if key != "executor" and key in rest:
            found[name] = rest.pop(key)
    try:
        return rest, ExecutorConfig(**found)
    except TypeError as exc:
        raise ConfigError(f"invalid executor value: {short(str(exc))[1:-1]}") from None


def parse_address(address: str) -> tuple[str, int]:
    """HOST:PORT -> (host, port).

    Raises:
        ConfigError: not HOST:PORT with a port in 1..65535.
    """
    host, sep, port = address.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"address must be 'auto' or HOST:PORT (the Ray head, e.g. 10.0.0.5:6379), "
                          f"got {short(address)}")
    return host.strip("[]"), int(port)


@dataclass
class Job:
    """One experiment (one method, several seeds) and its run directory."""

    config: ExperimentConfig
    run_dir: str | Path
    prepared: Prepared


OnRound = Callable[[dict[str, Any]], None]


def run_jobs(jobs: list[Job], executor: ExecutorConfig | None = None, progress: bool = True,
             on_round: OnRound | None = None) -> list[list[dict[str, Any]]]:
    """Run every job (validated by :func:`check_experiment`) with ``executor``; returns each job's
    round records (its seeds in order).

    Raises:
        ConfigError: the executor cannot start (Ray missing, cluster unreachable), before anything is
            written.
        ExecutorError: a task kept failing after ``max_retries`` submissions.
    """
    executor = executor or ExecutorConfig()
    if executor.name == "local":
        return [run_experiment(job.config, job.run_dir, progress=progress, on_round=on_round,
                               prepared=job.prepared, train_cache=executor.train_cache) for job in jobs]
    return RayExecutor(executor).run(jobs, progress, on_round)


# -- Ray -------------------------------------------------------------------------------------------

def import_ray() -> Any:
    """The ``ray`` module.

    Raises:
        ConfigError: Ray is not installed.
    """
    try:
        import ray
    except ImportError:
        raise ConfigError(f"the Ray executor needs Ray, which is not installed; {RAY_HINT}") from None
    return ray


@contextlib.contextmanager
def ray_session(executor: ExecutorConfig) -> Iterator[Any]:
    """Ray, connected as ``executor`` says (an existing connection of this process is kept).

    Raises:
        ConfigError: Ray missing, the cluster at ``address`` unreachable, or no cluster for "auto".
    """
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    address = executor.address
    if address not in (None, "auto"):
        host, port = parse_address(address)
        try:
            with socket.create_connection((host, port), timeout=3):
                pass
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise ConfigError(f"cannot reach the Ray cluster at {address} ({reason}); check --address (the "
                              "head's HOST:PORT) or leave it out to start Ray on this machine") from None
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                              "logging_level": "WARNING"}
    try:
        if address is None:
            ray.init(**kwargs)
        else:
            ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError(f"cannot join the Ray cluster {address or '(local)'}: "
                          f"{short(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)[1:-1]}; "
                          "start one with `ray start --head` or leave --address out") from None
    try:
        yield ray
    finally:
        ray.shutdown()


_REMOTE: dict[str, Any] = {}


class ScoreWorker:
    """A Ray actor that runs pool blocks for a :class:`RayScorer` (the model arrives with each call)."""

    def __init__(self, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)

    def run(self, fn: Any, model: Any, images: Any, args: tuple) -> Any:
        return fn(model, images, "cpu", *args)

    def pid(self) -> int:
        return os.getpid()


class RayScorer:
    """A pool scorer over K Ray actors (:mod:`dalkit.strategies.scoring`): the pool's forward passes are
    cut into K aligned contiguous blocks, one per actor, merged here in order.

    Args:
        workers: K.
        threads: torch threads of each actor (the caller's own count keeps results bit-identical).
    """

    def __init__(self, workers: int, threads: int = 1) -> None:
        ray = import_ray()
        actor = _remote_class(ray, ScoreWorker)
        self.actors = [actor.options(num_cpus=1, max_restarts=-1, max_task_retries=-1).remote(threads)
                       for _ in range(workers)]

    def map(self, fn: Any, model: Any, images: Any, align: int, *args: Any) -> Any:
        import ray

        from dalkit.strategies.scoring import blocks, concat

        model_ref = ray.put(model)
        refs = [actor.run.remote(fn, model_ref, images[start:end], args)
                for actor, (start, end) in zip(self.actors, blocks(images.shape[0], len(self.actors), align),
                                               strict=False)]
        return concat(ray.get(refs))

    def close(self) -> None:
        import ray

        for actor in self.actors:
            with contextlib.suppress(Exception):
                ray.kill(actor)


class _StreamSink:
    """The run-directory side of :func:`run_seed` inside a task: it writes nothing, it hands each
    completed round (and the state saved before it) to ``put``; the driver writes them."""

    def __init__(self, state: dict[str, Any], put: Callable[[tuple], None]) -> None:
        self._state = state
        self._pending: dict[str, Any] | None = None
        self._put = put

    def load_state(self, seed: int) -> dict[str, Any]:
        return dict(self._state)

    def save_state(self, seed: int, state: dict[str, Any]) -> None:
        self._pending = dict(state)

    def append_round(self, record: dict[str, Any]) -> None:
        self._put(("round", record, self._pending))
        self._pending = None


_END = object()


def seed_stream(config: ExperimentConfig, data: Prepared, seed: int, done: list[dict[str, Any]],
                state: dict[str, Any], threads: int, score_workers: int = 1,
                train_cache: str | None = None) -> Iterator[tuple]:
    """Run (or resume) one seed and yield ``("start", info)``, then ``("round", record, state|None)``
    per completed round.  The body of the Ray task (a generator, so rounds stream to the driver)."""
    import torch

    torch.set_num_threads(threads)
    info = {"pid": os.getpid(), "node_id": None}
    with contextlib.suppress(Exception):
        import ray

        info["node_id"] = ray.get_runtime_context().get_node_id()
    yield ("start", info)
    items: queue.Queue = queue.Queue()
    failure: list[BaseException] = []

    def work() -> None:
        from dalkit.strategies.scoring import use_scorer

        scorer = RayScorer(score_workers, threads) if score_workers > 1 else None
        try:
            with use_scorer(scorer):
                run_seed(config, data, seed, _StreamSink(state, items.put), done, False,  # type: ignore[arg-type]
                         train_cache=TrainCache(train_cache) if train_cache else None)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the generator
            failure.append(exc)
        finally:
            if scorer is not None:
                scorer.close()
            items.put(_END)

    thread = threading.Thread(target=work, name=f"dalkit-seed{seed}", daemon=True)
    thread.start()
    while (item := items.get()) is not _END:
        yield item
    thread.join()
    if failure:
        raise failure[0]


@dataclass
class _Run:
    """One (method, seed) of a job as the driver tracks it."""

    job: int
    seed: int
    config: ExperimentConfig
    rundir: RunDirectory
    records: list[dict[str, Any]]
    attempts: int = 0
    bar: Any = None
    worker: dict[str, Any] = field(default_factory=dict)


def _remote_seed_stream(ray: Any) -> Any:
    """:func:`seed_stream` as a Ray remote function (made once per process)."""
    return _remote_class(ray, seed_stream)


def _remote_class(ray: Any, obj: Any) -> Any:
    """``ray.remote(obj)``, made once per process."""
    if obj.__name__ not in _REMOTE:
        _REMOTE[obj.__name__] = ray.remote(obj)
    return _REMOTE[obj.__name__]


class RayExecutor:
    """Runs each (method, seed) as a Ray task; this process is the one writer of every run directory.

    Attributes (for tests and tools):
        workers: (run_dir, seed) -> {"pid", "node_id"} of the task's current worker process.
        failures: (run_dir, seed) -> the errors of the attempts that died.
    """

    def __init__(self, executor: ExecutorConfig) -> None:
        self.executor = executor
        self.workers: dict[tuple[str, int], dict[str, Any]] = {}
        self.failures: dict[tuple[str, int], list[str]] = {}

    def run(self, jobs: list[Job], progress: bool = True, on_round: OnRound | None = None
            ) -> list[list[dict[str, Any]]]:
        with ray_session(self.executor) as ray, contextlib.ExitStack() as stack:
            opened = []
            for job in jobs:
                rundir = RunDirectory(job.run_dir)
                stack.enter_context(rundir.locked())
                opened.append((rundir, *open_run(job.config, job.prepared, rundir)))
            data_refs: dict[int, Any] = {}
            runs: list[_Run] = []
            for j, (job, (rundir, existing, _)) in enumerate(zip(jobs, opened, strict=True)):
                if id(job.prepared) not in data_refs:
                    data_refs[id(job.prepared)] = ray.put(job.prepared)
                for seed in job.config.seeds:
                    runs.append(_Run(j, seed, job.config, rundir, done_rounds(existing, seed)))
            if progress:
                from tqdm.auto import tqdm

                for pos, run in enumerate(runs):
                    run.bar = stack.enter_context(tqdm(
                        total=run.config.rounds + 1, initial=len(run.records), position=pos, leave=True,
                        desc=f"{run.config.method} seed {run.seed}", unit="round", file=sys.stderr))
            pending = {self._submit(ray, run, data_refs[id(jobs[run.job].prepared)]): run for run in runs
                       if len(run.records) < run.config.rounds + 1}
            try:
                while pending:
                    ready, _ = ray.wait(list(pending), num_returns=1)
                    for gen in ready:
                        run = pending.pop(gen)
                        if self._advance(ray, gen, run, on_round):
                            pending[gen] = run
                        elif len(run.records) < run.config.rounds + 1:  # died: submit again
                            pending[self._submit(ray, run, data_refs[id(jobs[run.job].prepared)])] = run
            except BaseException:
                for gen in pending:
                    with contextlib.suppress(Exception):
                        ray.cancel(gen, force=True)
                raise
            results = []
            for j, (job, (rundir, existing, on_disk)) in enumerate(zip(jobs, opened, strict=True)):
                records = [rec for run in runs if run.job == j for rec in run.records]
                close_run(job.config, rundir, existing, on_disk, records)
                results.append(records)
            return results

    def _submit(self, ray: Any, run: _Run, data_ref: Any) -> Any:
        run.attempts += 1
        key = (str(run.rundir.path), run.seed)
        failures = self.failures.get(key, [])
        if len(failures) > self.executor.max_retries:
            raise ExecutorError(
                f"{run.config.method} seed {run.seed}: the Ray task died {len(failures)} times (last: "
                f"{failures[-1]}); {run.rundir.path} keeps its completed rounds, re-run to resume")
        task = _remote_seed_stream(ray).options(
            num_cpus=self.executor.cpus_per_run, max_retries=0, num_returns="streaming",
            name=f"dalkit {run.config.method} seed {run.seed}")
        return task.remote(run.config, data_ref, run.seed, list(run.records),
                           run.rundir.load_state(run.seed), self.executor.cpus_per_run,
                           self.executor.score_workers, self.executor.train_cache)

    def _advance(self, ray: Any, gen: Any, run: _Run, on_round: OnRound | None) -> bool:
        """Take one item of ``gen``; False when the task ended (finished or died)."""
        from ray.exceptions import RayTaskError

        key = (str(run.rundir.path), run.seed)
        try:
            item = ray.get(next(gen))
        except StopIteration:
            if len(run.records) < run.config.rounds + 1:  # ended early without an error: retry
                self.failures.setdefault(key, []).append("the task ended before its last round")
            return False
        except RayTaskError as exc:  # the run itself raised: not a fault a retry would cure
            cause = exc.cause if isinstance(getattr(exc, "cause", None), BaseException) else None
            raise (cause or exc) from None
        except ray.exceptions.RayError as exc:  # worker or node died, object lost: retry
            self.failures.setdefault(key, []).append(type(exc).__name__)
            return False
        if item[0] == "start":
            self.workers[key] = item[1]
            run.worker = item[1]
            return True
        _, record, state = item
        if record["round"] != len(run.records) or record["seed"] != run.seed:
            raise ExecutorError(f"{run.rundir.path}: seed {run.seed} streamed round {record['round']} "
                                f"after {len(run.records)} rounds")
        if state is not None:
            run.rundir.save_state(run.seed, state)
        run.rundir.append_round(record)
        run.records.append(record)
        if run.bar is not None:
            run.bar.update(1)
        if on_round is not None:
            on_round(record)
        return True

"""Executor configuration (no Ray needed): parsing from a config mapping, validation messages."""

from __future__ import annotations

import pytest

from dalkit.errors import ConfigError
from dalkit.experiment.executors import ExecutorConfig, executor_from_values, parse_address


def test_executor_fields_leave_the_experiment_mapping():
    rest, ex = executor_from_values({"dataset": "digits", "executor": "ray", "address": "auto",
                                     "cpus_per_run": 2, "score_workers": 3})
    assert rest == {"dataset": "digits"}
    assert ex == ExecutorConfig("ray", "auto", 2, 3)
    rest, ex = executor_from_values({"method": "entropy",
                                     "executor": {"name": "ray", "address": "10.1.2.3:6379"}})
    assert rest == {"method": "entropy"} and ex.address == "10.1.2.3:6379" and ex.name == "ray"
    assert executor_from_values({"budget": 5}) == ({"budget": 5}, ExecutorConfig())


@pytest.mark.parametrize(("values", "message"), [
    ({"executor": "spark"}, "executor must be one of local, ray, got 'spark'"),
    ({"executor": "ray", "score_workers": 0}, "score-workers must be a positive integer, got 0"),
    ({"executor": "ray", "score_workers": True}, "score-workers must be a positive integer"),
    ({"executor": "ray", "cpus_per_run": -1}, "cpus-per-run must be a positive integer, got -1"),
    ({"executor": "ray", "address": "host"}, "address must be 'auto' or HOST:PORT"),
    ({"executor": "ray", "address": "host:99999"}, "address must be 'auto' or HOST:PORT"),
    ({"executor": "ray", "address": ""}, "address must be 'auto' or HOST:PORT"),
    ({"score_workers": 2}, "score-workers needs the Ray executor"),
    ({"executor": {"name": "ray", "nodes": 3}}, "unknown field executor.nodes"),
    ({"executor": "ray", "max_retries": -1}, "max_retries must be a non-negative integer"),
])
def test_bad_executor_values(values, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        executor_from_values(values)


def test_parse_address():
    assert parse_address("127.0.0.1:6379") == ("127.0.0.1", 6379)
    assert parse_address("[::1]:10001") == ("::1", 10001)


def test_score_blocks_cover_the_pool_at_aligned_starts():
    from dalkit.strategies.scoring import blocks

    assert blocks(300, 2, 256) == [(0, 256), (256, 300)]
    assert blocks(1000, 3, 64) == [(0, 384), (384, 768), (768, 1000)]
    assert blocks(10, 4, 64) == [(0, 10)]
    assert blocks(0, 2, 64) == []
    for n, k, a in ((1, 1, 1), (4097, 2, 4096), (999, 7, 10)):
        b = blocks(n, k, a)
        assert b[0][0] == 0 and b[-1][1] == n and len(b) <= k
        assert all(s % a == 0 and e > s for s, e in b)
        assert all(b[i][1] == b[i + 1][0] for i in range(len(b) - 1))

"""A million-sample pool: every strategy's selection either fits the memory or is refused before anything
runs (:func:`dalkit.experiment.memory.check_selection_memory`), and the estimate bounds the measured peak."""

from __future__ import annotations

import gc
import threading
import time

import pytest
import torch

from dalkit.cli import main
from dalkit.errors import ConfigError
from dalkit.experiment import ExperimentConfig, memory
from dalkit.experiment.runner import check_experiment
from dalkit.strategies import STRATEGIES, QueryContext, create_strategy, query
from dalkit.training import TrainConfig

GIB = 1 << 30
#: a 1,000,000 x 512 features pool with a linear head: 1,000 initial labels, 10 rounds of 100
MILLION = memory.SelectionShape(n_unlabeled=999_000, n_labeled=1_900, embed_dim=512, num_classes=10,
                                budget=100, input_floats=512, input_bytes=4)


def _refusal(name: str, available_gib: float, shape: memory.SelectionShape = MILLION, **options) -> str:
    with pytest.raises(ConfigError) as err:
        memory.check_selection_memory(create_strategy(name, **options), name, shape, int(available_gib * GIB))
    return str(err.value)


def test_every_strategy_fits_a_million_pool_in_24_gib_with_its_defaults():
    totals = {name: sum(memory.selection_parts(create_strategy(name), MILLION).values()) / GIB
              for name in STRATEGIES.names()}
    assert max(totals.values()) < 24, totals
    for name in STRATEGIES.names():
        memory.check_selection_memory(create_strategy(name), name, MILLION, 24 * GIB)  # no refusal
    # the strategies that keep O(N * E) copies and graphs are the big ones, the single-pass ones small
    assert totals["entropy"] < 2.2 and totals["probcover"] > 15 and totals["uncertain-gcn"] > 15


def test_the_parts_by_hand():
    u, lab, e, c = 999_000, 1_900, 512, 10
    outputs = (u + lab) * (2 * c + e) * 4 + u * 24
    assert memory.pool_outputs_bytes(MILLION) == outputs
    assert memory.selection_parts(create_strategy("entropy"), MILLION) == {
        "model outputs of the pool (--subset)": outputs,
        "inference batches (eval_batch_size)": 2 * 1024 * (3 * 512 + 2 * 512 + 2 * 10) * 4,
        "scores and their seeded ranking (--subset)": u * (c * 4 + 8 + 16)}
    assert memory.selection_parts(create_strategy("coreset"), MILLION)["k-center copy of the embeddings "
                                                                      "(--subset)"] == u * e * 4 + u * 36
    assert memory.selection_parts(create_strategy("bald", k=7), MILLION)[
        "MC dropout predictions (k, --subset)"] == 3 * 7 * u * c * 4
    assert memory.selection_parts(create_strategy("probcover", max_edges=10**6), MILLION)[
        "delta-ball graph (max_edges)"] == 48 * 10**6


def test_refusals_name_the_option_that_makes_the_selection_fit():
    assert _refusal("uncertain-gcn", 8) == (
        "strategy 'uncertain-gcn' needs about 15.5 GiB to select from 999,000 samples (graph nodes, "
        "normalised, and A V (--subset): 7.6 GiB), more than the 8.0 GiB available; use --subset 510000 "
        "(a random 510,000 of the unlabeled pool ranked per round) or lower the option named in brackets")
    assert _refusal("alphamix", 8) == (
        "strategy 'alphamix' needs about 13.6 GiB to select from 999,000 samples (k-means of the flipping "
        "candidates (--subset): 11.5 GiB), more than the 8.0 GiB available; use --subset 580000 (a random "
        "580,000 of the unlabeled pool ranked per round) or lower the option named in brackets")
    # the graph's bound does not shrink with the candidates: only max_edges makes it fit
    assert _refusal("probcover", 24, max_edges=10**9) == (
        "strategy 'probcover' needs about 51.4 GiB to select from 999,000 samples (delta-ball graph "
        "(max_edges): 44.7 GiB), more than the 24.0 GiB available; use --option max_edges=380000000")
    assert _refusal("probcover", 8).endswith("use --option max_edges=30000000")
    # nothing fits: not even the budget's worth of candidates
    assert _refusal("entropy", 0.001).endswith("more than the 0.0 GiB available; lower the option named "
                                               "in brackets")


@pytest.mark.parametrize("name,options,gib", [("uncertain-gcn", {}, 8), ("alphamix", {}, 8),
                                              ("probcover", {"max_edges": 10**9}, 24)])
def test_the_named_option_does_fit(name, options, gib):
    message = _refusal(name, gib, **options)
    fix = message.split("; use ")[1]
    if fix.startswith("--subset"):
        r = int(fix.split()[1])
        memory.check_selection_memory(create_strategy(name, **options), name, MILLION.with_unlabeled(r),
                                      gib * GIB)
        with pytest.raises(ConfigError):  # and it is the largest such (to two significant digits)
            memory.check_selection_memory(create_strategy(name, **options), name,
                                          MILLION.with_unlabeled(r + 20_000), gib * GIB)
    else:
        key, value = fix.split()[1].split("=")
        memory.check_selection_memory(create_strategy(name, **{**options, key: int(value)}), name, MILLION,
                                      gib * GIB)


def test_the_runner_refuses_before_anything_is_written(tmp_path, digits, capsys, monkeypatch):
    """Through the CLI: one line, exit 2, no run directory; the option named in it makes the run fit."""
    base = ["run", "--dataset", "digits", "--method", "probcover", "--initial-size", "20", "--budget", "10",
            "--rounds", "1", "--seeds", "0", "--epochs", "1", "--device", "cpu", "--quiet", "--pool-size",
            "300", "--out", str(tmp_path / "run")]
    monkeypatch.setenv("DALKIT_MEMORY_GIB", "4")
    assert main(base) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["dalkit: error: strategy 'probcover' needs about 9.7 GiB to select from 280 samples "
                   "(delta-ball graph (max_edges): 8.9 GiB), more than the 4.0 GiB available; use --option "
                   "max_edges=71000000"]
    assert not (tmp_path / "run").exists()
    cfg = ExperimentConfig(dataset="digits", method="probcover", initial_size=20, budget=10, rounds=1,
                           seeds=(0,), pool_size=300, train=TrainConfig(epochs=1), device="cpu",
                           strategy_options={"max_edges": 71_000_000})
    check_experiment(cfg, tmp_path / "run", digits)  # fits
    monkeypatch.setenv("DALKIT_MEMORY_GIB", "four")
    with pytest.raises(ConfigError, match="DALKIT_MEMORY_GIB must be a number of GiB, got 'four'"):
        check_experiment(cfg, tmp_path / "run", digits)


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096


def _peak(fn) -> int:
    """Largest resident-set increase while ``fn()`` runs (sampled every millisecond)."""
    gc.collect()
    base, peak, stop = _rss(), [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss() - base)
            time.sleep(0.001)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        fn()
    finally:
        stop.set()
        thread.join()
    return max(peak[0], _rss() - base)


@pytest.mark.parametrize("name,options", [("entropy", {}), ("coreset", {}), ("badge", {}), ("bald", {}),
                                          ("alphamix", {}), ("noise-stability", {"k": 10}),
                                          ("probcover", {"max_edges": 4_000_000, "backend": "torch"})])
def test_the_estimate_bounds_the_measured_peak(name, options):
    """On a 30,000 x 128 float pool with a linear head: the resident memory one selection adds (the
    pool's forward pass included) stays under the estimate."""
    import sklearn.cluster  # noqa: F401 - imported before measuring: code is not selection memory

    from dalkit.models.features import FeatureMLP

    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (30_000,), generator=g)
    pool = torch.randn(10, 128, generator=g)[labels] * 0.5 + torch.randn(30_000, 128, generator=g)
    labeled = torch.arange(0, 30_000, 30)
    torch.manual_seed(0)
    model = FeatureMLP(128, 10, depth=0, dropout=0.3).eval()
    strategy = create_strategy(name, **options)
    shape = memory.SelectionShape(30_000 - labeled.numel(), labeled.numel(), 128, 10, 50, 128, 4)
    estimate = sum(memory.selection_parts(strategy, shape).values())
    ctx = QueryContext(model, pool, labeled, labels[labeled], 10, torch.Generator().manual_seed(1))
    measured = _peak(lambda: query(strategy, ctx, 50))
    assert measured <= estimate, f"{name}: measured {measured / 2**20:.0f} MiB > {estimate / 2**20:.0f} MiB"
    assert measured > 0

"""End-to-end AL loop on real digits: rounds.jsonl contents, shared initial sets, determinism, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dalkit.experiment import ExperimentConfig, RunDirectory, initial_labeled, run_experiment
from dalkit.experiment import round as round_module
from dalkit.training import TrainConfig

TIMING = ("train_s", "query_s")
FAST_TRAIN = TrainConfig(epochs=2, batch_size=32, min_steps=40, lr=3e-3)  # learns digits in ~1 s
QUICK_TRAIN = TrainConfig(epochs=1, batch_size=32, min_steps=8, lr=3e-3)  # where only equality matters


def config(method: str, **changes) -> ExperimentConfig:
    values = dict(dataset="digits", model="cnn", method=method, initial_size=20, budget=10, rounds=3,
                  seeds=(0,), pool_size=300, train=QUICK_TRAIN, device="cpu")
    values.update(changes)
    return ExperimentConfig(**values)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def without_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


def test_end_to_end_run_records(tmp_path, digits):
    cfg = config("entropy", seeds=(0, 1), train=FAST_TRAIN)
    records = run_experiment(cfg, tmp_path / "run", splits=digits, progress=False)
    on_disk = read_jsonl(tmp_path / "run" / "rounds.jsonl")
    assert on_disk == records
    assert len(records) == 2 * (cfg.rounds + 1)
    for seed in cfg.seeds:
        recs = sorted((r for r in records if r["seed"] == seed), key=lambda r: r["round"])
        assert [r["round"] for r in recs] == list(range(cfg.rounds + 1))
        labeled = set(initial_labeled(cfg.pool_size, cfg.initial_size, seed).tolist())
        assert len(labeled) == cfg.initial_size
        for r in recs:
            assert r["n_labeled"] == cfg.initial_size + r["round"] * cfg.budget == len(labeled)
            assert 0.0 <= r["test_acc"] <= 1.0
            assert r["n_adversarial"] == 0
            if r["round"] < cfg.rounds:
                sel = r["selected"]
                assert len(sel) == len(set(sel)) == cfg.budget
                assert all(0 <= i < cfg.pool_size for i in sel)
                assert not labeled & set(sel), "selected an already-labeled sample"
                labeled |= set(sel)
            else:
                assert r["selected"] == []
    # the model learns: final accuracy on real digits is well above chance (10 %)
    assert max(r["test_acc"] for r in records) > 0.5
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["method"] == "entropy"
    assert summary["seeds"] == [0, 1]
    assert [row["n_labeled"] for row in summary["rounds"]] == [20, 30, 40, 50]
    final = [r["test_acc"] for r in records if r["round"] == cfg.rounds]
    assert summary["final_acc_mean"] == pytest.approx(sum(final) / 2)
    saved = RunDirectory(tmp_path / "run").read_config()
    assert saved.same_experiment(cfg)


def test_same_initial_labeled_set_for_every_method(digits, monkeypatch):
    """Round 0 is identical for every method under one seed: same labeled set, same trained model."""
    seen: dict[str, torch.Tensor] = {}
    real_context = round_module.QueryContext

    def spy(model, pool_images, labeled_idx, *args, **kwargs):
        ctx = real_context(model, pool_images, labeled_idx, *args, **kwargs)
        seen.setdefault(current, ctx.labeled_idx.clone())
        return ctx

    monkeypatch.setattr(round_module, "QueryContext", spy)
    round0 = {}
    for current in ("random", "entropy", "dm2"):
        recs = run_experiment(config(current, rounds=1, seeds=(3,)), splits=digits, progress=False)
        round0[current] = recs[0]
    expected = initial_labeled(300, 20, 3)
    for method, idx in seen.items():
        assert idx.tolist() == expected.tolist(), method
    assert len({r["test_acc"] for r in round0.values()}) == 1
    assert len({r["train_loss"] for r in round0.values()}) == 1
    # and the initial set depends on the seed
    assert initial_labeled(300, 20, 4).tolist() != expected.tolist()


@pytest.mark.parametrize("method", ["dm2", "random"])
def test_same_config_and_seed_give_same_selections(method, digits):
    a = run_experiment(config(method, rounds=2), splits=digits, progress=False)
    b = run_experiment(config(method, rounds=2), splits=digits, progress=False)
    assert [r["selected"] for r in a] == [r["selected"] for r in b]
    assert without_timing(a) == without_timing(b)
    c = run_experiment(config(method, rounds=2, seeds=(1,)), splits=digits, progress=False)
    assert [r["selected"] for r in c] != [r["selected"] for r in a]


class Interrupt:
    """on_round callback: raise KeyboardInterrupt once round ``after`` of ``seed`` is recorded."""

    def __init__(self, seed: int, after: int) -> None:
        self.seed, self.after = seed, after

    def __call__(self, record: dict) -> None:
        if record["seed"] == self.seed and record["round"] == self.after:
            raise KeyboardInterrupt


@pytest.mark.parametrize(("method", "tear"), [("entropy", "append"), ("dm2-at", "append"),
                                            ("dm2-at", "cut")])
def test_resume_after_interrupt_equals_uninterrupted_run(method, tear, tmp_path, digits):
    """Interrupt after round 2 of seed 0, tear the end of rounds.jsonl, re-run: the records equal an
    uninterrupted run's except the timings.

    tear="append": a half-written extra line follows the three complete ones.
    tear="cut": round 2's own line is cut in half (killed mid-append): round 2 is lost and redone,
    although its adversarial counterparts already sit in the state file.
    """
    cfg = config(method, rounds=4, seeds=(0, 1))
    full = run_experiment(cfg, tmp_path / "A", splits=digits, progress=False)

    b = tmp_path / "B"
    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, b, splits=digits, progress=False, on_round=Interrupt(seed=0, after=2))
    partial = read_jsonl(b / "rounds.jsonl")
    assert [(r["seed"], r["round"]) for r in partial] == [(0, 0), (0, 1), (0, 2)]
    if method == "dm2-at":  # counterparts of rounds 0-2 were saved before their round lines
        state = RunDirectory(b).load_state(0)
        assert sorted(state) == ["adv_round0", "adv_round1", "adv_round2"]
        assert all(v.shape == (cfg.budget, 1, 8, 8) for v in state.values())
    raw = (b / "rounds.jsonl").read_bytes()
    if tear == "append":  # no newline, invalid JSON
        (b / "rounds.jsonl").write_bytes(raw + b'{"seed": 0, "round": 3, "n_labeled": 5')
        kept = 3
    else:
        last_start = raw[:-1].rfind(b"\n") + 1
        (b / "rounds.jsonl").write_bytes(raw[: last_start + (len(raw) - last_start) // 2])
        kept = 2

    resumed = run_experiment(cfg, b, splits=digits, progress=False)
    assert without_timing(resumed) == without_timing(full)
    on_disk_a, on_disk_b = read_jsonl(tmp_path / "A" / "rounds.jsonl"), read_jsonl(b / "rounds.jsonl")
    assert without_timing(on_disk_b) == without_timing(on_disk_a)
    assert (b / "rounds.jsonl").read_bytes().endswith(b"\n")
    # completed rounds were replayed, not recomputed: their lines (timings included) are unchanged
    assert read_jsonl(b / "rounds.jsonl")[:kept] == partial[:kept]
    if method == "dm2-at":
        assert [r["n_adversarial"] for r in full if r["seed"] == 0] == [0, 10, 20, 30, 40]
        for seed in cfg.seeds:
            sa, sb = RunDirectory(tmp_path / "A").load_state(seed), RunDirectory(b).load_state(seed)
            assert sorted(sa) == sorted(sb) == [f"adv_round{r}" for r in range(cfg.rounds)]
            for key in sa:
                torch.testing.assert_close(sa[key], sb[key], rtol=0, atol=0)
    summary_a = json.loads((tmp_path / "A" / "summary.json").read_text())
    summary_b = json.loads((b / "summary.json").read_text())
    assert summary_a["aubc_mean"] == summary_b["aubc_mean"]


def test_rerun_of_a_completed_run_changes_nothing(tmp_path, digits):
    cfg = config("margin", rounds=2)
    first = run_experiment(cfg, tmp_path / "run", splits=digits, progress=False)
    before = (tmp_path / "run" / "rounds.jsonl").read_bytes()
    again = run_experiment(cfg, tmp_path / "run", splits=digits, progress=False)
    assert again == first
    assert (tmp_path / "run" / "rounds.jsonl").read_bytes() == before


def test_a_run_directory_can_gain_seeds(tmp_path, digits):
    run_experiment(config("random", rounds=1, seeds=(0,)), tmp_path / "run", splits=digits, progress=False)
    both = run_experiment(config("random", rounds=1, seeds=(0, 1)), tmp_path / "run", splits=digits,
                          progress=False)
    alone = run_experiment(config("random", rounds=1, seeds=(1,)), splits=digits, progress=False)
    assert without_timing([r for r in both if r["seed"] == 1]) == without_timing(alone)


def test_a_changed_default_is_not_resumed_silently(tmp_path, digits, monkeypatch):
    """The run directory records every resolved option; if a strategy default changes between two
    runs of the same config, the second refuses instead of mixing two experiments."""
    import dataclasses

    from dalkit.errors import RunDirectoryError
    from dalkit.strategies import STRATEGIES
    from dalkit.strategies._dm2 import DM2

    cfg = config("dm2", rounds=1)
    run_experiment(cfg, tmp_path / "run", splits=digits, progress=False)
    resolved = json.loads((tmp_path / "run" / "resolved.json").read_text())
    assert resolved["strategy"] == {"name": "dm2", **json.loads(json.dumps(dataclasses.asdict(DM2())))}
    assert resolved["recipe"] == {"name": "supervised"}
    before = (tmp_path / "run" / "rounds.jsonl").read_bytes()
    # the same config, but dm2 now defaults to 7 neighbours
    changed = dataclasses.make_dataclass("DM2", [("n_neighbors", int, 7)], bases=(DM2,), frozen=True)
    monkeypatch.setitem(STRATEGIES._items, "dm2", changed)
    with pytest.raises(RunDirectoryError, match="default changed"):
        run_experiment(cfg, tmp_path / "run", splits=digits, progress=False)
    assert (tmp_path / "run" / "rounds.jsonl").read_bytes() == before


def test_one_round_called_by_hand_selects_what_the_runner_selected(digits):
    """experiment/round.py is the runner's round: called with the runner's inputs for round 1 (the
    initial set plus round 0's picks, labels from the pool), it picks what the runner recorded."""
    from dalkit.experiment.runner import _recipe_for, _strategy_for, check_experiment

    cfg = config("margin", rounds=2, seeds=(5,))
    records = run_experiment(cfg, splits=digits, progress=False)
    data = check_experiment(cfg, splits=digits)
    pool = data.pool
    labeled = torch.cat([initial_labeled(len(pool), cfg.initial_size, 5),
                         torch.tensor(records[0]["selected"])])
    spec = round_module.ModelSpec("cnn", pool.num_classes, data.mean, data.std)
    res = round_module.run_round(spec, _strategy_for(cfg), _recipe_for(cfg), data.train_cfg, pool.images,
                                 pool.labels, labeled, 5, 1, cfg.budget)
    assert res.selected.tolist() == records[1]["selected"]
    assert res.stats["loss"] == records[1]["train_loss"]
    # the labels it trains on are the ones handed in: other labels train another model
    wrong = (pool.labels + 1) % pool.num_classes
    res2 = round_module.run_round(spec, _strategy_for(cfg), _recipe_for(cfg), data.train_cfg, pool.images,
                                  wrong, labeled, 5, 1, cfg.budget)
    assert res2.stats["loss"] != records[1]["train_loss"]


# -------------------------------------------- interrupted INSIDE a round, resumed bit for bit (issue 16)


def _interrupt_inside_round(monkeypatch, seed: int, r: int, at: int, inner: tuple | None = None) -> dict:
    """Make seed ``seed``'s round ``r`` raise KeyboardInterrupt in the middle of training: from optimiser
    step ``at`` on, the step itself raises (``inner`` None), or the next call of ``inner`` = (owner,
    attribute) made *by* the step raises (the SSL views, the loss module's forward).  Returns a dict
    whose "hit" says where it fired."""
    state = {"armed": False, "hit": None}
    real_fit = round_module.fit

    def fit(model, data, step, cfg, gen, device="cpu", progress=False, desc="train", unlabeled_ratio=0,
            on_epoch=None):
        def step_with_trap(m, batch):
            state["armed"] = desc == f"seed {seed} round {r}" and batch.step >= at
            if state["armed"] and inner is None:
                state["hit"] = ("step", batch.step)
                raise KeyboardInterrupt
            try:
                return step(m, batch)
            finally:
                state["armed"] = False

        return real_fit(model, data, step_with_trap, cfg, gen, device, progress, desc, unlabeled_ratio,
                        on_epoch)

    monkeypatch.setattr(round_module, "fit", fit)
    if inner is not None:
        owner, name = inner
        real = getattr(owner, name)

        def trap(*args, **kwargs):
            if state["armed"]:
                state["hit"] = (name, "inside the step")
                raise KeyboardInterrupt
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, name, trap)
    return state


def _ssl_views():
    from dalkit.training import ssl

    return ssl, "strong_view"


def _loss_module_forward():
    from dalkit.training.loss_prediction import LossPredictionModule

    return LossPredictionModule, "forward"


@pytest.mark.parametrize(("method", "changes", "inner", "r"), [
    # inside SSL training: while the strong views of an unlabeled batch are made (FixMatch + FA)
    ("fixmatch+fa:random", {"recipe_options": {"mu": 2}, "seeds": (0,), "rounds": 2}, _ssl_views, 1),
    # while the loss-prediction module trains (its forward inside the joint step)
    ("lplgrad", {}, _loss_module_forward, 2),
    # an open-set pool with the discard oracle, interrupted in round 1: the replay check must rebuild the
    # in-distribution initial set (it once took OOD picks for "already labeled" and refused to resume)
    ("entropy", {"open_set_fraction": 0.5}, None, 1),
], ids=["ssl-fixmatch-fa", "lplgrad", "open-set"])
def test_interrupted_inside_a_round_resumes_to_the_same_records(method, changes, inner, r, tmp_path, digits,
                                                                monkeypatch):
    cfg = config(method, **{"rounds": 3, "seeds": (0, 1), **changes})
    full = run_experiment(cfg, tmp_path / "A", splits=digits, progress=False)
    if changes.get("open_set_fraction"):  # the setting is exercised: OOD picks were made and discarded
        assert sum(rec["n_ood_selected"] for rec in full) > 0
        assert all(rec["n_trained"] < rec["n_labeled"] for rec in full if rec["n_ood_labeled"])

    b = tmp_path / "B"
    last = cfg.seeds[-1]
    hit = _interrupt_inside_round(monkeypatch, seed=last, r=r, at=3, inner=inner() if inner else None)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, b, splits=digits, progress=False)
    assert hit["hit"] is not None and (inner is None or hit["hit"][0] == inner()[1])
    monkeypatch.undo()
    partial = read_jsonl(b / "rounds.jsonl")
    assert [(x["seed"], x["round"]) for x in partial] == \
        [(s, k) for s in cfg.seeds[:-1] for k in range(cfg.rounds + 1)] + [(last, k) for k in range(r)]

    resumed = run_experiment(cfg, b, splits=digits, progress=False)
    assert without_timing(resumed) == without_timing(full)  # bit for bit: floats compared exactly
    assert read_jsonl(b / "rounds.jsonl")[:len(partial)] == partial  # replayed, not recomputed
    assert without_timing(read_jsonl(b / "rounds.jsonl")) == without_timing(read_jsonl(tmp_path / "A" /
                                                                                       "rounds.jsonl"))
    # and a finished run re-run with the same command changes nothing
    before = (b / "rounds.jsonl").read_bytes()
    assert run_experiment(cfg, b, splits=digits, progress=False) == read_jsonl(b / "rounds.jsonl")
    assert (b / "rounds.jsonl").read_bytes() == before

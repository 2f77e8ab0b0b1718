"""Selections checked against what a hand-written run would do: ActiveFT against a naive replay of its
optimisation (the paper's objective, written with loops, the same Adam steps from the same random
start), and an open-set pool whose discarded out-of-distribution picks must never be offered again."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dalkit.experiment import ExperimentConfig, run_experiment
from dalkit.experiment import round as round_module
from dalkit.experiment.runner import prepare_data
from dalkit.strategies._activeft import activeft_select, initial_centres
from dalkit.training import TrainConfig


def naive_activeft(features, fixed, budget, seed, tau, steps, lr):
    """Xie et al. 2023, section 3.2: L = -E_i[sim(f_i, theta_{c_i}) / tau]
    + E_j[log sum_{k != j} exp(sim(theta_j, theta_k) / tau)], the labeled features fixed centres; Adam on
    the centres from random samples' features; each centre then takes its nearest unused sample."""
    feats = [F.normalize(f, dim=0) for f in features.float()]
    fixed = [F.normalize(f, dim=0) for f in fixed.float()] if fixed is not None else []
    init = initial_centres(len(feats), budget, torch.Generator().manual_seed(seed))  # the seeding scheme
    centers = torch.stack([feats[i] for i in init.tolist()]).clone().requires_grad_(True)
    opt = torch.optim.Adam([centers], lr=lr)
    for _ in range(steps):
        theta = [c / c.norm() for c in centers]
        every = theta + fixed
        match = sum(torch.stack([f @ c for c in every]).max() for f in feats) / len(feats)
        div = 0.0
        for j, tj in enumerate(theta):
            div = div + torch.log(sum(torch.exp(tj @ tk / tau) for k, tk in enumerate(every) if k != j))
        loss = -match / tau + div / len(theta)
        opt.zero_grad()
        loss.backward()
        opt.step()
    theta = [c.detach() / c.detach().norm() for c in centers]
    taken, picks = set(), []
    for tj in theta:
        sims = [(float(f @ tj), i) for i, f in enumerate(feats) if i not in taken]
        best = max(sims)[1]
        taken.add(best)
        picks.append(best)
    return picks


def test_activeft_selection_is_the_naive_replay_and_depends_on_tau():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 5, generator=g)
    features = torch.cat([c + 0.5 * torch.randn(8, 5, generator=g) for c in centres])  # [32, 5]
    fixed = features[:2] + 0.1
    picks = {}
    for tau in (0.1, 1.0):
        got = activeft_select(features, fixed, 5, torch.Generator().manual_seed(3), tau=tau, steps=40,
                              lr=0.05)
        picks[tau] = naive_activeft(features, fixed, 5, 3, tau, 40, 0.05)
        assert got.tolist() == picks[tau], tau
    assert picks[0.1] != picks[1.0]  # tau changes the optimum on this pool


# ------------------------------------------------------------------------------------ open-set pools


def test_discarded_ood_picks_are_never_offered_again(digits, monkeypatch):
    """DM2 paper, Table 5 setting: the oracle discards an out-of-distribution pick; its budget is spent
    and it leaves the pool.  Each round the strategy must be offered exactly the pool minus every pick
    so far (discarded ones included), and no image it was offered may be a discarded pick."""
    cfg = ExperimentConfig(dataset="digits", model="cnn", method="random", initial_size=20, budget=25,
                           rounds=4, seeds=(0,), pool_size=200, device="cpu", open_set_fraction=0.5,
                           open_set_oracle="discard",
                           train=TrainConfig(epochs=1, batch_size=32, min_steps=2))
    data = prepare_data(cfg, digits)
    ood_bytes = [bytes(x.numpy()) for x in data.pool.images[data.ood_mask]]
    assert len(set(ood_bytes)) == len(ood_bytes)  # OOD images are distinct: bytes identify them
    offered: list[tuple[int, int, set[bytes]]] = []
    real_query = round_module.query

    def spy(strategy, ctx, budget):
        unl = ctx.pool_images[ctx.unlabeled_idx]
        offered.append((ctx.n_unlabeled, ctx.pool_size, {bytes(x.numpy()) for x in unl}))
        return real_query(strategy, ctx, budget)

    monkeypatch.setattr(round_module, "query", spy)
    records = run_experiment(cfg, None, splits=digits, progress=False)
    assert len(offered) == cfg.rounds
    discarded: set[bytes] = set()
    for rec, (n_unlabeled, _, seen) in zip(records, offered, strict=False):
        assert n_unlabeled == len(data.pool) - rec["n_labeled"], rec["round"]
        assert not seen & discarded, f"round {rec['round']} offered {len(seen & discarded)} discarded picks"
        sel = torch.tensor(rec["selected"], dtype=torch.long)
        discarded |= {bytes(x.numpy()) for x in data.pool.images[sel[data.ood_mask[sel]]]}
    assert len(discarded) > 10 and not math.isnan(records[-1]["test_acc"])


@pytest.mark.parametrize("oracle", ["random-label"])
def test_random_label_oracle_keeps_ood_picks_labeled(digits, oracle):
    """With the random-label oracle an OOD pick is trained on (with a label) and never offered again."""
    cfg = ExperimentConfig(dataset="digits", model="cnn", method="random", initial_size=20, budget=25,
                           rounds=2, seeds=(0,), pool_size=200, device="cpu", open_set_fraction=0.5,
                           open_set_oracle=oracle, train=TrainConfig(epochs=1, batch_size=32, min_steps=2))
    records = run_experiment(cfg, None, splits=digits, progress=False)
    picks = [i for r in records for i in r["selected"]]
    assert len(picks) == len(set(picks)) and records[-1]["n_trained"] == records[-1]["n_labeled"]

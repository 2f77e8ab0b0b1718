"""FixMatch, FreeMatch and the feature re-alignment module against hand-worked batches and naive loops;
method names TRAINING:STRATEGY; one short SSL+AL run end to end."""

from __future__ import annotations

import math

import pytest
import torch

from dalkit.errors import ConfigError, UnknownNameError
from dalkit.experiment import ExperimentConfig, run_experiment
from dalkit.experiment.methods import resolve_method, training_names
from dalkit.experiment.runner import resolved_options
from dalkit.training import TrainConfig, create_recipe
from dalkit.training.ssl import (
    FeatureQueues,
    FreeMatchThresholds,
    contrastive_loss,
    fairness_loss,
    fixmatch_mask,
    masked_pseudo_label_loss,
    similarity_loss,
)


def test_fixmatch_mask_and_loss_on_a_hand_worked_batch():
    probs_w = torch.tensor([[0.96, 0.04], [0.5, 0.5], [0.02, 0.98]])
    mask, pseudo = fixmatch_mask(probs_w, 0.95)
    assert mask.tolist() == [1.0, 0.0, 1.0] and pseudo[[0, 2]].tolist() == [0, 1]
    logits_s = torch.tensor([[0.0, 0.0], [1.0, 0.0], [math.log(3.0), 0.0]])
    # row 0: CE vs class 0 = log 2; row 1 masked; row 2: CE vs class 1 = -log(1/4) = log 4; mean over 3
    loss = masked_pseudo_label_loss(logits_s, pseudo, mask)
    assert loss.item() == pytest.approx((math.log(2) + math.log(4)) / 3)


def test_freematch_thresholds_follow_the_ema_formula():
    g = torch.Generator().manual_seed(0)
    lam, c = 0.6, 4
    state = FreeMatchThresholds(c, momentum=lam)
    tau, p_model, hist = 1 / c, [1 / c] * c, [1 / c] * c
    for _ in range(4):
        probs = torch.softmax(3 * torch.randn(6, c, generator=g), 1)
        mask, pseudo = state.update(probs)
        rows = probs.tolist()
        conf = [max(r) for r in rows]
        arg = [r.index(max(r)) for r in rows]
        tau = lam * tau + (1 - lam) * sum(conf) / len(rows)
        p_model = [lam * p_model[k] + (1 - lam) * sum(r[k] for r in rows) / len(rows) for k in range(c)]
        hist = [lam * hist[k] + (1 - lam) * arg.count(k) / len(rows) for k in range(c)]
        class_tau = [p / max(p_model) * tau for p in p_model]
        assert float(state.tau) == pytest.approx(tau, abs=1e-6)
        assert state.p_model.tolist() == pytest.approx(p_model, abs=1e-6)
        assert state.hist.tolist() == pytest.approx(hist, abs=1e-6)
        assert state.class_thresholds().tolist() == pytest.approx(class_tau, abs=1e-6)
        assert mask.tolist() == [float(conf[b] >= class_tau[arg[b]]) for b in range(len(rows))]
        assert pseudo.tolist() == arg


def test_fairness_loss_against_a_naive_loop():
    g = torch.Generator().manual_seed(1)
    c = 3
    probs_s = torch.softmax(torch.randn(8, c, generator=g), 1)
    mask = torch.tensor([1, 0, 1, 1, 0, 1, 1, 0], dtype=torch.float32)
    p_model, hist = torch.tensor([0.5, 0.3, 0.2]), torch.tensor([0.6, 0.4, 0.0])
    kept = [probs_s[b].tolist() for b in range(8) if mask[b] > 0]
    p_bar = [sum(r[k] for r in kept) / len(kept) for k in range(c)]
    h_bar = [sum(r.index(max(r)) == k for r in kept) / len(kept) for k in range(c)]

    def sum_norm(num, den):
        r = [n / d if d > 0 else 0.0 for n, d in zip(num, den, strict=True)]
        return [v / sum(r) for v in r]

    a, b = sum_norm(p_model.tolist(), hist.tolist()), sum_norm(p_bar, h_bar)
    expected = sum(ak * math.log(bk + 1e-12) for ak, bk in zip(a, b, strict=True))
    assert fairness_loss(probs_s, mask, p_model, hist).item() == pytest.approx(expected, rel=1e-5)
    assert fairness_loss(probs_s, torch.zeros(8), p_model, hist).item() == 0.0


def test_queues_are_fifo_and_weak_is_replaced():
    q = FeatureQueues(num_labeled=2, dim=2, length=3)
    for k in range(5):
        q.push(torch.tensor([0]), torch.tensor([[float(k), 0.0]]), torch.tensor([[float(k), 1.0]]))
    assert q.weak[0].tolist() == [4.0, 0.0]
    assert q.ordered_strong(0)[:, 0].tolist() == [2.0, 3.0, 4.0]  # the last T, oldest first
    assert q.valid()[1].tolist() == [False, False, False]
    q.push(torch.tensor([1]), torch.tensor([[9.0, 9.0]]), torch.tensor([[7.0, 7.0]]))
    assert q.ordered_strong(1).tolist() == [[7.0, 7.0]] and q.valid()[1].tolist() == [True, False, False]


def test_nearest_labeled_sample_over_all_queued_strong_features():
    q = FeatureQueues(num_labeled=3, dim=2, length=2)
    e1, e2, diag = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 1.0]])
    q.push(torch.tensor([0]), e1, e1)
    q.push(torch.tensor([0]), e1, -e2)  # sample 0's queue: e1, -e2
    q.push(torch.tensor([1]), e2, diag)  # sample 1's queue: diag
    # sample 2 never seen: never chosen
    queries = torch.tensor([[0.1, 1.0], [1.0, 0.05], [0.0, -3.0], [0.9, 1.1]])
    assert q.nearest(queries).tolist() == [1, 0, 0, 1]
    q.push(torch.tensor([0]), e1, e2)
    q.push(torch.tensor([0]), e1, e2)  # e1 and -e2 pushed out: sample 0 now holds e2, e2
    assert q.nearest(torch.tensor([[1.0, 0.05], [0.1, 1.0]])).tolist() == [1, 0]


def test_similarity_loss_against_a_naive_loop():
    g = torch.Generator().manual_seed(2)
    n_l, t, d, u = 4, 3, 5, 6
    q = FeatureQueues(n_l, d, t)
    for _ in range(4):
        q.push(torch.arange(n_l), torch.randn(n_l, d, generator=g), torch.randn(n_l, d, generator=g))
    z_w, z_s = torch.randn(u, d, generator=g), torch.randn(u, d, generator=g)
    total = 0.0
    for j in range(u):
        best, i_star = -2.0, -1
        for i in range(n_l):
            for s in range(t):
                feat = q.strong[i, s]
                cos = float(z_s[j] @ feat / (z_s[j].norm() * feat.norm()))
                if cos > best:
                    best, i_star = cos, i
        w = q.weak[i_star]
        total += 1 - float(z_w[j] @ w / (z_w[j].norm() * w.norm()))
    z_w.requires_grad_(True)
    loss = similarity_loss(z_w, z_s, q)
    assert loss.item() == pytest.approx(total / u, rel=1e-5)
    loss.backward()
    assert z_w.grad is not None and z_w.grad.abs().sum() > 0


@pytest.mark.parametrize("norm", ["batch", "sample"])
def test_contrastive_loss_against_a_naive_loop(norm):
    g = torch.Generator().manual_seed(3)
    b, d = 7, 4
    zs, zw = torch.randn(b, d, generator=g), torch.randn(b, d, generator=g)
    if norm == "batch":
        def prep(z):
            cols = []
            for i in range(d):
                col = z[:, i].tolist()
                mean = sum(col) / b
                std = math.sqrt(sum((v - mean) ** 2 for v in col) / b)
                cols.append([(v - mean) / std for v in col])
            return [[cols[i][r] for i in range(d)] for r in range(b)]
    else:
        def prep(z):
            return [[v / math.sqrt(sum(x * x for x in row)) for v in row] for row in z.tolist()]
    ps, pw = prep(zs), prep(zw)
    expected = sum((1 - sum(ps[r][i] * pw[r][i] for r in range(b)) / b) ** 2 for i in range(d))
    assert contrastive_loss(zs, zw, norm).item() == pytest.approx(expected, rel=1e-5)
    # identical views under batch standardisation: correlation 1 in every dimension
    if norm == "batch":
        assert contrastive_loss(zs, zs, norm).item() == pytest.approx(0.0, abs=1e-8)


def test_method_names_training_colon_strategy():
    spec = resolve_method("freematch+fa:coreset")
    assert (spec.strategy, spec.recipe, spec.recipe_options) == ("coreset", "freematch", {"fa": True})
    assert resolve_method("supervised:random").recipe == "supervised"
    assert resolve_method("fixmatch:activeft").strategy == "activeft"
    assert {"supervised", "fixmatch", "fixmatch+fa", "freematch", "freematch+fa"} <= set(training_names())
    for bad in ("freematch+fb:coreset", "supervised+fa:random", "fixmatch:nope", "nomatch:random"):
        with pytest.raises(UnknownNameError):
            resolve_method(bad)
    with pytest.raises(ConfigError, match="mu"):
        create_recipe("fixmatch", mu=0)
    with pytest.raises(ConfigError, match="fa_queue"):
        create_recipe("freematch", fa=True, fa_queue=0)


def test_ssl_al_run_end_to_end_is_seeded(digits):
    cfg = ExperimentConfig(dataset="digits", method="fixmatch+fa:coreset", initial_size=10, budget=5,
                           rounds=1, seeds=(0,), pool_size=300, test_size=100, device="cpu",
                           train=TrainConfig(epochs=1, min_steps=6, batch_size=16),
                           recipe_options={"mu": 2, "fa_queue": 3, "tau": 0.5})
    opts = resolved_options(cfg)["recipe"]
    assert opts["name"] == "fixmatch" and opts["fa"] is True and opts["flip"] is False
    assert opts["fa_queue"] == 3 and opts["mu"] == 2
    a = run_experiment(cfg, None, splits=digits, progress=False)
    b = run_experiment(cfg, None, splits=digits, progress=False)
    assert [r["selected"] for r in a] == [r["selected"] for r in b] and len(a[0]["selected"]) == 5
    assert [r["test_acc"] for r in a] == [r["test_acc"] for r in b]
    assert [r["train_loss"] for r in a] != [r["train_loss"] for r in run_experiment(
        cfg.replace(method="fixmatch:coreset"), None, splits=digits, progress=False)]

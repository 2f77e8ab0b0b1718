"""Your own model and your own data: the model adapter (any nn.Module whose output is logits), the
``features`` model (an MLP head on user embeddings) and float pools.

The adapter is checked against the user's own layers (embedding = the input of the final nn.Linear,
computed here by slicing the network by hand), and a user module computing the same function as
dalkit's CNN must give the same selections for every strategy.  The contract suite and the selection
oracles over the three model kinds live in tests/test_contract.py and tests/test_selection.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dalkit.data.dataset import channel_stats, to_float
from dalkit.errors import ConfigError, DatasetFormatError
from dalkit.models import FeatureMLP, ModelAdapter, adapt_model, create_model
from dalkit.strategies import STRATEGIES, QueryContext, create_strategy, query
from dalkit.training import TrainConfig, TrainSet, accuracy, fit, supervised_step
from dalkit.training.loss_prediction import attach_loss_module

README = Path(__file__).parents[1] / "README.md"


def _x(digits, n: int = 16) -> torch.Tensor:
    return to_float(digits.train.images[:n])


# ----------------------------------------------------------------------------- the adapter's outputs


def test_sequential_embedding_is_the_input_of_the_final_linear(digits, user_models):
    model = user_models("sequential")
    net = model.net
    x = _x(digits)
    with torch.no_grad():
        logits, emb, stages = model.forward_all(x)
        by_hand = net[:4](x)  # Flatten, Linear, ReLU, Dropout (eval: identity): what enters net[4]
        assert torch.equal(logits, net(x)) and torch.equal(model(x), net(x))
        assert torch.equal(emb, by_hand) and torch.equal(model.embed(x), by_hand)
        assert torch.equal(model.head(emb), logits)
    assert model.classifier is net[4] and model.classifier_name == "4"
    assert (model.num_classes, model.embed_dim, model.dropout_p) == (10, 48, 0.3)
    # stages: the top-level children with parameters other than the classifier (here the hidden Linear)
    assert model.stage_names == ("1",) and len(stages) == 1 and torch.equal(stages[0], net[1](net[0](x)))
    # the classifier is not registered twice: the state dict is the net's, prefixed
    assert sorted(model.state_dict()) == sorted(f"net.{k}" for k in net.state_dict())


def test_user_module_with_batchnorm_and_dropout(digits, user_models):
    model = user_models("user-bn")
    net = model.net
    x = _x(digits)
    with torch.no_grad():
        _, emb, stages = model.forward_all(x)
        assert torch.equal(emb, net.hidden(net.features(x)))
    assert model.classifier is net.out and model.dropout_p == 0.25
    assert model.stage_names == ("features", "hidden")
    assert [tuple(s.shape[1:]) for s in stages] == [(8, 4, 4), (32,)]
    # MC dropout: eval mode kept, BatchNorm running statistics untouched, K distinct passes
    ctx = QueryContext(model, digits.train.images[:200], torch.arange(20), digits.train.labels[:20], 10,
                       torch.Generator().manual_seed(0))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    mc = ctx.mc_probs(6)
    assert mc.shape == (6, 180, 10) and not torch.allclose(mc[0], mc[1])
    assert not model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # mc=blocks: dropout after the named stage blocks, BatchNorm statistics restored
    blocks = ctx.mc_probs(3, mode="blocks")
    assert blocks.shape == (3, 180, 10)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_named_classifier_explicit_dropout_and_stages(digits):
    from usernets import Net

    torch.manual_seed(0)
    net = Net()
    x = _x(digits, 8)
    model = ModelAdapter(net, embedding_layer="fc1", stages=["body.1"], dropout=0.2).probe(x)
    assert model.classifier is net.fc1 and model.dropout_p == 0.2 and model.train_dropout == 0.2
    with torch.no_grad():
        model.eval()
        _, emb, stages = model.forward_all(x)
        assert torch.equal(emb, net.body(x)) and torch.equal(stages[0], net.body[1](net.body[0](x)))
    # the added embedding dropout acts in training only, with the given p, right before the classifier
    model.train()
    torch.manual_seed(1)
    out = model(x)
    torch.manual_seed(1)
    assert torch.equal(out, net.fc1(F.dropout(net.body(x), 0.2, True)))
    assert not torch.equal(out, net(x))
    model.eval()
    assert torch.equal(model(x), net(x))


def test_adapter_on_a_float_pool_of_embeddings():
    """A float pool [N, D] (numpy) and a plain MLP: every strategy returns a valid selection, and DM2
    mixes rows of the pool (its mixed inputs are float rows, not images)."""
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, (4, 12))
    y = np.repeat(np.arange(4), 40)
    pool = (centres[y] + rng.normal(0, 1, (160, 12))).astype(np.float32)  # numpy, float32, any scale
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 4))
    lab = torch.tensor([0, 40, 80, 120, 1, 41, 81, 121])
    for name in STRATEGIES.names():
        model = net
        if getattr(STRATEGIES.get(name), "requires_recipe", ()):
            model = attach_loss_module(adapt_model(nn.Sequential(*net), torch.from_numpy(pool[:2]),
                                                   input_range=None), (12,))
        ctx = QueryContext(model, pool, lab, torch.from_numpy(y)[lab], 4, torch.Generator().manual_seed(0))
        assert ctx.model.input_range is None  # float pool: FGSM would not clip to [0, 1]
        sel = query(create_strategy(name), ctx, 7)
        assert sel.indices.unique().numel() == 7 and not bool(ctx.labeled_mask[sel.indices].any()), name


# ------------------------------------------------------- same function as dalkit's CNN, same selections


class TwinCNN(nn.Module):
    """dalkit's DigitCNN written as a user would (no dalkit base class): the same layers in the same
    parameter order (classifier first, as DalkitModel registers it), the same normalisation.  With
    ``fc_block`` the hidden layer is a block of its own (``head``: flatten, fc, ReLU), as DigitCNN's ``fc``
    is one of the blocks MC dropout ``mc=blocks`` acts after."""

    def __init__(self, ref, fc_block: bool = False) -> None:
        super().__init__()
        self.classifier = nn.Linear(ref.embed_dim, ref.num_classes)
        self.register_buffer("mean", ref.input_mean.clone())
        self.register_buffer("std", ref.input_std.clone())
        self.block1 = nn.Sequential(nn.Conv2d(1, 32, 5, stride=2, padding=2), nn.ReLU())
        self.block2 = nn.Sequential(nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU())
        fc = nn.Linear(ref.fc.in_features, ref.embed_dim)
        if fc_block:
            self.head = nn.Sequential(nn.Flatten(), fc, nn.ReLU())
        else:
            self.fc = fc
        self.drop = nn.Dropout(ref.dropout_p)
        with torch.no_grad():
            for mine, theirs in ((self.classifier, ref.classifier), (self.block1[0], ref.conv1),
                                 (self.block2[0], ref.conv2), (fc, ref.fc)):
                mine.weight.copy_(theirs.weight)
                mine.bias.copy_(theirs.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.block2(self.block1((x - self.mean) / self.std))
        h = self.head(s) if hasattr(self, "head") else F.relu(self.fc(s.flatten(1)))
        return self.classifier(self.drop(h))


def _twin(ref, example, fc_block: bool = False):
    stages = ["block1", "block2", "head"] if fc_block else ["block1", "block2"]
    twin = ModelAdapter(TwinCNN(ref, fc_block), stages=stages).probe(example).eval()
    module = getattr(ref, "loss_module", None)
    if module is not None:
        attach_loss_module(twin, (1, 8, 8))
        twin.loss_module.load_state_dict(module.state_dict())
    return twin


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_adapter_selects_what_dalkits_own_model_selects(name, make_context, model_for, digits_model):
    ref = model_for(name) or digits_model
    twin = _twin(ref, _x_pool(make_context))
    a = make_context(seed=3, extra_labeled=30, model=ref)
    b = make_context(seed=3, extra_labeled=30, model=twin)
    assert isinstance(b.model, ModelAdapter)
    assert torch.equal(a.logits(), b.logits()) and torch.equal(a.embeddings(), b.embeddings())
    sel_a = query(create_strategy(name), a, 12)
    sel_b = query(create_strategy(name), b, 12)
    assert sel_a.indices.tolist() == sel_b.indices.tolist()


# options that take another path through the model: MC dropout after every block (the twin's blocks
# are DigitCNN's: conv1, conv2, fc; ReLU commutes with dropout's 0/1 mask), and the gradient-norm
# strategies on a model carrying a trained loss-prediction module (its parameters are not w_main)
@pytest.mark.parametrize(("name", "options", "lp"), [
    ("bald", {"mc": "blocks"}, False), ("entropy-bayesian", {"mc": "blocks"}, False),
    ("entropy-bayesian", {"mc": "blocks", "p": 0.5, "k": 5}, False),
    ("lplgrad", {}, True), ("lplgrad", {"norm": "layer-sum"}, True),
    ("ent-gradnorm", {}, True), ("ent-gradnorm", {"norm": "frobenius"}, True),
    ("learning-loss", {}, True),
])
def test_adapter_selects_what_dalkits_own_model_selects_with_options(name, options, lp, make_context,
                                                                       digits_model, digits_model_lp):
    ref = digits_model_lp if lp else digits_model
    twin = _twin(ref, _x_pool(make_context), fc_block=options.get("mc") == "blocks")
    a = make_context(seed=3, extra_labeled=30, model=ref)
    b = make_context(seed=3, extra_labeled=30, model=twin)
    if options.get("mc") == "blocks":
        k, p = options.get("k", 20), options.get("p", ref.dropout_p)
        assert torch.equal(a.mc_probs(k, p, mode="blocks"), b.mc_probs(k, p, mode="blocks"))
    sel_a = query(create_strategy(name, **options), a, 12)
    sel_b = query(create_strategy(name, **options), b, 12)
    assert sel_a.indices.tolist() == sel_b.indices.tolist()
    assert torch.allclose(sel_a.scores, sel_b.scores, rtol=1e-5, atol=1e-6)


def _x_pool(make_context) -> torch.Tensor:
    ctx = make_context()
    return ctx.inputs(torch.arange(2))


# ----------------------------------------------------------------------------- refused models


@pytest.mark.parametrize(("builder", "kw", "message"), [
    ("no_linear", {}, "has no nn.Linear layer"),
    ("vector_output", {}, r"returned shape \(2,\) for a batch of 2; dalkit needs logits \[B, C\]"),
    ("softmax_output", {}, "is not the output of its nn.Linear '1'"),
    ("Net", {"embedding_layer": "fc9"},
     "embedding_layer 'fc9' is not a layer of Net; its nn.Linear layers are: 'body.1', 'fc1'"),
    ("Net", {"embedding_layer": "body.2"}, "'body.2' of Net is a BatchNorm1d, not an nn.Linear"),
    ("Net", {"embedding_layer": "body.1"}, "is not the output of its nn.Linear 'body.1'"),
    ("Net", {"stages": ["nope"]}, "stage 'nope' is not a layer of Net"),
])
def test_models_that_cannot_be_adapted_say_what_is_missing(builder, kw, message, digits):
    import usernets

    factory = getattr(usernets, builder)
    args = {"Net": (), "vector_output": (10,)}.get(builder, (10, (1, 8, 8)))
    net = factory(*args)
    with pytest.raises(ConfigError, match=message):
        ModelAdapter(net, **kw).probe(_x(digits, 2))
    if not kw:  # and when QueryContext adapts the module itself
        with pytest.raises(ConfigError, match=message):
            QueryContext(net, digits.train.images[:50], torch.arange(10), digits.train.labels[:10], 10,
                         torch.Generator())


def test_bad_pools_are_refused(digits_model):
    pool = np.random.default_rng(0).normal(size=(30, 5)).astype(np.float32)
    pool[9, :2] = 3e38  # finite values whose row sum overflows: not a bad row
    QueryContext(nn.Linear(5, 3), pool, torch.arange(3), torch.arange(3), 3, torch.Generator())
    pool[4, 1] = np.nan
    pool[17, 0] = -np.inf
    with pytest.raises(DatasetFormatError, match=r"2 rows hold NaN or inf values \(rows 4, 17\)"):
        QueryContext(nn.Linear(5, 3), pool, torch.arange(3), torch.arange(3), 3, torch.Generator())
    with pytest.raises(ConfigError, match="at least 2-D"):
        QueryContext(nn.Linear(5, 3), np.zeros(30, np.float32), torch.arange(3), torch.arange(3), 3,
                     torch.Generator())


# ----------------------------------------------------------------------------- the features model


def _digit_cnn_embeddings(images: torch.Tensor, labels: torch.Tensor, encode: list[torch.Tensor],
                          epochs: int, seed: int = 0) -> list[torch.Tensor]:
    """A digit CNN trained on (images, labels) as the "foundation model"; its embeddings of ``encode``."""
    mean, std = channel_stats(images)
    torch.manual_seed(seed)
    cnn = create_model("cnn", 1, 10, mean, std, image_size=images.shape[-1])
    fit(cnn, TrainSet(images, labels), supervised_step, TrainConfig(epochs=epochs, batch_size=128),
        torch.Generator().manual_seed(seed))
    cnn.eval()
    with torch.no_grad():
        return [torch.cat([cnn.embed(to_float(x[i:i + 2048])) for i in range(0, len(x), 2048)])
                for x in encode]


def test_features_model_on_mnist_embeddings_matches_the_head_trained_directly(mnist):
    """Real MNIST embeddings of a CNN (trained here on 3,000 other images): dalkit's features model trained
    by fit() on 500 labeled rows reaches the test accuracy of the same MLP head trained by a plain torch
    loop written here."""
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(mnist.train), generator=g)
    enc_idx, lab_idx = perm[:3000], perm[3000:3500]
    test_idx = torch.randperm(len(mnist.test), generator=g)[:2000]
    z_lab, z_test = _digit_cnn_embeddings(mnist.train.images[enc_idx], mnist.train.labels[enc_idx],
                                          [mnist.train.images[lab_idx], mnist.test.images[test_idx]],
                                          epochs=4)
    y_lab, y_test = mnist.train.labels[lab_idx], mnist.test.labels[test_idx]
    mean, std = channel_stats(z_lab)
    epochs, batch, hidden = 30, 64, 64

    m, s = torch.tensor(mean), torch.tensor(std)
    acc_dalkit, acc_direct = [], []
    for seed in range(3):
        torch.manual_seed(seed)
        model = FeatureMLP(z_lab.shape[1], 10, mean, std, hidden=hidden, depth=1, dropout=0.3)
        fit(model, TrainSet(z_lab, y_lab), supervised_step, TrainConfig(epochs=epochs, batch_size=batch),
            torch.Generator().manual_seed(seed))
        acc_dalkit.append(accuracy(model, z_test, y_test))

        torch.manual_seed(seed)  # the same head, by hand
        head = nn.Sequential(nn.Linear(z_lab.shape[1], hidden), nn.ReLU(), nn.Dropout(0.3),
                             nn.Linear(hidden, 10))
        opt = torch.optim.Adam(head.parameters(), lr=1e-3)
        for _ in range(epochs):
            for rows in torch.randperm(len(z_lab)).split(batch):
                loss = F.cross_entropy(head((z_lab[rows] - m) / s), y_lab[rows])
                opt.zero_grad()
                loss.backward()
                opt.step()
        head.eval()
        with torch.no_grad():
            acc_direct.append(float((head((z_test - m) / s).argmax(1) == y_test).float().mean()))
    mean_dalkit, mean_direct = float(np.mean(acc_dalkit)), float(np.mean(acc_direct))
    print(f"features model {acc_dalkit}, head trained directly {acc_direct}")
    assert mean_direct > 0.9, acc_direct  # the embeddings are good: the comparison means something
    assert mean_dalkit >= mean_direct - 0.01, (acc_dalkit, acc_direct)


def test_features_model_depth_zero_is_a_linear_head():
    model = FeatureMLP(6, 3, [1.0] * 6, [2.0] * 6, depth=0, dropout=0.0).eval()
    x = torch.randn(5, 6)
    with torch.no_grad():
        logits, emb, stages = model.forward_all(x)
        assert torch.allclose(emb, (x - 1) / 2) and model.embed_dim == 6 and len(stages) == 1
        assert torch.allclose(logits, (x - 1) / 2 @ model.classifier.weight.T + model.classifier.bias)
    assert FeatureMLP(6, 3, depth=3, hidden=7).layers.__len__() == 3
    with pytest.raises(ConfigError, match="depth must be an integer >= 0"):
        FeatureMLP(6, 3, depth=-1)


# ----------------------------------------------------------------------------- the README example


def _readme_block(heading: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(heading)
    match = re.search(r"```python\n(.*?)```", text[start:], flags=re.S)
    assert match, f"no python block after {heading!r}"
    return match.group(1)


def test_the_readme_own_model_example_runs_as_printed():
    code = _readme_block("#### Your own model")
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README's code, as printed
    for name in ("picked", "picked_by"):
        assert name in namespace, name
    picked = namespace["picked"]
    assert picked.numel() == 10 and picked.unique().numel() == 10
    assert len(namespace["picked_by"]) >= 5


# ----------------------------------------------------------------------------- end to end: --features


def test_features_run_beats_random_on_digits_embeddings(tmp_path, digits, capsys):
    """``dalkit run --model features --features emb.npy``: embeddings of the 1,497 training digits from a
    CNN trained on the 300 test digits (the encoder never sees the pool); 20 + 5 x 20 labels, 3 seeds.
    Margin's mean AUBC and final accuracy beat random's (measured: AUBC 90.85 vs 87.68, final 94.87 vs
    91.53; README, "Your embeddings")."""
    import json

    from dalkit.cli import main

    (z,) = _digit_cnn_embeddings(digits.test.images, digits.test.labels, [digits.train.images], epochs=30)
    np.save(tmp_path / "emb.npy", z.numpy())
    rc = main(["run", "--dataset", "digits", "--model", "features", "--features", str(tmp_path / "emb.npy"),
               "--method", "random,margin", "--initial-size", "20", "--budget", "20", "--rounds", "5",
               "--seeds", "0,1,2", "--device", "cpu", "--out", str(tmp_path / "runs"), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    runs = tmp_path / "runs"
    summary = {m: json.loads((runs / m / "summary.json").read_text()) for m in ("random", "margin")}
    records = {m: [json.loads(line) for line in (runs / m / "rounds.jsonl").read_text().splitlines()]
               for m in ("random", "margin")}
    # the pool is the 1,497 - 299 rows not held out as the test set; every round trains on what was labeled
    for recs in records.values():
        assert sorted({r["n_labeled"] for r in recs}) == [20, 40, 60, 80, 100, 120]
        assert all(max(r["selected"], default=0) < 1497 - 299 for r in recs)

    def final(m: str) -> float:
        return float(np.mean([r["test_acc"] for r in records[m] if r["round"] == 5]))

    aubc = {m: summary[m]["aubc_mean"] for m in summary}
    assert aubc["margin"] > aubc["random"] + 0.01, aubc
    assert final("margin") > final("random") + 0.01, (final("margin"), final("random"))


# ----------------------------------------------------------------------------- the runner


def _run(tmp_path, name: str, **kw):
    from dalkit.experiment import ExperimentConfig, run_experiment

    base = dict(dataset="digits", initial_size=20, budget=10, rounds=2, seeds=(0,), device="cpu",
                train=TrainConfig(epochs=3, batch_size=32, min_steps=150))
    cfg = ExperimentConfig(**{**base, **kw})
    return run_experiment(cfg, tmp_path / name, progress=False)


@pytest.mark.parametrize("method", ["dm2-at", "learning-loss", "bald"])
def test_runner_trains_and_queries_a_users_builder(tmp_path, method):
    """``model: usernets:Net`` (an import path): every round builds a fresh adapted model (seeded: the
    same records twice), trains it with the method's recipe (FGSM pairs, loss prediction) and queries."""
    opts = {"stages": ["body"]}
    a = _run(tmp_path, "a", model="usernets:Net", method=method, model_options=opts, model_dropout=0.2)
    b = _run(tmp_path, "b", model="usernets:Net", method=method, model_options=opts, model_dropout=0.2)
    assert [r["selected"] for r in a] == [r["selected"] for r in b] and len(a) == 3
    assert [r["test_acc"] for r in a] == [r["test_acc"] for r in b]
    assert a[-1]["test_acc"] > 0.5
    if method == "dm2-at":
        assert a[-1]["n_adversarial"] == 20


def test_float_npz_pool_runs_with_the_features_model_and_a_users_model(tmp_path, digits):
    """``dataset: npz`` with 2-D float rows is a float pool: the features model runs on it without
    --features, and so does a user's model; DM2 mixes rows and DM2-AT perturbs them unclipped."""
    from dalkit.data import load_dataset
    from dalkit.training.adversarial import fgsm

    # rows of 64 floats on the digits' own 0..16 grey scale (not pixels in [0, 1]): a tabular float pool
    x_tr = digits.train.images.reshape(len(digits.train), -1).numpy().astype(np.float32) * (16 / 255)
    x_te = digits.test.images.reshape(len(digits.test), -1).numpy().astype(np.float32) * (16 / 255)
    (tmp_path / "data" / "npz").mkdir(parents=True)
    np.savez(tmp_path / "data" / "npz" / "data.npz", x_train=x_tr, y_train=digits.train.labels.numpy(),
             x_test=x_te, y_test=digits.test.labels.numpy())
    splits = load_dataset("npz", tmp_path / "data")
    assert splits.train.is_float and splits.train.images.shape == (1497, 64)
    assert torch.equal(splits.train.images, torch.from_numpy(x_tr))  # values kept as they are
    root = str(tmp_path / "data")
    recs = _run(tmp_path, "f", dataset="npz", data_root=root, model="features", method="dm2-at",
                model_options={"hidden": 32, "depth": 2})
    assert recs[-1]["n_adversarial"] == 20 and recs[-1]["test_acc"] > 0.45
    recs = _run(tmp_path, "u", dataset="npz", data_root=root, model="usernets:sequential", method="dm2")
    assert len(recs[-1]["selected"]) == 0 and len(recs[0]["selected"]) == 10
    # FGSM on a float pool: x + eps * sign(grad), not clipped to [0, 1]
    model = FeatureMLP(64, 10, dropout=0.0).eval()
    x = torch.from_numpy(x_tr[:8]) * 10
    h = fgsm(model, x, torch.zeros(8, dtype=torch.long), 0.5)
    assert torch.allclose((h - x).abs(), torch.full_like(x, 0.5)) and float(h.max()) > 1.5


def test_npz_kind_float_keeps_image_shaped_floats(tmp_path):
    from dalkit.data.readers import read_npz

    x = np.random.default_rng(0).normal(size=(6, 1, 4, 4)).astype(np.float32)  # standardised "images"
    y = np.arange(6) % 2
    np.savez(tmp_path / "a.npz", x_train=x, y_train=y, x_test=x[:2], y_test=y[:2], kind="float")
    train, test = read_npz(tmp_path / "a.npz")
    assert train.is_float and torch.equal(train.images, torch.from_numpy(x))
    assert test.images.shape == (2, 1, 4, 4)
    x[2, 0, 1, 1] = np.inf
    np.savez(tmp_path / "b.npz", x_train=x, y_train=y, x_test=x[:2], y_test=y[:2], kind="float")
    with pytest.raises(DatasetFormatError, match=r"x_train holds NaN or inf in 1 rows \(first: 2\)"):
        read_npz(tmp_path / "b.npz")


@pytest.mark.parametrize("mixing", ["group", "pairs"])
def test_dm2_mixes_feature_rows_as_the_naive_loop_does(mixing):
    """The features model on a float pool of rows: DM2's selection is the top-k of the naive per-anchor
    loop of tests/test_dm2.py, which mixes the rows themselves (Eq. 7 in feature space)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_dm2_tests", Path(__file__).parent / "test_dm2.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(3), 30)
    pool = torch.from_numpy((rng.normal(0, 2, (3, 6))[y] + rng.normal(0, 1, (90, 6))).astype(np.float32))
    torch.manual_seed(0)
    model = FeatureMLP(6, 3, *channel_stats(pool), hidden=16, dropout=0.0)
    lab = torch.tensor([0, 1, 30, 31, 60, 61])
    fit(model, TrainSet(pool[lab], torch.from_numpy(y)[lab]), supervised_step,
        TrainConfig(epochs=20, batch_size=6), torch.Generator().manual_seed(0))
    model.eval()

    def ctx() -> QueryContext:
        return QueryContext(model, pool, lab, torch.from_numpy(y)[lab], 3, torch.Generator().manual_seed(0))

    dm2 = create_strategy("dm2", n_neighbors=3, mixing=mixing, weights="uniform", lam=0.6, candidates=None)
    sel = query(dm2, ctx(), 8)
    c = ctx()
    naive = [-v for v in module.naive_dm2_confidence(c, 3, mixing, "uniform", 0.6)]
    by_index = dict(zip(c.unlabeled_idx.tolist(), naive, strict=True))
    chosen = set(sel.indices.tolist())
    assert min(by_index[i] for i in chosen) >= max(s for i, s in by_index.items() if i not in chosen) - 1e-6
    assert max(naive) - min(naive) > 1e-3

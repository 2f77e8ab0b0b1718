"""NoiseStability: relative weight noise, deviation features against a deep-copy loop, the selection."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dalkit.errors import ConfigError
from dalkit.models import DalkitModel, create_model
from dalkit.strategies import create_strategy, query
from dalkit.strategies._noise_stability import (
    deviation_uncertainty,
    kcenter_greedy_from_origin,
    noise_deviation_features,
    perturbed_names,
    weight_noise,
)


class TinyBNNet(DalkitModel):
    """conv -> BatchNorm -> ReLU -> global pool -> fc: small, with every kind of parameter."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__(in_channels, num_classes, 6)
        self.conv = nn.Conv2d(in_channels, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)

    def forward_features(self, x):
        s = F.relu(self.bn(self.conv(self.normalize(x))))
        return F.adaptive_avg_pool2d(s, 1).flatten(1), [s]


def _bn_net(seed: int = 0) -> TinyBNNet:
    torch.manual_seed(seed)
    net = TinyBNNet()
    with torch.no_grad():  # non-trivial BatchNorm state, as after training
        net.bn.running_mean.uniform_(-0.5, 0.5)
        net.bn.running_var.uniform_(0.5, 2.0)
        net.bn.weight.uniform_(0.5, 1.5)
        net.bn.bias.uniform_(-0.2, 0.2)
    return net.eval()


def _naive_features(model: nn.Module, images: torch.Tensor, k: int, xi: float, seed: int,
                    perturb: str) -> torch.Tensor:
    """K deep copies of the model, each with the noise added in place, outputs compared in a loop."""
    g = torch.Generator().manual_seed(seed)
    x = images.float() / 255.0
    model.eval()
    with torch.no_grad():
        clean = torch.softmax(model(x), 1)
        out = torch.empty(images.shape[0], k, clean.shape[1])
        for j in range(k):
            noisy = copy.deepcopy(model)
            for name, p in noisy.named_parameters():
                if perturb == "weights" and name.rsplit(".", 1)[-1] != "weight":
                    continue
                z = torch.randn(p.shape, generator=g).double()
                dw = z * (xi * p.double().norm() / z.norm())  # ||dW|| = xi ||W||
                p.add_(dw.float())
            noisy_out = torch.softmax(noisy(x), 1)
            for i in range(images.shape[0]):
                out[i, j] = (noisy_out[i] - clean[i]) / clean[i].norm()
    return out


@pytest.mark.parametrize("xi", [1e-3, 0.05])
@pytest.mark.parametrize("net", ["cnn", "bn"])
def test_noise_norm_is_xi_times_weight_norm_for_every_tensor(xi, net):
    model = create_model("cnn", 1, 10) if net == "cnn" else _bn_net()
    params = dict(model.named_parameters())  # convolutions, linear layers, BatchNorm, biases
    noise = weight_noise(params, xi, torch.Generator().manual_seed(0))
    assert noise.keys() == params.keys()
    for name, w in params.items():
        assert noise[name].shape == w.shape and noise[name].dtype == w.dtype
        expected = xi * w.detach().double().norm()
        assert torch.allclose(noise[name].double().norm(), expected, rtol=1e-5, atol=0), name
    # a Gaussian direction, not a rescaled copy of W (checked on the large tensors: cos ~ 1/sqrt(n))
    for name, w in params.items():
        if w.numel() > 10_000:
            assert abs(F.cosine_similarity(noise[name].flatten(), w.detach().flatten(), dim=0)) < 0.05


def test_perturbed_names_weights_and_all():
    model = _bn_net()
    assert perturbed_names(model, "weights") == ["classifier.weight", "conv.weight", "bn.weight"]
    assert perturbed_names(model, "all") == [n for n, _ in model.named_parameters()]
    with pytest.raises(ConfigError, match="perturb"):
        perturbed_names(model, "biases")


@pytest.mark.parametrize("perturb", ["weights", "all"])
def test_features_match_a_deep_copy_loop(perturb, digits_pool):
    model = _bn_net(1)
    images = digits_pool.images[:40]
    fast = noise_deviation_features(model, images, 4, 0.02, torch.Generator().manual_seed(3),
                                    perturb=perturb, batch_size=16)
    naive = _naive_features(model, images, 4, 0.02, 3, perturb)
    assert fast.shape == (40, 4, 10)
    assert fast.abs().max() > 1e-4  # the noise does move the outputs
    assert torch.allclose(fast, naive, rtol=1e-4, atol=1e-6)


def test_features_on_the_trained_cnn_match_the_loop(digits_model, digits_pool):
    images = digits_pool.images[:30]
    fast = noise_deviation_features(digits_model, images, 3, 1e-3, torch.Generator().manual_seed(5))
    naive = _naive_features(digits_model, images, 3, 1e-3, 5, "weights")
    assert torch.allclose(fast, naive, rtol=1e-3, atol=1e-7)


def test_zero_noise_gives_zero_deviation(digits_model, digits_pool):
    feats = noise_deviation_features(digits_model, digits_pool.images[:50], 3, 0.0,
                                     torch.Generator().manual_seed(0), output="logits")
    assert torch.equal(feats, torch.zeros_like(feats))
    assert torch.equal(deviation_uncertainty(feats), torch.zeros(50))


def test_logits_output_and_no_normalisation(digits_pool):
    model = _bn_net(2)
    images = digits_pool.images[:10]
    raw = noise_deviation_features(model, images, 2, 0.01, torch.Generator().manual_seed(1), output="logits",
                                   normalize=False)
    normed = noise_deviation_features(model, images, 2, 0.01, torch.Generator().manual_seed(1),
                                      output="logits")
    with torch.no_grad():
        clean_norm = model(images.float() / 255).norm(dim=1)
    assert torch.allclose(normed, raw / clean_norm[:, None, None], rtol=1e-5, atol=1e-8)


def test_model_and_its_mode_are_untouched(digits_pool):
    model = _bn_net(3)
    model.train()  # a model handed over in training mode stays in training mode ...
    model.bn.eval()  # ... with a frozen BatchNorm staying frozen
    state = {k: v.clone() for k, v in model.state_dict().items()}
    noise_deviation_features(model, digits_pool.images[:20], 3, 0.1, torch.Generator().manual_seed(0))
    assert model.training and model.conv.training and not model.bn.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k  # parameters and BatchNorm running statistics


def test_kcenter_from_origin_matches_a_naive_loop():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 6, generator=g) * torch.rand(50, 1, generator=g)
    picks = kcenter_greedy_from_origin(x, 12, torch.Generator().manual_seed(1)).tolist()
    centers, expected = [torch.zeros(6)], []
    for _ in range(12):
        dist = [min(float((x[i] - c).norm()) for c in centers) if i not in expected else -1.0
                for i in range(50)]
        best = max(range(50), key=lambda i: dist[i])
        expected.append(best)
        centers.append(x[best])
    assert picks == expected
    assert picks[0] == int(x.norm(dim=1).argmax())  # the largest deviation comes first


def test_strategy_selects_by_kcenter_over_the_features(make_context):
    ctx = make_context(seed=4, extra_labeled=20)
    strategy = create_strategy("noise-stability", k=5)
    sel = query(strategy, ctx, 15)
    feats = noise_deviation_features(ctx.model, ctx.pool_images[ctx.unlabeled_idx], 5, 1e-3,
                                     torch.Generator().manual_seed(4), batch_size=ctx.batch_size)
    # the same generator stream: the noise first, then the k-center tie-break permutation
    g = torch.Generator().manual_seed(4)
    noise_deviation_features(ctx.model, ctx.pool_images[ctx.unlabeled_idx], 5, 1e-3, g)
    expected = kcenter_greedy_from_origin(feats.flatten(1), 15, g)
    assert sel.indices.tolist() == ctx.unlabeled_idx[expected].tolist()
    unc = deviation_uncertainty(feats)
    assert torch.allclose(sel.scores, unc[expected])
    assert int(sel.indices[0]) == int(ctx.unlabeled_idx[unc.argmax()])


def test_uncertainty_selection_takes_the_largest_deviations(make_context):
    ctx = make_context(seed=2)
    sel = query(create_strategy("noise-stability", k=4, selection="uncertainty"), ctx, 10)
    feats = noise_deviation_features(ctx.model, ctx.pool_images[ctx.unlabeled_idx], 4, 1e-3,
                                     torch.Generator().manual_seed(2))
    unc = deviation_uncertainty(feats)
    assert sorted(sel.indices.tolist()) == sorted(ctx.unlabeled_idx[unc.topk(10).indices].tolist())


@pytest.mark.parametrize("options, subset", [({}, None), ({}, 50),
                                             ({"selection": "uncertainty", "perturb": "all"}, None)])
def test_contract_budget_unique_unlabeled_deterministic(options, subset, make_context):
    def make():
        return make_context(seed=9, extra_labeled=15, subset=subset)

    a = query(create_strategy("noise-stability", k=3, **options), make(), 25)
    b = query(create_strategy("noise-stability", k=3, **options), make(), 25)
    ctx = make()
    assert a.indices.tolist() == b.indices.tolist()
    assert a.indices.numel() == 25 and torch.unique(a.indices).numel() == 25
    assert not bool(ctx.labeled_mask[a.indices].any())
    assert bool(ctx.candidate_mask[a.indices].all())
    assert a.info["scored"] == (subset or ctx.n_unlabeled)


def test_one_labeled_per_class_and_budget_equal_to_the_pool(make_context):
    ctx = make_context(per_class=1)
    assert query(create_strategy("noise-stability", k=2), ctx, 30).indices.numel() == 30
    ctx = make_context(pool_size=60)
    sel = query(create_strategy("noise-stability", k=2), ctx, ctx.n_unlabeled)
    assert sorted(sel.indices.tolist()) == ctx.unlabeled_idx.tolist()
    # zero noise: every feature is 0, the k-center order is random but still a valid selection
    sel = query(create_strategy("noise-stability", k=2, xi=0.0), make_context(pool_size=60), 50)
    assert torch.unique(sel.indices).numel() == 50


@pytest.mark.parametrize("options, field", [
    ({"k": 0}, "k"), ({"k": 2.5}, "k"), ({"xi": -1e-3}, "xi"), ({"xi": float("nan")}, "xi"),
    ({"output": "features"}, "output"), ({"perturb": "bias"}, "perturb"),
    ({"selection": "kmeans"}, "selection"),
    ({"subset": 10}, "subset"), ({"batch_size": 0}, "batch_size"),
])
def test_bad_options_raise_config_errors_naming_the_field(options, field):
    with pytest.raises(ConfigError, match=field):
        create_strategy("noise-stability", **options)

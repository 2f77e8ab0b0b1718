"""DM2 (DM2 paper, Eq. 6-11, Algorithms 1-2): mixing weights, Eq. 7, and the ranking on a toy whose
answer is worked out by hand, plus a naive per-anchor reference on real digits."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from dalkit.errors import ConfigError
from dalkit.models import DalkitModel
from dalkit.strategies import QueryContext, create_strategy, query
from dalkit.strategies._dm2 import DM2, confidence, mix_group, mixing_weights

# ------------------------------------------------------------------------------------ mixing weights


def test_uniform_weights_sum_to_one():
    dist = torch.rand(7, 5, generator=torch.Generator().manual_seed(0))
    w = mixing_weights(dist, "uniform")
    torch.testing.assert_close(w, torch.full((7, 5), 0.2))
    torch.testing.assert_close(w.sum(1), torch.ones(7))


def test_distance_weights_are_normalised_inverse_distances():
    dist = torch.tensor([[1.0, 2.0, 4.0], [0.5, 0.5, 1.0]])
    w = mixing_weights(dist, "distance")
    # row 0: 1/d = (1, 1/2, 1/4) -> / 1.75; row 1: (2, 2, 1) -> / 5
    expected = torch.tensor([[1 / 1.75, 0.5 / 1.75, 0.25 / 1.75], [0.4, 0.4, 0.2]])
    torch.testing.assert_close(w, expected)
    torch.testing.assert_close(w.sum(1), torch.ones(2))


def test_distance_weights_with_a_zero_distance_stay_finite():
    w = mixing_weights(torch.tensor([[0.0, 1.0, 1.0]]), "distance")
    assert torch.isfinite(w).all()
    torch.testing.assert_close(w.sum(1), torch.ones(1))
    assert float(w[0, 0]) > 0.99  # an exact duplicate dominates


def test_sum_weights_are_all_ones():
    dist = torch.rand(3, 4, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(mixing_weights(dist, "sum"), torch.ones(3, 4))


def test_unknown_weights_raise_config_error():
    with pytest.raises(ConfigError, match="weights"):
        mixing_weights(torch.ones(2, 2), "median")


# ----------------------------------------------------------------------------------------- mix_group


def test_mix_group_hand_computation():
    x = torch.tensor([[[[0.2, 0.4]]], [[[1.0, 0.0]]]])  # [2, 1, 1, 2]
    nbrs = torch.tensor([[[[[0.6, 0.0]]], [[[0.0, 1.0]]]],
                         [[[[0.0, 0.0]]], [[[0.5, 0.5]]]]])  # [2, 2, 1, 1, 2]
    w = torch.tensor([[0.5, 0.5], [0.25, 0.75]])
    # anchor 0, lam 0.5: 0.5*(0.2, 0.4) + 0.5*(0.5*(0.6, 0) + 0.5*(0, 1)) = (0.25, 0.45)
    # anchor 1, lam 0.5: 0.5*(1, 0) + 0.5*(0.75*(0.5, 0.5)) = (0.6875, 0.1875)
    out = mix_group(x, nbrs, w, 0.5)
    torch.testing.assert_close(out, torch.tensor([[[[0.25, 0.45]]], [[[0.6875, 0.1875]]]]))
    # per-anchor lambdas [B]: anchor 0 keeps itself (lam 1), anchor 1 is all blend (lam 0)
    out = mix_group(x, nbrs, w, torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(out, torch.tensor([[[[0.2, 0.4]]], [[[0.375, 0.375]]]]))


def test_mix_group_matches_loop_on_random_images():
    g = torch.Generator().manual_seed(2)
    x, nbrs = torch.rand(4, 3, 5, 5, generator=g), torch.rand(4, 3, 3, 5, 5, generator=g)
    w, lam = torch.rand(4, 3, generator=g), torch.rand(4, generator=g)
    out = mix_group(x, nbrs, w, lam)
    for b in range(4):
        blend = sum(w[b, j] * nbrs[b, j] for j in range(3))
        torch.testing.assert_close(out[b], lam[b] * x[b] + (1 - lam[b]) * blend)


def test_confidence_is_max_softmax():
    logits = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 0.0]])
    expected = [0.5, 1 / (1 + math.exp(-2.0)), 0.5]
    torch.testing.assert_close(confidence(logits), torch.tensor(expected))


# ----------------------------------------------------------------------------- hand-derivable toy


class LineModel(DalkitModel):
    """Inputs are 2-pixel images [B, 1, 1, 2]: a point (x0, x1) in [0, 1]^2; the embedding is the
    point itself.  Two classes split by the line x0 = 128/255: logits = (+s, -s) * (x0 - 128/255), so
    the confidence is sigmoid(2 s |x0 - 128/255|) and, the model being linear, mixing inputs mixes
    logits exactly."""

    SLOPE = 10.0

    def __init__(self) -> None:
        super().__init__(1, 2, embed_dim=2, dropout=0.0)
        with torch.no_grad():
            self.classifier.weight.copy_(torch.tensor([[self.SLOPE, 0.0], [-self.SLOPE, 0.0]]))
            t = 128.0 / 255.0
            self.classifier.bias.copy_(torch.tensor([-self.SLOPE * t, self.SLOPE * t]))

    def forward_features(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        return x.flatten(1), []


def toy_conf(x0_pixels: float) -> float:
    """Hand formula: confidence of the toy model at x0 (pixel units)."""
    return 1.0 / (1.0 + math.exp(-2.0 * LineModel.SLOPE * abs(x0_pixels - 128.0) / 255.0))


# Two groups far apart in x1, so each point's 2 nearest unlabeled neighbours are the other two of its
# group (in-group d_c = |dx0| <= 153/255, across groups >= 205/255).  a0 and b0 sit at the same x0 = 178,
# so their own confidence is identical; a0's neighbours straddle the line (204 vs 51), b0's agree.
TOY_POINTS = {  # name: (x0, x1) in pixels
    "L0": (179, 25),  # labeled, right next to a0: must never be used as a neighbour
    "a0": (178, 25), "a1": (204, 25), "a2": (51, 25),
    "L1": (52, 230),  # labeled
    "b0": (178, 230), "b1": (204, 230), "b2": (230, 230),
}
NAMES = list(TOY_POINTS)
GROUPS = {"a": ["a0", "a1", "a2"], "b": ["b0", "b1", "b2"]}


def toy_context(seed: int = 0) -> QueryContext:
    images = torch.tensor([list(p) for p in TOY_POINTS.values()], dtype=torch.uint8).view(-1, 1, 1, 2)
    labeled = torch.tensor([NAMES.index("L0"), NAMES.index("L1")])
    return QueryContext(LineModel().eval(), images, labeled, torch.tensor([0, 1]), 2,
                        torch.Generator().manual_seed(seed))


def hand_group_confidence(name: str, lam: float = 0.5) -> float:
    """Eq. 7 with uniform weights over the two other points of the group, by hand."""
    x0 = TOY_POINTS[name][0]
    others = [TOY_POINTS[m][0] for m in GROUPS[name[0]] if m != name]
    return toy_conf(lam * x0 + (1 - lam) * sum(others) / len(others))


def hand_pairs_confidence(name: str, lam: float = 0.5) -> float:
    """Algorithm 2: mix with each neighbour, keep the lowest confidence."""
    x0 = TOY_POINTS[name][0]
    return min(toy_conf(lam * x0 + (1 - lam) * TOY_POINTS[m][0]) for m in GROUPS[name[0]] if m != name)


def scores_by_name(ctx: QueryContext, strategy: DM2) -> dict[str, float]:
    s = strategy.scores(ctx)
    return {NAMES[int(i)]: float(v) for i, v in zip(ctx.unlabeled_idx, s, strict=True)}


def test_toy_own_confidences_tie():
    """Plain uncertainty cannot tell a0 from b0: the toy is a real test of the mixing."""
    ctx = toy_context()
    p = ctx.probs()
    pos = {NAMES[int(i)]: k for k, i in enumerate(ctx.unlabeled_idx)}
    assert float(p[pos["a0"]].max()) == pytest.approx(float(p[pos["b0"]].max()))
    assert float(p[pos["a0"]].max()) == pytest.approx(toy_conf(178), rel=1e-5)


@pytest.mark.parametrize("candidates", [None, 20])
def test_group_reading_ranks_straddling_anchor_first(candidates):
    ctx = toy_context()
    got = scores_by_name(ctx, DM2(weights="uniform", n_neighbors=2, mixing="group", candidates=candidates))
    for name, score in got.items():
        assert score == pytest.approx(-hand_group_confidence(name), abs=1e-5)
    # hand-worked mixed x0 (pixels): a0 152.75, a1 159.25, a2 121, b0 197.5, b1 204, b2 210.5
    assert sorted(got, key=lambda n: -got[n]) == ["a2", "a0", "a1", "b0", "b1", "b2"]
    assert got["a0"] > got["b0"]  # a0 is picked before b0
    sel = DM2(weights="uniform", n_neighbors=2, mixing="group", candidates=candidates).select(ctx, 2)
    assert sorted(NAMES[int(i)] for i in sel.indices) == ["a0", "a2"]


def test_default_reading_is_the_literal_unnormalised_sum():
    """The default (chosen by the benchmark) is Eq. 7 as printed: x_hat = lam x + (1 - lam) sum_j x_j."""
    ctx = toy_context()
    got = scores_by_name(ctx, DM2(n_neighbors=2))
    for name, score in got.items():
        x0 = TOY_POINTS[name][0]
        others = [TOY_POINTS[m][0] for m in GROUPS[name[0]] if m != name]
        assert score == pytest.approx(-toy_conf(0.5 * x0 + 0.5 * sum(others)), abs=1e-5)


def test_pairs_reading_ranks_straddling_anchor_first():
    ctx = toy_context()
    got = scores_by_name(ctx, DM2(n_neighbors=2, mixing="pairs"))
    for name, score in got.items():
        assert score == pytest.approx(-hand_pairs_confidence(name), abs=1e-5)
    # hand-worked lowest-confidence pair margins (pixels): a1, a2 0.5; a0 13.5; b0, b1 63; b2 76
    assert got["a0"] > got["b0"]
    assert got["a1"] == pytest.approx(got["a2"])
    assert min(got["a1"], got["a2"]) > got["a0"] > max(got["b0"], got["b1"]) > got["b2"]


def test_lam_one_is_plain_least_confidence():
    """lam = 1 mixes nothing in (section 5.8): the scores are the anchors' own confidences."""
    ctx = toy_context()
    got = scores_by_name(ctx, DM2(weights="uniform", n_neighbors=2, lam=1.0))
    for name, score in got.items():
        assert score == pytest.approx(-toy_conf(TOY_POINTS[name][0]), abs=1e-6)


def test_offset_skips_the_most_uncertain():
    ctx = toy_context()
    sel = DM2(weights="uniform", n_neighbors=2, offset=2).select(ctx, 2)  # ranking a2, a0, a1, b0, ...
    assert [NAMES[int(i)] for i in sel.indices] == ["a1", "b0"]
    sel = DM2(weights="uniform", n_neighbors=2, offset=0).select(ctx, 2)
    assert [NAMES[int(i)] for i in sel.indices] == ["a2", "a0"]


def test_beta_reading_lies_between_the_fixed_lambda_extremes():
    """With lam ~ Beta(alpha, alpha) in [0, 1], an anchor whose own x0 and neighbour mean lie on the
    same side of the line has a mixed confidence between those at lam = 0 and lam = 1 (the toy is
    linear and the confidence monotone in the margin)."""
    ctx = toy_context(seed=3)
    got = scores_by_name(ctx, DM2(weights="uniform", n_neighbors=2, alpha=0.4))
    assert len(set(round(v, 6) for v in got.values())) == len(got)
    for name in ["a0", "a1", "b0", "b1", "b2"]:
        lo, hi = sorted([hand_group_confidence(name, 0.0), hand_group_confidence(name, 1.0)])
        assert lo - 1e-6 <= -got[name] <= hi + 1e-6


# ------------------------------------------------------------------------------- real digits model


def naive_dm2_confidence(ctx: QueryContext, n: int, mixing: str, weights: str, lam: float) -> list[float]:
    """Per-anchor loop: exact d_c neighbours among the other unlabeled samples (plain Python
    distances), then Eq. 7 (group) or the lowest confidence over anchor-neighbour pairs."""
    emb = ctx.embeddings().tolist()
    unl = ctx.unlabeled_idx
    mixed_inputs, owners = [], []
    for a in range(len(unl)):
        d = []
        for b in range(len(unl)):
            if b != a:
                l2 = math.sqrt(sum((u - v) ** 2 for u, v in zip(emb[a], emb[b], strict=True)))
                l1 = sum(abs(u - v) for u, v in zip(emb[a], emb[b], strict=True))
                d.append((0.5 * (l2 + l1), b))
        d.sort()
        nb = d[:n]
        x = ctx.inputs(unl[a:a + 1])[0]
        xs = [ctx.inputs(unl[b:b + 1])[0] for _, b in nb]
        if mixing == "group":
            if weights == "uniform":
                w = [1.0 / n] * n
            else:
                inv = [1.0 / (dist + 1e-8) for dist, _ in nb]
                w = [v / sum(inv) for v in inv]
            mixed_inputs.append(lam * x + (1 - lam) * sum(wj * xj for wj, xj in zip(w, xs, strict=True)))
            owners.append(a)
        else:
            for xj in xs:
                mixed_inputs.append(lam * x + (1 - lam) * xj)
                owners.append(a)
    with torch.no_grad():
        conf = torch.softmax(ctx.model(torch.stack(mixed_inputs)), 1).max(1).values.tolist()
    out = [1.0] * len(unl)
    for a, c in zip(owners, conf, strict=True):
        out[a] = min(out[a], c)
    return out


@pytest.mark.parametrize(("mixing", "weights"), [("group", "uniform"), ("group", "distance"),
                                                 ("pairs", "uniform")])
def test_scores_match_naive_reference_on_digits(make_context, mixing, weights):
    ctx = make_context(pool_size=80)
    strategy = DM2(n_neighbors=3, mixing=mixing, weights=weights, lam=0.6, candidates=None, batch_size=16)
    got = strategy.scores(ctx)
    expected = naive_dm2_confidence(ctx, 3, mixing, weights, 0.6)
    torch.testing.assert_close(got.double(), -torch.tensor(expected, dtype=torch.float64),
                               rtol=1e-4, atol=1e-5)


def test_selection_is_unlabeled_and_unique(make_context):
    ctx = make_context(extra_labeled=40)
    for options in ({}, {"mixing": "pairs"}, {"alpha": 1.0}, {"offset": 10}):
        sel = query(create_strategy("dm2", **options), ctx, 25)
        idx = sel.indices
        assert idx.numel() == 25 and torch.unique(idx).numel() == 25
        assert not bool(ctx.labeled_mask[idx].any())
        assert set(idx.tolist()) <= set(ctx.unlabeled_idx.tolist())


def test_beta_reading_deterministic_under_seed(make_context):
    strategy = DM2(alpha=0.5)
    a = strategy.select(make_context(seed=11), 20)
    b = strategy.select(make_context(seed=11), 20)
    c = strategy.select(make_context(seed=12), 20)
    assert a.indices.tolist() == b.indices.tolist()
    torch.testing.assert_close(a.scores, b.scores)
    s11, s12 = strategy.scores(make_context(seed=11)), strategy.scores(make_context(seed=12))
    assert not torch.allclose(s11, s12)  # the seed does drive the lambdas
    assert c.indices.numel() == 20


def test_offset_on_digits_equals_shifted_ranking(make_context):
    # uniform weights: the literal "sum" default saturates many mixed inputs to confidence 1.0 (ties)
    scores = DM2(weights="uniform").scores(make_context())
    ranking = torch.argsort(scores, descending=True, stable=True)
    assert torch.unique(scores).numel() == scores.numel()  # no ties: the ranking is unambiguous
    ctx = make_context()
    sel = DM2(weights="uniform", offset=7).select(ctx, 10)
    assert sel.indices.tolist() == ctx.unlabeled_idx[ranking[7:17]].tolist()


@pytest.mark.parametrize("bad", [{"n_neighbors": 0}, {"mixing": "triples"}, {"weights": "max"},
                                 {"lam": 1.5}, {"alpha": 0.0}, {"offset": -1}, {"metric": "cosine"}])
def test_bad_options_raise_config_error(bad):
    with pytest.raises(ConfigError):
        create_strategy("dm2", **bad)


def test_knn_recall_reported_in_selection_info(digits_model, digits_pool):
    """Selection.info["knn_recall"] equals the recall of the shortlist against exact search (all
    anchors sampled), and is absent on the exact path."""
    from dalkit.strategies import QueryContext, create_strategy, query
    from dalkit.strategies.pairwise import knn, neighbour_recall

    def ctx():
        return QueryContext(digits_model, digits_pool.images, torch.arange(10), digits_pool.labels[:10], 10,
                            torch.Generator().manual_seed(0))

    c = ctx()
    sel = query(create_strategy("dm2", candidates=6, recall_sample=10_000), c, 5)
    emb = c.embeddings()
    _, approx = knn(emb, None, 5, "combined", True, 6)
    _, exact = knn(emb, None, 5, "combined", True, None)
    assert sel.info["knn_recall"] == pytest.approx(neighbour_recall(approx, exact))
    assert sel.info["knn_recall_anchors"] == emb.shape[0] and sel.info["knn_candidates"] == 6
    assert sel.info["knn_recall"] < 1.0  # a 6-candidate shortlist misses some on 290 digits
    assert query(create_strategy("dm2", candidates=None), ctx(), 5).info == {}
    # the report does not change the selection
    plain = query(create_strategy("dm2", candidates=6, recall_sample=0), ctx(), 5)
    assert torch.equal(plain.indices, sel.indices)

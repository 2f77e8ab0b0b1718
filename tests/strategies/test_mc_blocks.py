"""MC dropout after every block in train mode (the baselines' reference-code reading) and the
sum-of-entropies EntropyBayesian, against hand-written forward passes and loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dalkit.errors import ConfigError
from dalkit.models import create_model
from dalkit.strategies import QueryContext, create_strategy, query
from dalkit.strategies._bayesian import sum_entropy_scores
from dalkit.strategies.mc_dropout import mc_block_logits, mc_blocks


def test_blocks_of_each_model():
    cnn = create_model("cnn", 1, 10, dropout=0.3, image_size=28)
    assert mc_blocks(cnn) == [cnn.conv1, cnn.conv2, cnn.fc]
    resnet = create_model("resnet18", 3, 10, image_size=32)
    blocks = mc_blocks(resnet)
    assert len(blocks) == 1 + 8  # the stem and the 8 residual blocks of ResNet-18
    assert all(type(b).__name__ == "BasicBlock" for b in blocks[1:])


def test_cnn_passes_equal_a_hand_written_forward():
    torch.manual_seed(0)
    model = create_model("cnn", 1, 10, dropout=0.3, image_size=28).eval()
    x = torch.rand(6, 1, 28, 28)
    out = mc_block_logits(model, x, 3, 0.25, torch.Generator().manual_seed(9))
    g = torch.Generator().manual_seed(9)
    for i in range(3):
        torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=g)))
        s1 = F.relu(F.dropout(model.conv1(model.normalize(x)), 0.25))
        s2 = F.relu(F.dropout(model.conv2(s1), 0.25))
        e = F.relu(F.dropout(model.fc(s2.flatten(1)), 0.25))
        ref = model.classifier(F.dropout(e, 0.25))
        torch.testing.assert_close(out[i], ref.detach(), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out[0], out[1])  # masks differ between passes
    assert not model.training


def test_batchnorm_runs_in_train_mode_and_is_restored():
    torch.manual_seed(0)
    model = create_model("resnet18", 1, 10, image_size=16)
    model.train()
    for _ in range(2):  # give BatchNorm running statistics that differ from a batch's own
        model(torch.rand(8, 1, 16, 16) * 0.3)
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(10, 1, 16, 16)
    out = mc_block_logits(model, x, 2, 1e-7, torch.Generator().manual_seed(0))  # dropout ~ off
    after = model.state_dict()  # the running statistics are back as they were
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not model.training
    model.train()
    with torch.no_grad():
        batch_stats = model(x)
    model.load_state_dict(before)
    model.eval()
    with torch.no_grad():
        running = model(x)
    torch.testing.assert_close(out[0], batch_stats, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(out[0], running, atol=1e-3)


def test_sum_entropy_matches_a_loop():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.full(4, 0.5), size=(5, 30))
    p[0, 0] = np.eye(4)[1]
    ref = np.zeros(30)
    for k in range(5):
        for n in range(30):
            ref[n] -= sum(v * np.log(v) for v in p[k, n] if v > 0)
    torch.testing.assert_close(sum_entropy_scores(torch.from_numpy(p)), torch.from_numpy(ref))


def test_entropy_bayesian_sum_and_blocks_options():
    torch.manual_seed(0)
    model = create_model("cnn", 1, 3, dropout=0.3, image_size=8).eval()
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (40, 1, 8, 8), generator=g, dtype=torch.uint8)

    def ctx() -> QueryContext:
        return QueryContext(model, images, torch.arange(4), torch.arange(4) % 3, 3,
                            torch.Generator().manual_seed(1))

    strat = create_strategy("entropy-bayesian", k=6, mc="blocks", score="sum")
    c = ctx()
    sel = query(strat, c, 5)
    mc = c.mc_probs(6, None, mode="blocks")  # cached: the passes the strategy used
    expect = c.unlabeled_idx[sum_entropy_scores(mc).argsort(descending=True)[:5]]
    assert set(sel.indices.tolist()) == set(expect.tolist())
    assert torch.equal(query(strat, ctx(), 5).indices, sel.indices)  # seeded
    assert query(create_strategy("bald", k=4, mc="blocks"), ctx(), 3).indices.numel() == 3
    for bad in ({"mc": "all"}, {"score": "max"}):
        with pytest.raises(ConfigError):
            create_strategy("entropy-bayesian", **bad)

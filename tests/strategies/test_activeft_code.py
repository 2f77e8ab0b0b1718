"""ActiveFT's official-code loss (``loss=code``) against a hand-written loop, and the initial centres'
own random stream (issue 15, item 5)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dalkit.errors import ConfigError
from dalkit.strategies import create_strategy
from dalkit.strategies._activeft import activeft_code_objective, activeft_select, initial_centres


def naive_code_loss(feats, centers, fixed, tau, balance):
    """ActiveFT_CIFAR.py's get_loss written out per sample: J_i = log p_i - log(p_i + b * sum_j e_j),
    p_i = exp(max_k f_i . theta_k / tau), e_j = exp(theta_j(detached) . theta_{k_i} / tau), j over all
    centres (k_i itself included)."""
    theta = F.normalize(centers, dim=1)
    every = torch.cat([theta, fixed]) if fixed is not None else theta
    total = 0.0
    for i in range(feats.shape[0]):
        sims = [feats[i] @ every[k] / tau for k in range(every.shape[0])]
        k_i = max(range(len(sims)), key=lambda k: float(sims[k].detach()))
        p = torch.exp(sims[k_i])
        s = sum(torch.exp(every[j].detach() @ every[k_i] / tau) for j in range(every.shape[0]))
        total = total + (torch.log(p) - torch.log(p + balance * s))
    return -total / feats.shape[0]


@pytest.mark.parametrize("n_fixed,balance", [(0, 1.0), (2, 1.0), (1, 0.5)])
def test_code_loss_and_its_gradient_match_the_hand_loop(n_fixed, balance):
    g = torch.Generator().manual_seed(1)
    feats = F.normalize(torch.randn(7, 4, generator=g, dtype=torch.float64), dim=1)
    centers = torch.randn(3, 4, generator=g, dtype=torch.float64)
    fixed = F.normalize(torch.randn(n_fixed, 4, generator=g, dtype=torch.float64), dim=1) if n_fixed else None
    a = centers.clone().requires_grad_(True)
    b = centers.clone().requires_grad_(True)
    ours = activeft_code_objective(feats, a, fixed, 0.5, balance, chunk=3)
    ref = naive_code_loss(feats, b, fixed, 0.5, balance)
    assert float(ours) == pytest.approx(float(ref), rel=1e-10)
    ours.backward()
    ref.backward()
    assert torch.allclose(a.grad, b.grad, atol=1e-10)  # the detached side is the same as the code's


def test_code_loss_is_not_the_papers():
    g = torch.Generator().manual_seed(2)
    feats = F.normalize(torch.randn(20, 4, generator=g), dim=1)
    centers = torch.randn(3, 4, generator=g)
    from dalkit.strategies._activeft import activeft_objective

    assert not math.isclose(float(activeft_code_objective(feats, centers, None, 0.07)),
                            float(activeft_objective(feats, centers, None, 0.07)), rel_tol=1e-3)


def test_initial_centres_have_their_own_stream():
    """With no optimisation steps each centre maps back to its own sample: the picks are the initial
    centres, which must not be the samples ``random`` draws from the same round generator."""
    feats = torch.randn(200, 8, generator=torch.Generator().manual_seed(3))
    for seed in range(5):
        picks = activeft_select(feats, None, 10, torch.Generator().manual_seed(seed), steps=0)
        own = initial_centres(200, 10, torch.Generator().manual_seed(seed))
        assert picks.tolist() == own.tolist()
        randoms = torch.randperm(200, generator=torch.Generator().manual_seed(seed))[:10]
        assert len(set(picks.tolist()) & set(randoms.tolist())) < 5


def test_a_centre_no_sample_is_nearest_to_gets_no_gradient_from_the_code_loss():
    """The code's loss reaches a centre only through the samples whose nearest centre it is (the
    other side of the centre sum is detached); the paper's diversity term moves every centre."""
    from dalkit.strategies._activeft import activeft_objective

    feats = F.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.8, 0.2]]), dim=1)
    centers = torch.tensor([[1.0, 0.05], [0.95, 0.0], [-1.0, 0.0]], requires_grad=True)  # #2: nobody's
    activeft_code_objective(feats, centers, None, 0.1).backward()
    assert float(centers.grad[2].abs().sum()) == 0.0 and float(centers.grad[:2].abs().sum()) > 0
    c2 = centers.detach().clone().requires_grad_(True)
    activeft_objective(feats, c2, None, 0.1).backward()
    assert float(c2.grad[2].abs().sum()) > 0


def test_options_are_checked():
    assert create_strategy("activeft", loss="code").loss == "code"
    with pytest.raises(ConfigError, match="loss must be 'paper' or 'code'"):
        create_strategy("activeft", loss="official")
    with pytest.raises(ConfigError, match="balance"):
        create_strategy("activeft", balance=0)

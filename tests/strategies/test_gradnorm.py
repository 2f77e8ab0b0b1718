"""Per-sample entropy-gradient norms (LPLgrad Eq. 6-8, Ent-GradNorm) against a per-sample backward loop,
and the selections of lplgrad / ent-gradnorm / learning-loss against scores computed that way."""

from __future__ import annotations

import pytest
import torch

from dalkit.errors import ConfigError
from dalkit.models import create_model
from dalkit.strategies import QueryContext, create_strategy, query
from dalkit.strategies._gradnorm import combine_norms, per_sample_grad_norms
from dalkit.training import attach_loss_module, predicted_losses


def naive_grad_norms(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """One backward pass per sample: [N, T] norms of d H / d w for the main-model parameter tensors."""
    model.eval()
    params = [p for name, p in model.named_parameters() if not name.startswith("loss_module.")]
    rows = []
    for i in range(x.shape[0]):
        probs = torch.softmax(model(x[i:i + 1]), dim=1)[0]
        entropy = -(probs * torch.log(probs)).sum()  # Eq. 6, written out
        grads = torch.autograd.grad(entropy, params, allow_unused=True)
        rows.append(torch.stack([g.norm() if g is not None else torch.tensor(0.0) for g in grads]))
    return torch.stack(rows)


def resnet_with_nontrivial_batchnorm() -> torch.nn.Module:
    torch.manual_seed(3)
    model = create_model("resnet18", 3, 10, image_size=8)
    model.train()
    with torch.no_grad():  # move the running statistics and affine terms away from their defaults
        for _ in range(3):
            model(torch.rand(16, 3, 8, 8) * 2)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


@pytest.mark.parametrize("method", ["factored", "vmap"])
@pytest.mark.parametrize("arch", ["cnn", "resnet18"])
def test_vectorised_norms_equal_a_per_sample_backward_loop(arch, method, digits_model):
    if arch == "cnn":
        model, x = digits_model, torch.rand(12, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    else:
        model = resnet_with_nontrivial_batchnorm()
        x = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()  # scoring must switch BatchNorm (and dropout) to eval itself, and restore the mode
    fast = per_sample_grad_norms(model, x, chunk_size=5, method=method)  # a partial last chunk too
    assert model.training
    ref = naive_grad_norms(model, x)
    assert fast.shape == ref.shape
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-4)
    # Eq. 8 (Frobenius) and the reference codes' per-tensor sum
    torch.testing.assert_close(combine_norms(fast, "frobenius"), ref.pow(2).sum(1).sqrt(),
                               atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(combine_norms(fast, "layer-sum"), ref.sum(1), atol=1e-5, rtol=1e-4)
    # the model is not updated (parameters and BatchNorm statistics)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_train_mode_is_restored_and_the_loss_module_is_not_differentiated(digits_model_lp):
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    digits_model_lp.train()
    norms = per_sample_grad_norms(digits_model_lp, x)
    assert digits_model_lp.training
    digits_model_lp.eval()
    n_main = sum(1 for name, _ in digits_model_lp.named_parameters() if not name.startswith("loss_module."))
    assert norms.shape == (4, n_main) and n_main < len(list(digits_model_lp.parameters()))
    torch.testing.assert_close(norms, naive_grad_norms(digits_model_lp, x), atol=1e-5, rtol=1e-4)


def _topk_set(scores: torch.Tensor, k: int) -> set[int]:
    order = scores.argsort(descending=True)
    assert float(scores[order[k - 1]] - scores[order[k]]) > 1e-6, "ambiguous top-k, pick another k"
    return set(order[:k].tolist())


@pytest.mark.parametrize("name, norm", [("lplgrad", "frobenius"), ("lplgrad", "layer-sum"),
                                        ("ent-gradnorm", "layer-sum"), ("ent-gradnorm", "frobenius")])
def test_selection_is_the_top_k_of_the_loop_scores_cnn(name, norm, make_context):
    ctx = make_context(pool_size=120, extra_labeled=10)
    ref = naive_grad_norms(ctx.model, ctx.inputs(ctx.unlabeled_idx))
    ref_scores = ref.pow(2).sum(1).sqrt() if norm == "frobenius" else ref.sum(1)
    sel = query(create_strategy(name, norm=norm, chunk_size=16), ctx, 15)
    expected = {int(ctx.unlabeled_idx[i]) for i in _topk_set(ref_scores, 15)}
    assert set(sel.indices.tolist()) == expected


def test_lplgrad_selection_is_the_top_k_of_the_loop_scores_resnet18():
    model = resnet_with_nontrivial_batchnorm()
    g = torch.Generator().manual_seed(5)
    images = (torch.rand(26, 3, 8, 8, generator=g) * 255).to(torch.uint8)
    labeled = torch.arange(10)
    ctx = QueryContext(model, images, labeled, torch.arange(10), 10, torch.Generator().manual_seed(0))
    ref = naive_grad_norms(model, ctx.inputs(ctx.unlabeled_idx)).pow(2).sum(1).sqrt()
    for name in ("lplgrad", "ent-gradnorm"):
        sel = query(create_strategy(name, norm="frobenius"), ctx, 5)
        assert set(sel.indices.tolist()) == {int(ctx.unlabeled_idx[i]) for i in _topk_set(ref, 5)}


def test_learning_loss_picks_the_highest_predicted_losses(make_context, digits_model_lp, digits_model):
    ctx = make_context(pool_size=150, extra_labeled=10, model=digits_model_lp)
    module = digits_model_lp.loss_module
    with torch.no_grad():  # one sample at a time, through forward_features and the module
        ref = torch.stack([module(digits_model_lp.forward_features(ctx.inputs(i.view(1)))[1])[0]
                           for i in ctx.unlabeled_idx])
    sel = query(create_strategy("learning-loss"), ctx, 12)
    assert set(sel.indices.tolist()) == {int(ctx.unlabeled_idx[i]) for i in _topk_set(ref, 12)}
    torch.testing.assert_close(predicted_losses(digits_model_lp, ctx.pool_images[ctx.unlabeled_idx], 7), ref,
                               atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError, match="loss-prediction"):
        query(create_strategy("learning-loss"), make_context(model=digits_model), 5)


def test_strategies_on_a_candidate_subset_score_only_the_candidates(make_context):
    ctx = make_context(pool_size=150, extra_labeled=10, subset=40)
    sel = query(create_strategy("lplgrad"), ctx, 10)
    assert bool(ctx.candidate_mask[sel.indices].all())
    ref = naive_grad_norms(ctx.model, ctx.inputs(ctx.unlabeled_idx)).pow(2).sum(1).sqrt()
    assert set(sel.indices.tolist()) == {int(ctx.unlabeled_idx[i]) for i in _topk_set(ref, 10)}


def test_attached_module_does_not_change_the_gradients(digits_model):
    import copy

    with_module = attach_loss_module(copy.deepcopy(digits_model), (1, 8, 8))
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(per_sample_grad_norms(with_module, x), per_sample_grad_norms(digits_model, x))


@pytest.mark.parametrize("name", ["lplgrad", "ent-gradnorm"])
@pytest.mark.parametrize("options", [{"norm": "l1"}, {"chunk_size": 0}, {"chunk_size": 2.5}, {"subset": 10}])
def test_bad_options_raise_config_errors(name, options):
    with pytest.raises(ConfigError, match=next(iter(options))):
        create_strategy(name, **options)

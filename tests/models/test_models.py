"""Every registered model: shapes, embed() = the classifier's input, stage maps, the dropout switch,
MC dropout in eval mode.  Inputs are tiny (batch 2) so the whole file runs in seconds."""

from __future__ import annotations

import pytest
import torch

from dalkit.models import MODELS, DalkitModel, create_model

# image models; the MLP head on feature rows (``features``) has its own tests in tests/test_own_model.py
NAMES = [n for n in MODELS.names() if n != "features"]
BATCH, CLASSES = 2, 10


def _build(name: str, dropout: float = 0.5, in_channels: int = 3, side: int = 32) -> DalkitModel:
    torch.manual_seed(0)
    return create_model(name, in_channels, CLASSES, dropout=dropout, image_size=side)


def _inputs(in_channels: int = 3, side: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(BATCH, in_channels, side, side, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module", params=NAMES)
def built(request) -> tuple[str, DalkitModel]:
    """One instance per registered model (building ResNet-34 / VGG-16 once is the costly part)."""
    return request.param, _build(request.param)


def test_expected_models_are_registered():
    assert {"cnn", "resnet18", "resnet34", "mobilenet", "vgg16"} <= set(NAMES)


def test_shapes_and_forward_all_consistency(built):
    name, model = built
    model.eval()
    x = _inputs()
    with torch.no_grad():
        logits = model(x)
        emb = model.embed(x)
        lg_all, emb_all, stages = model.forward_all(x)
        emb_ff, stages_ff = model.forward_features(x)
    assert logits.shape == (BATCH, CLASSES) and model.num_classes == CLASSES
    assert emb.shape == (BATCH, model.embed_dim)
    assert torch.allclose(lg_all, logits, atol=1e-5) and torch.allclose(emb_all, emb, atol=1e-6)
    assert torch.allclose(emb_ff, emb, atol=1e-6)
    # in eval mode the logits are exactly the classifier applied to the embedding
    assert torch.allclose(logits, model.classifier(emb), atol=1e-5)
    # stage feature maps: at least one, each [B, C, H, W], the same from both entry points
    assert len(stages) >= 2 and len(stages) == len(stages_ff)
    for s, s2 in zip(stages, stages_ff, strict=True):
        assert s.dim() == 4 and s.shape[0] == BATCH and torch.allclose(s, s2, atol=1e-6)


def test_embed_is_the_classifier_input(built):
    _, model = built
    model.eval()
    seen = []
    handle = model.classifier.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
    try:
        x = _inputs(seed=1)
        with torch.no_grad():
            model(x)
            emb = model.embed(x)
    finally:
        handle.remove()
    assert len(seen) == 1 and torch.allclose(seen[0], emb, atol=1e-6)


def test_dropout_switch(built):
    _, model = built
    x = _inputs(seed=2)
    with torch.no_grad():
        model.eval()  # eval: deterministic
        assert torch.equal(model(x), model(x))
        model.train()  # train with p = 0.5: two passes differ (BatchNorm uses the same batch statistics)
        torch.manual_seed(1)
        a = model(x)
        b = model(x)
        assert not torch.allclose(a, b)
        model.dropout_p = 0.0  # the switch off: train-mode passes agree again
        try:
            assert torch.allclose(model(x), model(x), atol=1e-6)
        finally:
            model.dropout_p = 0.5
    model.eval()


def test_mc_dropout_keeps_eval_mode_and_batchnorm_statistics(built):
    _, model = built
    model.eval()
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    x = _inputs(seed=3)
    with torch.no_grad():
        emb = model.embed(x)
        mc = model.mc_logits_from_embedding(emb, 4, generator=torch.Generator().manual_seed(0))
        mc_again = model.mc_logits_from_embedding(emb, 4, generator=torch.Generator().manual_seed(0))
        explicit_p = model.mc_logits_from_embedding(emb, 3, p=0.2, generator=torch.Generator().manual_seed(1))
    assert mc.shape == (4, BATCH, CLASSES) and explicit_p.shape == (3, BATCH, CLASSES)
    assert torch.equal(mc, mc_again)  # seeded masks
    assert not torch.allclose(mc[0], mc[1])  # the masks differ between samples
    assert not model.training and not any(m.training for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, buffers[k]), k


def test_mc_dropout_needs_a_probability(built):
    _, model = built
    emb = torch.rand(BATCH, model.embed_dim)
    model.dropout_p = 0.0
    try:
        with pytest.raises(ValueError, match="dropout"):
            model.mc_logits_from_embedding(emb, 2)
        assert model.mc_logits_from_embedding(emb, 2, p=0.3).shape == (2, BATCH, CLASSES)
    finally:
        model.dropout_p = 0.5


@pytest.mark.parametrize("name", NAMES)
def test_grey_28x28_inputs(name):
    model = _build(name, dropout=0.0, in_channels=1, side=28).eval()
    with torch.no_grad():
        lg, emb, stages = model.forward_all(_inputs(1, 28))
    assert lg.shape == (BATCH, CLASSES) and emb.shape == (BATCH, model.embed_dim) and stages


def test_vgg16_layout():
    model = _build("vgg16", dropout=0.0).eval()
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(convs) == 13 and len(bns) == 13 and model.embed_dim == 512
    with torch.no_grad():
        _, stages = model.forward_features(_inputs())
    assert [tuple(s.shape[1:]) for s in stages] == [(64, 16, 16), (128, 8, 8), (256, 4, 4), (512, 2, 2),
                                                     (512, 1, 1)]
    n_params = sum(p.numel() for p in model.parameters())
    assert 14.5e6 < n_params < 15.0e6  # VGG-16-BN for CIFAR: ~14.7M parameters

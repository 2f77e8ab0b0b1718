"""The one fit() loop with unlabeled batches: supervised and DM2-AT numbers are unchanged bit for bit
(against a minimal copy of the loop as it was before unlabeled batches existed), and a recipe that asks
for mu * B unlabeled inputs gets them, seeded."""

from __future__ import annotations

import pytest
import torch

from dalkit.data.augment import augment_batch
from dalkit.data.dataset import to_float
from dalkit.models import create_model
from dalkit.training import Batch, TrainConfig, TrainSet, adversarial_pair_step, fit, supervised_step
from dalkit.training.fit import make_optimizer


def reference_fit(model, data: TrainSet, step, cfg: TrainConfig, generator: torch.Generator) -> list[float]:
    """The pre-change loop, reduced to what these tests exercise; returns every step's loss."""
    n = len(data)
    opt = make_optimizer(model, cfg)
    steps_per_epoch = max(1, -(-n // cfg.batch_size))
    epochs = max(cfg.epochs, -(-cfg.min_steps // steps_per_epoch)) if cfg.min_steps else cfg.epochs
    sched = None
    if cfg.lr_decay_at is not None:
        milestone = max(1, int(round(cfg.lr_decay_at * epochs))) * steps_per_epoch
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[milestone], gamma=0.1)
    losses = []
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=generator)
        for start in range(0, n, cfg.batch_size):
            idx = perm[start:start + cfg.batch_size]
            x = to_float(data.images[idx])
            x_adv = data.adv_images[idx] if data.adv_images is not None else None
            if cfg.crop_padding > 0 or cfg.hflip:
                if x_adv is not None:
                    both = augment_batch(torch.cat([x, x_adv], 1), cfg.crop_padding, cfg.hflip, generator)
                    x, x_adv = both.split(x.shape[1], dim=1)
                else:
                    x = augment_batch(x, cfg.crop_padding, cfg.hflip, generator)
            paired = data.paired[idx] if data.paired is not None else None
            loss = step(model, Batch(x, data.labels[idx], x_adv, paired))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            losses.append(float(loss.detach()))
    return losses


def _model(digits, seed=0):
    torch.manual_seed(seed)
    return create_model("cnn", 1, 10, image_size=digits.train.image_shape[-1], dropout=0.3)


def _recording(step):
    losses = []

    def wrapped(model, batch):
        loss = step(model, batch)
        losses.append(float(loss.detach()))
        return loss

    return wrapped, losses


CFGS = [
    TrainConfig(epochs=2, batch_size=32, optimizer="adam", lr=1e-3, crop_padding=2),
    TrainConfig(epochs=2, batch_size=40, optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4,
                lr_decay_at=0.5, hflip=True, crop_padding=1, min_steps=9),
]


@pytest.mark.parametrize("cfg", CFGS)
def test_supervised_is_bit_for_bit_the_old_loop(digits, cfg):
    data = TrainSet(digits.train.images[:100], digits.train.labels[:100],
                    unlabeled=digits.train.images[100:300])  # present but not asked for: ignored
    old = _model(digits)
    ref_losses = reference_fit(old, data, supervised_step, cfg, torch.Generator().manual_seed(3))
    new = _model(digits)
    step, losses = _recording(supervised_step)
    fit(new, data, step, cfg, torch.Generator().manual_seed(3))
    assert losses == ref_losses and len(losses) > 2
    for a, b in zip(old.state_dict().values(), new.state_dict().values(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("regenerate", [False, True])
def test_adversarial_pairs_are_bit_for_bit_the_old_loop(digits, regenerate):
    n = 90
    g = torch.Generator().manual_seed(5)
    paired = torch.rand(n, generator=g) < 0.4
    adv = to_float(digits.train.images[:n]).add(0.03 * torch.randn(n, 1, 8, 8, generator=g)).clamp(0, 1)
    data = TrainSet(digits.train.images[:n], digits.train.labels[:n], adv, paired)
    cfg = TrainConfig(epochs=2, batch_size=32, crop_padding=2, hflip=True)
    old = _model(digits, 1)
    ref_losses = reference_fit(old, data, adversarial_pair_step(regenerate, 0.05), cfg,
                               torch.Generator().manual_seed(8))
    new = _model(digits, 1)
    step, losses = _recording(adversarial_pair_step(regenerate, 0.05))
    fit(new, data, step, cfg, torch.Generator().manual_seed(8))
    assert losses == ref_losses
    for a, b in zip(old.state_dict().values(), new.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_unlabeled_batches_are_mu_times_b_seeded_and_cover_the_set(digits):
    unl = digits.train.images[200:260]  # 60 unlabeled images
    data = TrainSet(digits.train.images[:20], digits.train.labels[:20], unlabeled=unl)
    seen: list[Batch] = []

    def step(model, batch):
        seen.append(batch)
        return supervised_step(model, batch)

    cfg = TrainConfig(epochs=3, batch_size=8)
    fit(_model(digits), data, step, cfg, torch.Generator().manual_seed(0), unlabeled_ratio=3)
    assert [b.u.shape[0] for b in seen] == [3 * b.x.shape[0] for b in seen]  # 24, 24, 12 per epoch
    assert [b.step for b in seen] == list(range(len(seen)))
    assert all(b.num_labeled == 20 and torch.equal(b.x_raw, to_float(data.images[b.idx])) for b in seen)
    # the first 60 drawn rows are one permutation of the unlabeled set
    drawn = torch.cat([b.u for b in seen])[:60].flatten(1)
    target = to_float(unl).flatten(1)
    match = (drawn[:, None, :] == target[None, :, :]).all(-1)  # [60, 60]
    assert match.any(1).all() and match.any(0).all()
    # seeded: same generator seed, same unlabeled batches
    again: list[Batch] = []
    fit(_model(digits), data, lambda m, b: (again.append(b), supervised_step(m, b))[1], cfg,
        torch.Generator().manual_seed(0), unlabeled_ratio=3)
    assert all(torch.equal(a.u, b.u) for a, b in zip(seen, again, strict=True))


def test_unlabeled_ratio_without_unlabeled_images_is_an_error(digits):
    data = TrainSet(digits.train.images[:20], digits.train.labels[:20])
    with pytest.raises(ValueError, match="unlabeled"):
        fit(_model(digits), data, supervised_step, TrainConfig(epochs=1), torch.Generator(),
            unlabeled_ratio=2)

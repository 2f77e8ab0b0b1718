"""Corruptions: each op against a hand-worked example or a property computed another way."""

from __future__ import annotations

import math

import pytest
import torch

from dalkit.data.corruptions import (
    CORRUPTIONS,
    corrupt,
    corruption_names,
    gaussian_kernel1d,
    parse_corruptions,
    rotate_by,
    shear_by,
    translate_by,
)
from dalkit.errors import ConfigError


def g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def grey(n: int = 64, value: float = 0.5, side: int = 28) -> torch.Tensor:
    return torch.full((n, 1, side, side), value)


def digits(n: int = 32, seed: int = 0) -> torch.Tensor:
    """Digit-like uint8 images: a bright random blob on black."""
    gen = g(seed)
    x = torch.zeros(n, 1, 28, 28)
    x[:, :, 8:20, 10:18] = torch.rand(n, 1, 12, 8, generator=gen) * 0.5 + 0.5
    return (x * 255).round().to(torch.uint8)


def test_gaussian_noise_has_the_stated_std():
    x = grey(200)
    for sev, s in zip(range(1, 6), (0.08, 0.12, 0.18, 0.26, 0.38), strict=True):
        d = CORRUPTIONS["gaussian_noise"](x, sev, g()) - x
        if sev <= 2:  # no clipping at 0.5 +- 4 s
            assert abs(float(d.std()) - s) < 0.01 * s + 1e-3
        assert abs(float(d.mean())) < 0.01


def test_shot_noise_is_poisson():
    x = grey(200, 0.4)
    y = CORRUPTIONS["shot_noise"](x, 1, g())  # c = 60: mean 0.4, variance 0.4 / 60
    assert abs(float(y.mean()) - 0.4) < 0.005
    assert abs(float(y.var()) - 0.4 / 60) < 0.1 * 0.4 / 60
    assert torch.allclose(y * 60, (y * 60).round(), atol=1e-4)  # integer photon counts / c


def test_impulse_noise_fraction_and_values():
    x = grey(200)
    y = CORRUPTIONS["impulse_noise"](x, 4, g())  # q = 0.17
    changed = y != x
    assert abs(float(changed.float().mean()) - 0.17) < 0.005
    assert set(y[changed].unique().tolist()) <= {0.0, 1.0}


def test_gaussian_kernel_matches_formula():
    k = gaussian_kernel1d(1.0)
    assert k.numel() == 7
    raw = [math.exp(-t * t / 2) for t in range(-3, 4)]
    assert torch.allclose(k, torch.tensor(raw) / sum(raw))


def test_gaussian_blur_impulse_response_is_outer_product():
    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, 14, 14] = 1.0
    y = CORRUPTIONS["gaussian_blur"](x, 3, g())  # sigma 1.0
    k = gaussian_kernel1d(1.0)
    expect = torch.outer(k, k)
    assert torch.allclose(y[0, 0, 11:18, 11:18], expect, atol=1e-6)
    assert float(y.sum()) == pytest.approx(1.0, abs=1e-5)
    const = grey(2, 0.3)
    assert torch.allclose(CORRUPTIONS["gaussian_blur"](const, 5, g()), const, atol=1e-6)


def test_motion_blur_spreads_a_pixel_along_the_row():
    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, 5, 10] = 1.0
    y = CORRUPTIONS["motion_blur"](x, 2, g())  # L = 5
    expect = torch.zeros(28, 28)
    expect[5, 8:13] = 0.2
    assert torch.allclose(y[0, 0], expect, atol=1e-6)


def test_pixelate_is_block_mean():
    x = torch.arange(16.0).view(1, 1, 4, 4) / 16
    y = CORRUPTIONS["pixelate"](x, 3, g())  # f = 0.5: 2x2 blocks
    for r in range(4):
        for c in range(4):
            br, bc = r // 2 * 2, c // 2 * 2
            assert float(y[0, 0, r, c]) == pytest.approx(float(x[0, 0, br:br + 2, bc:bc + 2].mean()))


def test_brightness_and_contrast_by_hand():
    x = torch.tensor([[[[0.2, 0.6], [0.95, 0.25]]]])
    b = CORRUPTIONS["brightness"](x, 1, g())  # +0.1, clipped
    assert torch.allclose(b, torch.tensor([[[[0.3, 0.7], [1.0, 0.35]]]]))
    c = CORRUPTIONS["contrast"](x, 1, g())  # c = 0.4 around mean 0.5
    assert torch.allclose(c, torch.tensor([[[[0.38, 0.54], [0.68, 0.40]]]]))


def test_fog_brightens_dark_pixels_and_grows_with_severity():
    x = digits(16).float() / 255
    diffs = [float((CORRUPTIONS["fog"](x, s, g()) - x).abs().mean()) for s in range(1, 6)]
    assert all(a < b for a, b in zip(diffs, diffs[1:], strict=False))
    y = CORRUPTIONS["fog"](x, 3, g())
    assert float(y[x == 0].min()) > 0  # the haze lifts the black background


def test_rotate_90_is_rot90():
    x = torch.rand(3, 1, 28, 28, generator=g())
    y = rotate_by(x, torch.full((3,), 90.0))
    # theta maps output (u, v) to input (u cos - v sin, u sin + v cos): output pixel (r, c) reads input
    # (c', r') = (r - m, m - c) about the centre m, which is torch.rot90 with k = 1 on (H, W)
    assert torch.allclose(y, torch.rot90(x, 1, (2, 3)), atol=1e-5)
    x0 = torch.zeros(1, 1, 28, 28)
    x0[0, 0, 0, 27] = 1.0  # top-right corner goes to the top-left corner
    assert float(rotate_by(x0, torch.tensor([90.0]))[0, 0, 0, 0]) == pytest.approx(1.0, abs=1e-5)


def test_translate_integer_pixels_is_a_zero_filled_shift():
    x = torch.rand(2, 1, 28, 28, generator=g())
    y = translate_by(x, torch.tensor([3.0, -2.0]), torch.tensor([0.0, 4.0]))
    e0 = torch.zeros(28, 28)
    e0[:, 3:] = x[0, 0, :, :-3]
    e1 = torch.zeros(28, 28)
    e1[4:, :-2] = x[1, 0, :-4, 2:]
    assert torch.allclose(y[0, 0], e0, atol=1e-5)
    assert torch.allclose(y[1, 0], e1, atol=1e-5)


def test_shear_moves_each_row_by_s_times_offset():
    x = torch.rand(1, 1, 28, 28, generator=g())
    y = shear_by(x, torch.tensor([2.0]))  # row r reads column c + 2 (r - 13.5): an integer shift
    expect = torch.zeros(28, 28)
    for r in range(28):
        shift = int(2 * (r - 13.5))
        for c in range(28):
            if 0 <= c + shift < 28:
                expect[r, c] = x[0, 0, r, c + shift]
    assert torch.allclose(y[0, 0], expect, atol=1e-5)


def test_scale_halves_a_centred_square():
    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, 4:24, 4:24] = 1.0  # 20 px square
    y = CORRUPTIONS["scale"](x, 5, g())  # z = 0.5 -> 10 px square
    assert float(y.sum()) == pytest.approx(100.0, abs=1.0)
    assert float(y[0, 0, 9:19, 9:19].min()) > 0.99


def test_stripe_inverts_exactly_one_band():
    x = torch.rand(8, 1, 28, 28, generator=g())
    y = CORRUPTIONS["stripe"](x, 3, g())  # 6 px
    for i in range(8):
        inverted = torch.isclose(y[i, 0], 1 - x[i, 0]).all(0)
        kept = torch.isclose(y[i, 0], x[i, 0]).all(0)
        cols = inverted.nonzero().squeeze(1).tolist()
        assert len(cols) == 6 and cols == list(range(cols[0], cols[0] + 6))
        assert int(kept.sum()) == 22


def test_lines_only_raise_pixels_to_white():
    x = digits(8).float() / 255
    for sev in (1, 5):
        y = CORRUPTIONS["lines"](x, sev, g())
        changed = y != x
        assert bool((y[changed] == 1).all())
        assert int(changed.flatten(1).any(1).sum()) >= 7  # lines cross nearly every image
    n1 = int((CORRUPTIONS["lines"](x, 1, g()) == 1).sum())
    n5 = int((CORRUPTIONS["lines"](x, 5, g()) == 1).sum())
    assert n5 > n1


@pytest.mark.parametrize("name", corruption_names())
def test_every_corruption_is_deterministic_in_range_and_monotone(name):
    x = digits(16)
    a = corrupt(x, name, 3, seed=5)
    assert a.dtype == torch.uint8 and a.shape == x.shape
    assert torch.equal(a, corrupt(x, name, 3, seed=5))
    diffs = [float((corrupt(x, name, s, seed=5).float() - x.float()).abs().mean()) for s in (1, 3, 5)]
    assert diffs[0] > 0 and diffs[0] < diffs[2], diffs


def test_parse_corruptions():
    assert parse_corruptions("fog:3") == ("fog:3",)
    assert parse_corruptions({"name": "fog", "severity": [1, 2]}) == ("fog:1", "fog:2")
    assert parse_corruptions(["fog:2", "fog:2"]) == ("fog:2",)
    assert len(parse_corruptions("all")) == 5 * len(CORRUPTIONS)
    assert len(parse_corruptions("all:3")) == len(CORRUPTIONS)
    assert parse_corruptions(None) == ()
    for bad in ("fog:6", "smoke:1", {"name": "fog", "severity": 0}, 3, "fog:1.5"):
        with pytest.raises(ConfigError):
            parse_corruptions(bad)
    with pytest.raises(ConfigError):
        corrupt(torch.zeros(1, 1, 4, 4), "fog", 1)

"""Weak/strong views for semi-supervised training: every RandAugment op against a hand-worked pixel
example, and the batch properties (shape, range, seeding, strong != weak) on grey and RGB images."""

from __future__ import annotations

import pytest
import torch

from dalkit.data import augment as A

X3 = torch.arange(9.0).view(1, 1, 3, 3) / 10  # rows [0 .1 .2], [.3 .4 .5], [.6 .7 .8]


def t(*v):
    return torch.tensor(v, dtype=torch.float32)


def grid(rows):
    return torch.tensor(rows, dtype=torch.float32).view(1, 1, len(rows), len(rows[0]))


def test_identity():
    assert torch.equal(A.identity(X3, t(0.3)), X3)


def test_autocontrast_stretches_each_channel_and_leaves_flat_ones():
    x = torch.stack([grid([[0.2, 0.4], [0.6, 0.6]])[0, 0], torch.full((2, 2), 0.3)]).unsqueeze(0)
    out = A.autocontrast(x)
    assert torch.allclose(out[0, 0], torch.tensor([[0.0, 0.5], [1.0, 1.0]]))
    assert torch.equal(out[0, 1], x[0, 1])


def test_equalize_follows_the_pil_lut():
    # 710 pixels: 300 at level 10, 300 at 20, 110 at 30.  step = (710 - 110) // 255 = 2;
    # lut[10] = (1 + 0) // 2 = 0, lut[20] = (1 + 300) // 2 = 150, lut[30] = (1 + 600) // 2 = 300 -> 255.
    levels = torch.tensor([10] * 300 + [20] * 300 + [30] * 110, dtype=torch.float32)
    x = (levels / 255).view(1, 1, 10, 71)
    out = (A.equalize(x) * 255).round().view(-1)
    assert out[:300].eq(0).all() and out[300:600].eq(150).all() and out[600:].eq(255).all()
    # step 0 (one level holds all but < 255 pixels): unchanged
    small = torch.tensor([[[[0.0, 0.0], [1 / 255, 2 / 255]]]])
    assert torch.allclose(A.equalize(small), small)


def test_rotate_90_degrees_counter_clockwise():
    out = A.rotate(X3, t(90.0))
    assert torch.allclose(out, grid([[0.2, 0.5, 0.8], [0.1, 0.4, 0.7], [0.0, 0.3, 0.6]]))
    assert torch.allclose(A.rotate(X3, t(0.0)), X3)


def test_solarize_inverts_at_or_above_the_threshold():
    out = A.solarize(grid([[0.2, 0.5, 0.9]]), t(0.5))
    assert torch.allclose(out, grid([[0.2, 0.5, 0.1]]))


def test_color_blends_with_luma_and_ignores_grey_images():
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    assert torch.allclose(A.color(red, t(0.0)).view(3), torch.full((3,), 0.299))
    assert torch.allclose(A.color(red, t(0.5)).view(3), torch.tensor([0.6495, 0.1495, 0.1495]))
    assert torch.equal(A.color(X3, t(0.2)), X3)


def test_posterize_keeps_the_top_bits():
    x = torch.tensor([55.0, 200.0]).view(1, 1, 1, 2) / 255
    assert torch.allclose(A.posterize(x, t(4)) * 255, torch.tensor([48.0, 192.0]).view(1, 1, 1, 2))
    assert torch.allclose(A.posterize(x, t(1)) * 255, torch.tensor([0.0, 128.0]).view(1, 1, 1, 2))


def test_contrast_blends_with_the_mean_luma():
    assert torch.allclose(A.contrast(grid([[0.0, 1.0]]), t(0.5)), grid([[0.25, 0.75]]))


def test_brightness_scales_and_clips():
    assert torch.allclose(A.brightness(grid([[0.4, 1.0]]), t(0.5)), grid([[0.2, 0.5]]))
    assert torch.allclose(A.brightness(grid([[0.4, 1.0]]), t(1.5)), grid([[0.6, 1.0]]))


def test_sharpness_blends_with_the_smooth_kernel_inside_the_border():
    x = grid([[0, 0, 0], [0, 0.5, 0], [0, 0, 0]])
    smooth_centre = 0.5 * 5 / 13
    assert torch.allclose(A.sharpness(x, t(0.0)), grid([[0, 0, 0], [0, smooth_centre, 0], [0, 0, 0]]))
    assert torch.allclose(A.sharpness(x, t(2.0))[0, 0, 1, 1], torch.tensor(1 - smooth_centre))


def test_shears():
    assert torch.allclose(A.shear_x(X3, t(1.0)), grid([[0, 0, 0.1], [0.3, 0.4, 0.5], [0.7, 0.8, 0]]))
    assert torch.allclose(A.shear_y(X3, t(1.0)), grid([[0, 0.1, 0.5], [0, 0.4, 0.8], [0.3, 0.7, 0]]))


def test_translations():
    assert torch.allclose(A.translate_x(X3, t(1.0)), grid([[0, 0, 0.1], [0, 0.3, 0.4], [0, 0.6, 0.7]]))
    assert torch.allclose(A.translate_y(X3, t(-1.0)), grid([[0.3, 0.4, 0.5], [0.6, 0.7, 0.8], [0, 0, 0]]))


def test_cutout_square_clipped_at_the_border():
    x = torch.ones(2, 1, 4, 4)
    out = A.cutout(x, torch.tensor([2, 3]), torch.tensor([1, 0]), torch.tensor([1, 3]), fill=0.5)
    expected0 = torch.ones(4, 4)
    expected0[0:2, 0:2] = 0.5
    expected1 = torch.ones(4, 4)
    expected1[0:2, 2:4] = 0.5  # centre (0, 3), side 3: rows -1..1, cols 2..4, clipped
    assert torch.equal(out[0, 0], expected0) and torch.equal(out[1, 0], expected1)


def test_ops_are_per_sample():
    x = X3.repeat(2, 1, 1, 1)
    out = A.translate_x(x, t(1.0, 0.0))
    assert torch.allclose(out[1], X3[0]) and not torch.allclose(out[0], X3[0])


@pytest.mark.parametrize("channels", [1, 3])
def test_views_shape_range_seeding_and_strength(digits, channels):
    x = (digits.train.images[:64].float() / 255).repeat(1, channels, 1, 1)
    weak = A.weak_view(x, torch.Generator().manual_seed(1), flip=channels == 3)
    strong = A.strong_view(x, torch.Generator().manual_seed(1), flip=channels == 3)
    again = A.strong_view(x, torch.Generator().manual_seed(1), flip=channels == 3)
    other = A.strong_view(x, torch.Generator().manual_seed(2), flip=channels == 3)
    for v in (weak, strong):
        assert v.shape == x.shape and v.dtype == x.dtype
        assert float(v.min()) >= 0 and float(v.max()) <= 1
    assert torch.equal(strong, again) and not torch.equal(strong, other)
    # strong views move further from the image than weak ones
    assert (strong - x).abs().mean() > (weak - x).abs().mean()
    # every op keeps [0, 1] on random inputs at extreme magnitudes
    r = torch.rand(8, channels, 12, 12, generator=torch.Generator().manual_seed(3))
    for name, (op, param) in A.RANDAUGMENT_OPS.items():
        for m in (0.0, 1.0):
            out = op(r, param(torch.full((8,), m), torch.tensor([1.0, -1.0] * 4), 12.0))
            assert out.shape == r.shape and float(out.min()) >= 0 and float(out.max()) <= 1, name

"""Corruptions against the references' definitions.

MNIST-C (google-research/mnist-c ``corruptions.py``) and CIFAR-10-C (hendrycks/robustness
``make_cifar_c.py``) are numpy + scikit-image code.  Each test below writes the reference's formula
again in numpy/scikit-image (the references' own library) and feeds it the same random draws dalkit
makes, so the comparison is exact; where the reference's pattern is random in a way that cannot be
replayed, statistics are compared instead.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage import color, feature, filters, transform

from dalkit.data.corruptions import (
    CORRUPTIONS,
    MNIST_C,
    canny,
    corrupt,
    corruption_names,
    gaussian_kernel1d,
    parse_corruptions,
    plasma_fractal,
    zigzag_points,
)
from dalkit.errors import ConfigError

REAL_MNIST = Path(__file__).parents[2] / "data" / "mnist"



def g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def grey(n: int = 64, value: float = 0.5, side: int = 28) -> torch.Tensor:
    return torch.full((n, 1, side, side), value)


@pytest.fixture(scope="module")
def mnist() -> torch.Tensor:
    """The first 64 real MNIST test digits, float [64, 1, 28, 28] in [0, 1]."""
    from dalkit.data.readers import read_idx

    path = REAL_MNIST / "t10k-images-idx3-ubyte"
    if not path.exists():
        pytest.skip("real MNIST not fetched (make data)")
    images = torch.as_tensor(np.array(read_idx(path)[:64])).float() / 255
    return images[:, None]


# -- the set ------------------------------------------------------------------------------------------------
def test_mnist_c_selects_exactly_the_published_fifteen_at_their_levels():
    keys = parse_corruptions("mnist-c")
    assert keys == ("shot_noise:5", "impulse_noise:4", "glass_blur:1", "motion_blur:1", "shear:2", "scale:3",
                    "rotate:2", "brightness:5", "translate:3", "stripe:1", "fog:5", "spatter:4",
                    "dotted_line:1", "zigzag:1", "canny_edges:1")
    assert len(MNIST_C) == 15
    # the levels those severities select on digits, from the reference's tables
    lv = {k: CORRUPTIONS[k.split(":")[0]].level(int(k.split(":")[1]), "digits") for k in keys}
    assert lv["shot_noise:5"] == 3 and lv["impulse_noise:4"] == 0.17 and lv["glass_blur:1"] == (0.7, 1, 2)
    assert lv["motion_blur:1"] == (10, 3) and lv["shear:2"] == 0.4 and lv["rotate:2"] == 0.4
    assert lv["scale:3"] == pytest.approx(1 / 0.7) and lv["brightness:5"] == 0.5 and lv["translate:3"] == 3
    assert lv["fog:5"] == (3.0, 1.4) and lv["spatter:4"] == (0.65, 0.3, 1, 0.65, 1.5)


def test_parse_corruptions():
    assert parse_corruptions("fog:3") == ("fog:3",)
    assert parse_corruptions({"name": "fog", "severity": [1, 2]}) == ("fog:1", "fog:2")
    assert parse_corruptions(["fog:2", "fog:2"]) == ("fog:2",)
    n_graded = sum(CORRUPTIONS[n].n_levels == 5 for n in CORRUPTIONS)
    n_fixed = len(CORRUPTIONS) - n_graded
    assert len(parse_corruptions("all")) == 5 * n_graded + n_fixed
    assert len(parse_corruptions("all:3")) == len(CORRUPTIONS) and "stripe:1" in parse_corruptions("all:3")
    assert parse_corruptions(None) == ()
    for bad in ("fog:6", "smoke:1", {"name": "fog", "severity": 0}, 3, "fog:1.5"):
        with pytest.raises(ConfigError):
            parse_corruptions(bad)
    with pytest.raises(ConfigError, match="'stripe' has one level"):
        parse_corruptions("stripe:3")
    with pytest.raises(ConfigError):
        corrupt(torch.zeros(1, 1, 4, 4), "fog", 1)
    with pytest.raises(ConfigError, match="family"):
        corrupt(torch.zeros(1, 1, 4, 4, dtype=torch.uint8), "fog", 1, family="photos")


@pytest.mark.parametrize("name", corruption_names())
def test_every_corruption_is_deterministic_and_changes_digits(name, mnist):
    x = (mnist[:6] * 255).round().to(torch.uint8)
    sev = CORRUPTIONS[name].n_levels
    a = corrupt(x, name, sev, seed=5)
    assert a.dtype == torch.uint8 and a.shape == x.shape
    assert torch.equal(a, corrupt(x, name, sev, seed=5))
    assert float((a.float() - x.float()).abs().mean()) > 1.0


# -- per-family severity tables ----------------------------------------------------------------------------
def test_natural_images_get_cifar10c_levels_and_digits_mnistc_levels():
    expected = {  # (digits = MNIST-C, natural = CIFAR-10-C), severity 1 and 5
        "gaussian_noise": ((0.08, 0.38), (0.04, 0.10)), "shot_noise": ((60, 3), (500, 50)),
        "impulse_noise": ((0.03, 0.27), (0.01, 0.07)), "contrast": ((0.4, 0.05), (0.75, 0.15)),
        "gaussian_blur": ((1, 6), (0.4, 1.0)), "brightness": ((0.1, 0.5), (0.05, 0.3)),
        "fog": (((1.5, 2.0), (3.0, 1.4)), ((0.2, 3.0), (1.5, 1.75))),
        "motion_blur": (((10, 3), (20, 15)), ((6, 1), (9, 2.5))),
    }
    for name, (dig, nat) in expected.items():
        c = CORRUPTIONS[name]
        assert (c.level(1, "digits"), c.level(5, "digits")) == dig
        assert (c.level(1, "natural"), c.level(5, "natural")) == nat
    rgb = torch.full((1, 3, 32, 32), 128, dtype=torch.uint8).expand(100, 3, 32, 32).contiguous()
    std = (corrupt(rgb, "gaussian_noise", 5, seed=1).float() - 128).std() / 255
    assert float(std) == pytest.approx(0.10, rel=0.03)  # CIFAR-10-C's sigma, not MNIST-C's 0.38
    grey_u8 = rgb[:, :1]
    std = (corrupt(grey_u8, "gaussian_noise", 1, seed=1).float() - 128).std() / 255
    assert float(std) == pytest.approx(0.08, rel=0.03)


# -- noise (random patterns: statistics) -------------------------------------------------------------------
def test_shot_noise_is_poisson_with_c_photons():
    x = grey(200, 0.4)
    y = CORRUPTIONS["shot_noise"](x, 5, g())  # MNIST-C's level: c = 3 -> mean 0.4, variance 0.4 / 3
    counts = (y * 3).round()
    assert torch.allclose(y * 3, counts, atol=1e-5)  # integer photon counts / c (before the clip)
    ref = np.random.default_rng(0).poisson(0.4 * 3, size=200 * 784) / 3.0
    ref = np.clip(ref, 0, 1)  # the reference clips to [0, 1]
    assert float(y.mean()) == pytest.approx(ref.mean(), abs=0.01)
    assert float(y.var()) == pytest.approx(ref.var(), rel=0.05)


def test_impulse_noise_fraction_and_values():
    x = grey(200)
    y = CORRUPTIONS["impulse_noise"](x, 4, g())  # q = 0.17
    changed = y != x
    assert abs(float(changed.float().mean()) - 0.17) < 0.005
    assert set(y[changed].unique().tolist()) <= {0.0, 1.0}
    assert float((y[changed] == 1).float().mean()) == pytest.approx(0.5, abs=0.01)


def test_gaussian_kernel_matches_scipy_radius():
    k = gaussian_kernel1d(1.0)
    assert k.numel() == 9  # truncate 4: radius int(4 sigma + 0.5)
    raw = [math.exp(-t * t / 2) for t in range(-4, 5)]
    assert torch.allclose(k, torch.tensor(raw) / sum(raw))


# -- blurs: exact against the reference with the same draws -----------------------------------------------
def test_gaussian_blur_digits_is_mnistc_vertical_only(mnist):
    x = mnist[:4].double()
    y = CORRUPTIONS["gaussian_blur"](x, 2, g(), "digits")  # sigma 2
    for i in range(4):  # MNIST-C: gaussian(2-D image, multichannel=True) -> the last axis is channels
        ref = np.clip(filters.gaussian(x[i, 0].numpy(), sigma=2, channel_axis=-1), 0, 1)
        assert np.allclose(y[i, 0].numpy(), ref, atol=1e-6)
    rgb = torch.rand(2, 3, 16, 16, generator=g(), dtype=torch.float64)
    y = CORRUPTIONS["gaussian_blur"](rgb, 5, g(), "natural")  # CIFAR-10-C sigma 1 over H and W
    for i in range(2):
        ref = filters.gaussian(rgb[i].permute(1, 2, 0).numpy(), sigma=1, channel_axis=-1)
        assert np.allclose(y[i].permute(1, 2, 0).numpy(), np.clip(ref, 0, 1), atol=1e-6)


def _glass_reference(img: np.ndarray, sigma: float, delta: int, iterations: int, gen: torch.Generator,
                     always: bool) -> np.ndarray:
    """MNIST-C / CIFAR-10-C glass blur on one [H, W] image, drawing as dalkit does (a coin, then
    (dx, dy)) for each visited pixel."""
    blur = (lambda a: filters.gaussian(a, sigma=sigma, channel_axis=-1)) if not always else (
        lambda a: filters.gaussian(a, sigma=sigma))
    x = np.uint8(blur(img) * 255)
    h, w = x.shape
    for _ in range(iterations):
        for hh in range(h - delta, delta, -1):
            for ww in range(w - delta, delta, -1):
                swap = True if always else bool(torch.randint(0, 2, (1,), generator=gen)[0])
                dx, dy = torch.randint(-delta, delta, (1, 2), generator=gen)[0].tolist()
                if swap:
                    hp, wp = hh + dy, ww + dx
                    x[hh, ww], x[hp, wp] = x[hp, wp], x[hh, ww]
    return np.clip(blur(x / 255.0), 0, 1)


@pytest.mark.parametrize("severity", [1, 5])
def test_glass_blur_matches_the_reference_loop(mnist, severity):
    x = mnist[7:8].double()
    sigma, delta, iters = CORRUPTIONS["glass_blur"].level(severity, "digits")
    y = CORRUPTIONS["glass_blur"](x, severity, g(3), "digits")
    ref = _glass_reference(x[0, 0].numpy(), sigma, delta, iters, g(3), always=False)
    assert np.allclose(y[0, 0].numpy(), ref, atol=1e-9)
    assert not np.allclose(ref, filters.gaussian(x[0, 0].numpy(), sigma=sigma, channel_axis=-1), atol=0.02)


def _motion_reference(img: np.ndarray, radius: float, sigma: float, angle_deg: float) -> np.ndarray:
    """ImageMagick's MotionBlurImage on one grey [H, W] image in [0, 1] (edge virtual pixels)."""
    width = int(2 * math.ceil(radius) + 1)
    kern = [math.exp(-(i * i) / (2 * sigma * sigma)) / (math.sqrt(2 * math.pi) * sigma) for i in range(width)]
    kern = [k / sum(kern) for k in kern]
    px, py = width * math.sin(math.radians(angle_deg)), width * math.cos(math.radians(angle_deg))
    offs = [(math.ceil(i * py / math.hypot(px, py) - 0.5), math.ceil(i * px / math.hypot(px, py) - 0.5))
            for i in range(width)]
    h, w = img.shape
    out = np.zeros_like(img)
    for r in range(h):
        for c in range(w):
            out[r, c] = sum(k * img[min(max(r + oy, 0), h - 1), min(max(c + ox, 0), w - 1)]
                            for k, (ox, oy) in zip(kern, offs, strict=True))
    return np.round(out * 255) / 255


def test_motion_blur_matches_imagemagick_formula(mnist):
    x = mnist[:2].double()
    y = CORRUPTIONS["motion_blur"](x, 1, g(4), "digits")  # radius 10, sigma 3
    angles = torch.rand(2, generator=g(4), dtype=torch.float64) * 90 - 45
    for i in range(2):
        ref = _motion_reference(x[i, 0].numpy(), 10, 3, float(angles[i]))
        assert np.allclose(y[i, 0].numpy(), ref, atol=1e-9)


# -- geometric: scikit-image's warp with the reference's matrices ------------------------------------------
def _centred(lin: np.ndarray) -> np.ndarray:
    """The reference's a3 = 13.5 (1 - a1 - a2), b3 = 13.5 (1 - b1 - b2)."""
    m = np.eye(3)
    m[:2, :2] = lin
    m[0, 2] = 13.5 * (1 - lin[0, 0] - lin[0, 1])
    m[1, 2] = 13.5 * (1 - lin[1, 0] - lin[1, 1])
    return m


def _signs(n: int, gen: torch.Generator) -> list[float]:
    return (torch.randint(0, 2, (n,), generator=gen).double() * 2 - 1).tolist()


@pytest.mark.parametrize("name,severity", [("shear", 2), ("rotate", 2), ("scale", 3), ("translate", 3)])
def test_affine_corruptions_match_skimage_warp(mnist, name, severity):
    x = mnist[:4].double()
    y = CORRUPTIONS[name](x, severity, g(6), "digits")
    c = CORRUPTIONS[name].level(severity, "digits")
    gen = g(6)
    if name == "translate":
        bits = (torch.randint(0, 2, (4, 2), generator=gen).double() * 2 - 1).tolist()
    else:
        bits = _signs(4, gen) if name != "scale" else [1.0] * 4
    for i in range(4):
        s = c * bits[i] if name in ("shear", "rotate") else c
        if name == "shear":  # scikit-image < 0.20: AffineTransform(shear=s) = [[1, -sin s], [0, cos s]]
            m = _centred(np.array([[1, -math.sin(s)], [0, math.cos(s)]]))
        elif name == "rotate":
            m = _centred(np.array([[math.cos(s), -math.sin(s)], [math.sin(s), math.cos(s)]]))
        elif name == "scale":
            m = _centred(np.diag([s, s]))
        else:
            m = np.array([[1, 0, c * bits[i][0]], [0, 1, c * bits[i][1]], [0, 0, 1]])
        ref = np.clip(transform.warp(x[i, 0].numpy(), inverse_map=transform.AffineTransform(matrix=m)), 0, 1)
        assert np.allclose(y[i, 0].numpy(), ref, atol=1e-6), name


# -- photometric -------------------------------------------------------------------------------------------
def test_brightness_goes_through_hsv_as_the_references(mnist):
    x = mnist[:3].double()
    y = CORRUPTIONS["brightness"](x, 5, g(), "digits")
    for i in range(3):  # MNIST-C: grey -> RGB -> HSV, V + 0.5 clipped -> RGB -> grey
        hsv = color.rgb2hsv(color.gray2rgb(x[i, 0].numpy()))
        hsv[..., 2] = np.clip(hsv[..., 2] + 0.5, 0, 1)
        ref = np.clip(color.rgb2gray(color.hsv2rgb(hsv)), 0, 1)
        assert np.allclose(y[i, 0].numpy(), ref, atol=1e-6)
    rgb = torch.rand(2, 3, 8, 8, generator=g(), dtype=torch.float64)
    rgb[0, :, 0, 0] = 0  # a black pixel: V = 0
    y = CORRUPTIONS["brightness"](rgb, 5, g(), "natural")  # CIFAR-10-C: V + 0.3
    for i in range(2):
        hsv = color.rgb2hsv(rgb[i].permute(1, 2, 0).numpy())
        hsv[..., 2] = np.clip(hsv[..., 2] + 0.3, 0, 1)
        assert np.allclose(y[i].permute(1, 2, 0).numpy(), np.clip(color.hsv2rgb(hsv), 0, 1), atol=1e-6)


def test_contrast_is_per_channel_mean_scaling():
    x = torch.tensor([[[[0.2, 0.6], [0.95, 0.25]]]])
    c = CORRUPTIONS["contrast"](x, 1, g(), "digits")  # c = 0.4 around mean 0.5
    assert torch.allclose(c, torch.tensor([[[[0.38, 0.54], [0.68, 0.40]]]]))


def _plasma_reference(mapsize: int, decay: float, gen: torch.Generator) -> np.ndarray:
    """The references' diamond-square (np.roll wrap-around), uniforms from ``gen``."""
    m = np.empty((mapsize, mapsize))
    m[0, 0] = 0
    step, wibble = mapsize, 100.0

    def wibbled(a):
        u = torch.rand(a.shape, generator=gen, dtype=torch.float64).numpy() * 2 - 1
        return a / 4 + wibble * (wibble * u)

    while step >= 2:
        corner = m[0:mapsize:step, 0:mapsize:step]
        acc = corner + np.roll(corner, shift=-1, axis=0)
        acc += np.roll(acc, shift=-1, axis=1)
        m[step // 2:mapsize:step, step // 2:mapsize:step] = wibbled(acc)
        dr = m[step // 2:mapsize:step, step // 2:mapsize:step]
        ul = m[0:mapsize:step, 0:mapsize:step]
        half = step // 2
        lt = dr + np.roll(dr, 1, axis=0) + ul + np.roll(ul, -1, axis=1)
        m[0:mapsize:step, half:mapsize:step] = wibbled(lt)
        tt = dr + np.roll(dr, 1, axis=1) + ul + np.roll(ul, -1, axis=0)
        m[half:mapsize:step, 0:mapsize:step] = wibbled(tt)
        step //= 2
        wibble /= decay
    m -= m.min()
    return m / m.max()


def test_plasma_fractal_and_fog_match_the_reference(mnist):
    ref = _plasma_reference(64, 1.4, g(8))
    ours = plasma_fractal(1, 64, 1.4, g(8))[0].numpy()
    assert np.allclose(ours, ref, atol=1e-12)
    x = mnist[:1].double()
    y = CORRUPTIONS["fog"](x, 5, g(9), "digits")  # a = 3, decay 1.4, 256 px map
    frac = _plasma_reference(256, 1.4, g(9))[:28, :28]
    img = x[0, 0].numpy()
    expect = np.clip((img + 3 * frac) * img.max() / (img.max() + 3), 0, 1)
    assert np.allclose(y[0, 0].numpy(), expect, atol=1e-6)


def test_spatter_matches_the_reference(mnist):
    x = mnist[:1].double()
    y = CORRUPTIONS["spatter"](x, 4, g(10), "digits")
    loc, scale, sigma, t, sigma_m = (0.65, 0.3, 1, 0.65, 1.5)
    liquid = loc + scale * torch.randn((1, 1, 28, 28), generator=g(10), dtype=torch.float64)[0, 0].numpy()
    liquid = filters.gaussian(liquid, sigma=sigma)
    liquid[liquid < t] = 0
    m = filters.gaussian(np.where(liquid > t, 1, 0).astype(np.float32), sigma=sigma_m)
    m[m < 0.8] = 0
    img = x[0, 0].numpy() * (1 - m)
    expect = np.clip(img + 63 / 255 * m, 0, 1)
    assert np.allclose(y[0, 0].numpy(), expect, atol=1e-6)
    assert (m > 0).any()


# -- occlusion and edges -----------------------------------------------------------------------------------
def test_stripe_inverts_the_outer_quarters():
    x = torch.rand(2, 1, 28, 28, generator=g())
    y = CORRUPTIONS["stripe"](x, 1, g())
    expect = x.clone()
    expect[..., :7] = 1 - x[..., :7]
    expect[..., 21:] = 1 - x[..., 21:]
    assert torch.allclose(y, expect)


def _line_reference(c0, r0, c1, r1):
    if c1 == c0:
        return np.zeros((28, 28))
    cc, rr = np.meshgrid(np.linspace(0, 27, 28), np.linspace(0, 27, 28), sparse=True)
    m = (r1 - r0) / (c1 - c0)
    dist = np.clip(np.abs(rr - (m * (cc - c0) + r0)), 0, 2.3 - 1e-10)
    out = np.clip(np.log(1 - dist / 2.3) + 1, 0, 1)
    out[:, :int(np.floor(c0))] = 0
    out[:, int(np.ceil(c1)):] = 0
    return out


def test_dotted_line_matches_the_reference(mnist):
    x = mnist[:3].double()
    y = CORRUPTIONS["dotted_line"](x, 1, g(11), "digits")
    r = torch.randint(0, 27, (3, 2), generator=g(11))
    for i in range(3):
        line = _line_reference(0, int(r[i, 0]), 27, int(r[i, 1]))
        idx = np.arange(0, 30, 2)
        off = True
        for k in range(1, len(idx)):
            if off:
                line[:, idx[k - 1]:idx[k]] = 0
            off = not off
        assert np.allclose(y[i, 0].numpy(), np.clip(x[i, 0].numpy() + line, 0, 1), atol=1e-9)


def _zigzag_reference(img, r0, r1):
    a = b = 2.0
    c0, c1 = 2, 25
    theta = np.arctan((r1 - r0) / (c1 - c0))
    d = (c1 - c0) / np.cos(theta)
    ends = [(0, 0)]
    for i in range(int((d - a) // (2 * a)) + 1):
        r_i = (-1) ** i * b
        ends.append(((2 * i + 1) * a, r_i))
    max_c = (2 * a) * (d // (2 * a))
    if d != max_c:
        ends.append((d, r_i / (2 * (d - max_c))))
    ends = np.array(ends, dtype=float).T
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    cs, rs = rot.dot(ends)
    cs += c0
    rs += r0
    x = img.copy()
    for i in range(1, len(cs)):
        x = np.clip(x + _line_reference(cs[i - 1], rs[i - 1], cs[i], rs[i]), 0, 1)
    return x


def test_zigzag_matches_the_reference(mnist):
    x = mnist[:4].double()
    y = CORRUPTIONS["zigzag"](x, 1, g(12), "digits")
    gen = g(12)
    r0 = torch.randint(0, 27, (4,), generator=gen)
    r1 = r0 + torch.randint(-5, 5, (4,), generator=gen)
    for i in range(4):
        ref = _zigzag_reference(x[i, 0].numpy(), int(r0[i]), int(r1[i]))
        assert np.allclose(y[i, 0].numpy(), ref, atol=1e-9)
    assert len(zigzag_points(10, 10)) == 8  # 6 teeth + start + the closing point


def test_canny_matches_skimage_on_real_digits(mnist):
    ours = canny(mnist.double())[:, 0].numpy()
    for i in range(len(mnist)):
        ref = feature.canny(mnist[i, 0].double().numpy(), mask=np.ones((28, 28), bool))  # MNIST-C's canny
        assert (ours[i] == ref).all(), i
    assert ours.sum() > 1000
    y = CORRUPTIONS["canny_edges"](mnist[:2], 1, g(), "digits")
    assert set(y.unique().tolist()) <= {0.0, 1.0}


def test_scipy_sobel_is_the_gradient_used(mnist):
    """canny()'s gradients are scipy's sobel (a regression guard on the axis convention)."""
    img = mnist[0, 0].double().numpy()
    sm = ndimage.gaussian_filter(img, 1.0, mode="constant") / ndimage.gaussian_filter(np.ones_like(img), 1.0,
                                                                                      mode="constant")
    mag = np.hypot(ndimage.sobel(sm, axis=0), ndimage.sobel(sm, axis=1))
    edges = canny(torch.as_tensor(img)[None, None])[0, 0].numpy()
    assert mag[edges].min() >= 0.1

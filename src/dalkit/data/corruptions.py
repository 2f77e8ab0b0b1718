"""Test-set corruptions: MNIST-C (Mu & Gilmer 2019) and CIFAR-10-C (Hendrycks & Dietterich 2019),
regenerated on tensors.

The DM2 paper evaluates DM2-AT on MNIST-C, SVHN-C and CIFAR10-C (Tables 3 and 5). Those files cannot be
downloaded everywhere, so dalkit regenerates them from the clean test split with the definitions of the
reference code (google-research/mnist-c ``corruptions.py``; hendrycks/robustness
``ImageNet-C/create_c/make_cifar_c.py``), written anew as batched tensor functions of float images in
[0, 1], [N, C, H, W]. Randomness comes from a seeded ``torch.Generator``, so a corrupted test set is a
function of (corruption, severity, family, seed); the random patterns follow the references'
distributions, not their numpy streams.

**Severity tables per family.** Each corruption has a table of five levels per image family:
``digits`` (1-channel images: MNIST-C's tables) and ``natural`` (3-channel images: CIFAR-10-C's tables
where CIFAR-10-C has the corruption, else MNIST-C's). :func:`corrupt` picks the family from the channel
count unless told. Corruptions without levels in the reference (``stripe``, ``line``, ``dotted_line``,
``zigzag``, ``canny_edges``) have one level, severity 1.

**MNIST-C as published.** ``mnist-c`` in ``test_corruptions`` selects exactly MNIST-C's 15
corruptions, each at the severity its reference function defaults to, which is the level of the static
dataset (:data:`MNIST_C`): shot noise 5, impulse noise 4, glass blur 1, motion blur 1, shear 2, scale 3,
rotate 2, brightness 5, translate 3, stripe, fog 5, spatter 4, dotted line, zigzag, canny edges.

Reference quirks kept on purpose (they are what MNIST-C is): the reference blurs 2-D digit arrays with
``gaussian(..., multichannel=True)``, which treats the columns as channels, so its Gaussian and glass
blurs act along the rows' axis only (vertical); glass blur truncates to uint8 between its two blurs and
swaps each pixel with probability 1/2 by an offset drawn from [-d, d) (CIFAR-10-C always swaps); line
corruptions live on MNIST's 0..27 coordinate frame (stretched to other sizes).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from dalkit.errors import ConfigError

FAMILIES = ("digits", "natural")
SEVERITIES = (1, 2, 3, 4, 5)
OpFn = Callable[[Tensor, Any, torch.Generator, str], Tensor]


@dataclass(frozen=True)
class Corruption:
    """One corruption: its op and its severity tables.

    Attributes:
        op: ``op(x, level, generator, family)`` on float images [N, C, H, W] in [0, 1].
        digits: the levels for digits (MNIST-C), one per severity (a single level = fixed corruption).
        natural: CIFAR-10-C's levels; None = the digits' table.
    """

    op: OpFn
    digits: tuple
    natural: tuple | None = None

    @property
    def n_levels(self) -> int:
        return len(self.digits)

    def level(self, severity: int, family: str) -> Any:
        table = self.natural if family == "natural" and self.natural is not None else self.digits
        return table[severity - 1]

    def __call__(self, x: Tensor, severity: int, g: torch.Generator, family: str = "digits") -> Tensor:
        return self.op(x, self.level(severity, family), g, family)


CORRUPTIONS: dict[str, Corruption] = {}

#: MNIST-C's benchmark: the 15 corruptions and the severity of the static dataset.
MNIST_C: tuple[tuple[str, int], ...] = (
    ("shot_noise", 5), ("impulse_noise", 4), ("glass_blur", 1), ("motion_blur", 1), ("shear", 2),
    ("scale", 3), ("rotate", 2), ("brightness", 5), ("translate", 3), ("stripe", 1), ("fog", 5),
    ("spatter", 4), ("dotted_line", 1), ("zigzag", 1), ("canny_edges", 1))


def _register(name: str, digits: tuple, natural: tuple | None = None) -> Callable[[OpFn], OpFn]:
    def deco(fn: OpFn) -> OpFn:
        CORRUPTIONS[name] = Corruption(fn, digits, natural)
        return fn

    return deco


def _rand(shape: tuple[int, ...], g: torch.Generator, like: Tensor) -> Tensor:
    return torch.rand(shape, generator=g).to(like.device, like.dtype)


def _randn(shape: tuple[int, ...], g: torch.Generator, like: Tensor) -> Tensor:
    return torch.randn(shape, generator=g).to(like.device, like.dtype)


# -- blur helpers ----------------------------------------------------------------------------------------
def gaussian_kernel1d(sigma: float, radius: int | None = None) -> Tensor:
    """Normalised 1-d Gaussian weights exp(-t^2 / 2 sigma^2), t = -r..r; r defaults to
    int(4 sigma + 0.5), the radius of scipy/scikit-image's ``gaussian`` (truncate = 4)."""
    r = radius if radius is not None else max(1, int(4 * sigma + 0.5))
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    w = torch.exp(-(t**2) / (2 * sigma**2))
    return (w / w.sum()).float()


def _conv1d(x: Tensor, k: Tensor, dim: int, mode: str = "replicate") -> Tensor:
    """Depthwise 1-d convolution of [N, C, H, W] along ``dim`` (-1 columns, -2 rows)."""
    c, r = x.shape[1], k.numel() // 2
    if r == 0:
        return x
    k = k.to(x.device, x.dtype)
    if dim == -1:
        pad, kern = (r, r, 0, 0), k.view(1, 1, 1, -1)
    else:
        pad, kern = (0, 0, r, r), k.view(1, 1, -1, 1)
    return F.conv2d(F.pad(x, pad, mode=mode), kern.repeat(c, 1, 1, 1), groups=c)


def _gaussian(x: Tensor, sigma: float, axes: tuple[int, ...] = (-2, -1), mode: str = "replicate") -> Tensor:
    """scikit-image's ``gaussian`` (truncate 4, 'nearest' = replicate borders) along ``axes``."""
    k = gaussian_kernel1d(sigma)
    for dim in axes:
        x = _conv1d(x, k, dim, mode)
    return x


def _blur_axes(family: str) -> tuple[int, ...]:
    # MNIST-C calls gaussian(2-D digit, multichannel=True): the last axis is taken for channels, so only
    # the rows' axis is blurred.  CIFAR-10-C's images are [H, W, 3]: both spatial axes.
    return (-2,) if family == "digits" else (-2, -1)


def _conv_separable(x: Tensor, kx: Tensor, ky: Tensor) -> Tensor:
    """Depthwise convolution with kernel ky (rows) x kx (columns), replicate padding: [N, C, H, W]."""
    return _conv1d(_conv1d(x, kx, -1), ky, -2)


# -- noise -------------------------------------------------------------------------------------------
@_register("gaussian_noise", (0.08, 0.12, 0.18, 0.26, 0.38), (0.04, 0.06, 0.08, 0.09, 0.10))
def gaussian_noise(x: Tensor, s: float, g: torch.Generator, family: str) -> Tensor:
    """x + N(0, s^2), clipped to [0, 1]."""
    return (x + s * _randn(tuple(x.shape), g, x)).clamp(0, 1)


@_register("shot_noise", (60.0, 25.0, 12.0, 5.0, 3.0), (500.0, 250.0, 100.0, 75.0, 50.0))
def shot_noise(x: Tensor, c: float, g: torch.Generator, family: str) -> Tensor:
    """Poisson(c x) / c: c photons per unit intensity, clipped."""
    return (torch.poisson((x * c).cpu(), generator=g).to(x.device, x.dtype) / c).clamp(0, 1)


@_register("impulse_noise", (0.03, 0.06, 0.09, 0.17, 0.27), (0.01, 0.02, 0.03, 0.05, 0.07))
def impulse_noise(x: Tensor, q: float, g: torch.Generator, family: str) -> Tensor:
    """Salt-and-pepper (scikit-image ``random_noise(mode='s&p', amount=q)``): each value is hit with
    probability q and then set to 1 or 0 with probability 1/2 each."""
    hit = _rand(tuple(x.shape), g, x) < q
    salt = _rand(tuple(x.shape), g, x) < 0.5
    return torch.where(hit, salt.to(x.dtype), x)


# -- blur ----------------------------------------------------------------------------------------------
@_register("gaussian_blur", (1.0, 2.0, 3.0, 4.0, 6.0), (0.4, 0.6, 0.7, 0.8, 1.0))
def gaussian_blur(x: Tensor, sigma: float, g: torch.Generator, family: str) -> Tensor:
    """Gaussian blur of width sigma px (digits: along the rows' axis only, as MNIST-C's code does)."""
    del g
    return _gaussian(x, sigma, _blur_axes(family)).clamp(0, 1)


@_register("glass_blur", ((0.7, 1, 2), (0.9, 2, 1), (1.0, 2, 3), (1.1, 3, 2), (1.5, 4, 2)),
           ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)))
def glass_blur(x: Tensor, level: tuple, g: torch.Generator, family: str) -> Tensor:
    """Blur (sigma), truncate to 8 bits, then ``iterations`` sweeps from the bottom-right corner that
    swap each pixel (h, w), h, w in (d, side - d], with the pixel at (h + dy, w + dx), dx, dy uniform on
    [-d, d) (MNIST-C: each swap happens with probability 1/2), then blur again."""
    sigma, delta, iterations = level
    axes = _blur_axes(family)
    n, c, h, w = x.shape
    y = torch.floor(_gaussian(x.double(), sigma, axes) * 255).clamp(0, 255)  # np.uint8() truncates
    flat = y.reshape(n, c, h * w)
    rows = torch.arange(n)
    for _ in range(iterations):
        for i in range(h - delta, delta, -1):
            for j in range(w - delta, delta, -1):
                if family == "digits":
                    swap = torch.randint(0, 2, (n,), generator=g).bool()
                else:
                    swap = torch.ones(n, dtype=torch.bool)
                d = torch.randint(-delta, delta, (n, 2), generator=g)  # (dx, dy)
                a = i * w + j
                b = (i + d[:, 1]) * w + (j + d[:, 0])  # [N]
                b = torch.where(swap, b, torch.full_like(b, a))
                va = flat[:, :, a].clone()
                flat[:, :, a] = flat[rows, :, b]
                flat[rows, :, b] = va
    y = flat.view(n, c, h, w) / 255.0
    return _gaussian(y, sigma, axes).clamp(0, 1).to(x.dtype)


def motion_kernel(radius: float, sigma: float) -> Tensor:
    """ImageMagick's motion-blur weights: a one-sided Gaussian over 2 ceil(radius) + 1 taps,
    exp(-i^2 / 2 sigma^2) for i = 0, 1, ..., normalised."""
    width = int(2 * math.ceil(radius) + 1)
    i = torch.arange(width, dtype=torch.float64)
    k = torch.exp(-(i**2) / (2 * sigma**2))
    return k / k.sum()


@_register("motion_blur", ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),
           ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)))
def motion_blur(x: Tensor, level: tuple, g: torch.Generator, family: str) -> Tensor:
    """ImageMagick ``motion_blur(radius, sigma, angle)``, angle ~ U(-45, 45) degrees per image: output
    (r, c) = sum_i k_i x(r + round(i sin a), c + round(i cos a)), borders replicated, 8-bit result."""
    radius, sigma = level
    n, ch, h, w = x.shape
    k = motion_kernel(radius, sigma)  # [T]
    angle = (torch.rand(n, generator=g, dtype=torch.float64) * 90 - 45) * math.pi / 180
    i = torch.arange(k.numel(), dtype=torch.float64)
    # offset = ceil(i * cos(a) - 0.5) (ImageMagick's rounding), per image and tap: [N, T]
    off_c = torch.ceil(i[None] * torch.cos(angle)[:, None] - 0.5).long()
    off_r = torch.ceil(i[None] * torch.sin(angle)[:, None] - 0.5).long()
    rr = torch.arange(h)[None, :, None, None] + off_r[:, None, None, :]  # [N, H, 1, T]
    cc = torch.arange(w)[None, None, :, None] + off_c[:, None, None, :]  # [N, 1, W, T]
    idx = rr.clamp(0, h - 1) * w + cc.clamp(0, w - 1)  # [N, H, W, T]
    flat = x.double().reshape(n, ch, h * w)
    out = torch.zeros(n, ch, h * w, dtype=torch.float64)
    for t in range(k.numel()):  # one tap at a time: memory O(N H W)
        out += k[t] * flat.gather(2, idx[..., t].reshape(n, 1, -1).expand(n, ch, -1))
    out = out.view(n, ch, h, w)
    return (torch.round(out * 255).clamp(0, 255) / 255).to(x.dtype)  # ImageMagick writes 8-bit PNG


@_register("pixelate", (0.6, 0.5, 0.4, 0.3, 0.25), (0.95, 0.9, 0.85, 0.75, 0.65))
def pixelate(x: Tensor, f: float, g: torch.Generator, family: str) -> Tensor:
    """Average-pool to int(side * f), upsample back (nearest; the references resize with PIL's box
    filter both ways)."""
    del g
    h, w = x.shape[-2:]
    small = F.adaptive_avg_pool2d(x, (max(1, int(h * f)), max(1, int(w * f))))
    return F.interpolate(small, size=(h, w), mode="nearest")


# -- photometric --------------------------------------------------------------------------------------
@_register("brightness", (0.1, 0.2, 0.3, 0.4, 0.5), (0.05, 0.1, 0.15, 0.2, 0.3))
def brightness(x: Tensor, b: float, g: torch.Generator, family: str) -> Tensor:
    """HSV value + b, clipped (both references).  Hue and saturation are kept, so RGB scales by
    V'/V; a grey image (MNIST-C converts grey -> RGB -> HSV -> RGB -> grey) becomes clip(x + b)."""
    del g
    v = x.amax(dim=1, keepdim=True)
    v_new = (v + b).clamp(max=1)
    scaled = torch.where(v > 0, x * v_new / v.clamp(min=1e-12), v_new.expand_as(x))
    return scaled.clamp(0, 1)


@_register("contrast", (0.4, 0.3, 0.2, 0.1, 0.05), (0.75, 0.5, 0.4, 0.3, 0.15))
def contrast(x: Tensor, c: float, g: torch.Generator, family: str) -> Tensor:
    """(x - m) c + m, m the per-image, per-channel spatial mean."""
    del g
    m = x.mean(dim=(2, 3), keepdim=True)
    return ((x - m) * c + m).clamp(0, 1)


def plasma_fractal(n: int, mapsize: int, decay: float, g: torch.Generator) -> Tensor:
    """The references' diamond-square height map, [n, mapsize, mapsize] in [0, 1] (each map rescaled
    by its own min and max).  Each new point is the mean of its 4 neighbours (corners or diamond,
    wrapping) plus wibble * U(-wibble, wibble), wibble = 100 at first and divided by ``decay`` per
    level."""
    if mapsize & (mapsize - 1):
        raise ConfigError(f"plasma_fractal mapsize must be a power of two, got {mapsize}")
    m = torch.zeros(n, mapsize, mapsize, dtype=torch.float64)
    step, wibble = mapsize, 100.0

    def wibbled(acc: Tensor) -> Tensor:
        u = torch.rand(acc.shape, generator=g, dtype=torch.float64) * 2 - 1
        return acc / 4 + wibble * (wibble * u)

    while step >= 2:
        half = step // 2
        corners = m[:, 0::step, 0::step]
        sq = corners + torch.roll(corners, -1, dims=1)
        sq = sq + torch.roll(sq, -1, dims=2)
        m[:, half::step, half::step] = wibbled(sq)
        dr = m[:, half::step, half::step]
        ul = m[:, 0::step, 0::step]
        lt = dr + torch.roll(dr, 1, dims=1) + ul + torch.roll(ul, -1, dims=2)
        m[:, 0::step, half::step] = wibbled(lt)
        tt = dr + torch.roll(dr, 1, dims=2) + ul + torch.roll(ul, -1, dims=1)
        m[:, half::step, 0::step] = wibbled(tt)
        step = half
        wibble /= decay
    m = m - m.amin(dim=(1, 2), keepdim=True)
    return m / m.amax(dim=(1, 2), keepdim=True)


@_register("fog", ((1.5, 2.0), (2.0, 2.0), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)),
           ((0.2, 3.0), (0.5, 3.0), (0.75, 2.5), (1.0, 2.0), (1.5, 1.75)))
def fog(x: Tensor, level: tuple, g: torch.Generator, family: str) -> Tensor:
    """(x + a F) * max(x) / (max(x) + a), F the top-left crop of a plasma fractal (map 256 px for
    digits as MNIST-C, 32 px or the next power of two above the image for natural images)."""
    a, decay = level
    n, c, h, w = x.shape
    side = max(h, w)
    mapsize = 256 if family == "digits" else max(32, 1 << (side - 1).bit_length())
    mapsize = max(mapsize, 1 << (side - 1).bit_length())
    out = torch.empty_like(x)
    chunk = max(1, 2**24 // mapsize**2)
    for s in range(0, n, chunk):
        xs = x[s:s + chunk]
        frac = plasma_fractal(xs.shape[0], mapsize, decay, g)[:, None, :h, :w].to(x.device, x.dtype)
        top = xs.amax(dim=(1, 2, 3), keepdim=True)
        out[s:s + chunk] = ((xs + a * frac) * top / (top + a)).clamp(0, 1)
    return out


@_register("spatter", ((0.65, 0.3, 4, 0.69, 0.6), (0.65, 0.3, 3, 0.68, 0.6), (0.65, 0.3, 2, 0.68, 0.5),
                       (0.65, 0.3, 1, 0.65, 1.5), (0.67, 0.4, 1, 0.65, 1.5)))
def spatter(x: Tensor, level: tuple, g: torch.Generator, family: str) -> Tensor:
    """MNIST-C's mud spatter: a liquid layer N(loc, scale) blurred (sigma), values below t set to 0, its
    mask (> t) blurred (sigma_m) and cut below 0.8 gives m; x (1 - m) + (63 / 255) m."""
    loc, scale, sigma, t, sigma_m = level
    n, c, h, w = x.shape
    liquid = loc + scale * torch.randn((n, 1, h, w), generator=g, dtype=torch.float64)
    liquid = _gaussian(liquid, sigma)
    liquid = torch.where(liquid < t, torch.zeros_like(liquid), liquid)
    m = _gaussian((liquid > t).double(), sigma_m)
    m = torch.where(m < 0.8, torch.zeros_like(m), m).to(x.device, x.dtype)
    return (x * (1 - m) + 63 / 255 * m).clamp(0, 1)


# -- geometric (MNIST-C: scikit-image warps about the image centre, bilinear, zeros outside) -----------
def warp(x: Tensor, inverse: Tensor) -> Tensor:
    """scikit-image ``warp(x, inverse_map)`` for affine maps: output pixel (col c, row r) takes the
    bilinear value of the input at ``inverse`` [N, 2, 3] @ (c, r, 1), zeros outside.

    Args:
        x: float [N, C, H, W].
        inverse: [N, 2, 3] affine maps in pixel coordinates (x = column, y = row), output -> input.
    """
    n, _, h, w = x.shape
    rows, cols = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                                indexing="ij")
    pts = torch.stack([cols, rows, torch.ones_like(cols)], -1).view(1, h * w, 3)  # [1, HW, 3]
    src = pts @ inverse.double().transpose(1, 2)  # [N, HW, 2] (col, row)
    gx = 2 * src[..., 0] / max(w - 1, 1) - 1
    gy = 2 * src[..., 1] / max(h - 1, 1) - 1
    grid = torch.stack([gx, gy], -1).view(n, h, w, 2).to(x.device, x.dtype)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def about_centre(linear: Tensor, h: int, w: int) -> Tensor:
    """[N, 2, 2] linear maps -> [N, 2, 3] affine maps that keep the image centre fixed (MNIST-C's
    translation a3 = 13.5 (1 - a1 - a2) on 28 px, generalised to ((w - 1) / 2, (h - 1) / 2))."""
    centre = torch.tensor([(w - 1) / 2, (h - 1) / 2], dtype=torch.float64)
    lin = linear.double()
    t = centre - lin @ centre
    return torch.cat([lin, t[..., None]], -1)


def _sign(n: int, g: torch.Generator) -> Tensor:
    return torch.randint(0, 2, (n,), generator=g).double() * 2 - 1


def rotate_by(x: Tensor, radians: Tensor) -> Tensor:
    """MNIST-C's rotation: inverse map [[cos, -sin], [sin, cos]] about the centre, per image [N]."""
    a = radians.double()
    lin = torch.stack([torch.stack([a.cos(), -a.sin()], -1), torch.stack([a.sin(), a.cos()], -1)], -2)
    return warp(x, about_centre(lin, *x.shape[-2:]))


@_register("rotate", (0.2, 0.4, 0.6, 0.8, 1.0))
def rotate(x: Tensor, r: float, g: torch.Generator, family: str) -> Tensor:
    """Rotate by +-r radians, the sign random per image."""
    return rotate_by(x, r * _sign(x.shape[0], g))


def shear_by(x: Tensor, s: Tensor) -> Tensor:
    """MNIST-C's shear (scikit-image < 0.20 ``AffineTransform(shear=s)``, s an angle in radians):
    inverse map [[1, -sin s], [0, cos s]] about the centre, per image [N]."""
    s = s.double()
    lin = torch.stack([torch.stack([torch.ones_like(s), -s.sin()], -1),
                       torch.stack([torch.zeros_like(s), s.cos()], -1)], -2)
    return warp(x, about_centre(lin, *x.shape[-2:]))


@_register("shear", (0.2, 0.4, 0.6, 0.8, 1.0))
def shear(x: Tensor, s: float, g: torch.Generator, family: str) -> Tensor:
    """Shear by +-s, the sign random per image."""
    return shear_by(x, s * _sign(x.shape[0], g))


@_register("scale", (1 / 0.9, 1 / 0.8, 1 / 0.7, 1 / 0.6, 1 / 0.5))
def scale(x: Tensor, z: float, g: torch.Generator, family: str) -> Tensor:
    """Inverse map z I about the centre: the digit shrinks to 1/z of its size."""
    del g
    lin = (torch.eye(2, dtype=torch.float64) * z).expand(x.shape[0], 2, 2)
    return warp(x, about_centre(lin, *x.shape[-2:]))


def translate_by(x: Tensor, dx: Tensor, dy: Tensor) -> Tensor:
    """Inverse map (c + dx, r + dy): the content moves by (-dx, -dy); vacated pixels are 0."""
    n = x.shape[0]
    m = torch.zeros(n, 2, 3, dtype=torch.float64)
    m[:, 0, 0] = m[:, 1, 1] = 1
    m[:, 0, 2] = dx.double()
    m[:, 1, 2] = dy.double()
    return warp(x, m)


@_register("translate", (1, 2, 3, 4, 5))
def translate(x: Tensor, t: int, g: torch.Generator, family: str) -> Tensor:
    """Shift by t px along both axes, each sign random (a diagonal move)."""
    n = x.shape[0]
    signs = torch.randint(0, 2, (n, 2), generator=g).double() * 2 - 1
    return translate_by(x, t * signs[:, 0], t * signs[:, 1])


# -- occlusion and edges (fixed: one level) -----------------------------------------------------------------
@_register("stripe", (None,))
def stripe(x: Tensor, level: None, g: torch.Generator, family: str) -> Tensor:
    """Invert (1 - x) the left and right quarters (MNIST-C: columns 0-6 and 21-27)."""
    del g
    w = x.shape[-1]
    q = w // 4
    cols = torch.arange(w, device=x.device)
    band = (cols < q) | (cols >= w - q)
    return torch.where(band, 1 - x, x)


def line_from_points(c0: Tensor, r0: Tensor, c1: Tensor, r1: Tensor, h: int = 28, w: int = 28) -> Tensor:
    """MNIST-C's anti-aliased line through (c0, r0)-(c1, r1) on the 0..27 frame: intensity
    clip(log(1 - d / 2.3) + 1, 0, 1), d the vertical distance to the line (capped just below 2.3),
    zero outside columns [floor(c0), ceil(c1)) and everywhere when c1 == c0.  [N] -> [N, h, w]."""
    c0, r0, c1, r1 = (torch.as_tensor(v, dtype=torch.float64).reshape(-1) for v in (c0, r0, c1, r1))
    cc = torch.linspace(0, 27, w, dtype=torch.float64)
    rr = torch.linspace(0, 27, h, dtype=torch.float64)
    vertical = c1 == c0
    slope = (r1 - r0) / torch.where(vertical, torch.ones_like(c1), c1 - c0)
    f = slope[:, None] * (cc[None] - c0[:, None]) + r0[:, None]  # [N, W]
    dist = (rr[None, :, None] - f[:, None, :]).abs().clamp(0, 2.3 - 1e-10)  # [N, H, W]
    line = (torch.log(1 - dist / 2.3) + 1).clamp(0, 1)
    inside = (cc[None] >= torch.floor(c0)[:, None]) & (cc[None] < torch.ceil(c1)[:, None])  # [N, W]
    line = line * inside[:, None, :] * (~vertical)[:, None, None]
    return line


def _add_lines(x: Tensor, lines: Tensor) -> Tensor:
    return (x + lines[:, None].to(x.device, x.dtype)).clamp(0, 1)


@_register("line", (None,))
def line(x: Tensor, level: None, g: torch.Generator, family: str) -> Tensor:
    """One line from column c0 in [0, 5) to c1 in [22, 27), rows r0, r1 in [0, 27)."""
    n, _, h, w = x.shape
    c0 = torch.randint(0, 5, (n,), generator=g)
    c1 = torch.randint(22, 27, (n,), generator=g)
    r = torch.randint(0, 27, (n, 2), generator=g)
    return _add_lines(x, line_from_points(c0, r[:, 0], c1, r[:, 1], h, w))


@_register("dotted_line", (None,))
def dotted_line(x: Tensor, level: None, g: torch.Generator, family: str) -> Tensor:
    """A line from (0, r0) to (27, r1), r0, r1 in [0, 27), with every other pair of columns blanked
    (columns 0-1, 4-5, ..., 24-25 off)."""
    n, _, h, w = x.shape
    r = torch.randint(0, 27, (n, 2), generator=g)
    lines = line_from_points(torch.zeros(n), r[:, 0], torch.full((n,), 27.0), r[:, 1], h, w)
    cc = torch.linspace(0, 27, w, dtype=torch.float64)
    off = (torch.floor(cc).long() // 2) % 2 == 0
    return _add_lines(x, lines * ~off)


def zigzag_points(r0: float, r1: float, a: float = 2.0, b: float = 2.0, c0: float = 2.0,
                  c1: float = 25.0) -> list[tuple[float, float]]:
    """MNIST-C's zigzag corners (column, row): teeth of length a and height b along the segment from
    (c0, r0) towards (c1, r1), including the reference's closing point (d, r_last / (2 (d - max_c)))."""
    theta = math.atan((r1 - r0) / (c1 - c0))
    d = (c1 - c0) / math.cos(theta)
    pts = [(0.0, 0.0)]
    r_i = 0.0
    for i in range(int((d - a) // (2 * a)) + 1):
        r_i = (-1) ** i * b
        pts.append(((2 * i + 1) * a, r_i))
    max_c = (2 * a) * (d // (2 * a))
    if d != max_c:
        pts.append((d, r_i / (2 * (d - max_c))))
    cos, sin = math.cos(theta), math.sin(theta)
    return [(cos * u - sin * v + c0, sin * u + cos * v + r0) for u, v in pts]


@_register("zigzag", (None,))
def zigzag(x: Tensor, level: None, g: torch.Generator, family: str) -> Tensor:
    """A zigzag line from column 2 to 25 starting at row r0 in [0, 27), drifting by [-5, 5) rows."""
    n, _, h, w = x.shape
    r0 = torch.randint(0, 27, (n,), generator=g)
    r1 = r0 + torch.randint(-5, 5, (n,), generator=g)
    segs = []
    for k in range(n):
        p = zigzag_points(float(r0[k]), float(r1[k]))
        segs.append([(*p[i - 1], *p[i]) for i in range(1, len(p))])
    total = torch.zeros(n, h, w, dtype=torch.float64)
    for s in range(max(len(v) for v in segs)):
        seg = torch.tensor([v[s] if s < len(v) else (0.0, 0.0, 0.0, 0.0) for v in segs], dtype=torch.float64)
        total += line_from_points(seg[:, 0], seg[:, 1], seg[:, 2], seg[:, 3], h, w)
    return _add_lines(x, total)  # clipping once = clipping after each line (the lines are >= 0)


def canny(x: Tensor, sigma: float = 1.0, low: float = 0.1, high: float = 0.2) -> Tensor:
    """scikit-image's ``feature.canny`` as MNIST-C ran it (a full mask): Gaussian smoothing with zero
    borders renormalised by the smoothed mask, Sobel gradients (reflected borders), non-maximum
    suppression with bilinear interpolation along the gradient, hysteresis between ``low`` and
    ``high`` (8-connected).  The outermost pixels are never edges.  float [N, C, H, W] -> bool."""
    n, c, h, w = x.shape
    img = x.double().reshape(n * c, 1, h, w)
    k = gaussian_kernel1d(sigma).double()
    ones = torch.ones_like(img)

    def smooth(t: Tensor) -> Tensor:
        for dim in (-2, -1):
            t = _conv1d(t, k, dim, mode="constant")
        return t

    sm = smooth(img) / (smooth(ones) + torch.finfo(torch.float64).eps)
    sm = sm[:, 0]
    p = torch.cat([sm[:, :1], sm, sm[:, -1:]], 1)
    p = torch.cat([p[:, :, :1], p, p[:, :, -1:]], 2)  # [M, H+2, W+2]: scipy's 'reflect' for one pixel
    d_row = p[:, 2:, :] - p[:, :-2, :]  # derivative along rows (axis 0)
    d_col = p[:, :, 2:] - p[:, :, :-2]
    isobel = d_row[:, :, :-2] + 2 * d_row[:, :, 1:-1] + d_row[:, :, 2:]  # ndi.sobel(axis=0)
    jsobel = d_col[:, :-2, :] + 2 * d_col[:, 1:-1, :] + d_col[:, 2:, :]  # ndi.sobel(axis=1)
    mag = torch.hypot(isobel, jsobel)
    ai, aj = isobel.abs(), jsobel.abs()
    inner = torch.zeros_like(mag, dtype=torch.bool)
    inner[:, 1:-1, 1:-1] = True
    cand = inner & (mag > 0)
    mp = F.pad(mag[:, None], (1, 1, 1, 1))[:, 0]  # neighbours by shifted views: mp[1 + dr, 1 + dc]

    def nb(dr: int, dc: int) -> Tensor:
        return mp[:, 1 + dr:1 + dr + h, 1 + dc:1 + dc + w]

    ratio_ij = aj / torch.where(ai > 0, ai, torch.ones_like(ai))
    ratio_ji = ai / torch.where(aj > 0, aj, torch.ones_like(aj))
    same = ((isobel >= 0) & (jsobel >= 0)) | ((isobel <= 0) & (jsobel <= 0))
    opp = ((isobel <= 0) & (jsobel >= 0)) | ((isobel >= 0) & (jsobel <= 0))
    keep = torch.zeros_like(cand)
    sectors = (
        # (points, weight, (c1 plus), (c2 plus), (c1 minus), (c2 minus)); offsets are (row, col)
        (same & (ai >= aj), ratio_ij, (1, 0), (1, 1), (-1, 0), (-1, -1)),
        (same & (ai <= aj), ratio_ji, (0, 1), (1, 1), (0, -1), (-1, -1)),
        (opp & (ai <= aj), ratio_ji, (0, 1), (-1, 1), (0, -1), (1, -1)),
        (opp & (ai >= aj), ratio_ij, (-1, 0), (-1, 1), (1, 0), (1, -1)),
    )
    for pts, wgt, p1, p2, m1, m2 in sectors:
        plus = nb(*p2) * wgt + nb(*p1) * (1 - wgt) <= mag
        minus = nb(*m2) * wgt + nb(*m1) * (1 - wgt) <= mag
        sel = cand & pts
        keep = torch.where(sel, plus & minus, keep)
    low_mask = keep & (mag >= low)
    edges = low_mask & (mag >= high)
    while True:  # hysteresis: grow the strong edges through 8-connected weak ones
        grown = F.max_pool2d(edges[:, None].double(), 3, 1, 1)[:, 0].bool() & low_mask
        if torch.equal(grown, edges):
            break
        edges = grown
    return edges.view(n, c, h, w)


@_register("canny_edges", (None,))
def canny_edges(x: Tensor, level: None, g: torch.Generator, family: str) -> Tensor:
    """The digit replaced by its Canny edge map (sigma 1, thresholds 0.1 / 0.2): edges 1, else 0."""
    del g
    return canny(x).to(x.dtype)


# -- public API -----------------------------------------------------------------------------------------
def corruption_names() -> list[str]:
    return sorted(CORRUPTIONS)


def family_of(images: Tensor) -> str:
    """``digits`` for 1-channel images, ``natural`` otherwise."""
    return "digits" if images.shape[1] == 1 else "natural"


def _levels(name: str) -> tuple[int, ...]:
    return tuple(range(1, CORRUPTIONS[name].n_levels + 1))


def parse_corruptions(spec: object) -> tuple[str, ...]:
    """Normalise a config's ``test_corruptions`` into a tuple of ``"name:severity"`` strings.

    Accepts ``"gaussian_noise:3"``, ``"mnist-c"`` (MNIST-C's 15 corruptions at its levels),
    ``"all:3"`` (every corruption; one-level corruptions at 1), ``"fog:all"`` (every level), ``"all"``
    (= ``"all:all"``), a mapping ``{name: fog, severity: 3}`` (severity may be a list or ``all``), or a
    list of any of these.  Order is kept, duplicates dropped.

    Raises:
        ConfigError: unknown corruption, severity outside 1-5, or above 1 for a one-level corruption.
    """
    if spec is None:
        return ()
    items = spec if isinstance(spec, list | tuple) else [spec]
    out: list[str] = []
    for item in items:
        if item == "mnist-c":
            out += [f"{nm}:{s}" for nm, s in MNIST_C if f"{nm}:{s}" not in out]
            continue
        if isinstance(item, dict):
            unknown = sorted(set(item) - {"name", "severity"})
            if unknown or "name" not in item:
                raise ConfigError(f"test_corruptions entries are {{name, severity}} mappings, got {item!r}")
            name, sev = item["name"], item.get("severity", "all")
        elif isinstance(item, str):
            name, _, sev = item.partition(":")
            sev = sev or "all"
        else:
            raise ConfigError(
                f"test_corruptions entries must be 'name:severity' strings or mappings, got {item!r}")
        names = corruption_names() if name == "all" else [name]
        for nm in names:
            if nm not in CORRUPTIONS:
                valid = ", ".join(corruption_names())
                raise ConfigError(f"unknown corruption {nm!r}; valid names: all, mnist-c, {valid}")
        sevs = sev if isinstance(sev, list | tuple) else [sev]
        levels: list[int | str] = []
        for s in sevs:
            if s == "all":
                levels.append("all")
                continue
            try:
                s_int = int(s)
            except (TypeError, ValueError):
                s_int = -1
            if isinstance(s, bool) or s_int not in SEVERITIES or str(s_int) != str(s).strip():
                raise ConfigError(f"corruption severity must be 1-5 or 'all', got {s!r} for {name!r}")
            levels.append(s_int)
        for nm in names:
            own = _levels(nm)
            for lv in levels:
                if lv == "all":
                    picks = list(own)
                elif lv in own:
                    picks = [lv]
                elif name == "all":  # 'all:3': one-level corruptions join at their only level
                    picks = [1]
                else:
                    raise ConfigError(f"corruption {nm!r} has one level (severity 1), got {lv!r}")
                for s_int in picks:
                    key = f"{nm}:{s_int}"
                    if key not in out:
                        out.append(key)
    return tuple(out)


def corrupt(images: Tensor, name: str, severity: int, seed: int = 0, batch_size: int = 4096,
            family: str | None = None) -> Tensor:
    """Corrupt uint8 images [N, C, H, W] -> uint8 (rounded), deterministic in ``seed``.

    Args:
        family: ``digits`` (MNIST-C's levels) or ``natural`` (CIFAR-10-C's); None = by channel count.

    Raises:
        ConfigError: unknown corruption, family or severity.
    """
    if name not in CORRUPTIONS:
        raise ConfigError(f"unknown corruption {name!r}; valid names: {', '.join(corruption_names())}")
    if severity not in _levels(name):
        top = CORRUPTIONS[name].n_levels
        raise ConfigError(f"corruption severity for {name!r} must be 1-{top}, got {severity!r}")
    if images.dtype != torch.uint8:
        raise ConfigError(f"corrupt() takes uint8 images, got {images.dtype}")
    fam = family if family is not None else family_of(images)
    if fam not in FAMILIES:
        raise ConfigError(f"corruption family must be one of {', '.join(FAMILIES)}, got {fam!r}")
    g = torch.Generator().manual_seed(seed)
    out = torch.empty_like(images)
    for start in range(0, images.shape[0], batch_size):
        x = images[start:start + batch_size].float().div(255.0)
        y = CORRUPTIONS[name](x, severity, g, fam)
        out[start:start + batch_size] = (y.clamp(0, 1) * 255.0).round().to(torch.uint8)
    return out


__all__ = ["CORRUPTIONS", "FAMILIES", "MNIST_C", "SEVERITIES", "Corruption", "about_centre", "canny",
           "corrupt", "corruption_names", "family_of", "gaussian_kernel1d", "line_from_points",
           "motion_kernel", "parse_corruptions", "plasma_fractal", "rotate_by", "shear_by", "translate_by",
           "warp", "zigzag_points"]

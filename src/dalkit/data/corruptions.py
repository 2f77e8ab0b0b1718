"""Test-set corruptions in the style of MNIST-C (Mu & Gilmer 2019) and CIFAR-10-C (Hendrycks &
Dietterich 2019), generated on tensors with severity 1-5.

The DM2 paper evaluates DM2-AT on MNIST-C, SVHN-C and CIFAR10-C (Table 3, Table 5).  Those files
cannot be downloaded here, so dalkit regenerates corruptions of the same families from the clean test
split: additive/shot/impulse noise, Gaussian and motion blur, pixelation, brightness, contrast, fog,
rotation, shear, scale, translation, an inverted stripe and random lines.  Every op is a batched tensor
function of float images in [0, 1], [N, C, H, W]; randomness comes from a seeded ``torch.Generator``,
so a corrupted test set is a function of (corruption, severity, seed).

Severity parameters follow CIFAR-10-C where the op exists there (noise levels, contrast factors) and are
scaled to 28-32 px images elsewhere (blur widths, geometric ranges follow MNIST-C's magnitudes).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from dalkit.errors import ConfigError

CorruptionFn = Callable[[Tensor, int, torch.Generator], Tensor]
CORRUPTIONS: dict[str, CorruptionFn] = {}
SEVERITIES = (1, 2, 3, 4, 5)


def _register(name: str) -> Callable[[CorruptionFn], CorruptionFn]:
    def deco(fn: CorruptionFn) -> CorruptionFn:
        CORRUPTIONS[name] = fn
        return fn

    return deco


def _level(values: tuple[float, ...], severity: int) -> float:
    return values[severity - 1]


def _rand(shape: tuple[int, ...], g: torch.Generator, like: Tensor) -> Tensor:
    return torch.rand(shape, generator=g).to(like.device, like.dtype)


def _randn(shape: tuple[int, ...], g: torch.Generator, like: Tensor) -> Tensor:
    return torch.randn(shape, generator=g).to(like.device, like.dtype)


# -- noise -------------------------------------------------------------------------------------------
@_register("gaussian_noise")
def gaussian_noise(x: Tensor, severity: int, g: torch.Generator) -> Tensor:
    """x + N(0, s^2), s in (0.08, 0.12, 0.18, 0.26, 0.38) (CIFAR-10-C), clipped to [0, 1]."""
    s = _level((0.08, 0.12, 0.18, 0.26, 0.38), severity)
    return (x + s * _randn(tuple(x.shape), g, x)).clamp(0, 1)


@_register("shot_noise")
def shot_noise(x: Tensor, severity: int, g: torch.Generator) -> Tensor:
    """Poisson(c x) / c, c in (60, 25, 12, 5, 3) photons per unit intensity (CIFAR-10-C)."""
    c = _level((60.0, 25.0, 12.0, 5.0, 3.0), severity)
    return (torch.poisson((x * c).cpu(), generator=g).to(x.device) / c).clamp(0, 1)


@_register("impulse_noise")
def impulse_noise(x: Tensor, severity: int, g: torch.Generator) -> Tensor:
    """Salt-and-pepper: a fraction q in (0.03, 0.06, 0.09, 0.17, 0.27) of values set to 0 or 1."""
    q = _level((0.03, 0.06, 0.09, 0.17, 0.27), severity)
    hit = _rand(tuple(x.shape), g, x) < q
    salt = _rand(tuple(x.shape), g, x) < 0.5
    return torch.where(hit, salt.to(x.dtype), x)


# -- blur ----------------------------------------------------------------------------------------------
def gaussian_kernel1d(sigma: float, radius: int | None = None) -> Tensor:
    """Normalised 1-d Gaussian weights exp(-t^2 / 2 sigma^2), t = -r..r, r = ceil(3 sigma)."""
    r = radius if radius is not None else max(1, math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    w = torch.exp(-(t**2) / (2 * sigma**2))
    return w / w.sum()


def _conv_separable(x: Tensor, kx: Tensor, ky: Tensor) -> Tensor:
    """Depthwise convolution with kernel ky (rows) x kx (columns), replicate padding: [N, C, H, W]."""
    c = x.shape[1]
    kx = kx.to(x.device, x.dtype)
    ky = ky.to(x.device, x.dtype)
    rx, ry = kx.numel() // 2, ky.numel() // 2
    if rx:
        x = F.conv2d(F.pad(x, (rx, rx, 0, 0), mode="replicate"), kx.view(1, 1, 1, -1).repeat(c, 1, 1, 1),
                     groups=c)
    if ry:
        x = F.conv2d(F.pad(x, (0, 0, ry, ry), mode="replicate"), ky.view(1, 1, -1, 1).repeat(c, 1, 1, 1),
                     groups=c)
    return x


@_register("gaussian_blur")
def gaussian_blur(x: Tensor, severity: int, g: torch.Generator) -> Tensor:
    """Gaussian blur, sigma in (0.5, 0.75, 1.0, 1.25, 1.5) px (CIFAR-10-C's 1-6 px scaled to digits)."""
    del g
    k = gaussian_kernel1d(_level((0.5, 0.75, 1.0, 1.25, 1.5), severity))
    return _conv_separable(x, k, k).clamp(0, 1)


@_register("motion_blur")
def motion_blur(x: Tensor, severity: int, g: torch.Generator) -> Tensor:
    """Horizontal box blur of length L in (3, 5, 7, 9, 11) px (a camera moving sideways)."""
    del g
    length = int(_level((3, 5, 7, 9, 11), severity))
    return _conv_separable(x, torch.full((length,), 1.0 / length), torch.ones(1)).clamp(0, 1)


@_register("pixelate")
def pixelate(x: Tensor, severity: int, g: torch.Generator) -> Tensor:
    """Average-pool to a fraction f in (0.8, 0.65, 0.5, 0.4, 0.3) of the side, nearest-upsample back."""
    del g
    f = _level((0.8, 0.65, 0.5, 0.4, 0.3), severity)
    h, w = x.shape[-2:]
    small = F.adaptive_avg_pool2d(x, (max(1, round(h * f)), max(1, round(w * f))))
    return F.interpolate(small, size=(h, w), mode="nearest")


# -- photometric --------------------------------------------------------------------------------------
@_register("brightness")
def brightness(x: Tensor, severity: int, g: torch.Generator) -> Tensor:
    """x + b, b in (0.1, 0.2, 0.3, 0.4, 0.5), clipped (CIFAR-10-C adds b to the HSV value)."""
    del g
    return (x + _level((0.1, 0.2, 0.3, 0.4, 0.5), severity)).clamp(0, 1)


@_register("contrast")
def contrast(x: Tensor, severity: int, g: torch.Generator) -> Tensor:
    """(x - m) c + m, m the per-image mean, c in (0.4, 0.3, 0.2, 0.1, 0.05) (CIFAR-10-C)."""
    del g
    c = _level((0.4, 0.3, 0.2, 0.1, 0.05), severity)
    m = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - m) * c + m).clamp(0, 1)


@_register("fog")
def fog(x: Tensor, severity: int, g: torch.Generator) -> Tensor:
    """Add a smooth random haze of strength a in (0.3, 0.45, 0.6, 0.75, 0.9) and rescale:
    (x + a F) * max(x) / (max(x) + a), F a 4x4 uniform grid bilinearly upsampled (a cheap stand-in for
    CIFAR-10-C's plasma fractal)."""
    a = _level((0.3, 0.45, 0.6, 0.75, 0.9), severity)
    n, c, h, w = x.shape
    haze = F.interpolate(_rand((n, 1, 4, 4), g, x), size=(h, w), mode="bilinear", align_corners=True)
    top = x.amax(dim=(1, 2, 3), keepdim=True)
    return ((x + a * haze) * top / (top + a)).clamp(0, 1)


# -- geometric ----------------------------------------------------------------------------------------
def affine(x: Tensor, theta: Tensor) -> Tensor:
    """Warp by 2x3 affine maps ``theta`` [N, 2, 3] in normalised coordinates (output -> input),
    bilinear, zeros outside (the digits' black background)."""
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _signs(n: int, g: torch.Generator) -> Tensor:
    return torch.randint(0, 2, (n,), generator=g).float() * 2 - 1


def rotate_by(x: Tensor, degrees: Tensor) -> Tensor:
    """Rotate each image by ``degrees`` [N] about its centre."""
    a = degrees.float() * math.pi / 180
    cos, sin = torch.cos(a), torch.sin(a)
    zero = torch.zeros_like(a)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    return affine(x, theta)


@_register("rotate")
def rotate(x: Tensor, severity: int, g: torch.Generator) -> Tensor:
    """Rotate by +-d degrees, d in (10, 20, 30, 40, 50), the sign random per image."""
    d = _level((10.0, 20.0, 30.0, 40.0, 50.0), severity)
    return rotate_by(x, d * _signs(x.shape[0], g))


def shear_by(x: Tensor, s: Tensor) -> Tensor:
    """Horizontal shear: output pixel (r, c) reads input (r, c + s * (r - centre)), s [N] in pixels
    per row."""
    n, _, h, w = x.shape
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = 1
    theta[:, 1, 1] = 1
    theta[:, 0, 1] = s.float() * h / w  # normalised units: a row step is 2/h, a column step 2/w
    return affine(x, theta)


@_register("shear")
def shear(x: Tensor, severity: int, g: torch.Generator) -> Tensor:
    """Horizontal shear of +-s, s in (0.1, 0.2, 0.3, 0.4, 0.5) px per row, the sign random per image."""
    s = _level((0.1, 0.2, 0.3, 0.4, 0.5), severity)
    return shear_by(x, s * _signs(x.shape[0], g))


@_register("scale")
def scale(x: Tensor, severity: int, g: torch.Generator) -> Tensor:
    """Shrink about the centre by a factor z in (0.9, 0.8, 0.7, 0.6, 0.5) (MNIST-C's zoom-out)."""
    del g
    z = _level((0.9, 0.8, 0.7, 0.6, 0.5), severity)
    theta = torch.tensor([[1 / z, 0.0, 0.0], [0.0, 1 / z, 0.0]]).expand(x.shape[0], 2, 3)
    return affine(x, theta)


def translate_by(x: Tensor, dx: Tensor, dy: Tensor) -> Tensor:
    """Shift each image by (dx, dy) [N] pixels (right, down); vacated pixels are 0."""
    n, _, h, w = x.shape
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = 1
    theta[:, 1, 1] = 1
    theta[:, 0, 2] = -2 * dx.float() / w
    theta[:, 1, 2] = -2 * dy.float() / h
    return affine(x, theta)


@_register("translate")
def translate(x: Tensor, severity: int, g: torch.Generator) -> Tensor:
    """Shift by t in (2, 3, 4, 5, 6) px along a random one of the 8 compass directions."""
    t = _level((2.0, 3.0, 4.0, 5.0, 6.0), severity)
    direction = torch.randint(0, 8, (x.shape[0],), generator=g).float() * math.pi / 4
    return translate_by(x, torch.round(t * torch.cos(direction)), torch.round(t * torch.sin(direction)))


# -- occlusion ----------------------------------------------------------------------------------------
@_register("stripe")
def stripe(x: Tensor, severity: int, g: torch.Generator) -> Tensor:
    """Invert (1 - x) a vertical band of width b in (2, 4, 6, 8, 10) px at a random column."""
    b = int(_level((2, 4, 6, 8, 10), severity))
    n, _, _, w = x.shape
    start = torch.randint(0, w - b + 1, (n,), generator=g).to(x.device)
    cols = torch.arange(w, device=x.device)
    band = (cols[None] >= start[:, None]) & (cols[None] < start[:, None] + b)  # [N, W]
    return torch.where(band[:, None, None, :], 1 - x, x)


@_register("lines")
def lines(x: Tensor, severity: int, g: torch.Generator) -> Tensor:
    """Draw k in (1, 2, 3, 4, 5) full-intensity straight lines between random border-to-border points
    (MNIST-C's line/dotted-line family)."""
    k = int(_level((1, 2, 3, 4, 5), severity))
    n, c, h, w = x.shape
    ends = torch.rand((n, k, 2, 2), generator=g) * torch.tensor([w - 1.0, h - 1.0])  # [N, k, end, xy]
    steps = torch.linspace(0, 1, 2 * max(h, w))  # [S]
    pts = ends[:, :, :1] + (ends[:, :, 1:] - ends[:, :, :1]) * steps[None, None, :, None]  # [N, k, S, 2]
    col = pts[..., 0].round().long().clamp(0, w - 1)
    row = pts[..., 1].round().long().clamp(0, h - 1)
    mask = torch.zeros(n, h * w, dtype=torch.bool)
    mask.scatter_(1, (row * w + col).reshape(n, -1), True)
    mask = mask.view(n, 1, h, w).to(x.device)
    return torch.where(mask, torch.ones_like(x), x)


# -- public API -----------------------------------------------------------------------------------------
def corruption_names() -> list[str]:
    return sorted(CORRUPTIONS)


def parse_corruptions(spec: object) -> tuple[str, ...]:
    """Normalise a config's ``test_corruptions`` into a tuple of ``"name:severity"`` strings.

    Accepts ``"gaussian_noise:3"``, ``"all:3"`` (every corruption), ``"fog:all"`` (severities 1-5),
    ``"all"`` (= ``"all:all"``), a mapping ``{name: fog, severity: 3}`` (severity may be a list or
    ``all``), or a list of any of these.  Order is kept, duplicates dropped.

    Raises:
        ConfigError: unknown corruption or severity outside 1-5 (the message lists the valid names).
    """
    if spec is None:
        return ()
    items = spec if isinstance(spec, list | tuple) else [spec]
    out: list[str] = []
    for item in items:
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
                raise ConfigError(f"unknown corruption {nm!r}; valid names: all, {valid}")
        sevs = sev if isinstance(sev, list | tuple) else [sev]
        levels: list[int] = []
        for s in sevs:
            if s == "all":
                levels += list(SEVERITIES)
                continue
            try:
                s_int = int(s)
            except (TypeError, ValueError):
                s_int = -1
            if isinstance(s, bool) or s_int not in SEVERITIES or str(s_int) != str(s).strip():
                raise ConfigError(f"corruption severity must be 1-5 or 'all', got {s!r} for {name!r}")
            levels.append(s_int)
        for nm in names:
            for s_int in levels:
                key = f"{nm}:{s_int}"
                if key not in out:
                    out.append(key)
    return tuple(out)


def corrupt(images: Tensor, name: str, severity: int, seed: int = 0, batch_size: int = 4096) -> Tensor:
    """Corrupt uint8 images [N, C, H, W] -> uint8 (rounded), deterministic in ``seed``.

    Raises:
        ConfigError: unknown corruption or severity.
    """
    if name not in CORRUPTIONS:
        raise ConfigError(f"unknown corruption {name!r}; valid names: {', '.join(corruption_names())}")
    if severity not in SEVERITIES:
        raise ConfigError(f"corruption severity must be 1-5, got {severity!r}")
    if images.dtype != torch.uint8:
        raise ConfigError(f"corrupt() takes uint8 images, got {images.dtype}")
    g = torch.Generator().manual_seed(seed)
    out = torch.empty_like(images)
    for start in range(0, images.shape[0], batch_size):
        x = images[start:start + batch_size].float().div(255.0)
        y = CORRUPTIONS[name](x, severity, g)
        out[start:start + batch_size] = (y.clamp(0, 1) * 255.0).round().to(torch.uint8)
    return out


__all__ = ["CORRUPTIONS", "SEVERITIES", "affine", "corrupt", "corruption_names", "gaussian_kernel1d",
           "parse_corruptions", "rotate_by", "shear_by", "translate_by"]

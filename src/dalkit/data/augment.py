"""Batched tensor augmentations (no torchvision): random crop with padding and horizontal flip."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def random_crop(x: Tensor, padding: int, generator: torch.Generator | None = None) -> Tensor:
    """Pad each image by ``padding`` (zeros) and crop back to its size at a random offset.

    Args:
        x: [B, C, H, W] float or uint8.
        padding: pixels of zero padding on each side.
        generator: CPU generator for the offsets.
    Returns:
        [B, C, H, W], same dtype and device as ``x``.
    """
    if padding <= 0:
        return x
    b, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (padding, padding, padding, padding))
    off_y = torch.randint(0, 2 * padding + 1, (b,), generator=generator).to(x.device)
    off_x = torch.randint(0, 2 * padding + 1, (b,), generator=generator).to(x.device)
    rows = (off_y[:, None] + torch.arange(h, device=x.device)[None, :])  # [B, H]
    cols = (off_x[:, None] + torch.arange(w, device=x.device)[None, :])  # [B, W]
    bidx = torch.arange(b, device=x.device)[:, None, None]
    # advanced indexing on [B, H+2p, W+2p, C] then back to channels-first
    out = padded.permute(0, 2, 3, 1)[bidx, rows[:, :, None], cols[:, None, :]]  # [B, H, W, C]
    return out.permute(0, 3, 1, 2).contiguous()


def random_hflip(x: Tensor, p: float = 0.5, generator: torch.Generator | None = None) -> Tensor:
    """Flip each image left-right with probability ``p``.  x: [B, C, H, W]."""
    flip = (torch.rand(x.shape[0], generator=generator) < p).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def augment_batch(
    x: Tensor, crop_padding: int, hflip: bool, generator: torch.Generator | None = None
) -> Tensor:
    """Apply the standard crop + flip augmentation to a batch [B, C, H, W]."""
    x = random_crop(x, crop_padding, generator)
    if hflip:
        x = random_hflip(x, generator=generator)
    return x


# --------------------------------------------------------------------------------------------------
# Semi-supervised views (FixMatch, Sohn et al. 2020, section 2.3 and Table 12 of its appendix): a weak
# view (flip + translate) and a strong view (weak + two RandAugment ops at random magnitude + Cutout).
# Every op takes float images in [0, 1], [B, C, H, W], and a per-sample parameter [B]; results stay in
# [0, 1].  Geometric ops resample with nearest neighbours and fill with 0.
# --------------------------------------------------------------------------------------------------

_GRAY = (0.299, 0.587, 0.114)  # ITU-R 601-2 luma, as PIL's "L" conversion


def _gray(x: Tensor) -> Tensor:
    """Luma [B, 1, H, W] (the image itself when it has one channel)."""
    if x.shape[1] == 1:
        return x
    w = torch.tensor(_GRAY, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x[:, :3] * w).sum(1, keepdim=True)


def _blend(degenerate: Tensor, x: Tensor, factor: Tensor) -> Tensor:
    """PIL ImageEnhance: degenerate + factor * (x - degenerate), clipped to [0, 1]; factor [B]."""
    f = factor.to(x).view(-1, 1, 1, 1)
    return (degenerate + f * (x - degenerate)).clamp_(0.0, 1.0)


def identity(x: Tensor, v: Tensor | None = None) -> Tensor:
    return x


def autocontrast(x: Tensor, v: Tensor | None = None) -> Tensor:
    """Stretch each image channel so its darkest pixel becomes 0 and its brightest 1 (flat channels
    unchanged)."""
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    scale = torch.where(hi > lo, 1.0 / (hi - lo).clamp_min(1e-12), torch.ones_like(hi))
    offset = torch.where(hi > lo, lo, torch.zeros_like(lo))
    return ((x - offset) * scale).clamp_(0.0, 1.0)


def equalize(x: Tensor, v: Tensor | None = None) -> Tensor:
    """Histogram equalisation of each image channel on 256 levels (PIL ImageOps.equalize's rule:
    step = (pixels - count of the last occupied level) // 255, lut[i] = (step // 2 + cdf_excl[i]) // step;
    a channel with step 0 is unchanged)."""
    b, c, h, w = x.shape
    q = (x * 255).round_().long().clamp_(0, 255).view(b * c, h * w)  # [BC, HW]
    hist = torch.zeros(b * c, 256, dtype=torch.long, device=x.device).scatter_add_(1, q, torch.ones_like(q))
    last = 255 - torch.argmax((hist.flip(1) > 0).long(), dim=1)  # last occupied level [BC]
    step = (h * w - hist.gather(1, last[:, None]).squeeze(1)) // 255  # [BC]
    cdf_excl = hist.cumsum(1) - hist  # [BC, 256]
    safe = step.clamp_min(1)[:, None]
    lut = ((safe // 2 + cdf_excl) // safe).clamp_(max=255)  # [BC, 256]
    out = torch.where(step[:, None] > 0, lut.gather(1, q), q)
    return (out.to(x.dtype) / 255).view(b, c, h, w)


def solarize(x: Tensor, threshold: Tensor) -> Tensor:
    """Invert every pixel at or above ``threshold`` [B] (in [0, 1])."""
    t = threshold.to(x).view(-1, 1, 1, 1)
    return torch.where(x >= t, 1.0 - x, x)


def posterize(x: Tensor, bits: Tensor) -> Tensor:
    """Keep the ``bits`` [B] (1..8) most significant bits of each 8-bit level."""
    q = (x * 255).round().to(torch.int64)
    mask = (255 - (2 ** (8 - bits.to(torch.int64)) - 1)).to(x.device).view(-1, 1, 1, 1)
    return (q & mask).to(x.dtype) / 255


def color(x: Tensor, factor: Tensor) -> Tensor:
    """Saturation: blend with the luma image (0 = grey, 1 = unchanged).  Grayscale images are unchanged."""
    return _blend(_gray(x).expand_as(x), x, factor)


def contrast(x: Tensor, factor: Tensor) -> Tensor:
    """Blend with the image's mean luma (0 = flat grey, 1 = unchanged)."""
    mean = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
    return _blend(mean.expand_as(x), x, factor)


def brightness(x: Tensor, factor: Tensor) -> Tensor:
    """Blend with black (0 = black, 1 = unchanged)."""
    return _blend(torch.zeros_like(x), x, factor)


def sharpness(x: Tensor, factor: Tensor) -> Tensor:
    """Blend with a smoothed image (PIL's SMOOTH kernel [[1,1,1],[1,5,1],[1,1,1]] / 13; border pixels
    are not smoothed), 0 = smooth, 1 = unchanged, > 1 sharpens."""
    c = x.shape[1]
    k = torch.ones(3, 3, dtype=x.dtype, device=x.device)
    k[1, 1] = 5.0
    k = (k / 13).expand(c, 1, 3, 3)
    smooth = x.clone()
    smooth[:, :, 1:-1, 1:-1] = torch.nn.functional.conv2d(x, k, groups=c)
    return _blend(smooth, x, factor)


def affine(x: Tensor, matrix: Tensor) -> Tensor:
    """Resample each image through a per-sample affine map in pixel units about the image centre.

    Args:
        x: [B, C, H, W].
        matrix: [B, 2, 3], mapping an output pixel (col, row) measured from the centre to the input
            position it is read from; nearest neighbour, 0 outside.
    """
    b, _, h, w = x.shape
    m = matrix.to(x)
    # normalised (align_corners=False) coordinate n and centred pixel p: p_x = n_x * W / 2
    to_px = torch.tensor([w / 2, h / 2], dtype=x.dtype, device=x.device)
    theta = torch.empty(b, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, :, :2] = m[:, :, :2] * to_px[None, None, :] / to_px[None, :, None]
    theta[:, :, 2] = m[:, :, 2] / to_px[None, :]
    grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    return torch.nn.functional.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def _matrix(b: int, a: Tensor, bb: Tensor, c: Tensor, d: Tensor, tx: Tensor, ty: Tensor) -> Tensor:
    return torch.stack([torch.stack([a, bb, tx], 1), torch.stack([c, d, ty], 1)], 1).view(b, 2, 3)


def rotate(x: Tensor, degrees: Tensor) -> Tensor:
    """Rotate each image by ``degrees`` [B] (positive = counter-clockwise on screen)."""
    t = torch.deg2rad(degrees.double()).float()
    cos, sin = torch.cos(t), torch.sin(t)
    zero = torch.zeros_like(t)
    # screen rows grow downwards: the input position of output (col, row) is R(theta) applied to it
    return affine(x, _matrix(x.shape[0], cos, -sin, sin, cos, zero, zero))


def shear_x(x: Tensor, s: Tensor) -> Tensor:
    """Shear along x: output (col, row) reads input (col + s * row, row)."""
    one, zero = torch.ones_like(s), torch.zeros_like(s)
    return affine(x, _matrix(x.shape[0], one, s, zero, one, zero, zero))


def shear_y(x: Tensor, s: Tensor) -> Tensor:
    """Shear along y: output (col, row) reads input (col, row + s * col)."""
    one, zero = torch.ones_like(s), torch.zeros_like(s)
    return affine(x, _matrix(x.shape[0], one, zero, s, one, zero, zero))


def translate_x(x: Tensor, pixels: Tensor) -> Tensor:
    """Shift each image right by ``pixels`` [B] (negative: left), filling with 0."""
    one, zero = torch.ones_like(pixels), torch.zeros_like(pixels)
    return affine(x, _matrix(x.shape[0], one, zero, zero, one, -pixels, zero))


def translate_y(x: Tensor, pixels: Tensor) -> Tensor:
    """Shift each image down by ``pixels`` [B] (negative: up), filling with 0."""
    one, zero = torch.ones_like(pixels), torch.zeros_like(pixels)
    return affine(x, _matrix(x.shape[0], one, zero, zero, one, zero, -pixels))


def cutout(x: Tensor, size: Tensor, cy: Tensor, cx: Tensor, fill: float = 0.5) -> Tensor:
    """Fill a ``size`` x ``size`` square centred at (cy, cx) with ``fill`` (DeVries & Taylor 2017);
    the square is clipped at the border.  size, cy, cx: int [B]."""
    h, w = x.shape[-2:]
    rows = torch.arange(h, device=x.device)[None, :]
    cols = torch.arange(w, device=x.device)[None, :]
    top = (cy - size // 2).to(x.device)[:, None]
    left = (cx - size // 2).to(x.device)[:, None]
    s = size.to(x.device)[:, None]
    in_rows = (rows >= top) & (rows < top + s)  # [B, H]
    in_cols = (cols >= left) & (cols < left + s)  # [B, W]
    box = (in_rows[:, :, None] & in_cols[:, None, :])[:, None]  # [B, 1, H, W]
    return torch.where(box, torch.full_like(x, fill), x)


def _signed(m: Tensor, sign: Tensor, top: float) -> Tensor:
    return m * top * sign


# name -> (op, parameter from magnitude m in [0, 1], a random sign s in {-1, 1}, the image size).
# These are Google's RandAugment ranges (ra_ranges="google"): enhancement factors 1 +- 0.95 m, i.e.
# [0.05, 1.95], rotate +-30 deg, shear +-0.3, translate +-0.3 of the side, posterize 4..8 bits,
# solarize threshold in [0, 1].  FixMatch's Table 12 (ra_ranges="fixmatch", the default) differs in
# two rows: RA_FIXMATCH below.
RANDAUGMENT_OPS: dict[str, tuple] = {
    "identity": (identity, lambda m, s, size: m),
    "autocontrast": (autocontrast, lambda m, s, size: m),
    "equalize": (equalize, lambda m, s, size: m),
    "rotate": (rotate, lambda m, s, size: _signed(m, s, 30.0)),
    "solarize": (solarize, lambda m, s, size: 1.0 - m),
    "color": (color, lambda m, s, size: 1.0 + _signed(m, s, 0.95)),
    "posterize": (posterize, lambda m, s, size: 8 - (m * 4).round()),
    "contrast": (contrast, lambda m, s, size: 1.0 + _signed(m, s, 0.95)),
    "brightness": (brightness, lambda m, s, size: 1.0 + _signed(m, s, 0.95)),
    "sharpness": (sharpness, lambda m, s, size: 1.0 + _signed(m, s, 0.95)),
    "shear_x": (shear_x, lambda m, s, size: _signed(m, s, 0.3)),
    "shear_y": (shear_y, lambda m, s, size: _signed(m, s, 0.3)),
    "translate_x": (translate_x, lambda m, s, size: _signed(m, s, 0.3 * size).round()),
    "translate_y": (translate_y, lambda m, s, size: _signed(m, s, 0.3 * size).round()),
}


def _factor_fixmatch(m: Tensor, s: Tensor, size: float) -> Tensor:
    return 0.05 + 0.9 * m  # U[0.05, 0.95] for m ~ U(0, 1): never brighter/sharper than the input


# FixMatch's Table 12 (Sohn et al. 2020): brightness, colour, contrast and sharpness factors in
# [0.05, 0.95]; posterize to B in {4, ..., 7} bits.  The other ops share Google's ranges.
RA_FIXMATCH: dict[str, Any] = {
    "color": _factor_fixmatch, "contrast": _factor_fixmatch, "brightness": _factor_fixmatch,
    "sharpness": _factor_fixmatch,
    "posterize": lambda m, s, size: (4 + (m * 4).floor()).clamp(max=7),
}
RA_RANGES = ("fixmatch", "google")


def weak_view(x: Tensor, generator: torch.Generator, flip: bool, translate: float = 0.125) -> Tensor:
    """FixMatch's weak augmentation: random translation by up to ``translate`` of the side (padded
    random crop) and, for natural images, a horizontal flip (never for digits: flips change them).

    Args:
        x: float [B, C, H, W] in [0, 1].
    Returns:
        [B, C, H, W].
    """
    padding = int(round(translate * x.shape[-1]))
    return augment_batch(x, padding, flip, generator)


def rand_augment(x: Tensor, generator: torch.Generator, n_ops: int = 2, cutout_frac: float = 0.5,
                 ops: tuple[str, ...] | None = None, ranges: str = "fixmatch") -> Tensor:
    """RandAugment with random magnitudes (FixMatch's variant): ``n_ops`` ops drawn uniformly per
    sample, each at magnitude m ~ U(0, 1) with a random direction, then Cutout with a square of side
    up to ``cutout_frac`` of the image (always applied, as in FixMatch).

    Args:
        x: float [B, C, H, W] in [0, 1].
        generator: CPU generator; every random number is drawn up front in a fixed order.
        ops: names from :data:`RANDAUGMENT_OPS` (default: all 14).
        ranges: "fixmatch" (FixMatch's Table 12: enhancement factors U[0.05, 0.95], posterize 4..7
            bits) or "google" (RandAugment's: factors 1 +- 0.95 m, posterize 4..8 bits).
    Returns:
        [B, C, H, W] in [0, 1].
    """
    if ranges not in RA_RANGES:
        raise ValueError(f"ranges must be one of {', '.join(RA_RANGES)}, got {ranges!r}")
    names = list(ops or RANDAUGMENT_OPS)
    b, _, h, w = x.shape
    which = torch.randint(0, len(names), (n_ops, b), generator=generator)
    mags = torch.rand(n_ops, b, generator=generator)
    signs = torch.randint(0, 2, (n_ops, b), generator=generator).float() * 2 - 1
    size = (torch.rand(b, generator=generator) * cutout_frac * min(h, w)).round().long()
    cy = torch.randint(0, h, (b,), generator=generator)
    cx = torch.randint(0, w, (b,), generator=generator)
    out = x.clone()
    for j in range(n_ops):
        for k, name in enumerate(names):
            rows = (which[j] == k).nonzero().squeeze(1)
            if rows.numel() == 0:
                continue
            op, param = RANDAUGMENT_OPS[name]
            if ranges == "fixmatch":
                param = RA_FIXMATCH.get(name, param)
            rows_d = rows.to(x.device)
            out[rows_d] = op(out[rows_d], param(mags[j, rows], signs[j, rows], float(min(h, w))).to(x.device))
    return cutout(out, size, cy, cx)


def strong_view(x: Tensor, generator: torch.Generator, flip: bool, translate: float = 0.125,
                n_ops: int = 2, cutout_frac: float = 0.5, ranges: str = "fixmatch") -> Tensor:
    """FixMatch's strong augmentation: the weak view, then :func:`rand_augment` (two ops + Cutout)."""
    return rand_augment(weak_view(x, generator, flip, translate), generator, n_ops, cutout_frac,
                        ranges=ranges)

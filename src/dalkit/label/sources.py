"""Where a labeling project's images come from: a folder, a CSV of paths, an ``.npy``/``.npz`` uint8
array or an IDX file.  Each image becomes an *item* whose id is the hash of its content, read with
Pillow (files) or sliced (arrays), converted to the project's channels and resized to its input size
once, into a memory-mapped uint8 cache [N, C, S, S]."""

from __future__ import annotations

import csv
import hashlib
import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dalkit.checks import short
from dalkit.data.readers import IMAGE_SUFFIXES, read_idx
from dalkit.errors import DatasetFormatError, DatasetNotFoundError

_GREY = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


@dataclass(frozen=True)
class Item:
    """One image of the pool: content hash, where it came from (a path relative to the source, or
    ``FILE#row`` for arrays) and its original size (W, H)."""

    item: str
    path: str
    width: int
    height: int


@dataclass
class Source:
    """A listed source, before any pixel is decoded: its entries (file paths, or array rows), whether
    every entry is grey (header only), and the files skipped while listing, with the reason."""

    kind: str  # folder | csv | array | idx
    root: Path
    entries: list[str]  # paths relative to root (folder, csv) or "NAME#row" (array, idx)
    grey: bool
    skipped: list[tuple[str, str]]
    array: np.ndarray | None = None  # array sources: the (memory-mapped) images
    layout: str = ""


def content_id(data: bytes) -> str:
    """The item id of an image: the first 20 hex digits of the SHA-256 of its bytes."""
    return hashlib.sha256(data).hexdigest()[:20]


def to_uint8(im) -> np.ndarray:  # noqa: ANN001 - a PIL image
    """A Pillow image as uint8 [H, W] (grey modes; 16-bit and float scaled to its range) or [H, W, 3]."""
    if im.mode in ("1", "L", "LA", "La"):
        return np.asarray(im.convert("L"))
    if im.mode in _GREY:  # I, I;16*, F: scale the image's own range to 0..255
        arr = np.asarray(im, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        return np.zeros(arr.shape, np.uint8) if hi <= lo else np.round((arr - lo) * 255 / (hi - lo)).astype(
            np.uint8)
    return np.asarray(im.convert("RGB"))


def fit_image(arr: np.ndarray, channels: int, size: int) -> np.ndarray:
    """uint8 [H, W] or [H, W, 3] -> uint8 [channels, size, size] (grey <-> RGB, bilinear resize only
    when the size differs, so an image already at the model's size keeps its exact pixels)."""
    from PIL import Image

    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if channels == 1 and arr.ndim == 3:
        arr = np.asarray(Image.fromarray(arr, "RGB").convert("L"))
    if arr.shape[0] != size or arr.shape[1] != size:
        mode = "L" if arr.ndim == 2 else "RGB"
        arr = np.asarray(Image.fromarray(arr, mode).resize((size, size), Image.BILINEAR))
    if arr.ndim == 2:
        arr = arr[:, :, None] if channels == 1 else np.repeat(arr[:, :, None], 3, axis=2)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def list_source(source: str | Path) -> Source:
    """List ``source``: a folder of images (recursively, sorted by path; hidden files ignored), a
    ``.csv`` of image paths (column ``path`` or the first column; relative to the CSV's folder), an
    ``.npy``/``.npz`` uint8 image array, or an IDX file.  Reads image headers only.

    Non-image files and symbolic links leading outside a folder source are skipped and listed.

    Raises:
        DatasetNotFoundError: the source does not exist or lists no image.
        DatasetFormatError: an array, IDX or CSV file that cannot be read.
    """
    src = Path(source)
    if not src.exists():
        raise DatasetNotFoundError(f"image source {src} does not exist; give a folder of images, a .csv of "
                                   "image paths, an .npy/.npz uint8 array or an IDX file")
    if src.is_dir():
        listed = _list_folder(src)
    elif src.suffix.lower() == ".csv":
        listed = _list_csv(src)
    elif src.suffix.lower() in (".npy", ".npz"):
        listed = _list_array(_load_array(src), src, "array")
    else:
        listed = _list_array(read_idx(src), src, "idx")
    if not listed.entries:
        skipped = "".join(f"; skipped {p}: {why}" for p, why in listed.skipped[:3])
        raise DatasetNotFoundError(short(f"no images in {src}{skipped}; supported: "
                                         f"{', '.join(sorted(IMAGE_SUFFIXES))}, .npy/.npz, IDX")[1:-1])
    return listed


def _header_grey(path: Path) -> bool | None:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.mode in _GREY
    except Exception:  # noqa: BLE001 - any failure is found again (and reported) when decoding
        return None


def _list_folder(root: Path) -> Source:
    root_real = root.resolve()
    entries, skipped, grey = [], [], True
    for p in sorted(root.rglob("*")):
        parts = p.relative_to(root).parts
        rel = "/".join(parts)
        if any(part.startswith(".") for part in parts):
            continue  # hidden files and folders (.DS_Store, .git, a project kept inside the folder)
        if p.is_symlink():
            try:
                p.resolve().relative_to(root_real)
            except ValueError:
                skipped.append((rel, "symbolic link to outside the folder"))
                continue
        if p.is_dir():
            continue
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append((rel, "not an image file"))
            continue
        entries.append(rel)
        grey = grey and _header_grey(p) is not False
    return Source("folder", root, entries, grey, skipped)


def _list_csv(path: Path) -> Source:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetFormatError(f"cannot read the image list {path}: {short(str(exc))[1:-1]}") from None
    if rows and rows[0] and rows[0][0].strip().lower() == "path":
        rows = rows[1:]
    entries, skipped, grey = [], [], True
    for r in rows:
        if not r or not r[0].strip():
            continue
        rel = r[0].strip()
        full = path.parent / rel
        if not full.is_file():
            skipped.append((rel, "no such file"))
            continue
        entries.append(rel)
        grey = grey and _header_grey(full) is not False
    return Source("csv", path.parent, entries, grey, skipped)


def _load_array(path: Path) -> np.ndarray:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
        if not isinstance(arr, np.ndarray):  # .npz: its one array, or x_train
            with arr:
                keys = list(arr.keys())
                key = "x_train" if "x_train" in keys else (keys[0] if len(keys) == 1 else None)
                if key is None:
                    raise DatasetFormatError(f"{path} holds {keys}; put the images in one array (or x_train)")
                arr = arr[key]
    except (OSError, ValueError, EOFError) as exc:
        raise DatasetFormatError(f"cannot read the image array {path}: {short(str(exc))[1:-1]}") from None
    return arr


def _list_array(arr: np.ndarray, path: Path, kind: str) -> Source:
    if arr.dtype != np.uint8:
        raise DatasetFormatError(f"image array {path} must be uint8, got {arr.dtype}")
    if arr.ndim == 3:
        layout = "nhw"
    elif arr.ndim == 4 and arr.shape[3] in (1, 3):
        layout = "nhwc"
    elif arr.ndim == 4 and arr.shape[1] in (1, 3):
        layout = "nchw"
    else:
        raise DatasetFormatError(f"image array {path} must be [N, H, W], [N, H, W, C] or [N, C, H, W] with "
                                 f"C = 1 or 3, got shape {arr.shape}")
    channels = 1 if layout == "nhw" else (arr.shape[3] if layout == "nhwc" else arr.shape[1])
    entries = [f"{path.name}#{k}" for k in range(arr.shape[0])]
    return Source(kind, path.parent, entries, channels == 1, [], arr, layout)


def _array_row(src: Source, k: int) -> np.ndarray:
    """Row k as [H, W] (grey) or [H, W, 3]: one layout per content, so the same image hashes alike from
    an [N, H, W], NHWC or NCHW array."""
    x = np.asarray(src.array[k])
    x = x.transpose(1, 2, 0) if src.layout == "nchw" else x
    return np.ascontiguousarray(x[:, :, 0] if x.ndim == 3 and x.shape[2] == 1 else x)


def build_cache(
    src: Source,
    channels: int,
    size: int,
    out: Path,
    reuse: Callable[[str], np.ndarray | None] | None = None,
) -> tuple[list[Item], list[tuple[str, str]]]:
    """Decode every entry once, hash it, and write it resized into the raw uint8 file ``out``
    ([N, channels, size, size], row k = k-th item).  Corrupt files are skipped and reported; an entry
    whose content an earlier entry already had is dropped (one item per content).  ``reuse(item)``
    may return an item's row from an earlier cache (a re-scan decodes only new content).

    Returns:
        (items, skipped) where skipped adds (entry, reason) to the source's own list.
    """
    from PIL import Image, UnidentifiedImageError

    items: list[Item] = []
    skipped = list(src.skipped)
    seen: dict[str, str] = {}
    row_bytes = channels * size * size
    with open(out, "wb") as fh:
        for k, entry in enumerate(src.entries):
            if src.array is not None:
                x = _array_row(src, k)
                cid, data = content_id(repr(x.shape).encode() + x.tobytes()), None
            else:
                try:
                    data = (src.root / entry).read_bytes()
                except OSError as exc:
                    skipped.append((entry, f"cannot read ({exc.strerror or type(exc).__name__})"))
                    continue
                cid = content_id(data)
            if cid in seen:
                skipped.append((entry, f"same content as {seen[cid]}"))
                continue
            row = reuse(cid) if reuse is not None else None
            if data is None:
                h, w = x.shape[:2]
                row = fit_image(x, channels, size) if row is None else row
            else:
                try:
                    with Image.open(io.BytesIO(data)) as im:
                        w, h = im.width, im.height
                        if row is None:
                            im.load()  # a truncated or corrupt file fails here
                            row = fit_image(to_uint8(im), channels, size)
                except (UnidentifiedImageError, OSError, ValueError, SyntaxError,
                        Image.DecompressionBombError) as exc:
                    why = ("unknown format" if isinstance(exc, UnidentifiedImageError)
                           else short(str(exc) or type(exc).__name__)[1:-1])
                    skipped.append((entry, f"not a readable image ({why})"))
                    continue
            if row.nbytes != row_bytes:
                raise AssertionError(f"row of {row.shape} for a {channels}x{size}x{size} cache")
            fh.write(row.tobytes())
            seen[cid] = entry
            items.append(Item(cid, entry, int(w), int(h)))
        fh.flush()
        os.fsync(fh.fileno())
    if not items:
        listed = "".join(f"; {p}: {why}" for p, why in skipped[:3])
        raise DatasetNotFoundError(short(f"no readable image in {src.root}{listed}")[1:-1])
    return items, skipped

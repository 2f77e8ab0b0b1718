"""Readers for the standard dataset file formats, each from a local directory.

Every reader returns an :class:`ImageDataset` (uint8 [N, C, H, W]) and raises
:class:`DatasetNotFoundError` (which files to put where) or :class:`DatasetFormatError`.
"""

from __future__ import annotations

import gzip
import pickle
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from dalkit.data.dataset import ImageDataset, float_to_uint8
from dalkit.errors import DatasetFormatError, DatasetNotFoundError

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def find_file(root: Path, names: list[str], dataset: str, hint: str) -> Path:
    """Return the first of ``names`` that exists in ``root`` (plain or ``.gz``).

    Raises:
        DatasetNotFoundError: none exists; the message names the files and the directory.
    """
    for name in names:
        for candidate in (root / name, root / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    raise DatasetNotFoundError(
        f"{dataset}: missing file {names[0]} (or {names[0]}.gz) in {root}; {hint}"
    )


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (the MNIST format), plain or gzip-compressed.

    Raises:
        DatasetFormatError: bad magic number, unknown type code or truncated data.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError, zlib.error) as exc:  # zlib.error: a damaged compressed stream
        raise DatasetFormatError(f"{path}: cannot read IDX file ({type(exc).__name__}: {exc}); the file "
                                 "is damaged: download it again") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DatasetFormatError(f"{path}: not an IDX file (bad magic number)")
    type_code, ndim = raw[2], raw[3]
    if type_code not in _IDX_DTYPES or ndim == 0:
        raise DatasetFormatError(f"{path}: not an IDX file (type code {type_code:#x}, {ndim} dims)")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetFormatError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[type_code])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DatasetFormatError(
            f"{path}: IDX header promises shape {shape} ({expected} bytes) but the file holds "
            f"{len(raw) - header} bytes; the file is truncated or corrupt"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_mnist_dir(root: Path, split: str, name: str, classes: tuple[str, ...]) -> ImageDataset:
    """Read an MNIST-format split (MNIST, Fashion-MNIST, ...) from ``root``.

    Raises:
        DatasetNotFoundError, DatasetFormatError.
    """
    img_name, lbl_name = MNIST_FILES[split]
    hint = (
        "put the four IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
        f"t10k-labels-idx1-ubyte; plain or .gz) there, or run `dalkit fetch {name}`"
    )
    images = read_idx(find_file(root, [img_name, img_name.replace("-idx3-", ".idx3-")], name, hint))
    labels = read_idx(find_file(root, [lbl_name, lbl_name.replace("-idx1-", ".idx1-")], name, hint))
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise DatasetFormatError(
            f"{name} {split}: expected images [N, H, W] and labels [N], got {images.shape} and {labels.shape}"
        )
    if images.dtype != np.uint8:
        raise DatasetFormatError(f"{name} {split}: images must be uint8, got {images.dtype}")
    return ImageDataset(
        torch.from_numpy(images.copy()).unsqueeze(1),
        torch.from_numpy(labels.astype(np.int64)),
        classes,
        name,
    )


# --------------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100: the official "python version" pickles
# --------------------------------------------------------------------------------------------------

CIFAR_LAYOUTS = {
    # variant: (folder inside the archive, files per split, meta file, archive name)
    "cifar10": (
        "cifar-10-batches-py",
        {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
        "batches.meta",
        "cifar-10-python.tar.gz",
    ),
    "cifar100": (
        "cifar-100-python",
        {"train": ("train",), "test": ("test",)},
        "meta",
        "cifar-100-python.tar.gz",
    ),
}
_CIFAR_PIXELS = 3 * 32 * 32


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that rebuilds dicts, lists, strings and numpy arrays and nothing else.

    The CIFAR batches are pickles; a plain ``pickle.load`` would run whatever code a tampered file
    names, so only the globals numpy needs to rebuild an array are allowed."""

    _ALLOWED = frozenset(
        {
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "scalar"),
            ("numpy._core.numeric", "_frombuffer"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),
        }
    )

    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle's signature
        # files written under numpy 1.x (and the official Python 2 ones) name numpy.core.*
        if module.startswith("numpy.core") and hasattr(np, "_core"):
            module = "numpy._core" + module[len("numpy.core"):]
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} (not a numpy array)")
        return super().find_class(module, name)


def _load_pickle_dict(path: Path) -> dict[str, object]:
    """Load a CIFAR pickle (written by Python 2 or 3) as a dict with ``str`` keys.

    Raises:
        DatasetFormatError: the file is not such a pickle.
    """
    try:
        with open(path, "rb") as fh:
            obj = _ArrayUnpickler(fh, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError,
            IndexError, KeyError, MemoryError) as exc:
        raise DatasetFormatError(f"{path}: not a CIFAR python pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise DatasetFormatError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _cifar_field(batch: dict[str, object], key: str, path: Path) -> object:
    if key not in batch:
        raise DatasetFormatError(f"{path}: missing key {key!r} (has {sorted(batch)})")
    return batch[key]


def _cifar_names(meta: dict[str, object], key: str, path: Path) -> tuple[str, ...]:
    names = _cifar_field(meta, key, path)
    if not isinstance(names, (list, tuple)) or not names:
        raise DatasetFormatError(f"{path}: {key!r} must be a non-empty list of names")
    return tuple(n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names)


def _detect_cifar(root: Path) -> str:
    found = [
        variant
        for variant, (folder, _, meta, _) in CIFAR_LAYOUTS.items()
        if (root / folder).is_dir() or (root / meta).is_file()
    ]
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise DatasetFormatError(
            f"{root} holds both CIFAR-10 and CIFAR-100 files; pass variant='cifar10' or 'cifar100'"
        )
    raise DatasetNotFoundError(
        f"no CIFAR files in {root}; extract cifar-10-python.tar.gz (giving cifar-10-batches-py/) or "
        f"cifar-100-python.tar.gz (giving cifar-100-python/) there, or run `dalkit fetch cifar10`"
    )


def read_cifar(root: Path, split: str, variant: str | None = None, fine: bool = True) -> ImageDataset:
    """Read a CIFAR-10 or CIFAR-100 split from the official python pickles.

    Layout (``root`` is either the extracted folder or its parent)::

        cifar-10-batches-py/  data_batch_1 .. data_batch_5, test_batch, batches.meta
        cifar-100-python/     train, test, meta

    Each batch is a pickled dict with ``b'data'`` (uint8 [N, 3072]: the 1024 red, then green, then blue
    values of a 32x32 image, row-major) and ``b'labels'`` (CIFAR-10) or ``b'fine_labels'`` /
    ``b'coarse_labels'`` (CIFAR-100).  Class names come from the meta file.

    Args:
        root: directory holding the files or the extracted folder.
        split: "train" or "test".
        variant: "cifar10" or "cifar100"; ``None`` detects it from the files present.
        fine: CIFAR-100 only: the 100 fine labels (True) or the 20 coarse super-classes (False).
    Returns:
        ImageDataset, images uint8 [N, 3, 32, 32].
    Raises:
        DatasetNotFoundError: a file is missing; the message lists the files and the directory.
        DatasetFormatError: a file is not a CIFAR pickle, or its arrays have the wrong shape or type.
    """
    root = Path(root)
    variant = _detect_cifar(root) if variant is None else variant
    if variant not in CIFAR_LAYOUTS:
        raise ValueError(f"variant must be one of {sorted(CIFAR_LAYOUTS)}, got {variant!r}")
    folder, split_files, meta_name, archive = CIFAR_LAYOUTS[variant]
    if split not in split_files:
        raise ValueError(f"split must be one of {sorted(split_files)}, got {split!r}")
    base = root / folder if (root / folder).is_dir() else root
    needed = [*split_files[split], meta_name]
    missing = [n for n in needed if not (base / n).is_file()]
    if missing:
        every = [*split_files["train"], *split_files["test"], meta_name]
        raise DatasetNotFoundError(
            f"{variant}: missing {', '.join(missing)} in {base}; put the files {', '.join(every)} "
            f"(the folder {folder}/ inside {archive}) in {root}, or run `dalkit fetch {variant}`"
        )
    label_key = "labels" if variant == "cifar10" else ("fine_labels" if fine else "coarse_labels")
    names_key = "label_names" if variant == "cifar10" else (
        "fine_label_names" if fine else "coarse_label_names"
    )
    classes = _cifar_names(_load_pickle_dict(base / meta_name), names_key, base / meta_name)
    images, labels = [], []
    for file_name in split_files[split]:
        path = base / file_name
        batch = _load_pickle_dict(path)
        data = _cifar_field(batch, "data", path)
        lab = np.asarray(_cifar_field(batch, label_key, path))
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or (
            data.shape[1] != _CIFAR_PIXELS
        ):
            desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
            raise DatasetFormatError(f"{path}: 'data' must be a uint8 array [N, 3072], got {desc}")
        if lab.ndim != 1 or lab.shape[0] != data.shape[0] or not np.issubdtype(lab.dtype, np.integer):
            raise DatasetFormatError(
                f"{path}: {label_key!r} must hold {data.shape[0]} integer labels, got {lab.dtype} {lab.shape}"
            )
        if lab.size and (lab.min() < 0 or lab.max() >= len(classes)):
            raise DatasetFormatError(
                f"{path}: labels must lie in [0, {len(classes) - 1}] ({len(classes)} names in "
                f"{meta_name}), got [{lab.min()}, {lab.max()}]"
            )
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(lab.astype(np.int64))
    return ImageDataset(
        torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels)), classes, variant
    )


# --------------------------------------------------------------------------------------------------
# SVHN: the "format 2" cropped digits, train_32x32.mat / test_32x32.mat / extra_32x32.mat
# --------------------------------------------------------------------------------------------------

SVHN_SPLITS = ("train", "test", "extra")


def read_svhn_mat(root: Path, split: str) -> ImageDataset:
    """Read an SVHN split from ``<root>/<split>_32x32.mat``.

    The file holds ``X`` uint8 [32, 32, 3, N] and ``y`` [N, 1] in 1..10, where 10 stands for the digit 0;
    the labels returned are the digits 0..9.

    Raises:
        DatasetNotFoundError: the .mat file is missing.
        DatasetFormatError: unreadable file, missing ``X``/``y``, wrong shapes or label values.
    """
    import scipy.io
    from scipy.io.matlab import MatReadError

    if split not in SVHN_SPLITS:
        raise ValueError(f"split must be one of {SVHN_SPLITS}, got {split!r}")
    root = Path(root)
    path = root / f"{split}_32x32.mat"
    if not path.is_file():
        raise DatasetNotFoundError(
            f"svhn: missing {path.name} in {root}; put train_32x32.mat and test_32x32.mat "
            f"(from http://ufldl.stanford.edu/housenumbers/) there, or run `dalkit fetch svhn`"
        )
    try:
        mat = scipy.io.loadmat(path, variable_names=["X", "y"])
    except (MatReadError, ValueError, TypeError, OSError, EOFError, NotImplementedError, zlib.error) as exc:
        raise DatasetFormatError(
            f"{path}: not a readable MATLAB file ({type(exc).__name__}: {exc})"
        ) from None
    if "X" not in mat or "y" not in mat:
        raise DatasetFormatError(f"{path}: must hold the variables X and y, has {sorted(mat)}")
    x, y = mat["X"], np.asarray(mat["y"]).reshape(-1)
    if x.ndim != 4 or x.shape[2] not in (1, 3) or x.dtype != np.uint8:
        raise DatasetFormatError(f"{path}: X must be uint8 [H, W, 3, N], got {x.dtype} {x.shape}")
    if y.shape[0] != x.shape[3]:
        raise DatasetFormatError(f"{path}: X holds {x.shape[3]} images but y holds {y.shape[0]} labels")
    if y.size and (not np.all(np.isfinite(y)) or np.any(y != np.round(y)) or y.min() < 0 or y.max() > 10):
        raise DatasetFormatError(f"{path}: y must hold the digits 1..10 (10 = digit 0)")
    labels = y.astype(np.int64) % 10  # the official files label the digit 0 as 10
    images = np.ascontiguousarray(x.transpose(3, 2, 0, 1))  # [H, W, C, N] -> [N, C, H, W]
    return ImageDataset(
        torch.from_numpy(images), torch.from_numpy(labels), tuple(str(i) for i in range(10)), "svhn"
    )


# --------------------------------------------------------------------------------------------------
# An image folder: <root>/<class name>/<image files>
# --------------------------------------------------------------------------------------------------

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
_GREY_MODES = frozenset({"1", "L", "LA", "La"})
_WIDE_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


def _decode_image(path: Path) -> np.ndarray:
    """Decode one image file to uint8 [H, W, 1] (grey) or [H, W, 3] (colour; alpha dropped)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode in _GREY_MODES:
                arr = np.asarray(im.convert("L"))[:, :, None]
            elif mode not in _WIDE_MODES:  # RGB, RGBA (alpha dropped), palette, CMYK, ...
                arr = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DatasetFormatError(f"{path}: cannot decode image ({exc})") from None
    if mode in _WIDE_MODES:
        raise DatasetFormatError(f"{path}: {mode!r} images (16-bit or float) are unsupported; save as 8-bit")
    return arr


def read_image_folder(
    root: Path, classes: tuple[str, ...] | None = None, name: str = "image-folder"
) -> ImageDataset:
    """Read ``<root>/<class name>/*.png|jpg|...``: one sub-folder per class.

    Class names are the sub-folder names in sorted order (label i = i-th name), unless ``classes`` is
    given (e.g. the train split's, when reading the test split): then every sub-folder must be one of
    them.  Files inside a class folder are read in sorted path order, sub-folders included; files whose
    suffix is not an image suffix are skipped.  Grey images give 1 channel; colour images 3 (alpha is
    dropped); a folder mixing grey and colour images is read as colour.

    Raises:
        DatasetNotFoundError: ``root`` is missing or holds no class sub-folders.
        DatasetFormatError: an undecodable image, images of different sizes (naming an offending
            file), an empty class folder, or a folder not among ``classes``.
    """
    root = Path(root)
    layout = f"put one sub-folder per class in {root}, each holding that class's images (PNG or JPEG)"
    if not root.is_dir():
        raise DatasetNotFoundError(f"{name}: missing directory {root}; {layout}")
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DatasetNotFoundError(f"{name}: no class sub-folders in {root}; {layout}")
    if classes is None:
        classes = tuple(folders)
    else:
        unknown = [f for f in folders if f not in classes]
        if unknown:
            raise DatasetFormatError(
                f"{name}: class folders {unknown} in {root} are not among the classes {list(classes)}"
            )
    index = {c: i for i, c in enumerate(classes)}
    arrays: list[np.ndarray] = []
    labels: list[int] = []
    first: Path | None = None
    for folder in folders:
        files = sorted(
            p for p in (root / folder).rglob("*")
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
        )
        if not files:
            raise DatasetFormatError(
                f"{name}: class folder {root / folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})"
            )
        for path in files:
            arr = _decode_image(path)
            if first is None:
                first = path
            elif arr.shape[:2] != arrays[0].shape[:2]:
                raise DatasetFormatError(
                    f"{name}: {path} is {arr.shape[1]}x{arr.shape[0]} (WxH) but {first} is "
                    f"{arrays[0].shape[1]}x{arrays[0].shape[0]}; all images must share one size"
                )
            arrays.append(arr)
            labels.append(index[folder])
    if any(a.shape[2] == 3 for a in arrays):
        arrays = [np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a for a in arrays]
    images = np.ascontiguousarray(np.stack(arrays).transpose(0, 3, 1, 2))  # [N, H, W, C] -> [N, C, H, W]
    return ImageDataset(torch.from_numpy(images), torch.tensor(labels, dtype=torch.int64), classes, name)


# --------------------------------------------------------------------------------------------------
# .npz arrays: x_train, y_train, x_test, y_test (+ classes)
# --------------------------------------------------------------------------------------------------

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def _npz_float_pool(x: np.ndarray, path: Path, key: str) -> np.ndarray:
    """float32 [N, ...] kept as it is (a float pool: embeddings, tabular rows, normalised images)."""
    if x.dtype.kind not in "biuf" or x.dtype.kind == "b":
        raise DatasetFormatError(f"{path}: {key} must be a numeric array, got {x.dtype}")
    if x.ndim < 2:
        raise DatasetFormatError(f"{path}: {key} must be [N, D] or [N, ...] (one row per sample), got "
                                 f"shape {x.shape}")
    out = np.ascontiguousarray(x, dtype=np.float32)
    finite = np.isfinite(out.reshape(out.shape[0], -1)).all(1)
    if not finite.all():
        rows = np.flatnonzero(~finite)
        raise DatasetFormatError(f"{path}: {key} holds NaN or inf in {rows.size} rows (first: "
                                 f"{', '.join(map(str, rows[:5]))})")
    return out


def _npz_images(x: np.ndarray, path: Path, key: str) -> np.ndarray:
    """uint8 [N, C, H, W] from uint8/integer/float arrays laid out N×H×W, NHWC or NCHW."""
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        chw, hwc = x.shape[1] in (1, 3), x.shape[3] in (1, 3)
        if chw and hwc:  # e.g. [N, 1, 3, 3]: take the reading that gives square images, if only one does
            chw, hwc = x.shape[2] == x.shape[3], x.shape[1] == x.shape[2]
        if hwc and not chw:
            x = x.transpose(0, 3, 1, 2)
        elif chw == hwc:
            raise DatasetFormatError(
                f"{path}: cannot tell the channel axis of {key} with shape {x.shape}; store it as "
                f"[N, C, H, W] or [N, H, W, C] with C = 1 or 3"
            )
    else:
        raise DatasetFormatError(
            f"{path}: {key} must be [N, H, W], [N, H, W, C] or [N, C, H, W], got shape {x.shape}"
        )
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if np.issubdtype(x.dtype, np.floating):
        return float_to_uint8(torch.from_numpy(np.ascontiguousarray(x)), f"{path}: {key}").numpy()
    if np.issubdtype(x.dtype, np.integer):
        if x.size and (x.min() < 0 or x.max() > 255):
            raise DatasetFormatError(f"{path}: {key} values must lie in [0, 255], got [{x.min()}, {x.max()}]")
        return np.ascontiguousarray(x.astype(np.uint8))
    raise DatasetFormatError(f"{path}: {key} must be a uint8, integer or float array, got {x.dtype}")


def _npz_labels(y: np.ndarray, n: int, path: Path, key: str) -> np.ndarray:
    y = y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y
    if y.ndim != 1 or y.shape[0] != n:
        raise DatasetFormatError(f"{path}: {key} must hold {n} labels [N], got shape {y.shape}")
    if np.issubdtype(y.dtype, np.floating):
        if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise DatasetFormatError(f"{path}: {key} must hold whole-number class indices")
    elif not np.issubdtype(y.dtype, np.integer):
        raise DatasetFormatError(f"{path}: {key} must be an integer array, got {y.dtype}")
    if y.size and y.min() < 0:
        raise DatasetFormatError(f"{path}: {key} holds negative labels (min {y.min()})")
    return y.astype(np.int64)


NPY_FILES = tuple(f"{k}.npy" for k in NPZ_KEYS)


def _map_npy(path: Path) -> np.ndarray:
    """``path`` memory-mapped copy-on-write (pages are read when touched; a write never reaches the file)."""
    try:
        return np.load(path, allow_pickle=False, mmap_mode="c")
    except (OSError, ValueError, EOFError) as exc:
        raise DatasetFormatError(f"{path}: not a readable .npy array ({exc})") from None


def _mapped_images(x: np.ndarray, path: Path) -> np.ndarray:
    """uint8 images as a view of the map: [N, H, W] -> [N, 1, H, W], NHWC -> NCHW by strides (no copy)."""
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4 and x.shape[1] not in (1, 3) and x.shape[3] in (1, 3):
        return x.transpose(0, 3, 1, 2)
    if x.ndim == 4 and x.shape[1] in (1, 3):
        return x
    raise DatasetFormatError(f"{path}: uint8 images must be [N, H, W], [N, C, H, W] or [N, H, W, C] with "
                             f"C = 1 or 3, got shape {x.shape}")


def read_npy_dir(root: Path, name: str = "npz") -> tuple[ImageDataset, ImageDataset]:
    """Read ``x_train.npy``, ``y_train.npy``, ``x_test.npy``, ``y_test.npy`` (+ optional ``classes.npy``)
    from ``root``; the image arrays stay memory-mapped (``mmap_mode="c"``): uint8 images and float32 pools
    are never copied whole, a pass over them pages in the rows it reads (a float pool's NaN/inf check is
    one reduction per row).  Other dtypes are converted in memory, as :func:`read_npz` does.

    Raises:
        DatasetFormatError: unreadable files, wrong shapes or types, NaN/inf, labels out of range.
    """
    splits = {}
    for split in ("train", "test"):
        path = root / f"x_{split}.npy"
        x = _map_npy(path)
        if x.dtype == np.uint8 and x.ndim != 2:
            x = _mapped_images(x, path)
        elif x.dtype == np.float32 and x.ndim >= 2:
            pass  # a float pool, mapped: ImageDataset checks its rows for NaN/inf without a copy
        else:
            x = _npz_float_pool(np.asarray(x), path, f"x_{split}") if x.ndim == 2 or x.dtype.kind == "f" \
                else _npz_images(np.asarray(x), path, f"x_{split}")
        y = _npz_labels(np.asarray(_map_npy(root / f"y_{split}.npy")), x.shape[0], root / f"y_{split}.npy",
                        f"y_{split}")
        splits[split] = (x, y)
    if splits["train"][0].shape[1:] != splits["test"][0].shape[1:]:
        raise DatasetFormatError(f"{root}: train samples are {splits['train'][0].shape[1:]} but test samples "
                                 f"are {splits['test'][0].shape[1:]}")
    top = max((int(y.max()) for _, y in splits.values() if y.size), default=0)
    if (root / "classes.npy").is_file():
        classes = tuple(str(c) for c in np.asarray(_map_npy(root / "classes.npy")).reshape(-1))
        if top >= len(classes):
            raise DatasetFormatError(f"{root}: label {top} but only {len(classes)} classes are named")
    else:
        classes = tuple(str(i) for i in range(top + 1))
    train, test = (ImageDataset(torch.from_numpy(x), torch.from_numpy(y), classes, name)
                   for x, y in (splits["train"], splits["test"]))
    return train, test


def read_npz(path: Path, name: str = "npz") -> tuple[ImageDataset, ImageDataset]:
    """Read the train and test splits from one ``.npz`` file.

    Arrays: ``x_train``, ``y_train``, ``x_test``, ``y_test`` and optionally ``classes`` (strings) and
    ``kind`` (a string: ``"images"`` or ``"float"``).  Images may be uint8, integer in [0, 255], or
    float in [0, 1] or [0, 255] (rounded; NaN/inf refused), laid out [N, H, W], [N, H, W, C] or
    [N, C, H, W] with C = 1 or 3.  A *float pool* keeps its values as float32 of any shape [N, ...]:
    every 2-D ``x`` ([N, D]: embeddings, tabular rows) is one, and ``kind="float"`` makes any ``x`` one
    (e.g. standardised images [N, C, H, W], token embeddings [N, T, D]).  Labels are class indices [N]
    (or [N, 1]); without ``classes`` the names are "0", "1", ... up to the largest label.

    Returns:
        (train, test) ImageDatasets.
    Raises:
        DatasetNotFoundError: the file is missing.
        DatasetFormatError: not an npz archive, missing arrays, wrong shapes/types, NaN/inf, labels out
            of range of ``classes``, or train and test images of different shapes.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(
            f"{name}: missing {path.name} in {path.parent}; save it there with "
            f"numpy.savez(path, x_train=..., y_train=..., x_test=..., y_test=..., classes=...)"
        )
    if not zipfile.is_zipfile(path):
        raise DatasetFormatError(
            f"{path}: not an .npz archive; write it with numpy.savez or numpy.savez_compressed"
        )
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in NPZ_KEYS if k not in npz.files]
            if missing:
                raise DatasetFormatError(f"{path}: missing arrays {missing} (has {sorted(npz.files)})")
            arrays = {k: npz[k] for k in (*NPZ_KEYS, "classes", "kind") if k in npz.files}
    except DatasetFormatError:
        raise
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise DatasetFormatError(
                f"{path}: holds object arrays; store classes as a string array, "
                "e.g. np.array(names, dtype=str)"
            ) from None
        raise DatasetFormatError(f"{path}: not a readable .npz file ({exc})") from None
    except (OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        raise DatasetFormatError(f"{path}: not a readable .npz file ({type(exc).__name__}: {exc})") from None
    kind = str(arrays["kind"]) if "kind" in arrays else None
    if kind not in (None, "images", "float"):
        raise DatasetFormatError(f"{path}: kind must be 'images' or 'float', got {kind[:40]!r}")
    as_float = kind == "float" or (kind is None and arrays["x_train"].ndim == 2)
    splits = {}
    for split in ("train", "test"):
        key = f"x_{split}"
        x = _npz_float_pool(arrays[key], path, key) if as_float else _npz_images(arrays[key], path, key)
        splits[split] = (x, _npz_labels(arrays[f"y_{split}"], x.shape[0], path, f"y_{split}"))
    if splits["train"][0].shape[1:] != splits["test"][0].shape[1:]:
        what = "samples" if as_float else "images"
        raise DatasetFormatError(
            f"{path}: train {what} are {splits['train'][0].shape[1:]} ({'...' if as_float else 'C, H, W'})"
            f" but test {what} are {splits['test'][0].shape[1:]}"
        )
    top = max((int(y.max()) for _, y in splits.values() if y.size), default=0)
    if "classes" in arrays:
        classes = tuple(str(c) for c in np.asarray(arrays["classes"]).reshape(-1))
        if top >= len(classes):
            raise DatasetFormatError(f"{path}: label {top} but only {len(classes)} classes are named")
    else:
        classes = tuple(str(i) for i in range(top + 1))
    train, test = (
        ImageDataset(torch.from_numpy(x), torch.from_numpy(y), classes, name)
        for x, y in (splits["train"], splits["test"])
    )
    return train, test

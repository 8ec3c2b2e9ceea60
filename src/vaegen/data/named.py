"""Named datasets (fashion-mnist, mnist): their files and checksums, where they are looked for,
download, verification.

Every file of a named dataset is checked before use (size and a content checksum, then the IDX
checks of `idx.parse_idx`); a bad file raises `DataError` naming the file and what is wrong.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..files import atomic_write_bytes
from .cache import cache_root
from .idx import decompress, parse_idx, read_raw

log = logging.getLogger(__name__)

DEBIAN_DATA_DIR = Path("/usr/share/datasets")


@dataclass(frozen=True)
class FileSpec:
    """One file of a named dataset and what its content must be.

    name is the official .gz's; an uncompressed copy (the name without .gz) is accepted too.
    raw_size is the size in bytes of the decompressed content. raw_sha256 and raw_md5 are hashes
    of the decompressed content: they verify an uncompressed copy, and a .gz recompressed by
    someone else (as in Debian's package); raw_sha256 is used when known, else raw_md5. gz_md5 is
    the MD5 of the official .gz. A file passes if its .gz MD5 or its content hash matches.
    """

    name: str
    raw_size: int
    raw_sha256: str | None = None
    gz_md5: str | None = None
    raw_md5: str | None = None


@dataclass(frozen=True)
class NamedDataset:
    name: str
    classes: tuple[str, ...]
    files: dict[str, tuple[FileSpec, FileSpec]]  # split -> (images, labels)
    mirrors: tuple[str, ...]
    debian_package: str | None = None


FASHION_MNIST = NamedDataset(
    name="fashion-mnist",
    classes=(
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
    # raw_sha256: the SHA-256 of the content of the official files (checked against Debian's
    # dataset-fashion-mnist, decompressed); gz_md5: the official .gz MD5s, as in torchvision's
    # datasets/mnist.py (FashionMNIST.resources).
    files={
        "train": (
            FileSpec(
                "train-images-idx3-ubyte.gz",
                47040016,
                "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
                "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            ),
            FileSpec(
                "train-labels-idx1-ubyte.gz",
                60008,
                "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
                "25c81989df183df01b3e8a0aad5dffbe",
            ),
        ),
        "test": (
            FileSpec(
                "t10k-images-idx3-ubyte.gz",
                7840016,
                "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
                "bef4ecab320f06d8554ea6380940ec79",
            ),
            FileSpec(
                "t10k-labels-idx1-ubyte.gz",
                10008,
                "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
                "bb300cfdad3c16e7a12a480ee83cd310",
            ),
        ),
    },
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    debian_package="dataset-fashion-mnist",
)

MNIST = NamedDataset(
    name="mnist",
    classes=tuple(str(i) for i in range(10)),
    # gz_md5: the official .gz MD5s, as in torchvision's datasets/mnist.py (MNIST.resources).
    # raw_md5: the MD5s of the decompressed files (no published SHA-256 of them was found), as in
    # prabhuomkar/pytorch-cpp, cmake/fetch_mnist.cmake (MNIST_EXTRACTED_FILE_MD5S, listed beside
    # these same .gz MD5s) and pralab/secml, src/secml/data/loader/c_dataloader_mnist.py (checked
    # "after unpacking"), which agree; the tests cannot re-check them without the MNIST files.
    files={
        "train": (
            FileSpec(
                "train-images-idx3-ubyte.gz",
                47040016,
                gz_md5="f68b3c2dcbeaaa9fbdd348bbdeb94873",
                raw_md5="6bbc9ace898e44ae57da46a324031adb",
            ),
            FileSpec(
                "train-labels-idx1-ubyte.gz",
                60008,
                gz_md5="d53e105ee54ea40749a09fcbcd1e9432",
                raw_md5="a25bea736e30d166cdddb491f175f624",
            ),
        ),
        "test": (
            FileSpec(
                "t10k-images-idx3-ubyte.gz",
                7840016,
                gz_md5="9fb629c4189551a2d022fa330f9573f3",
                raw_md5="2646ac647ad5339dbf082846283269ea",
            ),
            FileSpec(
                "t10k-labels-idx1-ubyte.gz",
                10008,
                gz_md5="ec29112dd5afa0611ce80d1b7f02629c",
                raw_md5="27ae3e4e09519cfbb04c329615203637",
            ),
        ),
    },
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
)

NAMED_DATASETS: dict[str, NamedDataset] = {d.name: d for d in (FASHION_MNIST, MNIST)}
SPLITS = ("train", "test")


def check_split(split: str) -> None:
    """A DataError unless `split` is one of SPLITS."""
    if split not in SPLITS:
        raise DataError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")


def _verify_file(path: Path, spec: FileSpec) -> bytes:
    """Return the decompressed bytes of `path` after checking its size and checksum."""
    return _verify_bytes(read_raw(path), spec, path)


_NOT_OURS = (
    "the file is damaged or another dataset's (MNIST's and FashionMNIST's files have the same "
    "names); delete it and fetch this dataset's again"
)


def _verify_bytes(raw: bytes, spec: FileSpec, source: str | Path) -> bytes:
    """Return the decompressed `raw` (the bytes of a file or download named `source`) after
    checking its size and checksum."""
    gz_ok = (
        str(source).endswith(".gz")
        and spec.gz_md5 is not None
        and hashlib.md5(raw).hexdigest() == spec.gz_md5
    )
    data = decompress(raw, source)
    if len(data) != spec.raw_size:
        raise DataError(
            f"{source}: {len(data)} bytes after decompression, expected {spec.raw_size}: "
            + _NOT_OURS
        )
    if gz_ok:
        return data
    # otherwise the content is checked, against the strongest hash known for it
    if spec.raw_sha256 is not None:
        if hashlib.sha256(data).hexdigest() != spec.raw_sha256:
            raise DataError(
                f"{source}: checksum mismatch (SHA-256 of the content is not the official one): "
                + _NOT_OURS
            )
    elif spec.raw_md5 is not None:
        if hashlib.md5(data).hexdigest() != spec.raw_md5:
            raise DataError(
                f"{source}: checksum mismatch (MD5 of the content is not the official one): "
                + _NOT_OURS
            )
    elif spec.gz_md5 is not None and str(source).endswith(".gz"):
        raise DataError(f"{source}: checksum mismatch (MD5 is not the official one): " + _NOT_OURS)
    elif spec.gz_md5 is not None:
        # only the official .gz's MD5 is known: an uncompressed file has nothing to compare with
        raise DataError(
            f"{source}: cannot be verified: only the MD5 of the official {spec.name} is known, "
            "not a hash of its content; keep the .gz file instead of an uncompressed copy"
        )
    return data


def _candidate_dirs(name: str, data_dir: str | Path | None) -> list[Path]:
    """Where a named dataset is looked for, in order (docs/data.md, "Named datasets")."""
    roots: list[Path] = []
    if data_dir is not None:
        roots.append(Path(data_dir))
    if os.environ.get("VAEGEN_DATA"):
        roots.append(Path(os.environ["VAEGEN_DATA"]))
    dirs: list[Path] = []
    for root in roots:  # a root may hold the files, or a sub-folder named after the dataset
        dirs += [root / name, root]
    dirs.append(cache_dir(name))
    dirs.append(DEBIAN_DATA_DIR / name)
    return dirs


def cache_dir(name: str) -> Path:
    """The user cache for a named dataset: NAME/ in vaegen's cache (`data.cache.cache_root`:
    $VAEGEN_CACHE_DIR, else $XDG_CACHE_HOME/vaegen, else ~/.cache/vaegen)."""
    return cache_root() / name


def _find_file(dirs: Sequence[Path], filename: str) -> Path | None:
    for d in dirs:
        for candidate in (d / filename, d / filename.removesuffix(".gz")):
            if candidate.is_file():
                return candidate
    return None


def _holds(folder: Path, ds: NamedDataset) -> bool:
    """Whether the smallest of the dataset's files in `folder` is its own (the test labels,
    10 KB: cheap to verify)."""
    spec = min((s for split in SPLITS for s in ds.files[split]), key=lambda s: s.raw_size)
    path = _find_file([folder], spec.name)
    if path is None:
        return False
    try:
        _verify_file(path, spec)
    except DataError:
        return False
    return True


def _missing_message(ds: NamedDataset, filename: str, dirs: Sequence[Path], why: str) -> str:
    where = "\n".join(f"  {d}" for d in dirs)
    ways = [
        f"  - run `vaegen data fetch {ds.name}` (downloads to {cache_dir(ds.name)})",
        "  - put the four official files in a folder and pass --data-dir or set $VAEGEN_DATA",
    ]
    if ds.debian_package:
        ways.append(f"  - on Debian: apt-get install {ds.debian_package}")
    return (
        f"dataset {ds.name!r}: {filename} not found in\n{where}\n{why}"
        "Get it one of these ways:\n" + "\n".join(ways)
    )


def download(
    ds: NamedDataset, dest: Path | None = None, mirrors: Sequence[str] | None = None
) -> Path:
    """Download the dataset's files into `dest` (default: the user cache), verifying each one.

    Returns the folder. Raises DataError naming every mirror tried when none works.
    """
    dest = dest or cache_dir(ds.name)
    dest.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        for spec in ds.files[split]:
            target = dest / spec.name
            if target.is_file():
                try:
                    _verify_file(target, spec)
                    continue
                except DataError:
                    log.warning("%s is corrupt; downloading it again", target)
            errors = []
            for mirror in mirrors or ds.mirrors:
                url = mirror + spec.name
                try:
                    log.info("downloading %s", url)
                    with urllib.request.urlopen(url, timeout=30) as r:
                        payload = r.read()
                # a transfer cut short is an HTTPException (IncompleteRead), a bad URL a ValueError
                except (OSError, http.client.HTTPException, ValueError) as e:
                    errors.append(f"  {url}: {e}")
                    continue
                try:
                    _verify_bytes(payload, spec, url)
                except DataError as e:
                    errors.append(f"  {e}")
                    continue
                # verified in memory, then written under a temporary name of its own and renamed:
                # another process fetching the same file at the same time cannot collide with it
                atomic_write_bytes(target, payload)
                break
            else:
                raise DataError(
                    f"dataset {ds.name!r}: could not download {spec.name}:\n" + "\n".join(errors)
                )
    return dest


def locate(name: str, data_dir: str | Path | None = None, fetch: bool = True) -> Path:
    """Find the folder holding a named dataset's files, downloading them if allowed and needed."""
    ds = _named(name)
    dirs = _candidate_dirs(name, data_dir)
    other = None  # a folder of files with the dataset's names but (maybe) another's content
    for d in dirs:
        if all(_find_file([d], spec.name) for split in SPLITS for spec in ds.files[split]):
            # MNIST and FashionMNIST share file names and sizes: a folder not named after the
            # dataset ($VAEGEN_DATA, --data-dir) may hold the other's
            if d.name == name or _holds(d, ds):
                _passed_over(other, name, d)
                return d
            other = other or d
    why = ""
    if fetch:
        try:
            found = download(ds)
            _passed_over(other, name, found)
            return found
        except DataError as e:
            why = f"and the download failed: {e}\n"
    if other is not None:  # reading its files says what is wrong with them
        return other
    raise DataError(_missing_message(ds, ds.files["train"][0].name, dirs, why))


def _passed_over(other: Path | None, name: str, used: Path) -> None:
    if other is not None:
        log.warning(
            "%s holds files named as %s's that are not its own (another dataset's, or "
            "damaged); using %s",
            other,
            name,
            used,
        )


def _named(name: str) -> NamedDataset:
    try:
        return NAMED_DATASETS[name]
    except KeyError:
        raise DataError(
            f"unknown dataset {name!r}; named datasets are {', '.join(NAMED_DATASETS)}, "
            "or pass a folder of IDX files, an .npz file or a folder of images"
        ) from None


def verify(name: str, data_dir: str | Path | None = None) -> list[Path]:
    """Check every file of a named dataset (size and checksum); return the paths checked."""
    ds = _named(name)
    folder = locate(name, data_dir, fetch=False)
    paths = []
    for split in SPLITS:
        for spec in ds.files[split]:
            path = _find_file([folder], spec.name)
            assert path is not None  # locate() found all files there
            _verify_file(path, spec)
            paths.append(path)
    return paths


def read_split(
    name: str, split: str, data_dir: str | Path | None = None
) -> tuple[Path, np.ndarray, np.ndarray]:
    """One split of a named dataset, found (downloaded if needed) and verified.

    Returns (folder, images, labels) as the IDX files hold them: images uint8 N x H x W,
    labels uint8 N (class indices into the dataset's `classes`).
    """
    check_split(split)
    ds = _named(name)
    folder = locate(name, data_dir)
    arrays = []
    for spec in ds.files[split]:
        path = _find_file([folder], spec.name)
        assert path is not None  # locate() found all files there
        arrays.append(parse_idx(_verify_file(path, spec), path))
    return folder, arrays[0], arrays[1]


def fetch(name: str, data_dir: str | Path | None = None) -> Path:
    """Make a named dataset available (found or downloaded) and verified; return its folder."""
    folder = locate(name, data_dir)
    verify(name, folder)
    return folder

"""Datasets: the IDX format, named datasets (fashion-mnist, mnist), .npz files and image folders.

Every file is checked before use (IDX magic, dtype, dimensions, byte count and, for the named
datasets, a content checksum); a bad file raises `DataError` naming the file and what is wrong.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import re
import urllib.request
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ._io import atomic_write_bytes
from .errors import DataError

log = logging.getLogger(__name__)

# IDX type codes (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT"); data is big-endian.
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_CODES = {
    dt.newbyteorder(">") if dt.itemsize > 1 else dt: code for code, dt in _IDX_DTYPES.items()
}

DEBIAN_DATA_DIR = Path("/usr/share/datasets")


@dataclass
class ImageDataset:
    """Images with optional labels, kept whole in memory.

    images: uint8 tensor, N x C x H x W, pixel values 0..255.
    labels: int64 tensor of N class indices, or None for an unlabelled dataset.
    classes: class names; labels index into it.
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    classes: list[str]
    name: str = ""

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DataError(
                f"dataset {self.name!r}: images must be a uint8 tensor N x C x H x W, "
                f"got {self.images.dtype} with shape {tuple(self.images.shape)}"
            )
        if self.labels is not None:
            if self.labels.shape != (len(self.images),):
                raise DataError(
                    f"dataset {self.name!r}: {len(self.images)} images but labels of shape "
                    f"{tuple(self.labels.shape)}"
                )
            if len(self.labels) and (
                int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.classes)
            ):
                raise DataError(
                    f"dataset {self.name!r}: labels span {int(self.labels.min())}.."
                    f"{int(self.labels.max())} but there are {len(self.classes)} classes"
                )

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W)."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]


def safe_name(name: str) -> str:
    """A class name made safe as a file or folder name ("T-shirt/top" -> "T-shirt_top")."""
    return re.sub(r"[^\w.-]+", "_", name).strip("._") or "class"


# --------------------------------------------------------------------------------------- IDX


def _read_raw(path: Path) -> bytes:
    """The file's bytes as stored; a missing or unreadable file is a DataError naming it."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None


def _decompress(raw: bytes, source: str | Path) -> bytes:
    """Bytes decompressed when `source` (a file name or URL) ends in .gz, else as they are."""
    if str(source).endswith(".gz"):
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(
                f"{source}: not a valid gzip file ({e}); delete it and fetch again"
            ) from None
    return raw


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed when its name ends in .gz."""
    return _decompress(_read_raw(path), path)


def parse_idx(data: bytes, source: str | Path = "<bytes>") -> np.ndarray:
    """Parse IDX bytes into an array, checking magic, type code, dimensions and length."""
    if len(data) < 4:
        raise DataError(f"{source}: too short for an IDX file ({len(data)} bytes)")
    if data[0] != 0 or data[1] != 0:
        raise DataError(f"{source}: not an IDX file (magic starts {data[:2].hex()}, expected 0000)")
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        raise DataError(f"{source}: unknown IDX type code 0x{code:02x}")
    if ndim == 0:
        raise DataError(f"{source}: IDX file declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{source}: truncated IDX header ({len(data)} bytes, need {header})")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = _IDX_DTYPES[code]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise DataError(
            f"{source}: {what}: header says shape {shape} of {dtype.name} "
            f"({expected} bytes) but the file has {len(data)} bytes"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally .gz) into a native-endian numpy array."""
    path = Path(path)
    return parse_idx(_read_bytes(path), path)


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode an array as IDX bytes (the inverse of `parse_idx`)."""
    array = np.asarray(array)
    if array.ndim == 0 or array.ndim > 255:
        raise ValueError(f"IDX needs 1..255 dimensions, got {array.ndim}")
    big = array.dtype.newbyteorder(">") if array.dtype.itemsize > 1 else array.dtype
    if big not in _IDX_CODES:
        raise ValueError(f"IDX cannot store dtype {array.dtype}")
    header = bytes([0, 0, _IDX_CODES[big], array.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=big).tobytes()


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write an array as an IDX file, gzip-compressed when the name ends in .gz (atomically)."""
    path = Path(path)
    data = idx_bytes(array)
    if path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)  # mtime=0: same array, same bytes
    atomic_write_bytes(path, data)


# ---------------------------------------------------------------------------- named datasets


@dataclass(frozen=True)
class FileSpec:
    """One file of a named dataset and what its content must be.

    raw_sha256 is the SHA-256 of the decompressed bytes (robust to recompression, as in Debian's
    package); gz_md5 is the MD5 of the official .gz. A file passes if either known hash matches.
    """

    name: str
    raw_size: int
    raw_sha256: str | None = None
    gz_md5: str | None = None


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
    files={
        "train": (
            FileSpec(
                "train-images-idx3-ubyte.gz", 47040016, None, "f68b3c2dcbeaaa9fbdd348bbdeb94873"
            ),
            FileSpec("train-labels-idx1-ubyte.gz", 60008, None, "d53e105ee54ea40749a09fcbcd1e9432"),
        ),
        "test": (
            FileSpec(
                "t10k-images-idx3-ubyte.gz", 7840016, None, "9fb629c4189551a2d022fa330f9573f3"
            ),
            FileSpec("t10k-labels-idx1-ubyte.gz", 10008, None, "ec29112dd5afa0611ce80d1b7f02629c"),
        ),
    },
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
)

NAMED_DATASETS: dict[str, NamedDataset] = {d.name: d for d in (FASHION_MNIST, MNIST)}
SPLITS = ("train", "test")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")


def _verify_file(path: Path, spec: FileSpec) -> bytes:
    """Return the decompressed bytes of `path` after checking its size and checksum."""
    return _verify_bytes(_read_raw(path), spec, path)


def _verify_bytes(raw: bytes, spec: FileSpec, source: str | Path) -> bytes:
    """Return the decompressed `raw` (the bytes of a file or download named `source`) after
    checking its size and checksum."""
    gz_ok = (
        str(source).endswith(".gz")
        and spec.gz_md5 is not None
        and hashlib.md5(raw).hexdigest() == spec.gz_md5
    )
    data = _decompress(raw, source)
    if len(data) != spec.raw_size:
        raise DataError(
            f"{source}: {len(data)} bytes after decompression, expected {spec.raw_size}: "
            "the file is truncated or not this dataset's; delete it and fetch again"
        )
    if not gz_ok and spec.raw_sha256 is not None:
        if hashlib.sha256(data).hexdigest() != spec.raw_sha256:
            raise DataError(
                f"{source}: checksum mismatch (SHA-256 of the content is not the official one): "
                "the file is corrupt; delete it and fetch again"
            )
    elif not gz_ok and spec.gz_md5 is not None:
        raise DataError(
            f"{source}: checksum mismatch (MD5 is not the official one): "
            "the file is corrupt; delete it and fetch again"
        )
    return data


def _candidate_dirs(name: str, data_dir: str | Path | None) -> list[Path]:
    """Where a named dataset is looked for, in order (DESIGN.md, "Data")."""
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
    """The user cache for a named dataset: $XDG_CACHE_HOME/vaegen/NAME or ~/.cache/vaegen/NAME."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vaegen" / name


def _find_file(dirs: Sequence[Path], filename: str) -> Path | None:
    for d in dirs:
        for candidate in (d / filename, d / filename.removesuffix(".gz")):
            if candidate.is_file():
                return candidate
    return None


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
                except OSError as e:
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
    for d in dirs:
        if all(_find_file([d], spec.name) for split in SPLITS for spec in ds.files[split]):
            return d
    if fetch:
        try:
            return download(ds)
        except DataError as e:
            first = ds.files["train"][0].name
            why = f"and the download failed: {e}\n"
            raise DataError(_missing_message(ds, first, dirs, why)) from None
    raise DataError(_missing_message(ds, ds.files["train"][0].name, dirs, ""))


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


def _from_idx_arrays(
    images: np.ndarray, labels: np.ndarray | None, classes: Sequence[str], name: str, where: str
) -> ImageDataset:
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4 or images.dtype != np.uint8:
        raise DataError(
            f"{where}: images must be uint8 N x H x W (or N x C x H x W), "
            f"got {images.dtype} {images.shape}"
        )
    y = None
    if labels is not None:
        if labels.ndim != 1 or len(labels) != len(images):
            raise DataError(f"{where}: {len(images)} images but labels of shape {labels.shape}")
        y = torch.from_numpy(labels.astype(np.int64))
        if not classes:
            classes = [str(i) for i in range(int(y.max()) + 1 if len(y) else 0)]
    return ImageDataset(torch.from_numpy(images), y, list(classes), name)


def _load_named(name: str, split: str, data_dir: str | Path | None) -> ImageDataset:
    ds = _named(name)
    folder = locate(name, data_dir)
    arrays = []
    for spec in ds.files[split]:
        path = _find_file([folder], spec.name)
        assert path is not None
        arrays.append(parse_idx(_verify_file(path, spec), path))
    return _from_idx_arrays(arrays[0], arrays[1], ds.classes, name, str(folder))


_IDX_PREFIX = {"train": "train", "test": "t10k"}


def _load_idx_folder(folder: Path, split: str) -> ImageDataset:
    prefix = _IDX_PREFIX[split]
    found = {}
    for kind in ("images", "labels"):
        matches = sorted(folder.glob(f"{prefix}-{kind}-idx*-ubyte*"))
        found[kind] = matches[0] if matches else None
    if found["images"] is None:
        raise DataError(
            f"{folder}: no {prefix}-images-idx3-ubyte[.gz] file for the {split!r} split"
        )
    images = read_idx(found["images"])
    labels = read_idx(found["labels"]) if found["labels"] else None
    classes: list[str] = []
    classes_file = folder / "classes.txt"
    if classes_file.is_file():
        classes = classes_file.read_text(encoding="utf-8").splitlines()
    return _from_idx_arrays(images, labels, classes, folder.name, str(found["images"]))


def _load_npz(path: Path) -> ImageDataset:
    try:
        # allow_pickle=False: an .npz with object arrays is refused, never unpickled
        with np.load(path, allow_pickle=False) as f:
            if "x" not in f.files:
                raise DataError(f"{path}: no array named 'x' (found: {', '.join(f.files)})")
            x = f["x"]
            y = f["y"] if "y" in f.files else None
            classes = [str(c) for c in f["classes"]] if "classes" in f.files else []
    except (OSError, ValueError, zlib.error) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"{path}: not a readable .npz file ({e})") from None
    return _from_idx_arrays(x, y, classes, path.stem, str(path))


_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def _load_image_folder(folder: Path) -> ImageDataset:
    from PIL import Image

    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir())
    if not class_dirs:
        raise DataError(f"{folder}: no class sub-folders (expected one folder of images per class)")
    images, labels = [], []
    shape = None
    for index, d in enumerate(class_dirs):
        for f in sorted(d.iterdir()):
            if f.suffix.lower() not in _IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(f) as im:
                    arr = np.asarray(im.convert("L"))
            except OSError as e:
                raise DataError(f"{f}: not a readable image ({e})") from None
            if shape is None:
                shape = arr.shape
            elif arr.shape != shape:
                raise DataError(
                    f"{f}: size {arr.shape[::-1]} differs from the first image's {shape[::-1]}"
                )
            images.append(arr)
            labels.append(index)
    if not images:
        raise DataError(f"{folder}: no images found in its class sub-folders")
    return _from_idx_arrays(
        np.stack(images), np.asarray(labels), [d.name for d in class_dirs], folder.name, str(folder)
    )


def to_float(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 N x C x H x W -> float32 in [0, 1] on `device` (the article's ToTensor, for all at once)."""
    return images.to(device).float().div_(255.0)


def load_dataset(
    source: str | Path = "fashion-mnist", split: str = "train", data_dir: str | Path | None = None
) -> ImageDataset:
    """Load a dataset whole into memory.

    source: a name (`fashion-mnist`, `mnist`), a folder of IDX files (train-/t10k- prefixes as in
    MNIST, optional classes.txt), an `.npz` (keys `x`: uint8 N x H x W, optional `y`, `classes`),
    or a folder of images with one sub-folder per class (used for both splits).
    """
    _check_split(split)
    if str(source) in NAMED_DATASETS:
        return _load_named(str(source), split, data_dir)
    path = Path(source)
    if path.suffix == ".npz":
        if not path.is_file():
            raise DataError(f"{path}: file not found")
        return _load_npz(path)
    if path.is_dir():
        if any(path.glob("*-images-idx*-ubyte*")):
            return _load_idx_folder(path, split)
        return _load_image_folder(path)
    raise DataError(
        f"data source {str(source)!r} is not a named dataset ({', '.join(NAMED_DATASETS)}), "
        "an existing .npz file or a folder"
    )


def fetch(name: str, data_dir: str | Path | None = None) -> Path:
    """Make a named dataset available (found or downloaded) and verified; return its folder."""
    folder = locate(name, data_dir)
    verify(name, folder)
    return folder

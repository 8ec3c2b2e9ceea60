"""An .npz file as a dataset's arrays: images `x`, optional labels `y` and class names `classes`.

Read with np.load(allow_pickle=False): a file holding Python objects is refused, never
unpickled. Every check names the file and what is wrong:
- x: N x H x W, N x H x W x C or N x C x H x W (C = 1 or 3; what `vaegen generate` writes is
  N x H x W or N x C x H x W), either uint8 (0..255) or floats in [0, 1], which become
  round(x * 255) (computed in float64; NaN, infinity or a value outside [0, 1] is an error);
- y: N integer class indices, each >= 0 and below the number of `classes` when that is given
  (else the classes are named "0", "1", ... up to the largest label).
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError
from .class_names import check_labels

_LAYOUTS = "N x H x W, N x H x W x C or N x C x H x W with C = 1 or 3"
# what Python's zipfile raises for a damaged archive, one it cannot decompress (Deflate64, as
# Windows writes large zips: NotImplementedError) or an encrypted one (RuntimeError)
_ZIP_ERRORS = (zlib.error, zipfile.BadZipFile, NotImplementedError, RuntimeError)


def read_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """(images uint8 N x C x H x W, labels int64 N or None, class names) from the .npz `path`."""
    arrays, found = _arrays(path)
    if "x" not in arrays:
        raise DataError(f"{path}: no array named 'x' (found: {', '.join(found) or 'none'})")
    x = _images(arrays["x"], path)
    classes = []
    if "classes" in arrays:
        names = arrays["classes"]
        if names.ndim != 1:
            raise DataError(f"{path}: classes must be a list of names, got shape {names.shape}")
        # names saved as bytes (an "S" array, as h5py gives them) are UTF-8 text, not b'...'
        classes = [
            c.decode("utf-8", "replace") if isinstance(c, bytes) else str(c) for c in names.tolist()
        ]
    y = arrays.get("y")
    return x, None if y is None else _labels(y, len(x), classes, path), classes


def npz_layout(path: Path) -> tuple[int, tuple[int, int, int], bool, int] | None:
    """(N, (C, H, W), whether it has y, bytes x takes in memory as stored) from the .npz's zip
    directory and x's .npy header alone (nothing else is read or decompressed); None when they
    do not tell (no x, an odd layout or header: reading the file then says what is wrong)."""
    try:
        with zipfile.ZipFile(path) as zf, zf.open("x.npy") as f:
            has_y = "y.npy" in zf.namelist()
            version = np.lib.format.read_magic(f)
            read = {
                (1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0,
            }.get(version)
            if read is None:
                return None
            shape, _, dtype = read(f)
    except (OSError, ValueError, KeyError, EOFError, *_ZIP_ERRORS):
        return None
    if dtype.hasobject or len(shape) not in (3, 4):
        return None
    if len(shape) == 3:
        chw = (1, *shape[1:])
    elif shape[1] in (1, 3):
        chw = shape[1:]
    elif shape[3] in (1, 3):  # channels last
        chw = (shape[3], shape[1], shape[2])
    else:
        return None
    return shape[0], chw, has_y, int(np.prod(shape, dtype=np.int64)) * dtype.itemsize


def _arrays(path: Path) -> tuple[dict[str, np.ndarray], list[str]]:
    """(x, y and classes, those present; the names of all its arrays) of the archive; a
    DataError for anything unreadable."""
    try:
        loaded = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, ValueError, EOFError, *_ZIP_ERRORS) as e:
        raise DataError(f"{path}: not a readable .npz file ({e})") from None
    if not hasattr(loaded, "files"):  # a single .npy array
        raise DataError(
            f"{path}: not a readable .npz file (it holds a single .npy array); "
            "save it with np.savez(path, x=images, y=labels)"
        )
    out = {}
    with loaded as f:
        found = list(f.files)
        for key in ("x", "y", "classes"):
            if key not in f.files:
                continue
            try:
                out[key] = f[key]
            except ValueError as e:
                if "allow_pickle" in str(e):
                    raise DataError(
                        f"{path}: not a readable .npz file: its array {key!r} holds Python "
                        "objects, which vaegen never unpickles; save plain numeric arrays"
                    ) from None
                raise DataError(f"{path}: not a readable .npz file ({key!r}: {e})") from None
            except (OSError, EOFError, *_ZIP_ERRORS) as e:
                raise DataError(f"{path}: not a readable .npz file ({key!r}: {e})") from None
    return out, found


def _images(x: np.ndarray, path: Path) -> np.ndarray:
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[1] not in (1, 3) and x.shape[3] in (1, 3):
        x = x.transpose(0, 3, 1, 2)  # channels last
    elif not (x.ndim == 4 and x.shape[1] in (1, 3)):
        raise DataError(f"{path}: x has shape {x.shape}; images must be {_LAYOUTS}")
    if len(x) == 0:
        raise DataError(f"{path}: x holds no images")
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise DataError(
            f"{path}: x is {x.dtype}; images must be uint8 (0..255) or floats in [0, 1]"
        )
    bad = x.size - int(np.count_nonzero(np.isfinite(x)))
    if bad:
        raise DataError(
            f"{path}: x holds {bad} NaN or infinite values; float images must be in [0, 1]"
        )
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:
        raise DataError(
            f"{path}: x holds floats from {lo:g} to {hi:g}; float images must be in [0, 1] "
            "(or uint8 0..255)"
        )
    out = np.empty(x.shape, dtype=np.uint8)
    step = max(1, (1 << 22) // max(1, x[0].size))  # about 4 M values (32 MB of float64) a time
    for a in range(0, len(x), step):
        out[a : a + step] = np.rint(x[a : a + step].astype(np.float64) * 255)
    return out


def _labels(y: np.ndarray, n: int, classes: list[str], path: Path) -> np.ndarray:
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"{path}: {n} images but y has shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: y is {y.dtype}; labels must be integer class indices")
    if len(y) and int(y.min()) < 0:
        raise DataError(f"{path}: y holds the label {int(y.min())}; labels must be >= 0")
    check_labels(y, f"{path}: y")
    if classes and len(y) and int(y.max()) >= len(classes):
        raise DataError(
            f"{path}: y holds the label {int(y.max())} but classes names {len(classes)} classes "
            f"(labels 0..{len(classes) - 1})"
        )
    return y.astype(np.int64)

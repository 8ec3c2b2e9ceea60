"""The IDX format (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT"): parse, read, write.

Knows nothing of named datasets. Every file is checked before use (magic, type code, dimensions,
byte count); a bad file raises `DataError` naming the file and what is wrong.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..errors import DataError
from ..files import atomic_write_bytes

# IDX type codes; data is big-endian.
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


def read_raw(path: Path) -> bytes:
    """The file's bytes as stored; a missing or unreadable file is a DataError naming it."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None


def decompress(raw: bytes, source: str | Path) -> bytes:
    """Bytes decompressed when `source` (a file name or URL) ends in .gz, else as they are."""
    if str(source).endswith(".gz"):
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(
                f"{source}: not a valid gzip file ({e}); delete it and fetch again"
            ) from None
    return raw


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
    expected = header + math.prod(shape) * dtype.itemsize  # Python ints: no overflow
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
    return parse_idx(decompress(read_raw(path), path), path)


def idx_dtype(dtype: np.dtype | type) -> np.dtype:
    """The big-endian dtype IDX stores `dtype` as; a ValueError for one IDX cannot store."""
    dtype = np.dtype(dtype)
    big = dtype.newbyteorder(">") if dtype.itemsize > 1 else dtype
    if big not in _IDX_CODES:
        raise ValueError(f"IDX cannot store dtype {dtype}")
    return big


def idx_header(dtype: np.dtype | type, shape: tuple[int, ...]) -> bytes:
    """The IDX header of an array of `dtype` and `shape`: what precedes its big-endian bytes, so
    that a file can be written header first and its data piece by piece."""
    if not 1 <= len(shape) <= 255:
        raise ValueError(f"IDX needs 1..255 dimensions, got {len(shape)}")
    header = bytes([0, 0, _IDX_CODES[idx_dtype(dtype)], len(shape)])
    return header + b"".join(int(d).to_bytes(4, "big") for d in shape)


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode an array as IDX bytes (the inverse of `parse_idx`)."""
    array = np.asarray(array)
    header = idx_header(array.dtype, array.shape)
    return header + np.ascontiguousarray(array, dtype=idx_dtype(array.dtype)).tobytes()


class IdxGzipWriter:
    """An IDX .gz file written piece by piece into the binary file `f`: the header for the whole
    `shape` at once, then the items in C order in as many `write`s as wanted, then `close`. The
    bytes are zlib.compress(idx_bytes(array), 9, wbits=31) whatever the pieces: what
    gzip.compress(..., mtime=0) and so `write_idx` give (zlib's header: mtime 0, no file name)."""

    def __init__(self, f: BinaryIO, dtype: np.dtype | type, shape: tuple[int, ...]) -> None:
        self._f, self._dtype = f, idx_dtype(dtype)
        self._z = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: a gzip stream
        self._left = int(np.prod(shape, dtype=np.int64))
        self._f.write(self._z.compress(idx_header(dtype, shape)))

    def write(self, items: np.ndarray) -> None:
        """The next items (any shape: they are taken in C order), converted to the file's dtype."""
        items = np.ascontiguousarray(items, dtype=self._dtype)
        self._left -= items.size
        self._f.write(self._z.compress(items))

    def close(self) -> None:
        """Finish the gzip stream; a ValueError if the items written do not fill the shape."""
        if self._left != 0:
            raise ValueError(f"the IDX header promised {self._left} more items than were written")
        self._f.write(self._z.flush())


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write an array as an IDX file, gzip-compressed when the name ends in .gz (atomically)."""
    path = Path(path)
    data = idx_bytes(array)
    if path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)  # mtime=0: same array, same bytes
    atomic_write_bytes(path, data)

"""Atomic file writes: a reader sees the old file or the new one, never half of one. And .npy
arrays in an .npz written piece by piece, for outputs larger than memory; and the command line's
log lines on stderr."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .errors import WriteError


def cache_root() -> Path:
    """vaegen's user cache: $VAEGEN_CACHE_DIR when set, else $XDG_CACHE_HOME/vaegen, else
    ~/.cache/vaegen. Downloaded datasets go to its NAME/ folders, decoded image folders to folders/."""
    if os.environ.get("VAEGEN_CACHE_DIR"):
        return Path(os.environ["VAEGEN_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vaegen"


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to a temporary name beside `path`, fsync it, rename it over `path`, and fsync
    the folder so that the rename itself survives a power loss."""
    path = Path(path)
    try:
        _atomic_write(path, data)
    except OSError as e:  # a full disk, a read-only folder: one line that names the file
        raise _write_error(path, e) from None


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_open(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file for writing `path` piece by piece: the streaming counterpart of
    `atomic_write_bytes`. The file is a temporary beside `path` while the block runs; when the
    block ends normally it is fsynced and renamed over `path`; when it raises (an error, an
    interrupt) the temporary is deleted and `path` keeps its previous content, if any. An OSError
    (a full disk) becomes a one-line WriteError that names `path`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise _write_error(path, e) from None
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and not isinstance(e, WriteError):
            raise _write_error(path, e) from None
        raise
    fsync_dir(path.parent)


def _write_error(path: Path, e: OSError) -> WriteError:
    return WriteError(
        f"cannot write {path}: {e.strerror or e}; the previous file, if any, is unchanged"
    )


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open folders; the rename is still atomic there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def show_progress(wanted: bool) -> bool:
    """Whether to draw progress bars: when asked for and stderr is a terminal. Sent to a file or
    a pipe, a bar's refreshes would fill it with long lines; the one line per epoch the log
    writes is what a log wants."""
    return wanted and sys.stderr.isatty()


def npz_member(zf: zipfile.ZipFile, name: str) -> BinaryIO:
    """Member `name` of the zip `zf` (an .npz being written), opened to be written piece by piece:
    deflated, stamped 1980-01-01 (np.savez stamps the current time; the same arrays should give
    the same bytes), with zip64 sizes: zipfile does not know its length until the end, and past
    4 GiB a plain zip header cannot hold it."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    return zf.open(info, "w", force_zip64=True)


class NpyWriter:
    """An .npy array written piece by piece into the binary file `f`: the header for the whole
    `shape` first, as np.save writes it, then the items in C order in as many `write`s as wanted
    (converted to `dtype`), then `close`, which checks that they filled the shape. The bytes are
    np.save's."""

    def __init__(self, f: BinaryIO, dtype: np.dtype | type, shape: tuple[int, ...]) -> None:
        self._f, self._dtype = f, np.dtype(dtype)
        self._left = int(np.prod(shape, dtype=np.int64))
        descr = np.lib.format.dtype_to_descr(self._dtype)
        np.lib.format.write_array_header_1_0(
            f, {"descr": descr, "fortran_order": False, "shape": tuple(shape)}
        )

    def write(self, items: np.ndarray) -> None:
        """The next items (any shape: they are taken in C order)."""
        items = np.ascontiguousarray(items, dtype=self._dtype)
        self._left -= items.size
        self._f.write(items)

    def close(self) -> None:
        if self._left != 0:
            raise ValueError(f"the .npy header promised {self._left} more items than were written")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (tests and notebooks replace it)."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


def configure_logging(level: int) -> None:
    """Log vaegen's messages at `level` and above to stderr, as bare lines (once, however
    often it is called)."""
    logger = logging.getLogger("vaegen")
    for h in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
        logger.removeHandler(h)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)

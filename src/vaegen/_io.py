"""The user cache's location, progress bars and log lines on stderr, and .npy arrays in an .npz
written piece by piece, for outputs larger than memory. (Safe file writes: vaegen.files.)"""

from __future__ import annotations

import logging
import os
import sys
import zipfile
from pathlib import Path
from typing import BinaryIO

import numpy as np


def cache_root() -> Path:
    """vaegen's user cache: $VAEGEN_CACHE_DIR when set, else $XDG_CACHE_HOME/vaegen, else
    ~/.cache/vaegen. Downloaded datasets go to its NAME/ folders, decoded image folders to folders/."""
    if os.environ.get("VAEGEN_CACHE_DIR"):
        return Path(os.environ["VAEGEN_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vaegen"


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

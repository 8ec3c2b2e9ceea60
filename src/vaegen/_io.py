"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from .errors import WriteError


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to a temporary name beside `path`, fsync it, rename it over `path`, and fsync
    the folder so that the rename itself survives a power loss."""
    path = Path(path)
    try:
        _atomic_write(path, data)
    except OSError as e:  # a full disk, a read-only folder: one line that names the file
        raise WriteError(
            f"cannot write {path}: {e.strerror or e}; the previous file, if any, is unchanged"
        ) from None


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

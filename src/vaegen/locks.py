"""One writer at a time: a run directory (`lock`, RUN/.lock) or a generated output (`output_lock`,
a hidden .NAME.lock beside it) is held with an advisory flock, which the kernel releases when the
process dies, so a killed writer never leaves a stale lock. A lock file is opened without
following a link and must be a plain file of its own: the holder's note written into it never
reaches a file someone else owns.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from .errors import RunError, VaegenError
from .files import is_link

# --------------------------------------------------------------------------------- locks


def open_lock_file(path: Path) -> int:
    """A descriptor of the lock file `path`, created when missing. Refused (OSError) when `path`
    is a symbolic link, not a regular file, or a file with other hard links: the lock's holder
    note is written into it, which must never reach a file someone else owns."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o666)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        raise OSError(
            errno.EPERM, "not a lock file of vaegen's (a link or a special file)", str(path)
        )
    return fd


def try_flock(fd: int) -> bool:
    """Take an exclusive advisory lock on `fd` without waiting: False when another process holds
    it. True also where flock does not exist (Windows): nothing is locked there."""
    try:
        import fcntl
    except ImportError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


@contextlib.contextmanager
def output_lock(target: Path, what: str) -> Iterator[None]:
    """Hold `target` (a generated file or folder) for one writer: a flock on the hidden file
    `.NAME.lock` beside it, which stays (removing a lock file races with the next writer). A second
    writer of the same path gets a VaegenError at once instead of mixing its files with the
    first's. `what` names the flag in the message ("--out")."""
    lock_path = target.parent / f".{target.name}.lock"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = open_lock_file(lock_path)
    except OSError as e:
        raise VaegenError(
            f"{what} {target}: cannot lock it ({e.strerror or e}: {lock_path}); choose a "
            "writable folder"
        ) from None
    if not try_flock(fd):
        holder = os.pread(fd, 256, 0).decode(errors="replace").strip()
        os.close(fd)  # the holder's note stays as it wrote it
        raise VaegenError(
            f"{what} {target} is being written by another process"
            f"{f' ({holder})' if holder else ''}; wait for it, or choose another {what}"
        )
    with _holding(fd, {"pid": os.getpid()}):
        yield


@contextlib.contextmanager
def _holding(fd: int, note: dict[str, object]) -> Iterator[None]:
    """While the flock on `fd` is held: `note` (who holds it, for the messages of those refused)
    written into the lock file; then the file blanked, so the next reader of a free lock sees no
    stale holder, and `fd` closed, which releases the flock. A note that cannot be written (a full
    disk) is skipped: it is for messages only."""
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(note).encode(), 0)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)


# ----------------------------------------------------------------------------- run lock

_HELD: dict[Path, tuple[int, int]] = {}  # lock file -> (descriptor, depth): re-entrant per process


@contextlib.contextmanager
def lock(run_dir: Path, name: str, purpose: str) -> Iterator[None]:
    """Hold RUN/`name` exclusively while `purpose` ("training", "evaluation") writes the run.

    An advisory `flock`: the kernel releases it when the process dies, so a killed run never
    leaves a stale lock. A second process gets a RunError naming the holder (its pid, host,
    command and purpose). Re-entrant within one process. Where flock does not exist (Windows)
    this only records the holder."""
    path = run_dir.resolve() / name  # the folder's links resolved, never the lock file's
    if path in _HELD:
        fd, depth = _HELD[path]
        _HELD[path] = (fd, depth + 1)
        try:
            yield
        finally:
            fd, depth = _HELD[path]
            _HELD[path] = (fd, depth - 1)
        return
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = open_lock_file(path)
    except OSError as e:  # a read-only folder, a file where the folder should be, a planted link
        if e.errno == errno.ELOOP or is_link(path):
            raise RunError(
                f"{path} is a symbolic link; vaegen writes its lock file itself and never through "
                "a link: remove the link (the file it points to is untouched)"
            ) from None
        raise RunError(
            f"cannot lock {run_dir} for {purpose} ({e.strerror or e}: {e.filename or path}); "
            "make it a writable folder, or choose another"
        ) from None
    try:
        _acquire(fd, path, run_dir)
    except BaseException:
        os.close(fd)
        raise
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "purpose": purpose,
        "command": " ".join(sys.argv[:3]),
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    _HELD[path] = (fd, 1)
    try:
        with _holding(fd, holder):
            yield
    finally:
        del _HELD[path]


def _acquire(fd: int, path: Path, run_dir: Path) -> None:
    if not try_flock(fd):
        try:
            h = json.loads(os.pread(fd, 4096, 0) or b"{}")
            who = (
                f"process {h['pid']} on {h['host']} ({h['purpose']}, {h['command']!r}, "
                f"since {h['since']})"
            )
        except (ValueError, KeyError, TypeError, RecursionError):
            who = "another process"
        raise RunError(
            f"{run_dir} is in use by {who}; wait for it to finish or stop it, "
            f"or choose another run directory (lock file {path})"
        ) from None

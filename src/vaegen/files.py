"""How vaegen writes files so that nothing it did not write is lost, and no reader sees half of
what it wrote.

- Atomic writes: a file is a temporary beside its name, fsynced and renamed over it.
- Groups: a folder of files that belong together is assembled in a hidden sibling and exchanged
  with the old one in one step (`replace_folder`, `write_group`).
- Temporaries: a killed process's are recognised by the names vaegen gives them, and swept by the
  next writer that holds the lock (`sweep_*`); nothing else is ever removed.
- Links: nothing here follows a symbolic link it did not make (lstat, O_NOFOLLOW, and
  shutil.rmtree, which removes a link inside a folder, never what it points to).
One writer at a time per run or output: vaegen.locks.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from .errors import WriteError


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
def atomic_open(
    path: str | Path, *, before_replace: Callable[[Path], None] | None = None
) -> Iterator[BinaryIO]:
    """A binary file for writing `path` piece by piece: the streaming counterpart of
    `atomic_write_bytes`. The file is a temporary beside `path` while the block runs; when the
    block ends normally it is fsynced and renamed over `path`; when it raises (an error, an
    interrupt) the temporary is deleted and `path` keeps its previous content, if any. An OSError
    (a full disk) becomes a one-line WriteError that names `path`.
    before_replace(temporary): called with the complete, fsynced and closed temporary just before
    it is renamed over `path` (to hash it, or to remove what describes the old file); when it
    raises, the temporary is deleted and `path` is left as it was."""
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
        if before_replace is not None:
            before_replace(Path(tmp))
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


# mkstemp's names: prefix, 8 characters of its alphabet, suffix (what atomic writes leave behind
# when the process is killed before its rename)
_MKSTEMP_TAIL = r"\.[a-z0-9_]{8}\.tmp"


def is_temporary_of(name: str, target: str) -> bool:
    """Whether the file name `name` is one of the temporaries an atomic write of `target` (a file
    name) creates beside it."""
    return re.fullmatch(re.escape(f".{target}") + _MKSTEMP_TAIL, name) is not None


def is_temporary(name: str) -> bool:
    """Whether `name` is the temporary of some atomic write (".NAME.xxxxxxxx.tmp")."""
    return re.fullmatch(r"\..+" + _MKSTEMP_TAIL, name) is not None


def is_link(path: Path) -> bool:
    """Whether `path` itself is a symbolic link (not followed; False when it does not exist)."""
    try:
        return stat.S_ISLNK(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def remove_tree(path: Path) -> None:
    """Remove a folder vaegen made (its own temporaries, a checkpoint), never through a link: a
    link at `path` is unlinked, and links inside are removed, not followed (rmtree's contract)."""
    if is_link(path) or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------- folders replaced as a whole

_STAGING = ".vaegen-new-"  # .NAME.vaegen-new-PID: a folder being assembled
_OLD = ".vaegen-old-"  # .NAME.vaegen-old-PID: the folder it replaced, until removed


def _staging_names(target: Path) -> tuple[str, str]:
    return f".{target.name}{_STAGING}", f".{target.name}{_OLD}"


def _exchange(a: Path, b: Path) -> bool:
    """Swap the folders a and b in one atomic step (Linux renameat2 RENAME_EXCHANGE). False where
    the platform or file system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):  # a C library without renameat2 (glibc < 2.28, musl)
        return False
    at_fdcwd, rename_exchange = -100, 2
    renameat2.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def replace_folder(
    target: Path, build: Callable[[Path], None], keep: tuple[str, ...] | list[str] = ()
) -> None:
    """Make `target` a folder holding what `build(folder)` writes into the empty `folder` it is
    given, plus the files named in `keep` taken over from the current `target` (hard links where
    the file system allows, else copies). Readers see the old folder or the new one, never a mix:
    the new one is assembled in a hidden sibling and then exchanged with the old in one atomic
    step where the platform allows (Linux); elsewhere the old is renamed aside and the new put in
    its place (a kill between the two leaves the old one as `.NAME.vaegen-old-PID`, which
    `sweep_folder_temporaries` puts back). An error or an interrupt leaves `target` as it was.
    The caller holds the folder's lock (a run's, or `output_lock`), so that no other writer
    assembles the same folder, and what a killed writer of it left is swept first."""
    staging_prefix, old_prefix = _staging_names(target)
    staging = target.parent / f"{staging_prefix}{os.getpid()}"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        sweep_folder_temporaries(target)  # a killed writer's (the caller holds the lock)
        staging.mkdir()
        for name in keep:
            source = target / name
            if not stat.S_ISREG(os.lstat(source).st_mode):  # a link planted there is not ours
                raise WriteError(f"{source} is not a regular file; vaegen does not follow it")
            try:
                os.link(source, staging / name, follow_symlinks=False)
            except OSError:  # a file system without hard links
                shutil.copy2(source, staging / name, follow_symlinks=False)
        build(staging)
        fsync_dir(staging)
        if not target.exists() and not is_link(target):
            os.rename(staging, target)
        elif is_link(target) or not target.is_dir():
            raise WriteError(f"{target} is not a folder; vaegen does not replace it")
        elif not _exchange(staging, target):
            old = target.parent / f"{old_prefix}{os.getpid()}"
            os.rename(target, old)
            try:
                os.rename(staging, target)
            except BaseException:
                os.rename(old, target)
                raise
            staging = old
        fsync_dir(target.parent)
    except BaseException as e:
        remove_tree(staging)
        if isinstance(e, OSError) and not isinstance(e, WriteError):  # a WriteError names its file
            raise _write_error(target, e) from None
        raise
    remove_tree(staging)  # after an exchange or the renames: the old folder


def write_group(folder: Path, files: dict[str, bytes], drop: tuple[str, ...] = ()) -> None:
    """Write `files` (name -> bytes) into `folder` as one group, removing the names in `drop`:
    the folder is replaced as a whole (`replace_folder`), keeping every other file it held, so a
    kill never pairs one file of the new group with another of the old (a safetensors file and
    the JSON that describes it)."""
    folder = folder.resolve()  # a link to the whole folder is the user's: write where it points
    ours = set(files) | set(drop)
    keep = []
    if folder.is_dir():
        keep = [n for n in sorted(os.listdir(folder)) if n not in ours and not is_temporary(n)]

    def build(staging: Path) -> None:
        for name, data in files.items():
            atomic_write_bytes(staging / name, data)

    replace_folder(folder, build, keep)


def sweep_folder_temporaries(target: Path) -> list[Path]:
    """Remove what an interrupted `replace_folder(target)` left beside `target` (only while
    holding target's lock: no live writer owns them then): the folder being assembled, and the
    old folder renamed aside, which is put back when `target` itself is missing (the kill came
    between the two renames). Returns what was removed."""
    removed = []
    staging_prefix, old_prefix = _staging_names(target)
    try:
        names = os.listdir(target.parent)
    except OSError:
        return []
    for name in sorted(names):
        path = target.parent / name
        suffix = name.removeprefix(staging_prefix).removeprefix(old_prefix)
        if suffix == name or not suffix.isdigit() or is_link(path) or not path.is_dir():
            continue
        if name.startswith(old_prefix) and not target.exists() and not is_link(target):
            os.rename(path, target)
            continue
        remove_tree(path)
        removed.append(path)
    return removed


def remove_temporaries_in(folder: Path, of: tuple[str, ...] | None = None) -> list[Path]:
    """Delete the temporaries of atomic writes (".NAME.xxxxxxxx.tmp" regular files) directly in
    `folder`, not below it, of the file names `of` only when given; a link of that name is left
    alone. Returns what was removed."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    for entry in entries:
        ours = (
            is_temporary(entry.name)
            if of is None
            else any(is_temporary_of(entry.name, name) for name in of)
        )
        if ours and entry.is_file(follow_symlinks=False):
            Path(entry.path).unlink(missing_ok=True)
            removed.append(Path(entry.path))
    return removed

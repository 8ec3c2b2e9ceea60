"""A cache of decoded image folders: a folder is decoded once, and a later load with nothing
changed reads one file instead (`images.read_folder` uses it).

Where: $VAEGEN_CACHE_DIR/folders/ when VAEGEN_CACHE_DIR is set, else
$XDG_CACHE_HOME/vaegen/folders/, else ~/.cache/vaegen/folders/ (`cache_dir`). VAEGEN_NO_CACHE=1
turns the cache off: nothing is read or written.

An entry is one safetensors file, TAG-KEY.safetensors: the tensors "images" (uint8 N x C x H x W)
and "labels" (int64 N; absent for an unlabelled folder), and in its metadata the class names and
the notes as JSON, the whole key and a CRC-32 of the tensors' bytes. TAG is a hash of the
folder's resolved path; KEY (`folder_key`) a SHA-256 of that path, of the options that change
what decoding gives (channels, image size, skip_bad, Pillow's version and decompression-bomb
limit) and of each image file's relative name, size in bytes, mtime_ns, ctime_ns and inode (a
copy that restores the old mtime, as `cp -p`, `rsync -t` or `tar x` do, still changes ctime,
which no user can set). A file changed, added or removed, or other options, give another key: a
miss, and the folder is decoded again.

Bounded: one entry per folder. Storing an entry deletes the folder's other entries, and
temporary files that an interrupted write left more than an hour ago. Deleting the cache folder
is always safe.

Safe: an entry is written to a temporary name and renamed over its own (os.replace), so a reader
finds a whole entry or none. Nothing is pickled. An entry that is unreadable, inconsistent or
fails its checksum is a miss (the folder is decoded again and the entry rewritten), never an
error; a write that fails (a full disk, a read-only cache) is a warning and the load goes on.

A known limit, as for make's or rsync's quick check: a file rewritten in place with the same
size within the file system's timestamp granularity (milliseconds or less) of its last change is
not noticed; VAEGEN_NO_CACHE=1, or deleting the folder's entry, decodes it again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import time
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..files import atomic_open
from .cache import cache_off, cache_root

log = logging.getLogger(__name__)

FORMAT = "vaegen folder cache 2"  # a change of layout or meaning changes every key
_STALE_S = 3600  # a temporary file this old is no write in progress but a killed one's
# what reading a bad entry may raise (safetensors' own SafetensorError is caught by name)
_READ_ERRORS = (OSError, ValueError, KeyError, TypeError, struct.error, RecursionError)


def cache_dir() -> Path | None:
    """The folder of the cache's entries (see the module's doc), or None when it is off."""
    if cache_off():
        return None
    return cache_root() / "folders"


def folder_key(folder: Path, files: Sequence[Path], options: Mapping[str, object]) -> str:
    """The entry's key (hex SHA-256) for the image `files`, in `folder` or in its sub-folders,
    decoded with `options` (JSON values); OSError when a file cannot be looked at (stat)."""
    h = hashlib.sha256()
    head = {"format": FORMAT, "folder": str(folder.resolve()), "options": dict(options)}
    h.update(json.dumps(head, sort_keys=True).encode())
    for f in files:
        st = os.stat(f)
        rel = f.name if f.parent == folder else f"{f.parent.name}/{f.name}"
        # NUL ends each field: no file name holds one, so no two lists hash the same text
        fields = (rel, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
        h.update("".join(f"{v}\0" for v in fields).encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def entry_path(folder: Path, key: str) -> Path | None:
    """Where the entry of `folder` with `key` is (or goes); None when the cache is off."""
    where = cache_dir()
    if where is None:
        return None
    tag = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:16]
    return where / f"{tag}-{key[:32]}.safetensors"


def entry_shape(path: Path) -> tuple[int, tuple[int, int, int]] | None:
    """(N, (C, H, W)) of the entry's images from its header alone, or None for a miss: no entry,
    or one whose header is unreadable (a warning)."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="numpy") as f:
            n, c, h, w = f.get_slice("images").get_shape()
        return n, (c, h, w)
    except (*_READ_ERRORS, SafetensorError) as e:
        log.warning("%s: unreadable cache entry (%s); decoding the folder again", path, e)
        return None


def read_entry(
    path: Path, key: str
) -> tuple[np.ndarray, np.ndarray | None, list[str], list[str]] | None:
    """(images uint8 N x C x H x W, labels int64 N or None, classes, notes) of the entry at
    `path`, or None for a miss: no entry, or one that is not whole and consistent (a warning)."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT or meta.get("key") != key:
                raise ValueError("it was written for other files or options")
            images = f.get_tensor("images")
            labels = f.get_tensor("labels") if "labels" in f.keys() else None
        classes, notes = json.loads(meta["classes"]), json.loads(meta["notes"])
        _check(images, labels, classes, notes, int(meta["crc32"]))
    except (*_READ_ERRORS, SafetensorError) as e:
        log.warning("%s: unreadable cache entry (%s); decoding the folder again", path, e)
        return None
    return images, labels, classes, notes


def _check(
    images: np.ndarray, labels: np.ndarray | None, classes: object, notes: object, crc: int
) -> None:
    """A ValueError unless the entry's parts agree with each other and with its checksum."""
    if images.dtype != np.uint8 or images.ndim != 4 or len(images) == 0:
        raise ValueError(f"images are {images.dtype} {images.shape}")
    if not (isinstance(classes, list) and isinstance(notes, list)):
        raise ValueError("classes and notes must be lists")
    if not all(isinstance(s, str) for s in classes + notes):
        raise ValueError("classes and notes must be strings")
    if (labels is None) != (not classes):
        raise ValueError("labels without classes, or classes without labels")
    if labels is not None:
        if labels.dtype != np.int64 or labels.shape != (len(images),):
            raise ValueError(f"labels are {labels.dtype} {labels.shape}")
        if int(labels.min()) < 0 or int(labels.max()) >= len(classes):
            raise ValueError("labels out of range")
    if _crc32([images] if labels is None else [images, labels]) != crc:
        raise ValueError("its data fail their CRC-32 checksum")


def _crc32(arrays: Sequence[np.ndarray]) -> int:
    crc = 0
    for a in arrays:
        crc = zlib.crc32(np.ascontiguousarray(a), crc)
    return crc


def write_entry(
    path: Path,
    key: str,
    images: np.ndarray,
    labels: np.ndarray | None,
    classes: Sequence[str],
    notes: Sequence[str],
) -> str | None:
    """Store the entry (images uint8 N x C x H x W, labels int64 N or None) at `path`, then
    delete the folder's other entries. None when it is stored, else why not (nothing is left)."""
    tensors = [("images", "U8", np.ascontiguousarray(images))]
    if labels is not None:
        tensors.append(("labels", "I64", np.ascontiguousarray(labels, dtype="<i8")))
    header: dict[str, object] = {}
    offset = 0
    for name, dtype, a in tensors:
        end = offset + a.nbytes
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [offset, end]}
        offset = end
    header["__metadata__"] = {
        "format": FORMAT,
        "key": key,
        "classes": json.dumps(list(classes)),
        "notes": json.dumps(list(notes)),
        "crc32": str(_crc32([a for _, _, a in tensors])),
    }
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)  # the format pads its header with spaces to 8 bytes
    try:
        # the safetensors layout written straight from the arrays: no copy of them in memory
        with atomic_open(path) as f:
            f.write(struct.pack("<Q", len(raw)) + raw)
            for _, _, a in tensors:
                f.write(a)
    except OSError as e:  # atomic_open's WriteError names the file
        return str(e)
    _remove_others(path)
    return None


def _remove_others(path: Path) -> None:
    """Delete the other entries of the folder whose entry is `path`, and its stale temporaries."""
    tag = path.name.split("-")[0]
    now = time.time()
    try:
        for other in path.parent.glob(f"{tag}-*.safetensors"):
            if other != path:
                other.unlink(missing_ok=True)
        for tmp in path.parent.glob(f".{tag}-*.tmp"):
            if now - tmp.stat().st_mtime > _STALE_S:
                tmp.unlink(missing_ok=True)
    except OSError:  # another process removed it first, or the folder is read-only: harmless
        pass

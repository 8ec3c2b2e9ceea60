"""Simulated datasets as files: an .npz, a folder of MNIST-style IDX .gz files, or PNGs.

Each writer takes the images as an iterable of chunks, so memory does not grow with their number.
An output is written as a whole or not at all: an .npz is a temporary renamed when complete; a
folder (IDX or PNG) is assembled in a hidden sibling and exchanged with the old one in one step
(`files.replace_folder`), so a kill or a full disk leaves the old output or the new one, never a mix.

A generated folder holds OUTPUT_MARKER, a JSON record of what vaegen wrote there (per output: its
files, run, weights, seed, temperature, prior, classes, image shape). vaegen writes into a folder
only when it is absent, empty, or marked so and holds nothing the record does not name: a user's
own files are never replaced or removed. The IDX train and test splits share a folder (the
`--split test` of a run beside its train split); replacing one keeps the other.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from ..data.class_names import safe_name
from ..data.idx import IdxGzipWriter
from ..errors import VaegenError, some_names
from ..files import atomic_open, atomic_write_bytes, is_link, replace_folder


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


FORMATS = ("npz", "idx", "png")
LABEL_CHUNK = 65_536  # labels computed and written at a time

Chunk = tuple[torch.Tensor, torch.Tensor | None]  # uint8 m x C x H x W images, int64 m labels
LabelRange = Callable[[int, int], torch.Tensor | None]  # (start, stop) -> labels[start:stop]


def output_format(out: Path, fmt: str | None) -> str:
    """npz for a path ending in .npz; otherwise a folder: IDX .gz files, or PNGs with fmt='png'."""
    if fmt is not None and fmt not in FORMATS:
        raise VaegenError(f"format {fmt!r} is not known; use one of {', '.join(FORMATS)}")
    if out.suffix == ".npz":
        if fmt not in (None, "npz"):
            raise VaegenError(f"{out}: a .npz path cannot be written as {fmt}; drop --format")
        return "npz"
    if out.suffix:
        raise VaegenError(
            f"{out}: unknown output format {out.suffix!r}; give a path ending in .npz, "
            "or a folder (IDX .gz files, or PNGs with --format png)"
        )
    if fmt == "npz":  # a folder's name would become an .npz file's
        raise VaegenError(f"{out}: an .npz output needs a path ending in .npz")
    return fmt or "idx"


def _idx_names(out: Path, split: str, ndim: int) -> tuple[Path, Path]:
    prefix = {"train": "train", "test": "t10k"}[split]
    return out / f"{prefix}-images-idx{ndim}-ubyte.gz", out / f"{prefix}-labels-idx1-ubyte.gz"


def _png_folders(out: Path, classes: Sequence[str] | None) -> list[Path]:
    if classes is None:
        return [out / "samples"]
    return [out / f"{i:02d}_{safe_name(c)}" for i, c in enumerate(classes)]


OUTPUT_MARKER = ".vaegen-output.json"


@dataclass(frozen=True)
class FolderPlan:
    """Writing output `key` ("train", "test" for IDX; "png") into the folder `out`: `replaces`
    are the files of the folder this write replaces (an error without overwrite), `keep` the
    names of the other outputs' files carried into the new folder, `others` their records."""

    out: Path
    key: str
    replaces: list[Path]
    keep: list[str] = field(default_factory=list)
    others: dict[str, Any] = field(default_factory=dict)


def output_key(fmt: str, split: str) -> str:
    return split if fmt == "idx" else fmt


def read_marker(out: Path) -> dict[str, Any] | None:
    """The record OUTPUT_MARKER holds, or None when `out` has none; an error naming the file when
    it is not one of vaegen's records."""
    path = out / OUTPUT_MARKER
    if not path.exists() and not is_link(path):
        return None
    try:
        if is_link(path):
            raise ValueError("a symbolic link")
        record = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(record, dict) or not isinstance(record.get("outputs"), dict):
            raise ValueError("not a record of vaegen's outputs")
        for entry in record["outputs"].values():
            if not isinstance(entry, dict) or not isinstance(entry.get("files"), list):
                raise ValueError("an output without its list of files")
            if not all(isinstance(f, str) and Path(f).name == f for f in entry["files"]):
                raise ValueError("a file name that is not a plain name")
    except (OSError, ValueError, UnicodeDecodeError, RecursionError) as e:
        raise VaegenError(
            f"{path}: not vaegen's record of this folder ({e}); vaegen leaves the folder as it "
            "is: choose another --out"
        ) from None
    return record


def plan_folder(out: Path, fmt: str, split: str, record: dict[str, Any]) -> FolderPlan:
    """Check that vaegen may write output `record` (format `fmt`, `split`) into the folder `out`,
    and say what it replaces and keeps. Refused with a VaegenError: a path that is not a folder,
    a folder holding anything vaegen did not write (unmarked, or beyond its record), and an IDX
    split whose classes or image shape differ from the other split's in the folder."""
    key = output_key(fmt, split)
    if is_link(out) and not out.exists():
        raise VaegenError(f"--out {out} is a broken symbolic link; name a folder")
    if not out.exists():
        return FolderPlan(out, key, [])
    if not out.is_dir():
        raise VaegenError(f"--out {out} is a file; a {fmt} output is a folder")
    entries = sorted(os.listdir(out))  # vaegen assembles outputs beside, never inside, OUT
    if not entries:
        return FolderPlan(out, key, [])
    marker = read_marker(out)
    if marker is None:
        raise VaegenError(
            f"--out {out} holds files vaegen did not write ({some_names(entries)}); generate "
            "writes into a new "
            "or empty folder, or one it wrote itself: choose another --out"
        )
    outputs = marker["outputs"]
    listed = {OUTPUT_MARKER} | {f for entry in outputs.values() for f in entry["files"]}
    foreign = [e for e in entries if e not in listed] + _foreign_in_folders(
        out, listed & set(entries)
    )
    if foreign:
        raise VaegenError(
            f"--out {out} holds files that {OUTPUT_MARKER} does not name ({some_names(foreign)}); "
            "vaegen does not replace or remove what it did "
            "not write: move them away, or choose another --out"
        )
    if marker.get("format") != fmt:  # another format's output: all of it is replaced
        return FolderPlan(out, key, [out / e for e in entries if e != OUTPUT_MARKER])
    others = {}  # the other outputs whose images (their first file) are still there
    for k, entry in outputs.items():
        there = [f for f in entry["files"] if (out / f).exists()]
        if k != key and entry["files"] and entry["files"][0] in there:
            others[k] = {**entry, "files": there}
    for other, entry in others.items():
        for what in ("classes", "image_shape"):
            if entry.get(what) != record.get(what):
                raise VaegenError(
                    f"--out {out} holds the {other} split of images with other {what.replace('_', ' ')} "
                    f"({entry.get(what)} here, {record.get(what)} now); both splits of a folder "
                    "must be one dataset's: choose another --out"
                )
    ours = [out / f for f in outputs.get(key, {}).get("files", [])]  # in the order written
    replaces = [p for p in ours if p.exists() or is_link(p)]
    replaces = [q for p in replaces for q in (_folder_files(p) if p.is_dir() else [p])]
    kept = sorted({f for entry in others.values() for f in entry["files"]})
    return FolderPlan(out, key, replaces, kept, others)


def _png_index(name: str) -> int | None:
    """k for a file named f"{k:05d}.png", as write_png names them; None for any other name."""
    stem = name.removesuffix(".png")
    return int(stem) if stem.isdigit() and f"{int(stem):05d}.png" == name else None


def _folder_files(folder: Path) -> list[Path]:
    return [folder / name for name in sorted(os.listdir(folder))]


def _foreign_in_folders(out: Path, listed: set[str]) -> list[str]:
    """What is not vaegen's among the names its record lists: a link in place of one of them
    (the user's: replacing the folder would remove it), and what the listed class folders of a
    PNG output hold besides write_png's numbered PNGs, as names relative to `out`."""
    foreign = [name for name in sorted(listed) if is_link(out / name)]
    for name in sorted(listed):
        folder = out / name
        if is_link(folder) or not folder.is_dir():
            continue
        for entry in os.scandir(folder):
            if _png_index(entry.name) is None or not entry.is_file(follow_symlinks=False):
                foreign.append(f"{name}/{entry.name}")
    return foreign


def write_folder(
    plan: FolderPlan, record: dict[str, Any], fmt: str, write: Callable[[Path], list[str]]
) -> list[str]:
    """Replace plan.out as a whole by a folder holding what `write(folder)` writes (it returns the
    names it wrote), the other outputs' files, and OUTPUT_MARKER recording all of them. Returns
    the names `write` wrote."""
    files: list[str] = []

    def build(folder: Path) -> None:
        files.extend(write(folder))
        outputs = {**plan.others, plan.key: {**record, "files": files}}
        marker = {"format": fmt, "outputs": dict(sorted(outputs.items()))}
        atomic_write_bytes(folder / OUTPUT_MARKER, (json.dumps(marker, indent=1) + "\n").encode())

    replace_folder(plan.out, build, plan.keep)
    return files


def write_npz(
    out: Path,
    shape: tuple[int, ...],
    chunks: Iterable[Chunk],
    labels: LabelRange,
    classes: Sequence[str] | None,
    *,
    before_replace: Callable[[Path], None] | None = None,
) -> int:
    """x.npy is written header first, then chunk by chunk; y.npy from `labels`, LABEL_CHUNK at
    a time, after it (a zip is written one member at a time). Returns the files written (1).
    before_replace(temporary): called with the finished file just before it replaces `out`
    (files.atomic_open)."""
    n = shape[0]
    with atomic_open(out, before_replace=before_replace) as f, zipfile.ZipFile(f, "w") as zf:
        with npz_member(zf, "x.npy") as member:
            x = NpyWriter(member, np.uint8, shape)
            for images, _ in chunks:  # N x 1 x H x W in C order has the bytes of N x H x W
                x.write(images.numpy())
            x.close()
        if classes is not None:
            with npz_member(zf, "y.npy") as member:
                y = NpyWriter(member, np.int64, (n,))
                for a in range(0, n, LABEL_CHUNK):
                    y.write(labels(a, min(a + LABEL_CHUNK, n)).numpy())
                y.close()
            with npz_member(zf, "classes.npy") as member:
                names = np.array(list(classes), dtype=np.str_)
                np.lib.format.write_array(member, names, allow_pickle=False)
    return 1


def write_idx(
    out: Path,
    split: str,
    shape: tuple[int, ...],
    chunks: Iterable[Chunk],
    labels: LabelRange,
    classes: Sequence[str] | None,
) -> list[str]:
    """The IDX .gz files of `split` (and classes.txt) written into the folder `out` (a fresh one:
    write_folder's), each header first through a gzip stream. Returns the names written."""
    n = shape[0]
    images_path, labels_path = _idx_names(out, split, len(shape))
    written = [images_path]
    with ExitStack() as stack:
        images = IdxGzipWriter(stack.enter_context(atomic_open(images_path)), np.uint8, shape)
        for x, _ in chunks:
            images.write(x.numpy())
        images.close()
        if classes is not None:
            dtype = np.uint8 if len(classes) <= 256 else np.int32
            ys = IdxGzipWriter(stack.enter_context(atomic_open(labels_path)), dtype, (n,))
            for a in range(0, n, LABEL_CHUNK):
                ys.write(labels(a, min(a + LABEL_CHUNK, n)).numpy())
            ys.close()
            stack.enter_context(atomic_open(out / "classes.txt")).write(
                "".join(f"{c}\n" for c in classes).encode()
            )
            written += [labels_path, out / "classes.txt"]
    return [p.name for p in written]


def write_png(out: Path, chunks: Iterable[Chunk], classes: Sequence[str] | None) -> list[str]:
    """One PNG per image, numbered per class folder in order, in the folder `out` (a fresh one:
    write_folder's). Returns the class folders' names, each holding at least one image."""
    from PIL import Image

    folders = _png_folders(out, classes)
    written = [0] * len(folders)
    for x, y in chunks:
        pixels = x.numpy()
        pixels = pixels[:, 0] if pixels.shape[1] == 1 else pixels.transpose(0, 2, 3, 1)
        for img, cls in zip(pixels, [0] * len(x) if y is None else y.tolist(), strict=True):
            buf = io.BytesIO()  # one file per image: the file I/O is the cost here
            Image.fromarray(img).save(buf, format="PNG")
            if not written[cls]:  # a class folder is made with its first image
                folders[cls].mkdir()
            atomic_write_bytes(folders[cls] / f"{written[cls]:05d}.png", buf.getvalue())
            written[cls] += 1
    return [f.name for f, count in zip(folders, written, strict=True) if count]

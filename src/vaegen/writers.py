"""Simulated datasets as files: an .npz, a folder of MNIST-style IDX .gz files, or PNGs.

Each writer takes the images as an iterable of chunks, so memory does not grow with their number,
and writes every file to a temporary name that is renamed when complete. An output written over
another (`generate --overwrite`) holds only the new output afterwards: the IDX labels and
classes.txt an unconditional output does not write, and the numbered PNGs it does not write
(another class's folder, images beyond the new count), are removed once the new files are in
place, so the folder never reads back as a dataset that pairs new images with old labels.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import torch

from ._io import NpyWriter, atomic_open, atomic_write_bytes, npz_member
from .classnames import safe_name
from .errors import VaegenError
from .idx import IdxGzipWriter

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


def _idx_outputs(out: Path, split: str) -> list[Path]:
    """Every file an IDX output of `split` may hold: images of either rank (grey N x H x W,
    colour N x H x W x C), labels, classes.txt."""
    images3, labels = _idx_names(out, split, 3)
    return [images3, _idx_names(out, split, 4)[0], labels, out / "classes.txt"]


def _png_folders(out: Path, classes: Sequence[str] | None) -> list[Path]:
    if classes is None:
        return [out / "samples"]
    return [out / f"{i:02d}_{safe_name(c)}" for i, c in enumerate(classes)]


def _png_index(name: str) -> int | None:
    """k for a file named f"{k:05d}.png", as write_png names them; None for any other name."""
    stem = name.removesuffix(".png")
    return int(stem) if stem.isdigit() and f"{int(stem):05d}.png" == name else None


def _numbered_pngs(out: Path) -> list[Path]:
    """The PNGs named as write_png names them in out's sub-folders, in sorted order."""
    if not out.is_dir():
        return []
    folders = sorted(p for p in out.iterdir() if p.is_dir())
    return [
        f / name for f in folders for name in sorted(os.listdir(f)) if _png_index(name) is not None
    ]


def existing(out: Path, fmt: str, split: str) -> list[Path]:
    """The files at `out` that writing this output would replace or remove."""
    if fmt == "npz":
        return [out] if out.exists() else []
    if fmt == "idx":
        return [p for p in _idx_outputs(out, split) if p.exists()]
    return _numbered_pngs(out)


def write_npz(
    out: Path, shape: tuple[int, ...], chunks: Iterable[Chunk], labels: LabelRange,
    classes: Sequence[str] | None,
) -> int:  # fmt: skip
    """x.npy is written header first, then chunk by chunk; y.npy from `labels`, LABEL_CHUNK at
    a time, after it (a zip is written one member at a time). Returns the files written (1)."""
    n = shape[0]
    with atomic_open(out) as f, zipfile.ZipFile(f, "w") as zf:
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
    out: Path, split: str, shape: tuple[int, ...], chunks: Iterable[Chunk], labels: LabelRange,
    classes: Sequence[str] | None,
) -> int:  # fmt: skip
    """Each .gz is written header first through a gzip stream. All files stay temporaries until
    all are complete and are then renamed together, so that an error or an interrupt while
    writing never pairs new images with old labels. Returns the files written."""
    n = shape[0]
    images_path, labels_path = _idx_names(out, split, len(shape))
    written = [images_path]
    with ExitStack() as stack:  # on an error every file is deleted, none renamed
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
    for stale in set(_idx_outputs(out, split)) - set(written):  # another output's
        stale.unlink(missing_ok=True)
    return len(written)


def write_png(out: Path, chunks: Iterable[Chunk], classes: Sequence[str] | None) -> int:
    """One PNG per image, each written atomically, numbered per class folder in order. Returns
    the files written."""
    from PIL import Image

    folders = _png_folders(out, classes)
    written = [0] * len(folders)
    for x, y in chunks:
        pixels = x.numpy()
        pixels = pixels[:, 0] if pixels.shape[1] == 1 else pixels.transpose(0, 2, 3, 1)
        for img, cls in zip(pixels, [0] * len(x) if y is None else y.tolist(), strict=True):
            buf = io.BytesIO()  # one file per image: the file I/O is the cost here
            Image.fromarray(img).save(buf, format="PNG")
            atomic_write_bytes(folders[cls] / f"{written[cls]:05d}.png", buf.getvalue())
            written[cls] += 1
    ours = {f: count for f, count in zip(folders, written, strict=True)}
    for path in _numbered_pngs(out):  # another output's, or beyond this one's count
        index = _png_index(path.name)
        if index is None or index >= ours.get(path.parent, 0):
            path.unlink()
            if not any(path.parent.iterdir()):  # an empty class folder reads as an error
                path.parent.rmdir()
    return sum(written)

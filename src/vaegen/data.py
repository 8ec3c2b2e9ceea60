"""In-memory datasets: `ImageDataset` and `load_dataset`, which fills one from a named dataset
(see `datasets`), a folder of IDX files (see `idx`), an .npz file or a folder of images.

Every file is checked before use; a bad file raises `DataError` naming the file and what is wrong.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import datasets
from .errors import DataError
from .idx import read_idx


@dataclass
class ImageDataset:
    """Images with optional labels, kept whole in memory.

    images: uint8 tensor, N x C x H x W, pixel values 0..255.
    labels: int64 tensor of N class indices, or None for an unlabelled dataset.
    classes: class names; labels index into it.
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    classes: list[str]
    name: str = ""

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DataError(
                f"dataset {self.name!r}: images must be a uint8 tensor N x C x H x W, "
                f"got {self.images.dtype} with shape {tuple(self.images.shape)}"
            )
        if self.labels is not None:
            if self.labels.shape != (len(self.images),):
                raise DataError(
                    f"dataset {self.name!r}: {len(self.images)} images but labels of shape "
                    f"{tuple(self.labels.shape)}"
                )
            if len(self.labels) and (
                int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.classes)
            ):
                raise DataError(
                    f"dataset {self.name!r}: labels span {int(self.labels.min())}.."
                    f"{int(self.labels.max())} but there are {len(self.classes)} classes"
                )

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W)."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]


def safe_name(name: str) -> str:
    """A class name made safe as a file or folder name ("T-shirt/top" -> "T-shirt_top")."""
    return re.sub(r"[^\w.-]+", "_", name).strip("._") or "class"


def to_float(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 N x C x H x W -> float32 in [0, 1] on `device` (the article's ToTensor, for all at once)."""
    return images.to(device).float().div_(255.0)


def _from_idx_arrays(
    images: np.ndarray, labels: np.ndarray | None, classes: Sequence[str], name: str, where: str
) -> ImageDataset:
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4 or images.dtype != np.uint8:
        raise DataError(
            f"{where}: images must be uint8 N x H x W (or N x C x H x W), "
            f"got {images.dtype} {images.shape}"
        )
    y = None
    if labels is not None:
        if labels.ndim != 1 or len(labels) != len(images):
            raise DataError(f"{where}: {len(images)} images but labels of shape {labels.shape}")
        y = torch.from_numpy(labels.astype(np.int64))
        if not classes:
            classes = [str(i) for i in range(int(y.max()) + 1 if len(y) else 0)]
    return ImageDataset(torch.from_numpy(images), y, list(classes), name)


def _load_named(name: str, split: str, data_dir: str | Path | None) -> ImageDataset:
    folder, images, labels = datasets.read_split(name, split, data_dir)
    classes = datasets.NAMED_DATASETS[name].classes
    return _from_idx_arrays(images, labels, classes, name, str(folder))


_IDX_PREFIX = {"train": "train", "test": "t10k"}


def _load_idx_folder(folder: Path, split: str) -> ImageDataset:
    prefix = _IDX_PREFIX[split]
    found = {}
    for kind in ("images", "labels"):
        matches = sorted(folder.glob(f"{prefix}-{kind}-idx*-ubyte*"))
        found[kind] = matches[0] if matches else None
    if found["images"] is None:
        raise DataError(
            f"{folder}: no {prefix}-images-idx3-ubyte[.gz] file for the {split!r} split"
        )
    images = read_idx(found["images"])
    labels = read_idx(found["labels"]) if found["labels"] else None
    classes: list[str] = []
    classes_file = folder / "classes.txt"
    if classes_file.is_file():
        classes = classes_file.read_text(encoding="utf-8").splitlines()
    return _from_idx_arrays(images, labels, classes, folder.name, str(found["images"]))


def _load_npz(path: Path) -> ImageDataset:
    try:
        # allow_pickle=False: an .npz with object arrays is refused, never unpickled
        with np.load(path, allow_pickle=False) as f:
            if "x" not in f.files:
                raise DataError(f"{path}: no array named 'x' (found: {', '.join(f.files)})")
            x = f["x"]
            y = f["y"] if "y" in f.files else None
            classes = [str(c) for c in f["classes"]] if "classes" in f.files else []
    except (OSError, ValueError, zlib.error) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"{path}: not a readable .npz file ({e})") from None
    return _from_idx_arrays(x, y, classes, path.stem, str(path))


_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def _load_image_folder(folder: Path) -> ImageDataset:
    from PIL import Image

    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir())
    if not class_dirs:
        raise DataError(f"{folder}: no class sub-folders (expected one folder of images per class)")
    images, labels = [], []
    shape = None
    for index, d in enumerate(class_dirs):
        for f in sorted(d.iterdir()):
            if f.suffix.lower() not in _IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(f) as im:
                    arr = np.asarray(im.convert("L"))
            except OSError as e:
                raise DataError(f"{f}: not a readable image ({e})") from None
            if shape is None:
                shape = arr.shape
            elif arr.shape != shape:
                raise DataError(
                    f"{f}: size {arr.shape[::-1]} differs from the first image's {shape[::-1]}"
                )
            images.append(arr)
            labels.append(index)
    if not images:
        raise DataError(f"{folder}: no images found in its class sub-folders")
    return _from_idx_arrays(
        np.stack(images), np.asarray(labels), [d.name for d in class_dirs], folder.name, str(folder)
    )


def load_dataset(
    source: str | Path = "fashion-mnist", split: str = "train", data_dir: str | Path | None = None
) -> ImageDataset:
    """Load a dataset whole into memory.

    source: a name (`fashion-mnist`, `mnist`), a folder of IDX files (train-/t10k- prefixes as in
    MNIST, optional classes.txt), an `.npz` (keys `x`: uint8 N x H x W, optional `y`, `classes`),
    or a folder of images with one sub-folder per class (used for both splits).
    """
    datasets.check_split(split)
    named = datasets.NAMED_DATASETS
    if str(source) in named:
        return _load_named(str(source), split, data_dir)
    path = Path(source)
    if path.suffix == ".npz":
        if not path.is_file():
            raise DataError(f"{path}: file not found")
        return _load_npz(path)
    if path.is_dir():
        if any(path.glob("*-images-idx*-ubyte*")):
            return _load_idx_folder(path, split)
        return _load_image_folder(path)
    raise DataError(
        f"data source {str(source)!r} is not a named dataset ({', '.join(named)}), "
        "an existing .npz file or a folder"
    )

"""In-memory datasets: `ImageDataset`, and `load_dataset` / `load_splits`, which fill them from a
named dataset (see `named`), a folder of IDX files (see `idx`), an .npz file or a folder of
images (see `image_folders`).

Named datasets and IDX folders bring their own train and test split. An .npz file or an image
folder has none: a seeded fraction of it is held out for testing, stratified by class when it
has labels, at random when it has none (`splits.holdout`: 10 % unless test_fraction says
otherwise; 0 tests on the training images). An image folder without class sub-folders, or an
.npz without y, is unlabelled: labels None, classes [].
channels and image_size convert every image on purpose (see `image_folders`), whatever the source.
Before an image folder is decoded or an .npz read, a load that would need more memory than is
available is a DataError (`memory`); a decoded image folder is cached (`folder_cache`).

Every file is checked before use; a bad file raises `DataError` naming the file and what is wrong.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from . import named
from .class_names import check_class_names, check_labels
from .idx import read_idx
from .image_folders import MODES, convert, list_images, read_folder
from .memory import BYTES_PER_VALUE, FLOAT32_BYTES, check_fits
from .npz import npz_layout, read_npz
from .splits import DEFAULT_TEST_FRACTION, check_fraction, holdout, split_note

log = logging.getLogger(__name__)


@dataclass
class ImageDataset:
    """Images with optional labels, kept whole in memory.

    images: uint8 tensor, N x C x H x W, pixel values 0..255.
    labels: int64 tensor of N class indices, or None for an unlabelled dataset.
    classes: class names; labels index into it.
    notes: what loading did that the user should know (grey images made colour, files skipped).
    cache: for an image folder, how the folder cache served it, in words that start with "hit",
    "miss" or "off" (see `folder_cache`); "" for other sources.
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    classes: list[str]
    name: str = ""
    notes: list[str] = field(default_factory=list)
    cache: str = ""

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

    def subset(self, indices: np.ndarray) -> ImageDataset:
        """The images (and labels) at `indices`, in that order."""
        idx = torch.from_numpy(np.asarray(indices, dtype=np.int64))
        labels = None if self.labels is None else self.labels[idx]
        return ImageDataset(
            self.images[idx], labels, self.classes, self.name, self.notes, self.cache
        )


def to_float(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 N x C x H x W -> float32 in [0, 1] on `device` (the article's ToTensor, for all at once)."""
    return images.to(device).float().div_(255.0)


# ------------------------------------------------------------------ sources and options

MAX_IMAGE_SIZE = 8192  # 67 M pixels: under Pillow's bomb limit (89 M); larger is a typo
MAX_SPLIT_SEED = 2**63 - 1  # the split hashes it as a uint64 (splits.holdout)
OWN_SPLIT = ("named", "idx")  # the kinds of source that bring a test split of their own
KINDS = {
    "named": "a named dataset, with its own train and test split",
    "idx": "a folder of IDX files, with its own train and test split (train-, t10k- files)",
    "npz": "an .npz file",
    "images": "a folder of images, one sub-folder per class",
}
UNLABELLED_FOLDER = "a folder of images without class sub-folders: unlabelled"


def source_kind(source: str | Path) -> str | None:
    """What `source` is: "named", "idx" (a folder of IDX files), "npz", "images" (a folder of
    images), or None when it is none of these (no such name, file or folder)."""
    if str(source) in named.NAMED_DATASETS:
        return "named"
    path = Path(source)
    if path.suffix == ".npz":
        return "npz"
    if path.is_dir():
        return "idx" if any(path.glob("*-images-idx*-ubyte*")) else "images"
    return None


def check_options(
    channels: int | None, image_size: int | None, test_fraction: float | None, split_seed: int
) -> None:
    """A DataError, naming the option, for a value no source can take."""
    if channels is not None and channels not in MODES:
        raise DataError(f"channels = {channels!r} is not valid: 1 (grey) or 3 (RGB), or None")
    if image_size is not None and not 1 <= image_size <= MAX_IMAGE_SIZE:
        raise DataError(
            f"image_size = {image_size!r} is not valid: an integer from 1 to {MAX_IMAGE_SIZE}, "
            "or None"
        )
    if test_fraction is not None:
        check_fraction(test_fraction)
    if not 0 <= split_seed <= MAX_SPLIT_SEED:
        raise DataError(
            f"split_seed = {split_seed!r} is not valid: an integer from 0 to {MAX_SPLIT_SEED}"
        )


def effective_test_fraction(source: str | Path, test_fraction: float | None) -> float | None:
    """The fraction held out for testing: None for a source with its own test split (a DataError
    if one was asked for), else `test_fraction`, DEFAULT_TEST_FRACTION when that is None."""
    kind = source_kind(source)
    if kind in OWN_SPLIT:
        if test_fraction is not None:
            raise DataError(
                f"--test-fraction {test_fraction:g} (test_fraction) is for .npz files and image "
                f"folders, which have no test split; {source} is {KINDS[kind]}, which is used "
                "as it is"
            )
        return None
    return DEFAULT_TEST_FRACTION if test_fraction is None else test_fraction


def check_labelled(source: str | Path) -> None:
    """A DataError naming `source` when it is known to have no class labels before it is read:
    a folder of images without class sub-folders, or an .npz without y (what --conditional
    needs). Other sources are checked when they are loaded."""
    kind = source_kind(source)
    if kind == "images" and list_images(Path(source))[2] is None:
        what = "its images lie directly in it, with no class sub-folders"
    elif kind == "npz" and (layout := npz_layout(Path(source))) is not None and not layout[2]:
        what = "it has no array y"
    else:
        return
    raise DataError(
        f"{source}: --conditional needs labels (a class per image), and it has none "
        f"({what}); train without --conditional, or give it labels"
    )


# ------------------------------------------------------------------------------- readers


def _from_arrays(
    images: np.ndarray, labels: np.ndarray | None, classes: Sequence[str], name: str, where: str
) -> ImageDataset:
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4 or images.dtype != np.uint8:
        raise DataError(
            f"{where}: images must be uint8 N x H x W (or N x C x H x W), "
            f"got {images.dtype} {images.shape}"
        )
    if 0 in images.shape[1:]:
        c, h, w = images.shape[1:]
        raise DataError(
            f"{where}: images are {c} x {h} x {w} (channels x height x width); every image "
            "needs at least 1 channel and 1 x 1 pixels"
        )
    y = None
    if labels is not None:
        if labels.ndim != 1 or len(labels) != len(images):
            raise DataError(f"{where}: {len(images)} images but labels of shape {labels.shape}")
        if not np.issubdtype(labels.dtype, np.integer):  # an IDX file may hold floats
            raise DataError(f"{where}: labels are {labels.dtype}; they must be class indices")
        check_labels(labels, where)  # before a name is made for each class up to the largest
        y = torch.from_numpy(labels.astype(np.int64))
        if not classes:
            classes = [str(i) for i in range(int(y.max()) + 1 if len(y) else 0)]
    check_class_names(classes, where)
    return ImageDataset(torch.from_numpy(images), y, list(classes), name)


def _load_named(name: str, split: str, data_dir: str | Path | None) -> ImageDataset:
    folder, images, labels = named.read_split(name, split, data_dir)
    classes = named.NAMED_DATASETS[name].classes
    return _from_arrays(images, labels, classes, name, str(folder))


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
    if labels is not None and np.issubdtype(labels.dtype, np.integer):  # named: the labels file
        check_labels(labels, str(found["labels"]))
    classes: list[str] = []
    classes_file = folder / "classes.txt"
    if classes_file.is_file():
        try:
            classes = classes_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(
                f"{classes_file}: cannot read the class names ({e}); save it as UTF-8 text, one "
                "name a line"
            ) from None
    return _from_arrays(images, labels, classes, folder.name, str(found["images"]))


def _read(
    kind: str,
    source: str | Path,
    split: str | None,
    data_dir: str | Path | None,
    channels: int | None,
    image_size: int | None,
    skip_bad: bool,
    bytes_per_value: int = BYTES_PER_VALUE,
) -> ImageDataset:
    """One split of a named dataset or IDX folder, or the whole of an .npz or image folder,
    converted to `channels` and `image_size`; an image folder or .npz is first checked to fit
    in memory, at bytes_per_value bytes per uint8 image value (see `memory`)."""
    if kind == "images":
        got = read_folder(
            Path(source), channels, image_size, skip_bad, bytes_per_value=bytes_per_value
        )
        labels = None if got.labels is None else torch.from_numpy(got.labels)
        return ImageDataset(
            torch.from_numpy(got.images),
            labels,
            got.classes,
            Path(source).name,
            got.notes,
            got.cache,
        )
    if kind == "npz":
        layout = npz_layout(Path(source))
        if layout is not None:  # else reading it says what is wrong
            n, (c, h, w), _, stored = layout
            shape = (channels or c, image_size or h, image_size or w)
            # x is read whole as stored, then made uint8 (N x C x H x W, converted) and split
            need = max(stored, n * c * h * w) + (bytes_per_value - 1) * n * math.prod(shape)
            check_fits(str(source), n, shape, need)
        x, y, classes = read_npz(Path(source))
        ds = _from_arrays(x, y, classes, Path(source).stem, str(source))
    elif kind == "idx":
        ds = _load_idx_folder(Path(source), str(split))
    else:
        ds = _load_named(str(source), str(split), data_dir)
    before = ds.images.numpy()
    images = convert(before, channels, image_size, str(source))
    if images is not before:
        ds = ImageDataset(torch.from_numpy(images), ds.labels, ds.classes, ds.name)
    return ds


def _load(
    source: str | Path,
    splits: Sequence[str],
    *,
    data_dir: str | Path | None,
    channels: int | None,
    image_size: int | None,
    test_fraction: float | None,
    split_seed: int,
    skip_bad: bool,
    float32_copy: bool = False,
) -> tuple[list[ImageDataset], float | None]:
    """The `splits` of `source`, and the fraction held out for testing (None: the source's own).
    float32_copy: the memory check counts a float32 copy of each split (both the whole set with
    fraction 0)."""
    for split in splits:
        named.check_split(split)
    check_options(channels, image_size, test_fraction, split_seed)
    kind = source_kind(source)
    if kind is None:
        raise DataError(
            f"data source {str(source)!r} is not a named dataset "
            f"({', '.join(named.NAMED_DATASETS)}), an existing .npz file or a folder"
        )
    fraction = effective_test_fraction(source, test_fraction)
    if kind in OWN_SPLIT:
        read = [_read(kind, source, s, data_dir, channels, image_size, skip_bad) for s in splits]
        return read, None
    if kind == "npz" and not Path(source).is_file():
        raise DataError(f"{source}: file not found")
    assert fraction is not None  # not a source with its own split
    copies = (2 if fraction == 0 else 1) if float32_copy else 0
    need = BYTES_PER_VALUE + FLOAT32_BYTES * copies
    whole = _read(kind, source, None, data_dir, channels, image_size, skip_bad, need)
    labels = None if whole.labels is None else whole.labels.numpy()
    if fraction == 0:
        return [whole for _ in splits], fraction
    train, test = holdout(labels, len(whole), fraction, split_seed)
    return [whole.subset(train if s == "train" else test) for s in splits], fraction


def _log_notes(ds: ImageDataset) -> None:
    for note in ds.notes:
        log.warning("%s: %s", ds.name, note)


def load_dataset(
    source: str | Path = "fashion-mnist",
    split: str = "train",
    data_dir: str | Path | None = None,
    *,
    channels: int | None = None,
    image_size: int | None = None,
    test_fraction: float | None = None,
    split_seed: int = 0,
    skip_bad: bool = False,
) -> ImageDataset:
    """Load one split of a dataset whole into memory.

    source: a name (`fashion-mnist`, `mnist`), a folder of IDX files (train-/t10k- prefixes as in
    MNIST, optional classes.txt), an `.npz` (`x`: uint8 N x H x W, N x H x W x C or N x C x H x W
    with C = 1 or 3, or floats in [0, 1]; optional `y` and `classes`), or a folder of images
    (one sub-folder per class, or all directly in it: unlabelled, labels None). data_dir: where
    to look first for a named dataset.
    channels: 1 or 3 converts every image (None: as they are; a folder of grey and colour images
    gives colour). image_size: resize every image to S x S (bilinear; None: keep).
    test_fraction: for an .npz or image folder, the fraction held out as the test split,
    stratified by class (unlabelled: at random) and seeded by split_seed (None: 0.1; 0: both
    splits are every image); an error for a source with its own test split. skip_bad: leave
    unreadable image files out (with a warning) instead of raising. An image folder or .npz too
    large for the available memory is a DataError before it is read (see `memory`).
    """
    (ds,), _ = _load(
        source,
        (split,),
        data_dir=data_dir,
        channels=channels,
        image_size=image_size,
        test_fraction=test_fraction,
        split_seed=split_seed,
        skip_bad=skip_bad,
    )
    _log_notes(ds)
    return ds


def load_splits(
    source: str | Path = "fashion-mnist",
    data_dir: str | Path | None = None,
    *,
    channels: int | None = None,
    image_size: int | None = None,
    test_fraction: float | None = None,
    split_seed: int = 0,
    skip_bad: bool = False,
    float32_copy: bool = False,
) -> tuple[ImageDataset, ImageDataset]:
    """(train, test) as `load_dataset` gives them, reading the source once, and logging how the
    test split was made. float32_copy: the caller will hold a float32 copy of both (training on
    the CPU does), which the memory check counts."""
    (train, test), fraction = _load(
        source,
        ("train", "test"),
        data_dir=data_dir,
        channels=channels,
        image_size=image_size,
        test_fraction=test_fraction,
        split_seed=split_seed,
        skip_bad=skip_bad,
        float32_copy=float32_copy,
    )
    _log_notes(train)
    if fraction is not None:
        labelled = train.labels is not None
        note = split_note(fraction, split_seed, len(train), len(test), labelled)
        level = logging.WARNING if fraction == 0 else logging.INFO
        log.log(
            level, "%s: no test split of its own; test split: %s (--test-fraction)", source, note
        )
    return train, test


def load_images(
    source: str | Path,
    *,
    channels: int | None = None,
    image_size: int | None = None,
    skip_bad: bool = False,
) -> ImageDataset:
    """Every image of a file or folder of images made anywhere (a generator's output to be
    measured), converted as `load_dataset` would: an .npz, a folder of images, or a folder of
    IDX files (its train- files, or its t10k- files when it has no train- ones: `vaegen
    generate --split test` writes only those). A named dataset is refused: its images are real
    ones, to be named with --data."""
    kind = source_kind(source)
    options = dict(channels=channels, image_size=image_size, skip_bad=skip_bad)
    if kind == "idx":
        split = "train" if any(Path(source).glob("train-images-idx*-ubyte*")) else "test"
        return load_dataset(source, split, **options)  # type: ignore[arg-type]
    if kind in ("npz", "images"):
        return load_dataset(source, "train", test_fraction=0, **options)  # type: ignore[arg-type]
    raise DataError(
        f"--samples {source}: not an .npz file, a folder of IDX files or a folder of images"
        + (" (a named dataset is real data: give it as --data)" if kind == "named" else "")
    )


def read_whole(
    source: str | Path,
    data_dir: str | Path | None = None,
    *,
    channels: int | None = None,
    image_size: int | None = None,
    skip_bad: bool = False,
) -> tuple[str, list[ImageDataset]]:
    """(kind of source, [every image]) for an .npz or image folder, or (kind, [train, test]) for
    a source with its own split, converted as `load_dataset` would; nothing is logged."""
    kind = source_kind(source)
    options = dict(data_dir=data_dir, channels=channels, image_size=image_size, skip_bad=skip_bad)
    if kind in OWN_SPLIT:  # the source's own split: no fraction held out
        parts, _ = _load(source, ("train", "test"), test_fraction=None, split_seed=0, **options)
        return str(kind), parts
    (whole,), _ = _load(source, ("train",), test_fraction=0, split_seed=0, **options)
    return str(kind), [whole]

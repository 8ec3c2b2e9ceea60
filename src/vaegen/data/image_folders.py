"""Images as uint8 arrays, with Pillow: a folder of image files decoded in parallel, and arrays
converted to a chosen number of channels or size the same way.

What a folder's images become (`read_folder`), and an array's (`convert`):
- colour stays colour: grey files give 1 channel, colour files 3 (RGB; an alpha channel is
  dropped); a folder of both gives 3 channels, the grey images repeated (colour wins), and says
  so in its notes;
- channels 1 or 3 converts every image on purpose: colour to grey with Pillow's convert("L")
  (ITU-R 601-2 luma, L = R * 299/1000 + G * 587/1000 + B * 114/1000), grey to RGB by repetition;
- size S resizes every image to S x S with Pillow's bilinear filter, on the uint8 image after
  the channel conversion (the aspect ratio is not kept); without it, a folder of images of
  different sizes is an error that names two of them.
A folder is labelled, one sub-folder of images per class (the class names are the sub-folders'),
or unlabelled, its images directly in it (no labels, no classes); a folder with both is an
error, as is one with neither (`list_images`).
Before anything is decoded, the images' shape comes from the files' headers (Pillow's lazy
open, on up to 64 files spread over the folder; --channels and --image-size fix C and H x W),
and a folder whose images would need more memory than is available is a DataError
(`memory.check_fits`). A folder decoded once is read from the folder cache later, while none
of its files, nor the options, changed (`folder_cache`).
A folder's files are decoded by a pool of threads (Pillow releases the GIL while it decodes);
after that comes only stacking, no per-image Python work. An unreadable, truncated or oversized
file (Pillow's decompression-bomb limit, PIL.Image.MAX_IMAGE_PIXELS) is a DataError naming it,
or with skip_bad=True is left out and counted.
"""

from __future__ import annotations

import logging
import math
import os
import struct
import time
import warnings
import zlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from . import folder_cache
from .cache import ENV_OFF
from .class_names import check_class_names
from .memory import BYTES_PER_VALUE, check_fits

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
MODES = {1: "L", 3: "RGB"}  # channels -> the Pillow mode images are converted to
_GREY_MODES = {"1", "L", "LA", "La", "F"}  # and the integer modes: I, I;16, ...
# what Pillow raises for a corrupt or truncated file, besides its DecompressionBombError
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error)
_PEEKED = 64  # files whose headers give the shape the memory check assumes


@dataclass
class FolderImages:
    """A folder's images, N x C x H x W uint8, their labels (int class index per image; None for
    an unlabelled folder), the class names ([] unlabelled), notes on what was done to them (mixed
    channels, skipped files), and how the folder cache served them, in words that start with
    "hit", "miss" or "off"."""

    images: np.ndarray
    labels: np.ndarray | None
    classes: list[str]
    notes: list[str]
    cache: str = ""


def _workers(n: int) -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(32, n, cpus or 1))


def _parallel(fn: Callable[[Any], Any], items: Iterable[Any], n: int) -> list[Any]:
    """[fn(item) for item in items], in order, on a pool of threads."""
    with ThreadPoolExecutor(_workers(n)) as pool:
        return list(pool.map(fn, items))


def _is_colour(im: Any) -> bool:
    if im.mode in ("P", "PA"):  # a palette: colour unless every entry of it is grey
        # Pillow keeps even a grey GIF's or PNG's palette as RGB triples
        rgb = np.asarray(im.getpalette("RGB") or [0], dtype=np.uint8).reshape(-1, 3)
        return not ((rgb[:, 0] == rgb[:, 1]) & (rgb[:, 1] == rgb[:, 2])).all()
    return im.mode not in _GREY_MODES and not im.mode.startswith("I")


def _orientation(im: Any) -> int:
    """The image's EXIF orientation (1: as stored; 2..8: mirrored and/or turned, 5..8 swapping
    width and height), read from its header."""
    value = im.getexif().get(0x0112, 1)  # the Orientation tag
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _grey_8bit(im: Any) -> tuple[Any, str]:
    """(im as 8-bit grey, "") for a grey image of more than 8 bits, or (None, why not); other
    images unchanged. Pillow's own conversion to "L" clips such values at 255 instead."""
    from PIL import Image

    if im.mode.startswith("I;16"):  # 16-bit grey (PNG, TIFF): v / 257, rounded, is 0..255
        v = np.asarray(im).astype(np.uint32)
        return Image.fromarray(((v + 128) // 257).astype(np.uint8)), ""
    if im.mode in ("I", "F"):  # 32-bit integers or floats: their scale is unknown
        v = np.asarray(im)
        if v.size and (v.min() < 0 or v.max() > 255 or not np.array_equal(v, np.round(v))):
            return None, (
                f"{'32-bit integer' if im.mode == 'I' else 'floating-point'} pixels from "
                f"{v.min():g} to {v.max():g}, not whole numbers in 0..255: their scale is "
                "unknown; save the images with 8 or 16 bits a channel"
            )
    return im, ""


def _resized(im: Any, size: int | None) -> Any:
    from PIL import Image

    if size is None or im.size == (size, size):
        return im
    return im.resize((size, size), Image.Resampling.BILINEAR)


def _decode(path: Path, mode: str | None, size: int | None) -> tuple[np.ndarray | None, str]:
    """(pixels, "") with pixels H x W (grey) or H x W x 3 (colour) uint8, in `mode` ("L" or
    "RGB") or else the file's own, resized to size x size; or (None, what is wrong)."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            width, height = im.size
            limit = Image.MAX_IMAGE_PIXELS
            if limit is not None and width * height > limit:
                return None, (
                    f"{width} x {height} pixels is over Pillow's decompression-bomb limit of "
                    f"{limit} (PIL.Image.MAX_IMAGE_PIXELS); refused"
                )
            im.load()
            if _orientation(im) > 1:  # stored turned or mirrored (phone photos): shown upright
                im = ImageOps.exif_transpose(im)
            target = mode or ("RGB" if _is_colour(im) else "L")
            im8, why = _grey_8bit(im)
            if im8 is None:
                return None, why
            if im8.mode != target:
                im8 = im8.convert(target)
            return np.asarray(_resized(im8, size)), ""
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        return None, f"refused by Pillow's decompression-bomb check ({e})"
    except _DECODE_ERRORS as e:
        return None, f"not a readable image ({' '.join(str(e).split())})"


def list_images(folder: Path) -> tuple[list[str], list[Path], np.ndarray | None]:
    """(class names, image files, label of each file) of a folder with one sub-folder of images
    per class, in sorted order; ([], image files, None) of an unlabelled folder, its images
    directly in it. Names starting with '.' are skipped; other files are skipped unless they end
    in one of IMAGE_SUFFIXES. A DataError naming the folder when it has both or neither."""
    class_dirs, loose = _scan(folder)
    if class_dirs and loose:
        dirs = ", ".join(d.name for d in class_dirs[:3]) + (", ..." if len(class_dirs) > 3 else "")
        raise DataError(
            f"{folder}: both images directly in it ({len(loose)}, the first {loose[0].name}) and "
            f"sub-folders ({dirs}), so it is neither labelled nor unlabelled; put every image in "
            "a class sub-folder, or move the sub-folders out"
        )
    if loose:
        return [], loose, None
    if not class_dirs:
        raise DataError(
            f"{folder}: no images (image files end in {', '.join(IMAGE_SUFFIXES)}); put them "
            "directly in it (unlabelled) or in one sub-folder per class"
        )
    per_class = [_scan(d)[1] for d in class_dirs]
    if not any(per_class):
        raise DataError(
            f"{folder}: no images in its class sub-folders (image files end in "
            f"{', '.join(IMAGE_SUFFIXES)})"
        )
    for d, files in zip(class_dirs, per_class, strict=True):
        if not files:
            raise DataError(
                f"{d}: an empty class sub-folder (no image files); add images or remove it"
            )
    classes = [d.name for d in class_dirs]
    check_class_names(classes, str(folder))  # before anything is decoded or trained
    labels = np.repeat(np.arange(len(class_dirs)), [len(f) for f in per_class])
    return classes, [f for files in per_class for f in files], labels


def _scan(folder: Path) -> tuple[list[Path], list[Path]]:
    """(sub-folders, image files) directly in `folder`, each sorted by name, names starting
    with '.' left out. os.scandir tells files from folders without a stat call per file. Links
    are followed one level (a folder inside a class folder is never entered, so `ln -s . cat/x`
    is not walked round); a link that loops (a -> b -> a) is a DataError naming it."""
    dirs, files = [], []
    with os.scandir(folder) as entries:
        for e in entries:
            if e.name.startswith("."):
                continue
            try:
                if e.is_dir():
                    dirs.append(e.name)
                elif e.is_file() and os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES:
                    files.append(e.name)
            except OSError as err:  # ELOOP: too many levels of symbolic links
                raise DataError(
                    f"{e.path}: a link that cannot be followed ({err.strerror}); "
                    "remove it or point it at an image or a folder"
                ) from None
    return [folder / d for d in sorted(dirs)], [folder / f for f in sorted(files)]


def read_folder(
    folder: Path,
    channels: int | None = None,
    size: int | None = None,
    skip_bad: bool = False,
    *,
    bytes_per_value: int = BYTES_PER_VALUE,
) -> FolderImages:
    """A folder's images (see the module's doc), read from the folder cache or decoded (and then
    cached). Before either, a DataError when N x C x H x W x bytes_per_value bytes are more
    memory than is available (`memory`: 2 for the images alone, more for a caller that makes a
    float copy)."""
    from PIL import Image

    classes, files, labels = list_images(folder)
    options = {
        "channels": channels,
        "size": size,
        "skip_bad": skip_bad,
        "pillow": Image.__version__,
        "max_pixels": Image.MAX_IMAGE_PIXELS,
    }
    try:
        key = folder_cache.folder_key(folder, files, options)
    except OSError:  # a file gone since the listing: decoding names it
        key = ""
    entry = folder_cache.entry_path(folder, key) if key else None
    if entry is not None and (found := folder_cache.entry_shape(entry)) is not None:
        n, shape = found
        check_fits(str(folder), n, shape, bytes_per_value * n * math.prod(shape))
        hit = folder_cache.read_entry(entry, key)
        if hit is not None:
            log.info("%s: %d images read from the cache %s", folder, n, entry)
            return FolderImages(*hit, cache=f"hit, read from {entry}; no image decoded")
    shape = _header_shape(files, channels, size)
    if shape is not None:
        check_fits(str(folder), len(files), shape, bytes_per_value * len(files) * math.prod(shape))
    t0 = time.perf_counter()
    got = _decode_folder(folder, files, labels, classes, channels, size, skip_bad)
    took = f"decoded {len(files)} files in {time.perf_counter() - t0:.1f} s"
    if entry is None:
        off = folder_cache.cache_dir() is None
        got.cache = f"off ({ENV_OFF + ' is set' if off else 'a file vanished'}), {took}"
        return got
    why = folder_cache.write_entry(entry, key, got.images, got.labels, got.classes, got.notes)
    if why:
        log.warning("%s: not cached: %s", folder, why)
        got.cache = f"miss, {took}; not stored: {why}"
    else:
        log.info("%s: %s, cached in %s", folder, took, entry)
        got.cache = f"miss, {took}; stored in {entry}"
    return got


def _header_shape(
    files: list[Path], channels: int | None, size: int | None
) -> tuple[int, int, int] | None:
    """C x H x W the decoded images will have, as far as their headers tell (Pillow's lazy open
    reads no pixels): channels, else 3 when any of up to _PEEKED files spread over `files` is
    colour, else 1; size x size, else the first's (all must match it, or decoding refuses
    them). None when none of those files opens."""
    from PIL import Image

    if channels is not None and size is not None:
        return channels, size, size
    picked = sorted({round(i * (len(files) - 1) / max(1, _PEEKED - 1)) for i in range(_PEEKED)})
    colour, hw = False, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        for i in picked:
            try:
                with Image.open(files[i]) as im:
                    colour |= _is_colour(im)
                    w, h = im.size
                    hw = hw or ((w, h) if _orientation(im) >= 5 else (h, w))  # 5..8 turn it
            except (Image.DecompressionBombError, *_DECODE_ERRORS):
                continue  # decoding names the file
    if hw is None:
        return None
    c = channels or (3 if colour else 1)
    return (c, size, size) if size is not None else (c, *hw)


def _decode_folder(
    folder: Path,
    files: list[Path],
    labels: np.ndarray | None,
    classes: list[str],
    channels: int | None,
    size: int | None,
    skip_bad: bool,
) -> FolderImages:
    """Decode the folder's `files` in parallel (see the module's doc)."""
    from PIL import Image

    decode = partial(_decode, mode=None if channels is None else MODES[channels], size=size)
    with warnings.catch_warnings():  # Pillow's warning zone (1-2x the limit) refuses too
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        results = _parallel(decode, files, len(files))
    notes = []
    bad = [(f, why) for f, (pixels, why) in zip(files, results, strict=True) if pixels is None]
    if bad and not skip_bad:
        more = f" ({len(bad) - 1} more unreadable files)" if len(bad) > 1 else ""
        raise DataError(f"{bad[0][0]}: {bad[0][1]}{more}; --skip-bad leaves such files out")
    if bad:
        if len(bad) == len(files):
            raise DataError(f"{folder}: none of its {len(files)} image files is readable")
        notes.append(
            f"skipped {len(bad)} unreadable image file{'s' if len(bad) > 1 else ''} of "
            f"{len(files)} (--skip-bad); the first: {bad[0][0]}: {bad[0][1]}"
        )
        keep = np.array([pixels is not None for pixels, _ in results])
        files = [f for f, k in zip(files, keep, strict=True) if k]
        labels = None if labels is None else labels[keep]
        results = [r for r in results if r[0] is not None]
    arrays = [pixels for pixels, _ in results]
    shapes = [a.shape[:2] for a in arrays]
    if len(set(shapes)) > 1:
        other = next(i for i, s in enumerate(shapes) if s != shapes[0])
        (h0, w0), (h1, w1) = shapes[0], shapes[other]
        raise DataError(
            f"{files[0]} is {w0} x {h0} pixels but {files[other]} is {w1} x {h1}: images of "
            "different sizes; --image-size S resizes them all to S x S"
        )
    images, note = _stack(arrays)
    labels = None if labels is None else labels.astype(np.int64)
    return FolderImages(images, labels, classes, notes + note)


def _stack(arrays: list[np.ndarray]) -> tuple[np.ndarray, list[str]]:
    """N x C x H x W uint8 from H x W (grey) and H x W x 3 (colour) arrays; grey ones among
    colour ones are repeated to 3 channels."""
    colour = np.array([a.ndim == 3 for a in arrays])
    n, (h, w) = len(arrays), arrays[0].shape[:2]
    out = np.empty((n, 3 if colour.any() else 1, h, w), dtype=np.uint8)
    hwc = out.transpose(0, 2, 3, 1)  # a view: writing it fills out
    if colour.all() or not colour.any():
        np.stack(arrays, out=hwc if colour.all() else out[:, 0])
        return out, []
    hwc[colour] = np.stack([a for a, c in zip(arrays, colour, strict=True) if c])
    hwc[~colour] = np.stack([a for a, c in zip(arrays, colour, strict=True) if not c])[..., None]
    grey = int((~colour).sum())
    return out, [
        f"{grey} grey and {n - grey} colour images: colour wins, the grey ones are repeated to "
        "3 channels (--channels 1 or 3 chooses)"
    ]


def convert(images: np.ndarray, channels: int | None, size: int | None, where: str) -> np.ndarray:
    """uint8 N x C x H x W images with `channels` channels and size x size pixels, converted as a
    folder's images are (see the module's doc); the same array when they already are."""
    c = images.shape[1]
    recolour = channels is not None and channels != c
    resize = size is not None and images.shape[2:] != (size, size)
    if (recolour or resize) and c not in MODES:
        raise DataError(
            f"{where}: images of {c} channels cannot be converted or resized (1 or 3 can)"
        )
    if recolour:
        images = _to_grey(images) if channels == 1 else np.repeat(images, 3, axis=1)
    if resize:
        images = _resize(images, int(size))  # type: ignore[arg-type]
    return images


def _to_grey(images: np.ndarray) -> np.ndarray:
    """RGB N x 3 x H x W -> N x 1 x H x W by Pillow's convert("L"), a stack of images at a time
    (it is per pixel, so one tall image gives the same pixels as each image alone)."""
    from PIL import Image

    n, _, h, w = images.shape
    out = np.empty((n, 1, h, w), dtype=np.uint8)
    step = max(1, (1 << 22) // max(1, h * w))  # about 4 M pixels a time
    for a in range(0, n, step):
        rgb = np.ascontiguousarray(images[a : a + step].transpose(0, 2, 3, 1)).reshape(-1, w, 3)
        grey = np.asarray(Image.fromarray(rgb).convert("L"))
        out[a : a + step, 0] = grey.reshape(-1, h, w)
    return out


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    """N x C x H x W (C = 1 or 3) -> N x C x size x size, each image by Pillow (bilinear)."""
    from PIL import Image

    c = images.shape[1]

    def one(image: np.ndarray) -> np.ndarray:
        pixels = image[0] if c == 1 else np.ascontiguousarray(image.transpose(1, 2, 0))
        return np.asarray(_resized(Image.fromarray(pixels), size))

    out = np.empty((len(images), c, size, size), dtype=np.uint8)
    resized = _parallel(one, images, len(images))
    np.stack(resized, out=out[:, 0] if c == 1 else out.transpose(0, 2, 3, 1))
    return out

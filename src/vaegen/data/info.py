"""What a data source holds and what training on it would load, as `vaegen data info` prints it:
one line per fact. An image folder is read as training reads it, through the folder cache
(`folder_cache`), and the last line says whether the cache was hit."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import KINDS, UNLABELLED_FOLDER, check_options, effective_test_fraction, read_whole
from .splits import holdout, split_note


def info_lines(
    source: str | Path,
    data_dir: str | Path | None = None,
    *,
    channels: int | None = None,
    image_size: int | None = None,
    test_fraction: float | None = None,
    split_seed: int = 0,
    skip_bad: bool = False,
) -> list[str]:
    """The facts of `source` loaded with these options (those of `data.load_dataset`): its kind,
    image count, image shape C x H x W, pixel range, classes with their counts, the train and
    test split's sizes, notes on what loading did (grey images made colour, files skipped), and
    for an image folder whether the folder cache was hit."""
    check_options(channels, image_size, test_fraction, split_seed)
    fraction = effective_test_fraction(source, test_fraction)
    kind, parts = read_whole(
        source, data_dir, channels=channels, image_size=image_size, skip_bad=skip_bad
    )
    n = sum(len(p) for p in parts)
    c, h, w = parts[0].image_shape
    classes = parts[0].classes
    labelled = parts[0].labels is not None
    what = UNLABELLED_FOLDER if kind == "images" and not labelled else KINDS[kind]
    lines = [f"source: {source} ({what})"]
    if len(parts) == 2:
        lines.append(f"images: {n} (train {len(parts[0])}, test {len(parts[1])})")
    else:
        lines.append(f"images: {n}")
    resized = ", resized by --image-size (bilinear, aspect ratio not kept)" if image_size else ""
    lines.append(f"image shape: {c} x {h} x {w} (C x H x W){resized}")
    colour = "grey" if c == 1 else "colour (RGB)" if c == 3 else f"{c} channels"
    lines.append(f"channels: {c}, {colour}" + (" (converted by --channels)" if channels else ""))
    lo = min(int(p.images.min()) for p in parts)
    hi = max(int(p.images.max()) for p in parts)
    lines.append(f"pixel values: min {lo}, max {hi} (uint8, 0..255)")

    # per class and split: how many images (a split is the source's own, or held out)
    if len(parts) == 2:
        split_labels = [_labels(p.labels, len(p)) for p in parts]
    else:
        whole = _labels(parts[0].labels, n)
        train, test = holdout(whole if labelled else None, n, float(fraction or 0), split_seed)
        split_labels = [whole] if fraction == 0 else [whole[train], whole[test]]
    k = max(len(classes), 1)
    counts = [np.bincount(y, minlength=k) for y in split_labels]
    if labelled:
        lines.append(f"classes: {len(classes)}")
        for i, name in enumerate(classes):
            total = sum(int(cnt[i]) for cnt in counts)
            each = f" (train {counts[0][i]}, test {counts[1][i]})" if len(counts) == 2 else ""
            lines.append(f"  {name}: {total}{each}")
    else:
        lines.append("classes: none (unlabelled)")
    sizes = [len(y) for y in split_labels]
    note = split_note(fraction, split_seed, sizes[0], sizes[-1], labelled)
    lines.append(f"test split: {note}")
    lines += [f"note: {note}" for p in parts[:1] for note in p.notes]
    if parts[0].cache:
        lines.append(f"cache: {parts[0].cache}")
    return lines


def _labels(labels: object, n: int) -> np.ndarray:
    """The labels as int64 numpy, or class 0 for every image of an unlabelled set."""
    return np.zeros(n, np.int64) if labels is None else labels.numpy()  # type: ignore[attr-defined]

"""Class names and labels as vaegen takes them from a dataset, checked when it is loaded.

A class name becomes a line of classes.txt (generate's IDX output), a folder name (its PNG
output) and part of figure file names, so a name with a newline or another control character
is refused (it would shift classes.txt by a line), and `safe_name` makes any name a bounded
file name. Labels are class indices: at most MAX_CLASSES classes.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Sequence

import numpy as np

from ..errors import DataError

# A label is an index into the class names, and a conditional model holds a row of weights per
# class: 65,536 classes is far beyond any labelled image set, and a label of 2,000,000,000 in a
# labels file is corruption, which would otherwise ask for its billions of class names (or a
# label layer of billions of rows) before anything said so.
MAX_CLASSES = 65_536

# A file name may have 255 bytes (ext4, APFS, NTFS in UTF-16 units); vaegen puts prefixes and
# suffixes around a class's name ("manifold_12_<name>.png"), so the name keeps 100 bytes.
SAFE_NAME_BYTES = 100


def check_labels(labels: np.ndarray, where: str) -> None:
    """A DataError naming `where` when the labels (integers, N) hold a negative label or one of
    MAX_CLASSES or more; callers check them before they make anything per class."""
    if not len(labels):
        return
    low, high = int(labels.min()), int(labels.max())
    if low < 0:
        raise DataError(f"{where}: holds the label {low}; labels are class indices, >= 0")
    if high >= MAX_CLASSES:
        raise DataError(
            f"{where}: holds the label {high}; labels are class indices, and vaegen takes at "
            f"most {MAX_CLASSES} classes (labels 0..{MAX_CLASSES - 1}): is the file corrupt?"
        )


def check_class_names(classes: Sequence[str], where: str) -> None:
    """A DataError naming `where` and the class when a class name holds a newline or another
    control character (Unicode category C: Cc, Cf, ...), or there are more than MAX_CLASSES
    names."""
    if len(classes) > MAX_CLASSES:
        raise DataError(f"{where}: {len(classes)} classes; vaegen takes at most {MAX_CLASSES}")
    for name in classes:
        bad = [ch for ch in name if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn")]
        if bad:
            raise DataError(
                f"{where}: the class name {name!r} holds the control character {bad[0]!r}; "
                "class names become lines of classes.txt and file names: rename it"
            )


def safe_name(name: str) -> str:
    """A class name made safe as a file or folder name ("T-shirt/top" -> "T-shirt_top"), at most
    SAFE_NAME_BYTES + 9 bytes of UTF-8: a longer one keeps its first bytes and ends in "-" and 8
    hex digits of the SHA-256 of the whole name, so that different long names stay different."""
    safe = re.sub(r"[^\w.-]+", "_", name).strip("._") or "class"
    raw = safe.encode("utf-8")
    if len(raw) <= SAFE_NAME_BYTES:
        return safe
    head = raw[:SAFE_NAME_BYTES].decode("utf-8", "ignore")  # never half a character
    return f"{head}-{hashlib.sha256(name.encode('utf-8', 'surrogatepass')).hexdigest()[:8]}"

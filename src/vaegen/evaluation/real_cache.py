"""The real side of an evaluation, kept for the next one: what depends only on the dataset, the
feature network and the recipe, not on the run or the images being measured.

Every evaluation of a run (or of images from elsewhere) compares them with real data measured the
same way: the real images' features, the floors (real training images against the test images on
each measure, fresh test images on the memorisation measures), the class agreement of the test
images and the classifiers trained on real images for TSTR. None of it changes from one run of a
dataset to the next, and it is most of the work of a full evaluation; here it is stored once.

Where: cache_root()/evaluation/KEY/ (vaegen's user cache; off with VAEGEN_NO_CACHE=1, as the
folder cache). KEY is the SHA-256 of what the stored numbers depend on: the content of both
splits (features.data_fingerprint), the feature network's identity (its weights' SHA-256), the
recipe (N, seed, the classifiers' epochs and learning rate, every estimator's constants) and
FORMAT with vaegen's version. A different dataset, network or recipe is a different key, so an
entry is never stale; deleting the folder only costs the next evaluation the time to make it
again.

Format: real.safetensors (tensors) and real.json (numbers, and the SHA-256 of the tensors file),
written as one group (files.write_group), read back only when both are whole and agree: a
damaged entry is measured again and replaced. Nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import tensorfiles
from .._version import __version__
from ..data.cache import cache_off, cache_root
from ..errors import VaegenError
from ..files import write_group
from ..locks import lock

log = logging.getLogger(__name__)

FORMAT = "vaegen real side 1"  # a change of what an entry holds or means changes every key
TENSORS = "real.safetensors"
NUMBERS = "real.json"
LOCK = ".lock"  # held while the entry is written: two evaluations never interleave their files


def cache_folder() -> Path | None:
    """cache_root()/evaluation, or None when the cache is off (VAEGEN_NO_CACHE)."""
    if cache_off():
        return None
    return cache_root() / "evaluation"


def cache_key(recipe: dict[str, Any]) -> str:
    """SHA-256 (hex) of `recipe` (JSON-ready: the data's and the network's fingerprints and every
    setting the real side depends on), FORMAT and vaegen's version."""
    text = json.dumps({"format": FORMAT, "vaegen": __version__, **recipe}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class RealSide:
    """One cache entry, read when evaluate starts and written when it ends (if it grew).

    folder: where it lives (None: caching is off, everything is measured). recipe: what its key
    was made from (written beside the numbers, for a reader). hits and misses: the names asked
    for, found or measured."""

    folder: Path | None
    recipe: dict[str, Any]
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    numbers: dict[str, Any] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)
    misses: list[str] = field(default_factory=list)

    def tensor(self, name: str, make: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The stored tensor `name`, or make() stored under it."""
        if name in self.tensors:
            self.hits.append(name)
        else:
            self.tensors[name] = make().contiguous()
            self.misses.append(name)
        return self.tensors[name]

    def number(self, name: str, make: Callable[[], Any]) -> Any:
        """The stored JSON value `name` (a part's floor, an accuracy), or make() stored under it.
        The value goes through JSON once either way, so a fresh result and a cached one are
        equal."""
        if name in self.numbers:
            self.hits.append(name)
        else:
            self.numbers[name] = json.loads(json.dumps(make()))
            self.misses.append(name)
        return self.numbers[name]

    def summary(self) -> dict[str, Any]:
        """What eval.json says of the cache: where, and which names were found or measured."""
        return {
            "folder": None if self.folder is None else str(self.folder),
            "found": sorted(set(self.hits)),
            "measured": sorted(set(self.misses)),
        }

    def save(self) -> None:
        """Write the entry when anything was measured (one group: both files or neither)."""
        if self.folder is None or not self.misses:
            return
        blob = tensorfiles.tensors_to_bytes(self.tensors)
        numbers = {
            "format": FORMAT,
            "recipe": self.recipe,
            "tensors_sha256": hashlib.sha256(blob).hexdigest(),
            "numbers": self.numbers,
        }
        files = {TENSORS: blob, NUMBERS: (json.dumps(numbers, indent=1) + "\n").encode()}
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with lock(self.folder, LOCK, "keeping the real side of an evaluation"):
                write_group(self.folder, files)
        except (OSError, VaegenError) as e:  # a cache that cannot be written costs time only
            log.warning("%s: the real side of this evaluation was not kept (%s)", self.folder, e)


def open_real_side(recipe: dict[str, Any]) -> RealSide:
    """The entry for `recipe`: what it holds when it is whole, else an empty one (measured again
    and replaced when evaluate ends)."""
    root = cache_folder()
    if root is None:
        return RealSide(None, recipe)
    folder = root / cache_key(recipe)
    side = RealSide(folder, recipe)
    if not (folder / NUMBERS).is_file():
        return side
    try:
        numbers = json.loads((folder / NUMBERS).read_text(encoding="utf-8"))
        blob = (folder / TENSORS).read_bytes()
        if numbers.get("format") != FORMAT or numbers.get("recipe") != recipe:
            raise ValueError("made for another recipe")
        if hashlib.sha256(blob).hexdigest() != numbers.get("tensors_sha256"):
            raise ValueError(f"{TENSORS} is not the file its numbers describe")
        tensors = tensorfiles.read_tensors(folder / TENSORS)
        if not isinstance(numbers.get("numbers"), dict):
            raise ValueError("no numbers")
    except (OSError, ValueError, VaegenError, RecursionError, AttributeError) as e:
        log.info("%s: not used (%s); measuring the real side again", folder, e)
        return side
    side.tensors, side.numbers = tensors, numbers["numbers"]
    return side

"""Held-out test splits, for data sources without a test split of their own (.npz files, image
folders).

`holdout(labels, n, fraction, seed)` is a pure function of its arguments: the same labels,
fraction and seed give the same split on every machine and numpy version, because no random
number generator is involved: an image's place in its class's order is a 64-bit hash of the seed
and its index (SplitMix64's mixing function). So training, `vaegen evaluate`, the report and
`rundir.load_split` all reproduce the split a run was trained with from its config.json alone.
"""

from __future__ import annotations

import numpy as np

from ..errors import DataError

DEFAULT_TEST_FRACTION = 0.1  # held out when the user does not say


def check_fraction(fraction: float) -> None:
    """A DataError unless 0 <= fraction < 1."""
    if isinstance(fraction, bool) or not 0 <= fraction < 1:
        raise DataError(
            f"test_fraction = {fraction!r} is not valid: a number >= 0 and < 1 (0.1 holds out "
            "10 % of the images for testing; 0 tests on the training images)"
        )


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's output function (Steele, Lea and Flood 2014), elementwise on uint64 (the
    products wrap around modulo 2**64, as the function intends)."""
    z = x + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def held_out_counts(counts: np.ndarray, fraction: float) -> np.ndarray:
    """How many images of each class to hold out: round(fraction * N) in all (at least 1 when
    fraction > 0), shared out among the classes in proportion to their sizes by the largest
    remainder (ties to the lower class index), so that every class keeps its share."""
    counts = np.asarray(counts, dtype=np.int64)
    n = int(counts.sum())
    if fraction == 0 or n == 0:
        return np.zeros_like(counts)
    total = max(1, int(np.floor(fraction * n + 0.5)))
    if total >= n:
        raise DataError(
            f"holding out {fraction:g} of {n} images for testing leaves none to train on; "
            "use a smaller --test-fraction (or 0: test on the training images)"
        )
    quota = total * counts  # the exact share of class k is quota[k] / n
    take = quota // n
    left = total - int(take.sum())
    by_remainder = np.lexsort((np.arange(len(counts)), -(quota % n)))
    take[by_remainder[:left]] += 1
    return take


def holdout(
    labels: np.ndarray | None, n: int, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, test indices) into n images, each ascending, disjoint and together all n.

    labels: the images' classes (int, N), or None for an unlabelled set (one class). Each class
    holds out its share (`held_out_counts`); within a class the images held out are the first in the
    order of hash(seed, index), so a larger fraction holds out more of the same images. fraction
    0: no split, both are all n images.
    """
    check_fraction(fraction)
    if not 0 <= seed < 2**64:  # hashed as a uint64
        raise DataError(f"split_seed = {seed} is not valid: an integer from 0 to 2**64 - 1")
    every = np.arange(n, dtype=np.int64)
    if fraction == 0:
        return every, every
    strata = np.zeros(n, np.int64) if labels is None else np.asarray(labels, dtype=np.int64)
    if strata.shape != (n,):
        raise DataError(f"{n} images but labels of shape {strata.shape}")
    counts = np.bincount(strata, minlength=1)
    take = held_out_counts(counts, fraction)
    key = _mix(_mix(np.array([seed], dtype=np.uint64)) ^ every.astype(np.uint64))
    order = np.lexsort((every, key, strata))  # by class, then by hash, then by index
    starts = np.cumsum(counts) - counts
    rank = every - starts[strata[order]]  # each image's place within its class's order
    test = np.zeros(n, dtype=bool)
    test[order[rank < take[strata[order]]]] = True
    return np.flatnonzero(~test), np.flatnonzero(test)


def split_note(
    fraction: float | None, seed: int, n_train: int, n_test: int, labelled: bool = True
) -> str:
    """How the test split was made, with its size, in words (the log and `vaegen data info`)."""
    if fraction is None:
        return f"the source's own: {n_train} train, {n_test} test images"
    if fraction == 0:
        return (
            f"none (test fraction 0): train and test are the same {n_train} images, so test "
            "numbers are measured on training images"
        )
    how = "stratified by class" if labelled else "at random (unlabelled, so not stratified)"
    return (
        f"{fraction * 100:g} % held out for testing, {how} (split seed {seed}): "
        f"{n_train} train, {n_test} test images"
    )

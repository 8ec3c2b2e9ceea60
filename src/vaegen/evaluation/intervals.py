"""Uncertainty on every number evaluate reports: bootstrap intervals over the evaluated images, and
intervals over repeated seeds where a classifier is trained.

Three estimators, each returning an `Interval` (value, low, high, the sample size and the method):

bootstrap_interval   a statistic of one or more sets of images (or their features), each set's rows
                     resampled with replacement; for numbers that are a function of the evaluated
                     images alone (Frechet distance, precision and recall, density and coverage,
                     KID), where the images are the only source of chance
seed_interval        the mean over repeated seeds and its Student-t interval; for numbers with a
                     trained classifier inside (TSTR accuracy, a two-sample AUC), where the
                     training run is a source of chance that resampling the images cannot see
binomial_interval    the Wilson score interval of a share of successes (class agreement, the DCR
                     share, a precision or recall read as a proportion of images)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from ..errors import VaegenError

BOOTSTRAP_METHODS = ("percentile", "basic", "BCa")


@dataclass(frozen=True)
class Interval:
    """A number with its two-sided confidence interval.

    value   the estimate (the statistic on the full samples, the mean over seeds, the share)
    low     lower end of the interval, in the value's units
    high    upper end of the interval, in the value's units
    n       the sample size behind it: images (or trials) for one sample, one count per sample
            (in the caller's order) for several, seeds for `seed_interval`
    method  how the interval was made: "bootstrap-percentile", "bootstrap-basic",
            "bootstrap-BCa", "student-t over seeds" or "wilson"
    level   the confidence level, in (0, 1) (0.95 for a 95 % interval)

    `str(interval)` reads "value [low, high]" with 4 significant digits; `format(interval, ".3f")`
    (or an f-string `{interval:.3f}`) applies the caller's format to all three numbers.
    """

    value: float
    low: float
    high: float
    n: int | tuple[int, ...]
    method: str
    level: float

    def __format__(self, spec: str) -> str:
        spec = spec or ".4g"
        return f"{self.value:{spec}} [{self.low:{spec}}, {self.high:{spec}}]"

    def __str__(self) -> str:
        return format(self, "")

    @property
    def width(self) -> float:
        """high - low, in the value's units."""
        return self.high - self.low

    def contains(self, x: float) -> bool:
        """Whether low <= x <= high."""
        return self.low <= x <= self.high

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict for eval.json: plain floats and ints, several sample sizes as a list."""
        n = list(self.n) if isinstance(self.n, tuple) else int(self.n)
        return {
            "value": float(self.value),
            "low": float(self.low),
            "high": float(self.high),
            "n": n,
            "method": self.method,
            "level": float(self.level),
        }


def _check_level(level: float) -> None:
    if not (isinstance(level, (int, float)) and 0.0 < level < 1.0):
        raise VaegenError(f"level = {level!r} is not valid: use a number in (0, 1), e.g. 0.95")


def bootstrap_interval(
    statistic: Callable[..., float],
    *samples: np.ndarray | Sequence[Any],
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    method: str = "percentile",
    paired: bool = False,
) -> Interval:
    """The bootstrap interval of `statistic(*samples)`, resampling the rows of each sample.

    samples    one or more arrays of shape (n_i, ...): row i is one image, or one image's
               feature vector; rows are resampled whole, never the entries within a row
    statistic  called as statistic(*resampled) with arrays of the same shapes (rows in a new
               order, some repeated), returning one number in the caller's units
    paired     False (the default): each sample's rows are resampled independently of the
               others, the case of evaluate, where a statistic compares a set of generated
               features with a set of real features drawn apart from each other (sizes may
               differ). True: the same row indices are drawn for every sample, for samples whose
               rows belong together (e.g. an image's class and its classifier's prediction);
               they must then have the same number of rows.
    method     "percentile" (the default), "basic" or "BCa", as in scipy.stats.bootstrap.
               Percentile costs n_resamples calls of the statistic; BCa adds a jackknife of
               n_i calls per sample, too slow for a Frechet distance at N = 60,000.
    seed       seeds the resampling: the same seed gives the same interval

    The value is the statistic on the full samples; low and high come from scipy.stats.bootstrap
    (vectorized=False, so the statistic is any Python function of whole arrays). The bootstrap
    resamples row indices and the statistic sees the rows they pick, so samples of any shape and
    dtype resample correctly. The interval covers the images' sampling noise only, not that of a
    classifier trained along the way: for those, use `seed_interval`.
    """
    _check_level(level)
    if not samples:
        raise VaegenError("bootstrap_interval needs at least one sample")
    if method not in BOOTSTRAP_METHODS:
        raise VaegenError(f"method = {method!r} is not valid: use one of {BOOTSTRAP_METHODS}")
    if not (isinstance(n_resamples, int) and n_resamples >= 2):
        raise VaegenError(f"n_resamples = {n_resamples!r} is not valid: use an integer >= 2")
    arrays = [np.asarray(s) for s in samples]
    sizes = tuple(len(a) if a.ndim else 0 for a in arrays)
    if min(sizes) < 2:
        raise VaegenError(f"each sample needs at least 2 rows to resample, got sizes {sizes}")
    if paired and len(set(sizes)) > 1:
        raise VaegenError(f"paired samples need the same number of rows, got sizes {sizes}")

    def on_rows(*indices: np.ndarray) -> float:
        return float(statistic(*(a[i] for a, i in zip(arrays, indices, strict=True))))

    result = stats.bootstrap(
        tuple(np.arange(n) for n in sizes),
        on_rows,
        n_resamples=n_resamples,
        vectorized=False,
        paired=paired,
        axis=0,
        confidence_level=level,
        method=method,
        rng=np.random.default_rng(seed),
    )
    ci = result.confidence_interval
    return Interval(
        value=float(statistic(*arrays)),
        low=float(ci.low),
        high=float(ci.high),
        n=sizes[0] if len(sizes) == 1 else sizes,
        method=f"bootstrap-{method}",
        level=float(level),
    )


def seed_interval(values: Sequence[float] | np.ndarray, *, level: float = 0.95) -> Interval:
    """The mean of a number measured once per seed, with its Student-t interval.

    values  shape (n_seeds,): the number from each independent seed (e.g. TSTR accuracy of a
            classifier trained with seeds 0, 1, 2), in the number's units

    mean +/- t_{(1 + level)/2, n - 1} * s / sqrt(n), s the standard deviation with ddof = 1, n
    the number of seeds (the Interval's n). It assumes the per-seed numbers scatter roughly
    normally. With 2 or 3 seeds the interval is wide on purpose (t_{0.975, 1} = 12.7,
    t_{0.975, 2} = 4.3): a spread seen on so few seeds says little about the next one, and the
    interval says so rather than hide it. Fewer than 2 values give no spread and raise.
    """
    _check_level(level)
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(x) < 2:
        raise VaegenError(
            f"an interval over seeds needs at least 2 values, got {len(x)}: run more seeds"
        )
    if not np.all(np.isfinite(x)):
        raise VaegenError(f"an interval over seeds needs finite values, got {x.tolist()}")
    n = len(x)
    mean = float(x.mean())
    half = float(stats.t.ppf((1.0 + level) / 2.0, n - 1)) * float(x.std(ddof=1)) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, "student-t over seeds", float(level))


def binomial_interval(successes: int, n: int, *, level: float = 0.95) -> Interval:
    """The share successes / n with its Wilson score interval (Wilson 1927).

    successes  how many of the n trials succeeded (images of the class asked for, samples
               nearer to a training image than to a held-out one, ...), 0 <= successes <= n
    n          the number of trials, >= 1

    The Wilson interval stays inside [0, 1] and keeps near its nominal coverage for shares near
    0 or 1 and for small n, where the normal (Wald) interval does not.
    """
    _check_level(level)
    if isinstance(n, bool) or not (isinstance(n, (int, np.integer)) and n >= 1):
        raise VaegenError(f"n = {n!r} is not valid: use an integer >= 1")
    if isinstance(successes, bool) or not (
        isinstance(successes, (int, np.integer)) and 0 <= successes <= n
    ):
        raise VaegenError(f"successes = {successes!r} is not valid: use an integer in [0, {n}]")
    ci = stats.binomtest(int(successes), int(n)).proportion_ci(
        confidence_level=level, method="wilson"
    )
    return Interval(
        int(successes) / int(n), float(ci.low), float(ci.high), int(n), "wilson", float(level)
    )

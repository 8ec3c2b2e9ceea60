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
frechet_interval     the bootstrap interval of a Frechet distance between two feature sets, from
                     per-block moments, so that a thousand resamples of 60,000 images cost seconds
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import VaegenError
from .estimators import frechet_distance_batch, frechet_distance_features

BOOTSTRAP_METHODS = ("percentile", "centred", "basic", "BCa")


@dataclass(frozen=True)
class Interval:
    """A number with its two-sided confidence interval.

    value   the estimate (the statistic on the full samples, the mean over seeds, the share)
    low     lower end of the interval, in the value's units
    high    upper end of the interval, in the value's units
    n       the sample size behind it: images (or trials) for one sample or for paired samples
            (one set of rows), one count per sample (in the caller's order) for several
            independent ones, seeds for `seed_interval`
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
    method     "percentile" (the default), "basic" or "BCa", as in scipy.stats.bootstrap, or
               "centred": the resampled values' spread around their median, moved onto the
               value (value + q_low - median, value + q_high - median), for a statistic that
               resampling biases (a quantile or a distance of resampled sets, whose repeated
               rows shift it; see frechet_interval): its interval holds the value and says how
               far another draw of as many images would move it. Percentile and centred cost
               n_resamples calls of the statistic; BCa adds a jackknife of n_i calls per
               sample, too slow for a Frechet distance at N = 60,000.
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

    from scipy import stats  # imported when used: `import vaegen` stays free of scipy

    result = stats.bootstrap(
        tuple(np.arange(n) for n in sizes),
        on_rows,
        n_resamples=n_resamples,
        vectorized=False,
        paired=paired,
        axis=0,
        confidence_level=level,
        method="percentile" if method == "centred" else method,
        rng=np.random.default_rng(seed),
    )
    value = float(statistic(*arrays))
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    if method == "centred":
        middle = float(np.median(result.bootstrap_distribution))
        low, high = value + low - middle, value + high - middle
    return Interval(
        value=value,
        low=low,
        high=high,
        n=sizes[0] if len(sizes) == 1 or paired else sizes,  # paired: one set of rows
        method=f"bootstrap-{method}",
        level=float(level),
    )


def seed_interval(
    values: Sequence[float] | np.ndarray, *, level: float = 0.95, over: str = "seeds"
) -> Interval:
    """The mean of a number measured once per seed, with its Student-t interval.

    values  shape (n_seeds,): the number from each independent seed (e.g. TSTR accuracy of a
            classifier trained with seeds 0, 1, 2), in the number's units; or from each of
            several independent replicates of another kind, which `over` names ("disjoint
            subsets" for the kernel distance of disjoint blocks of images)

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
    from scipy import stats

    half = float(stats.t.ppf((1.0 + level) / 2.0, n - 1)) * float(x.std(ddof=1)) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, f"student-t over {over}", float(level))


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
    from scipy import stats

    ci = stats.binomtest(int(successes), int(n)).proportion_ci(
        confidence_level=level, method="wilson"
    )
    return Interval(
        int(successes) / int(n), float(ci.low), float(ci.high), int(n), "wilson", float(level)
    )


FRECHET_BLOCKS = 1000  # resampling units of frechet_interval: at most this many blocks per set


def _block_moments(
    x: torch.Tensor, blocks: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """x: N x F features in a random order cut into min(N, blocks) blocks of near-equal size:
    (rows per block G, sums G x F, sums of outer products G x F*F, the centre subtracted F), all
    float64, the rows centred on their mean first so that the moments keep their precision."""
    n, width = x.shape
    g = min(n, blocks)
    centre = x.double().mean(0)
    rows = (x.double() - centre)[torch.randperm(n, generator=gen)]
    which = torch.arange(n) * g // n  # block of each row: sizes differ by at most one
    counts = torch.bincount(which, minlength=g)
    sums = torch.zeros(g, width, dtype=torch.float64).index_add_(0, which, rows)
    outer = torch.empty(g, width * width, dtype=torch.float64)
    for i, block in enumerate(torch.split(rows, counts.tolist())):  # blocks are contiguous
        outer[i] = (block.T @ block).flatten()
    return counts.double(), sums, outer, centre


def _resampled_stats(
    moments: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], draws: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Means R x F and covariances R x F x F (divisor n - 1) of R resamples, each the blocks
    counted as draws: R x G times."""
    counts, sums, outer, centre = moments
    width = sums.shape[1]
    n = draws @ counts  # R rows in each resample
    mean = (draws @ sums) / n[:, None]
    second = (draws @ outer).view(-1, width, width)
    cov = (second - n[:, None, None] * mean[:, :, None] * mean[:, None, :]) / (n - 1)[:, None, None]
    return mean + centre, cov


def frechet_interval(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    blocks: int = FRECHET_BLOCKS,
) -> Interval:
    """The Frechet distance of two feature sets (estimators.frechet_distance_features: a N x F and
    b M x F) with its percentile bootstrap interval, each set resampled independently.

    The resampled units are blocks: each set's rows, in a random order (seeded), cut into at most
    `blocks` blocks, each block's row count, sum and sum of outer products kept; a resample draws
    as many blocks with replacement and adds their moments. With one row per block (N <= blocks)
    that is exactly the bootstrap of rows; with larger blocks, each a random subset of the rows,
    it resamples sums of exchangeable rows, whose spread is the rows' (the tests compare the two
    on one set). Work: one pass of N F^2 to make the moments, then n_resamples x blocks x F^2
    for the resamples (seconds, where resampling rows would cost n_resamples x N F^2: minutes at
    N = 60,000); memory: blocks x F^2 float64 per set (131 MB at F = 128).

    The value is the distance of the full sets. The interval is the resampled distances' spread
    around their median, moved onto the value: [value + q_low - median, value + q_high -
    median] (q the tail quantiles), clipped at 0. Not the raw percentiles: a finite sample's
    Frechet distance is biased upward (its covariances carry noise that only adds distance), and
    a resample, whose repeated rows make it noisier still, more so, so the resampled distances
    sit above the value (measured: two sets of one 128-D Gaussian, N = 60,000 and 10,000, give
    0.48 and resampled distances 0.93 to 1.02). The spread is what a fresh draw of as many
    images would move the number by: the interval compares numbers of equal N; it does not say
    where the distance of infinitely many images lies. It covers the images' sampling only.
    """
    _check_level(level)
    if not (isinstance(n_resamples, int) and n_resamples >= 2):
        raise VaegenError(f"n_resamples = {n_resamples!r} is not valid: use an integer >= 2")
    if len(a) < 2 or len(b) < 2:
        raise VaegenError(f"a Frechet interval needs 2 rows a set, got {len(a)} and {len(b)}")
    gen = torch.Generator().manual_seed(seed)
    moments = [_block_moments(x, blocks, gen) for x in (a, b)]
    values = np.empty(n_resamples)
    for start in range(0, n_resamples, 100):  # 100 resamples' moments at a time
        r = min(100, n_resamples - start)
        stats_ab = []
        for m in moments:
            g = len(m[0])
            picks = torch.randint(0, g, (r, g), generator=gen)
            draws = torch.zeros(r, g, dtype=torch.float64).scatter_add_(
                1, picks, torch.ones(r, g, dtype=torch.float64)
            )
            stats_ab.append(_resampled_stats(m, draws))
        (mu1, s1), (mu2, s2) = stats_ab
        values[start : start + r] = frechet_distance_batch(mu1, s1, mu2, s2).numpy()
    tail = (1 - level) / 2
    low, mid, high = np.quantile(values, [tail, 0.5, 1 - tail])
    value = frechet_distance_features(a, b)
    return Interval(
        value=value,
        low=max(0.0, value + float(low - mid)),
        high=value + float(high - mid),
        n=(len(a), len(b)),
        method="bootstrap-percentile",
        level=float(level),
    )

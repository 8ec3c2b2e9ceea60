"""The interval estimators of evaluation/intervals.py against independent facts: their coverage
over many simulated trials, closed forms worked out by hand, determinism and the 1/sqrt(n) law."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from scipy import stats

from vaegen.errors import VaegenError
from vaegen.evaluation.intervals import (
    Interval,
    binomial_interval,
    bootstrap_interval,
    seed_interval,
)

Z_975 = 1.959963984540054  # the standard normal's 97.5 % quantile (table value)
T_975_DF2 = 4.302652729911275  # Student's t, 97.5 % quantile, 2 degrees of freedom (table value)


def band(trials: int, p: float = 0.95) -> tuple[float, float]:
    """The central 99.8 % range of the covered share among `trials` independent trials when the
    true coverage is p: a correct interval lands outside it once in 500 seeds."""
    lo, hi = stats.binom.ppf([0.001, 0.999], trials, p)
    return lo / trials, hi / trials


def mean(x: np.ndarray) -> float:
    return float(np.mean(x))


def mean_difference(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(x) - np.mean(y))


# ---------------------------------------------------------------------------------- coverage


def test_bootstrap_interval_of_a_mean_covers_the_true_mean_at_its_level():
    """200 trials, n = 100 normal draws each. The percentile bootstrap under-covers a little at
    small n (about 0.945 at n = 100), inside the band of 200 trials at 0.95 (0.895..0.99)."""
    rng = np.random.default_rng(1)
    trials, true_mean = 200, 3.0
    covered = [
        bootstrap_interval(
            mean, rng.normal(true_mean, 2.0, size=100), n_resamples=300, seed=t
        ).contains(true_mean)
        for t in range(trials)
    ]
    lo, hi = band(trials)
    assert lo <= np.mean(covered) <= hi


def test_seed_interval_covers_the_true_mean_at_its_level_even_with_three_seeds():
    """The t interval is exact for normal values: 2000 trials of 3 seeds each, band at 0.95."""
    rng = np.random.default_rng(2)
    trials, true_mean = 2000, 0.8
    covered = [
        seed_interval(rng.normal(true_mean, 0.05, size=3)).contains(true_mean)
        for _ in range(trials)
    ]
    lo, hi = band(trials)
    assert lo <= np.mean(covered) <= hi


def test_wilson_interval_covers_a_share_of_0_3_at_its_level():
    """1000 trials of 200 Bernoulli(0.3) draws, band at 0.95 (0.927..0.97). Wilson's coverage
    oscillates with n (Brown, Cai & DasGupta 2001, about 0.93..0.96 at p = 0.3); its exact value
    at n = 200, summed over the binomial distribution, must lie in that range too."""
    p, n, trials = 0.3, 200, 1000
    successes = np.random.default_rng(3).binomial(n, p, size=trials)
    covered = [binomial_interval(int(k), n).contains(p) for k in successes]
    lo, hi = band(trials)
    assert lo <= np.mean(covered) <= hi
    exact = sum(
        stats.binom.pmf(k, n, p) for k in range(n + 1) if binomial_interval(k, n).contains(p)
    )
    assert 0.93 <= exact <= 0.97


def test_two_independent_samples_interval_covers_the_true_difference():
    """Generated and real sets of different sizes and spreads, each resampled on its own: the
    interval of the difference of their means contains the true difference at its level."""
    rng = np.random.default_rng(4)
    trials = 200
    covered = [
        bootstrap_interval(
            mean_difference,
            rng.normal(1.0, 1.0, size=120),
            rng.normal(0.5, 2.0, size=80),
            n_resamples=300,
            seed=t,
        ).contains(0.5)
        for t in range(trials)
    ]
    lo, hi = band(trials)
    assert lo <= np.mean(covered) <= hi


# ------------------------------------------------------------------------------ closed forms


def test_seed_interval_on_one_two_three_is_the_hand_worked_t_interval():
    iv = seed_interval([1.0, 2.0, 3.0])
    half = T_975_DF2 * 1.0 / math.sqrt(3)  # s = 1 with ddof = 1
    assert iv.value == pytest.approx(2.0)
    assert iv.low == pytest.approx(2.0 - half, abs=1e-9)
    assert iv.high == pytest.approx(2.0 + half, abs=1e-9)
    assert (iv.n, iv.level) == (3, 0.95)


def test_wilson_interval_of_8_of_10_is_the_textbook_formula():
    k, n, z = 8, 10, Z_975
    p = k / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z / (1 + z**2 / n) * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    iv = binomial_interval(k, n)
    assert iv.value == pytest.approx(0.8)
    assert iv.low == pytest.approx(centre - half, abs=1e-9)
    assert iv.high == pytest.approx(centre + half, abs=1e-9)
    assert iv.low == pytest.approx(0.4902, abs=1e-4)  # the worked example's printed value
    assert iv.high == pytest.approx(0.9433, abs=1e-4)


def test_wilson_interval_stays_inside_zero_and_one():
    assert binomial_interval(0, 20).low == pytest.approx(0.0, abs=1e-12)
    assert binomial_interval(20, 20).high == pytest.approx(1.0, abs=1e-12)
    assert 0.0 < binomial_interval(0, 20).high < 0.2


def test_bootstrap_width_of_a_mean_matches_the_normal_closed_form():
    """For a mean at large n the bootstrap distribution is near normal with sd s/sqrt(n), so the
    95 % interval is about 2 * 1.96 * s / sqrt(n) wide."""
    x = np.random.default_rng(5).normal(0.0, 3.0, size=2000)
    iv = bootstrap_interval(mean, x, n_resamples=2000, seed=0)
    expected = 2 * Z_975 * x.std(ddof=1) / math.sqrt(len(x))
    assert iv.width == pytest.approx(expected, rel=0.08)
    assert iv.value == pytest.approx(x.mean())  # the statistic on the full sample


# ------------------------------------------------------------------ determinism and scaling


def test_the_same_seed_gives_the_same_interval_and_another_seed_a_close_one():
    x = np.random.default_rng(6).exponential(size=300)
    a = bootstrap_interval(mean, x, seed=11)
    b = bootstrap_interval(mean, x, seed=11)
    c = bootstrap_interval(mean, x, seed=12)
    assert a == b
    assert (c.low, c.high) != (a.low, a.high)
    assert c.value == a.value
    assert abs(c.low - a.low) < 0.1 * a.width and abs(c.high - a.high) < 0.1 * a.width


def test_bootstrap_width_shrinks_as_one_over_root_n():
    rng = np.random.default_rng(7)
    small = bootstrap_interval(mean, rng.normal(size=100), seed=0)
    large = bootstrap_interval(mean, rng.normal(size=1600), seed=0)
    assert small.width / large.width == pytest.approx(4.0, rel=0.15)


# -------------------------------------------------------------------- what gets resampled


def test_rows_of_a_feature_matrix_are_resampled_whole():
    """Features of shape (n, d) whose two columns are equal in every row: a statistic that sees
    a row torn apart would find them different, so its interval would leave zero."""
    x = np.random.default_rng(8).normal(size=(50, 1)).repeat(2, axis=1)
    iv = bootstrap_interval(lambda f: float(np.abs(f[:, 0] - f[:, 1]).max()), x, n_resamples=200)
    assert (iv.value, iv.low, iv.high) == (0.0, 0.0, 0.0)
    assert iv.n == 50


def test_two_samples_are_resampled_independently_unless_paired():
    """y = x + small noise row by row: the difference of means varies little when rows are drawn
    in pairs (sd 0.1 / sqrt(n)) and much more when each set is drawn on its own (sd about
    sqrt(2) / sqrt(n)), so the paired interval is about 14 times narrower."""
    rng = np.random.default_rng(9)
    x = rng.normal(size=400)
    y = x + rng.normal(0.0, 0.1, size=400)
    independent = bootstrap_interval(mean_difference, x, y)
    paired = bootstrap_interval(mean_difference, x, y, paired=True)
    assert independent.n == (400, 400) and paired.n == 400  # paired: one set of rows
    assert independent.width / paired.width == pytest.approx(math.sqrt(2) / 0.1, rel=0.2)


def test_other_bootstrap_methods_agree_on_a_symmetric_statistic():
    x = np.random.default_rng(10).normal(size=200)
    base = bootstrap_interval(mean, x, n_resamples=2000)
    for method in ("basic", "BCa"):
        iv = bootstrap_interval(mean, x, n_resamples=2000, method=method)
        assert iv.method == f"bootstrap-{method}"
        assert iv.low == pytest.approx(base.low, abs=0.1 * base.width)
        assert iv.high == pytest.approx(base.high, abs=0.1 * base.width)


# ---------------------------------------------------------------------- the Interval itself


def test_interval_reads_as_value_and_range_and_writes_to_json():
    iv = Interval(0.123456, 0.1, 0.15, (100, 80), "bootstrap-percentile", 0.95)
    assert str(iv) == "0.1235 [0.1, 0.15]"
    assert f"{iv:.2f}" == "0.12 [0.10, 0.15]"
    d = json.loads(json.dumps(iv.to_dict()))
    assert d == {
        "value": 0.123456,
        "low": 0.1,
        "high": 0.15,
        "n": [100, 80],
        "method": "bootstrap-percentile",
        "level": 0.95,
    }
    assert seed_interval([1.0, 2.0]).to_dict()["n"] == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        iv.value = 1.0  # type: ignore[misc]


# -------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    "call",
    [
        lambda: seed_interval([0.9]),
        lambda: seed_interval([]),
        lambda: seed_interval([0.9, float("nan")]),
        lambda: seed_interval([0.9, 0.8], level=1.0),
        lambda: binomial_interval(3, 0),
        lambda: binomial_interval(11, 10),
        lambda: binomial_interval(-1, 10),
        lambda: bootstrap_interval(mean),
        lambda: bootstrap_interval(mean, np.ones(1)),
        lambda: bootstrap_interval(mean, np.ones(10), method="normal"),
        lambda: bootstrap_interval(mean, np.ones(10), level=95),
        lambda: bootstrap_interval(mean_difference, np.ones(10), np.ones(9), paired=True),
    ],
)
def test_bad_input_is_refused_with_a_clear_error(call):
    with pytest.raises(VaegenError):
        call()


def test_fewer_than_two_seeds_says_so():
    with pytest.raises(VaegenError, match="at least 2 values"):
        seed_interval([0.91])

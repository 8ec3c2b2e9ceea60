"""The classifier two-sample test of evaluation/two_sample.py against independent facts: two
samples of one distribution read 0.5, a known mean shift reads the optimal linear classifier's
analytic AUC, DeLong's variance equals a hand-worked example and a bootstrap, and a sample tested
against itself reads 0.5."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import binom, norm

from vaegen.errors import VaegenError
from vaegen.evaluation.two_sample import TwoSampleResult, delong_auc, two_sample_auc


def _gaussians(seed: int, delta: float = 0.0, n: int = 1000, f: int = 16):
    """n real and n generated points of N(0, I_f), the generated shifted by delta along axis 0."""
    rng = np.random.default_rng(seed)
    real = rng.standard_normal((n, f))
    generated = rng.standard_normal((n, f))
    generated[:, 0] += delta
    return real, generated


def test_two_samples_of_one_gaussian_read_one_half():
    """Real versus real: each interval should hold 0.5 in about 97 % of draws (at least its
    nominal 95 %; see the module's docstring); of 8 seeds, at least 6 must hold it (for a true
    rate of 0.95, fewer than 6 happens with probability 0.006)."""
    assert binom.cdf(5, 8, 0.95) < 0.01
    results = [two_sample_auc(*_gaussians(seed), seed=seed) for seed in range(8)]
    held = sum(r.low <= 0.5 <= r.high for r in results)
    assert held >= 6, [(r.auc, r.low, r.high) for r in results]
    assert abs(np.mean([r.auc for r in results]) - 0.5) < 0.02
    first = results[0]
    assert isinstance(first, TwoSampleResult)
    assert (first.n_per_side, first.folds, first.subsampled) == (1000, 5, False)
    assert first.classifier == "StandardScaler+LogisticRegression"


@pytest.mark.parametrize("delta", [0.5, 1.0])
def test_a_known_shift_reads_the_optimal_linear_auc(delta):
    """Unit-variance Gaussians delta apart along one axis: the best linear classifier projects on
    that axis, and the difference of a generated and a real projection is N(delta, 2), so
    AUC = P(difference > 0) = Phi(delta / sqrt(2)) (0.638 at 0.5, 0.760 at 1). A classifier fitted
    on 1600 points in 16-D reaches a little less; the interval holds the analytic value."""
    analytic = norm.cdf(delta / math.sqrt(2))
    r = two_sample_auc(*_gaussians(11, delta))
    assert r.low <= analytic <= r.high, (r, analytic)
    assert abs(r.auc - analytic) < 0.03


def test_a_large_shift_is_found():
    r = two_sample_auc(*_gaussians(12, 6.0))
    assert r.auc > 0.99 and r.high <= 1.0


def test_delong_variance_of_a_hand_worked_example():
    """positives X = 0.2, 0.6, 0.9; negatives Y = 0.1, 0.6, 0.3, 0.5. psi(x, y) = 1, 1/2, 0 as
    x >, =, < y. V10 (share of Y below each X) = 1/4, 7/8, 1; V01 (share of X above each Y) =
    1, 1/2, 2/3, 2/3; both average 17/24 = AUC. S10 = 93/576 (divisor 2), S01 = 76/1728
    (divisor 3); var = S10 / 3 + S01 / 4 = 31/576 + 19/1728 = 7/108."""
    x = np.array([0.2, 0.6, 0.9])
    y = np.array([0.1, 0.6, 0.3, 0.5])
    auc, var = delong_auc(y, x)
    assert auc == pytest.approx(17 / 24, abs=1e-12)
    assert var == pytest.approx(7 / 108, abs=1e-12)


def test_delong_variance_matches_the_direct_formula_and_a_bootstrap():
    """On scores with many ties, DeLong by midranks equals the O(m n) pairwise formula exactly,
    and a bootstrap (each side resampled, 2000 draws) estimates the same variance to about 10 %."""
    rng = np.random.default_rng(3)
    neg = rng.integers(0, 20, 150).astype(float)
    pos = rng.integers(3, 23, 120).astype(float)
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    v10, v01 = psi.mean(1), psi.mean(0)
    direct = v10.var(ddof=1) / len(pos) + v01.var(ddof=1) / len(neg)
    auc, var = delong_auc(neg, pos)
    assert auc == pytest.approx(psi.mean(), abs=1e-12)
    assert var == pytest.approx(direct, rel=1e-12)

    boot = []
    for _ in range(2000):
        p = pos[rng.integers(0, len(pos), len(pos))]
        n = neg[rng.integers(0, len(neg), len(neg))]
        boot.append(((p[:, None] > n[None, :]) + 0.5 * (p[:, None] == n[None, :])).mean())
    assert np.var(boot) == pytest.approx(var, rel=0.15)


def test_identical_inputs_read_exactly_one_half():
    """generated = real: every value has both labels, is kept in one fold with its twin, and is
    scored the same under both, so the two sides' scores are one multiset: AUC 0.5 exactly."""
    real = np.random.default_rng(5).standard_normal((300, 8))
    r = two_sample_auc(real, real.copy())
    assert r.auc == 0.5
    assert r.low <= 0.5 <= r.high


def test_unequal_sizes_are_subsampled_as_documented():
    real, generated = _gaussians(6, n=1000)
    r = two_sample_auc(torch.from_numpy(real), generated[:250], seed=3)
    assert (r.n_per_side, r.n_real, r.n_generated, r.subsampled) == (250, 1000, 250, True)
    assert r.low <= 0.5 <= r.high
    assert r == two_sample_auc(torch.from_numpy(real), generated[:250], seed=3)  # seeded
    capped = two_sample_auc(real, generated, max_per_side=200)
    assert (capped.n_per_side, capped.subsampled) == (200, True)


def test_bad_inputs_name_the_sizes():
    real = np.zeros((9, 4))
    with pytest.raises(VaegenError, match=r"at least 10 points a side, got 9 real and 30"):
        two_sample_auc(real, np.ones((30, 4)))
    with pytest.raises(VaegenError, match=r"real is 40 x 4, generated 40 x 3"):
        two_sample_auc(np.zeros((40, 4)), np.ones((40, 3)))
    with pytest.raises(VaegenError, match=r"max_per_side = 8"):
        two_sample_auc(np.zeros((40, 4)), np.ones((40, 4)), max_per_side=8)
    with pytest.raises(VaegenError, match="N x F"):
        two_sample_auc(np.zeros(40), np.ones((40, 4)))

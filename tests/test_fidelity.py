"""The fidelity estimators of evaluation/fidelity.py (density and coverage, KID, alpha-precision and
beta-recall) against answers worked out by hand, direct O(N M) implementations in numpy and
closed forms on Gaussians."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vaegen.errors import VaegenError
from vaegen.evaluation.estimators import ball_counts, inside_manifold, manifold_radii
from vaegen.evaluation.fidelity import (
    alpha_beta_curves,
    alpha_precision_beta_recall,
    density_coverage,
    kid,
)


def gaussian(n: int, dim: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g) + shift


def col(values: list[float]) -> torch.Tensor:
    """1-D points as an N x 1 feature tensor."""
    return torch.tensor(values, dtype=torch.float32)[:, None]


# ------------------------------------------------------------------------ density and coverage


def direct_density_coverage(real: np.ndarray, gen: np.ndarray, k: int) -> tuple[float, float]:
    """Naeem et al. 2020 written out over the full N x M distance matrix, in float64, `<=`."""
    real, gen = real.astype(np.float64), gen.astype(np.float64)
    rr = ((real[:, None, :] - real[None, :, :]) ** 2).sum(-1)
    radii = np.sort(rr, axis=1)[:, k]  # k-th nearest other point (column 0 is the point itself)
    rg = ((real[:, None, :] - gen[None, :, :]) ** 2).sum(-1)  # N x M
    inside = rg <= radii[:, None]
    return inside.sum() / (k * len(gen)), inside.any(axis=1).mean()


def test_density_coverage_hand_worked_1d():
    """Real 0, 1, 3, 7; generated 0.5, 11, 20. k = 1: radii 1, 1, 2, 4, balls [-1, 1], [0, 2],
    [1, 5], [3, 11]. 0.5 lies in two balls, 11 in one (on its boundary), 20 in none: density
    (2 + 1 + 0) / (1 * 3) = 1; the balls of 0, 1 and 7 hold a generated point: coverage 3/4.
    k = 2: radii 3, 2, 3, 6, balls [-3, 3], [-1, 3], [0, 6], [1, 13]: 0.5 in three, 11 in one:
    density 4 / (2 * 3) = 2/3; every ball holds one: coverage 1."""
    real, gen = col([0, 1, 3, 7]), col([0.5, 11, 20])
    assert density_coverage(real, gen, k=1) == pytest.approx((1.0, 0.75), abs=1e-12)
    assert density_coverage(real, gen, k=2) == pytest.approx((2 / 3, 1.0), abs=1e-12)


def test_identical_sets_are_fully_covered():
    """X = Y: every ball holds its own centre, so coverage is 1 (with `<` a point with k
    duplicates, radius 0, is never covered). Each ball holds its centre and its k nearest
    neighbours, the k-th on the boundary: density (k + 1) / k exactly."""
    x = gaussian(200, 6, seed=1)
    for k in (1, 3, 5):
        density, coverage = density_coverage(x, x.clone(), k=k)
        assert coverage == 1.0
        assert density == pytest.approx((k + 1) / k, abs=1e-12)
    # repeated points: radius 0 for each, and still covered
    dup = torch.cat([x[:20]] * 6)
    assert density_coverage(dup, dup.clone(), k=5)[1] == 1.0


def test_far_generator_scores_zero():
    real = gaussian(150, 4, seed=2)
    assert density_coverage(real, gaussian(100, 4, seed=3, shift=1000.0)) == (0.0, 0.0)


def test_collapsed_generator_covers_little():
    """All M generated points at one real point X_0: they lie in the same c balls (c >= 1, X_0's
    own among them), so density = c M / (k M) = c / k and coverage = c / N."""
    real = gaussian(400, 5, seed=4)
    k = 5
    density, coverage = density_coverage(real, real[:1].repeat(300, 1), k=k)
    c = coverage * len(real)
    assert c == pytest.approx(round(c)) and c >= 1
    assert density == pytest.approx(c / k, abs=1e-12)
    assert coverage <= 0.05


def test_density_near_one_for_an_independent_sample():
    """Y drawn from X's distribution, independently: a fresh point lies in X_i's ball with
    probability k / N (it would be among X_i's k nearest of N), so E[density] = 1 exactly."""
    real = gaussian(1000, 3, seed=5)
    density, coverage = density_coverage(real, gaussian(1000, 3, seed=6), k=5)
    assert density == pytest.approx(1.0, abs=0.08)
    assert coverage > 0.9


@pytest.mark.parametrize("chunk", [1, 7, 64, 5000])
def test_density_coverage_matches_direct_formula(chunk):
    real = gaussian(120, 8, seed=7)
    gen = gaussian(90, 8, seed=8, shift=0.3)
    for k in (1, 5):
        expected = direct_density_coverage(real.numpy(), gen.numpy(), k)
        got = density_coverage(real, gen, k=k, chunk=chunk)
        assert got == pytest.approx(expected, abs=1e-12)


def test_density_coverage_checks_its_input():
    with pytest.raises(VaegenError):
        density_coverage(gaussian(5, 2, 0), gaussian(5, 2, 1), k=5)  # N must exceed k
    with pytest.raises(VaegenError):
        density_coverage(gaussian(50, 2, 0), gaussian(5, 3, 1))


# ------------------------------------------------------------------------------------------ KID


def direct_mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Binkowski et al. 2018, eq. for the unbiased MMD^2, with explicit a != b masks."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    m, f = x.shape

    def kernel(a, b):
        return (a @ b.T / f + 1) ** 3

    off = ~np.eye(m, dtype=bool)
    return (
        kernel(x, x)[off].sum() / (m * (m - 1))
        + kernel(y, y)[off].sum() / (m * (m - 1))
        - 2 * kernel(x, y).sum() / (m * m)
    )


def test_kid_equals_the_unbiased_formula_on_one_full_subset():
    """subset_size = N = M: every subset is all of both sets, so each estimate is the formula's
    value and the spread over subsets is 0."""
    x, y = gaussian(40, 6, seed=10), gaussian(40, 6, seed=11, shift=0.5)
    expected = direct_mmd2_unbiased(x.numpy(), y.numpy())
    mean, std = kid(x, y, subset_size=40, subsets=3)
    assert mean == pytest.approx(expected, rel=1e-10, abs=1e-12)
    assert std == pytest.approx(0.0, abs=1e-12)
    # subset_size is capped at min(N, M)
    assert kid(x, y, subset_size=1000, subsets=1)[0] == pytest.approx(mean, rel=1e-10)


def test_kid_draws_torch_fidelitys_subsets():
    """torch-fidelity's recipe: RandomState(seed), real then generated indices per subset, each
    without replacement; the mean of the estimates and numpy's std of them."""
    x, y = gaussian(60, 4, seed=12), gaussian(50, 4, seed=13, shift=0.2)
    rng = np.random.RandomState(7)
    values = []
    for _ in range(5):
        xi = rng.choice(60, 20, replace=False)
        yi = rng.choice(50, 20, replace=False)
        values.append(direct_mmd2_unbiased(x.numpy()[xi], y.numpy()[yi]))
    mean, std = kid(x, y, subset_size=20, subsets=5, seed=7)
    assert mean == pytest.approx(np.mean(values), rel=1e-10)
    assert std == pytest.approx(np.std(values), rel=1e-8)


def test_kid_near_zero_for_one_distribution_and_positive_for_a_shift():
    x, y = gaussian(600, 8, seed=14), gaussian(600, 8, seed=15)
    mean, std = kid(x, y, subset_size=200, subsets=50)
    assert abs(mean) < 3 * std
    shifted_mean, shifted_std = kid(x, gaussian(600, 8, seed=16, shift=0.5), subset_size=200)
    assert shifted_mean > 5 * shifted_std and shifted_mean > 20 * abs(mean)


def test_kid_ignores_the_order_of_points():
    x, y = gaussian(50, 5, seed=17), gaussian(50, 5, seed=18, shift=0.3)
    g = torch.Generator().manual_seed(0)
    px, py = x[torch.randperm(50, generator=g)], y[torch.randperm(50, generator=g)]
    a = kid(x, y, subset_size=50, subsets=1)[0]
    assert kid(px, py, subset_size=50, subsets=1)[0] == pytest.approx(a, rel=1e-10)


def test_kid_chunk_does_not_change_it():
    x, y = gaussian(70, 5, seed=19), gaussian(80, 5, seed=20)
    a = kid(x, y, subset_size=60, subsets=4, chunk=7)
    assert a == pytest.approx(kid(x, y, subset_size=60, subsets=4), rel=1e-9, abs=1e-12)


def test_kid_needs_two_points():
    with pytest.raises(VaegenError, match="at least 2"):
        kid(gaussian(1, 3, 0), gaussian(10, 3, 1))
    with pytest.raises(VaegenError):
        kid(gaussian(10, 3, 0), gaussian(10, 3, 1), subsets=0)


# ------------------------------------------------------------- alpha-precision and beta-recall


def reference_alpha_beta(real: np.ndarray, gen: np.ndarray) -> tuple[np.ndarray, ...]:
    """The steps of synthcity's AlphaPrecision.metrics with emb_center=None, in numpy and
    scikit-learn's NearestNeighbors: curves on linspace(0, 1, 30) and their Delta summaries."""
    from sklearn.neighbors import NearestNeighbors

    real, gen = real.astype(np.float64), gen.astype(np.float64)
    alphas = np.linspace(0, 1, 30)
    centre = real.mean(0)
    radii = np.quantile(np.linalg.norm(real - centre, axis=1), alphas)
    gen_to_centre = np.linalg.norm(gen - centre, axis=1)
    real_to_real = NearestNeighbors(n_neighbors=2).fit(real).kneighbors(real)[0][:, 1]
    real_to_gen, arg = NearestNeighbors(n_neighbors=1).fit(gen).kneighbors(real)
    real_to_gen, arg = real_to_gen[:, 0], arg[:, 0]
    spread = np.linalg.norm(gen[arg] - gen.mean(0), axis=1)
    levels = np.quantile(spread, alphas)
    precision = np.array([np.mean(gen_to_centre <= r) for r in radii])
    recall = np.array([np.mean((real_to_gen <= real_to_real) & (spread <= q)) for q in levels])
    deltas = [1 - np.abs(alphas - c).sum() / alphas.sum() for c in (precision, recall)]
    return precision, recall, np.array(deltas)


def test_alpha_beta_match_synthcitys_steps():
    real, gen = gaussian(300, 5, seed=30), gaussian(250, 5, seed=31, shift=0.4) * 1.3
    precision, recall, deltas = reference_alpha_beta(real.numpy(), gen.numpy())
    _, got_p, got_r = alpha_beta_curves(real, gen)
    assert np.allclose(got_p.numpy(), precision, atol=1e-12)
    assert np.allclose(got_r.numpy(), recall, atol=1e-12)
    assert alpha_precision_beta_recall(real, gen) == pytest.approx(tuple(deltas), abs=1e-12)


def test_alpha_beta_on_one_gaussian_follow_their_ideal_curves():
    """Y from X's distribution: precision(alpha) = alpha (the real alpha-quantile ball holds a
    fraction alpha of the same distribution). Recall: by exchangeability a real point's nearest
    neighbour among the other N - 1 real and M generated points is generated with probability
    M / (N - 1 + M), and the beta-quantile factor keeps a fraction beta: recall(beta) near
    beta * M / (N - 1 + M); with the k-th nearest real instead, 1 - prod_{i<k} (N-1-i)/(N-1+M-i)."""
    n, m = 1500, 1500
    real, gen = gaussian(n, 4, seed=21), gaussian(m, 4, seed=22)
    alphas, precision, recall = alpha_beta_curves(real, gen)
    assert len(alphas) == 30 and alphas[0] == 0 and alphas[-1] == 1
    assert (precision - alphas).abs().max() < 0.05
    assert (recall - alphas * m / (n - 1 + m)).abs().max() < 0.05
    k = 4
    reach = 1 - math.prod((n - 1 - i) / (n - 1 + m - i) for i in range(k))
    _, _, recall_k = alpha_beta_curves(real, gen, k=k)
    assert (recall_k - alphas * reach).abs().max() < 0.05
    delta_p, delta_r = alpha_precision_beta_recall(real, gen)
    assert delta_p > 0.9
    assert delta_r == pytest.approx(1 - m / (n - 1 + m), abs=0.06)  # 1 - 2 * integral of b / 2


def test_generator_copying_a_narrow_part_has_low_recall():
    """Generated points copied (with small noise) from the fifth of the real points nearest the
    mean: only those real points (and a few at the core's edge) find a generated point nearer
    than their nearest real neighbour, so the recall curve ends near 0.2 where a generator of
    the real distribution reaches M / (N - 1 + M), about 0.5; with k = 5 the summaries part
    further (about 0.96 against under 0.5). Every generated point lies inside a small real
    ball, so precision(alpha) reaches 1 early and its summary is low."""
    real = gaussian(1500, 4, seed=23)
    core = real[real.norm(dim=1).argsort()[:300]]
    gen = core.repeat(5, 1) + 0.01 * gaussian(1500, 4, seed=24)
    fair = gaussian(1500, 4, seed=25)
    _, _, recall = alpha_beta_curves(real, gen)
    _, _, fair_recall = alpha_beta_curves(real, fair)
    assert 0.2 <= recall[-1] < 0.3 and fair_recall[-1] > 0.45
    delta_p, delta_r = alpha_precision_beta_recall(real, gen)
    fair_p, fair_r = alpha_precision_beta_recall(real, fair)
    assert delta_r < fair_r - 0.1
    assert delta_p < 0.4 and fair_p > 0.9
    assert alpha_precision_beta_recall(real, gen, k=5)[1] < 0.5
    assert alpha_precision_beta_recall(real, fair, k=5)[1] > 0.9


def test_generator_at_the_real_mean_has_zero_precision_summary():
    """Every generated point at the real mean lies in every quantile ball, radius 0 included:
    precision(alpha) = 1 throughout, and 1 - sum (1 - alpha) / sum alpha = 0 on a symmetric grid."""
    real = gaussian(300, 3, seed=26)
    gen = real.double().mean(0).float().repeat(50, 1)
    _, precision, _ = alpha_beta_curves(real, gen)
    assert bool((precision == 1).all())
    assert alpha_precision_beta_recall(real, gen)[0] == pytest.approx(0.0, abs=1e-12)


def test_identical_sets_reach_the_quantile_balls_boundaries():
    """Y = X: the 0-quantile radius is the nearest real point's distance to the mean and the
    1-quantile the farthest's, so (boundary inside) precision is 1/N at alpha = 0 and 1 at 1."""
    real = gaussian(250, 3, seed=29)
    _, precision, _ = alpha_beta_curves(real, real.clone())
    assert precision[0] == pytest.approx(1 / 250) and precision[-1] == 1.0


def test_alpha_beta_chunk_does_not_change_them():
    real, gen = gaussian(200, 6, seed=27), gaussian(150, 6, seed=28, shift=0.2)
    a = alpha_beta_curves(real, gen)
    for chunk in (1, 13):
        b = alpha_beta_curves(real, gen, chunk=chunk)
        assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))


@pytest.mark.parametrize("chunk", [1, 7, 512])
def test_ball_counts_agree_with_inside_manifold(chunk):
    """The two ball-membership loops of estimators.py answer the same question two ways: a
    query is inside the union of balls exactly when some ball holds it, the boundary included."""
    g = torch.Generator().manual_seed(3)
    spread = torch.randn(200, 6, generator=g)
    # five copies of points far from everything: balls of radius 0 (k = 3), which hold a query
    # at their centre only because the boundary counts
    copies = (100.0 * torch.arange(1, 11, dtype=torch.float32))[:, None].expand(10, 6)
    real = torch.cat([spread, copies.repeat_interleave(5, dim=0)])
    queries = torch.cat([torch.randn(150, 6, generator=g), copies, copies + 0.5])
    radii = manifold_radii(real, 3)
    counts = ball_counts(queries, real, radii, chunk)
    assert torch.equal(counts > 0, inside_manifold(queries, real, radii, chunk))
    assert torch.equal(counts[150:160], torch.full((10,), 5))  # on the boundary of 5 balls
    assert int((counts[160:] > 0).sum()) == 0  # beside them: in none

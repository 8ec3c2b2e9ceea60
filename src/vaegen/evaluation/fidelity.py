"""Fidelity and diversity of generated features against real ones, robust to outliers: density and
coverage, KID, alpha-precision and beta-recall.

density_coverage                density and coverage (Naeem, Oh, Uh, Choi & Yoo 2020), by k-NN balls
                                around the real points only, so a few outlying real points cannot
                                inflate them
kid                             the kernel inception distance (Binkowski, Sutherland, Arbel &
                                Gretton 2018): an unbiased MMD^2 with a cubic polynomial kernel,
                                averaged over random subsets; usable at small N
alpha_beta_curves /             alpha-precision and beta-recall (Alaa, van Breugel, Saveliev & van
alpha_precision_beta_recall     der Schaar 2022), in feature space, and their integrated summaries

Every function takes features: real N x F and generated M x F float tensors (CPU), and works in
chunks of rows, never with an N x M matrix at once. Distances are exact (the helpers of
evaluation.estimators), so a point on a ball's boundary is inside it on every machine.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import VaegenError
from .estimators import ball_counts, kth_nearest_sq, manifold_radii, nearest

DC_K = 5  # the neighbourhood size Naeem et al. 2020 recommend for density and coverage
KID_SUBSET_SIZE = 1000  # torch-fidelity's and clean-fid's defaults
KID_SUBSETS = 100
AB_STEPS = 30  # the alpha grid of the authors' code and synthcity: linspace(0, 1, 30)


def _check_pair(real: torch.Tensor, generated: torch.Tensor) -> None:
    """Both sets must be N x F and M x F with the same F and at least one row each."""
    if real.dim() != 2 or generated.dim() != 2:
        raise VaegenError(
            f"features must be 2-D (points x features), got {tuple(real.shape)} (real) and "
            f"{tuple(generated.shape)} (generated)"
        )
    if real.shape[1] != generated.shape[1]:
        raise VaegenError(
            f"real and generated features differ in width: {real.shape[1]} and {generated.shape[1]}"
        )
    if len(real) == 0 or len(generated) == 0:
        raise VaegenError("fidelity measures need at least one real and one generated point")


# ------------------------------------------------------------------------ density and coverage


def density_coverage(
    real: torch.Tensor, generated: torch.Tensor, *, k: int = DC_K, chunk: int = 512
) -> tuple[float, float]:
    """Density and coverage of generated features against real ones (Naeem, Oh, Uh, Choi & Yoo
    2020, "Reliable Fidelity and Diversity Metrics for Generative Models").

    real: N x F (N > k), generated: M x F features. Each real point X_i gets the ball B(X_i, r_i)
    whose radius r_i is its distance to its k-th nearest other real point (as the authors' code,
    clovaai/generative-evaluation-prdc prdc/prdc.py, `compute_nearest_neighbour_distances`: the
    (k+1)-th smallest distance, the point's own 0 being the first; estimators.manifold_radii).

    density  = (1 / (k M)) sum_j sum_i 1[Y_j in B(X_i, r_i)]  (as prdc.py's `density`): how many
               real balls hold a generated point, over k. Unitless, in [0, N/k]; its expectation
               is exactly 1 when the generated points are drawn from the real distribution
               independently of the real points; above 1 when they crowd where the real data is
               dense.
    coverage = (1 / N) sum_i 1[exists j: Y_j in B(X_i, r_i)]  (as prdc.py's `coverage`: the
               nearest generated point lies in the ball): the fraction of real balls holding a
               generated point. Unitless, in [0, 1].

    One difference from prdc.py: membership is |Y_j - X_i|^2 <= r_i^2, the boundary inside,
    where prdc.py uses `<`. With `<`, a real point with k duplicates (r_i = 0) can never be
    covered, not even by an identical set (prdc issue #7). So identical sets of distinct points
    give coverage 1 and density (k + 1) / k here: each ball holds its centre and its k nearest
    neighbours, the k-th on the boundary.

    Distances are exact (fast distances checked against their rounding bound, doubtful pairs
    measured exactly). Work: two passes of `chunk` rows against the real set; memory: a few
    chunk x N float32 arrays, never N x M.
    """
    counts, covered = density_coverage_points(real, generated, k=k, chunk=chunk)
    density = float(counts.double().sum()) / (k * len(generated))
    return density, float(covered.double().mean())


def density_coverage_points(
    real: torch.Tensor, generated: torch.Tensor, *, k: int = DC_K, chunk: int = 512
) -> tuple[torch.Tensor, torch.Tensor]:
    """What density and coverage average (see density_coverage): M int64 counts, the real balls
    holding each generated point (density is their mean over k), and N bools, whether each real
    ball holds a generated point (coverage is their mean)."""
    _check_pair(real, generated)
    if chunk < 1:
        raise VaegenError(f"chunk = {chunk} is not valid: use an integer >= 1")
    real, generated = real.float(), generated.float()
    radii = manifold_radii(real, k, chunk)  # N squared distances
    counts = ball_counts(generated, real, radii, chunk)  # M: balls holding each Y_j
    to_generated = kth_nearest_sq(real, generated, 1, chunk)  # N: nearest generated point
    return counts, to_generated <= radii


# ------------------------------------------------------------------------------------------- KID


def _poly_kernel_sums(x: torch.Tensor, y: torch.Tensor, chunk: int) -> tuple[float, float]:
    """Sum over all pairs of k(x_a, y_b) = (x_a . y_b / F + 1)^3, and the sum of its diagonal
    k(x_a, y_a) (needs len(x) == len(y); nan otherwise). x: P x F, y: Q x F float64. At most
    `chunk` x Q kernel values at once."""
    width = x.shape[1]
    total = 0.0
    for i in range(0, len(x), chunk):
        total += float(((x[i : i + chunk] @ y.T) / width + 1).pow_(3).sum())
    if len(x) != len(y):
        return total, float("nan")
    diag = float(((x * y).sum(1) / width + 1).pow(3).sum())
    return total, diag


def _mmd2_unbiased(x: torch.Tensor, y: torch.Tensor, chunk: int) -> float:
    """The unbiased MMD^2 estimate of two equal-size samples x, y: m x F (float64), cubic
    polynomial kernel; torch-fidelity's mmd2(..., mmd_est="unbiased"):

    sum_{a != b} k(x_a, x_b) / (m (m - 1)) + sum_{a != b} k(y_a, y_b) / (m (m - 1))
        - 2 sum_{a, b} k(x_a, y_b) / m^2.
    """
    m = len(x)
    kxx, kxx_diag = _poly_kernel_sums(x, x, chunk)
    kyy, kyy_diag = _poly_kernel_sums(y, y, chunk)
    kxy, _ = _poly_kernel_sums(x, y, chunk)
    return (kxx - kxx_diag + kyy - kyy_diag) / (m * (m - 1)) - 2 * kxy / (m * m)


def kid(
    real: torch.Tensor,
    generated: torch.Tensor,
    *,
    subset_size: int = KID_SUBSET_SIZE,
    subsets: int = KID_SUBSETS,
    seed: int = 0,
    chunk: int = 512,
) -> tuple[float, float]:
    """Kernel inception distance of generated features against real ones (Binkowski, Sutherland,
    Arbel & Gretton 2018, "Demystifying MMD GANs"): mean and standard deviation, over `subsets`
    random subsets, of the unbiased MMD^2 estimate with the kernel k(x, y) = (x . y / F + 1)^3.

    real: N x F, generated: M x F features. Each subset draws min(subset_size, N, M) real and as
    many generated points, each without replacement, as torch-fidelity does
    (toshas/torch-fidelity, torch_fidelity/metric_kid.py, `kid_features_to_metric`): a
    numpy RandomState(seed), real indices then generated indices for each subset, so the same
    features and seed pick the same subsets there. Capping the subset at the smaller set is
    clean-fid's rule (GaParmar/clean-fid, cleanfid/fid.py, `kernel_distance`); torch-fidelity
    refuses instead. The estimate per subset is torch-fidelity's `mmd2(..., "unbiased")`: the
    within-set kernel sums without their diagonals over m (m - 1), the cross sum over m^2.
    The standard deviation is numpy's default (divisor `subsets`), as torch-fidelity reports it.

    Returns (mean, std) in kernel units (products of features, scaled by 1/F, cubed): 0 in
    expectation when both sets come from one distribution, so a value slightly below 0 is
    possible and means "indistinguishable". Arithmetic in float64 throughout (torch-fidelity
    multiplies in the features' float32); at most `chunk` x subset_size kernel values at once.
    """
    _check_pair(real, generated)
    if subsets < 1:
        raise VaegenError(f"KID subsets = {subsets} is not valid: use an integer >= 1")
    if chunk < 1:
        raise VaegenError(f"chunk = {chunk} is not valid: use an integer >= 1")
    size = min(subset_size, len(real), len(generated))
    if size < 2:
        raise VaegenError(
            f"KID needs subsets of at least 2 points, got {size} (subset_size = {subset_size}, "
            f"{len(real)} real and {len(generated)} generated points)"
        )
    real, generated = real.double(), generated.double()
    rng = np.random.RandomState(seed)
    values = np.empty(subsets)
    for s in range(subsets):
        x = real[torch.from_numpy(rng.choice(len(real), size, replace=False))]
        y = generated[torch.from_numpy(rng.choice(len(generated), size, replace=False))]
        values[s] = _mmd2_unbiased(x, y, chunk)
    return float(values.mean()), float(values.std())


def kid_disjoint(
    real: torch.Tensor,
    generated: torch.Tensor,
    *,
    subset_size: int = KID_SUBSET_SIZE,
    seed: int = 0,
    chunk: int = 512,
) -> np.ndarray:
    """The unbiased MMD^2 (kid's kernel and estimate) of disjoint subsets: both sets shuffled
    (torch generator seeded with `seed`) and cut into B = min(N, M) // subset_size pairs of
    subsets with no image in two of them; B values in kernel units. Unlike kid's overlapping
    subsets, these are independent estimates of one expectation (the MMD^2 does not depend on
    the subset size), so their mean has a Student-t interval (intervals.seed_interval).
    """
    _check_pair(real, generated)
    blocks = min(len(real), len(generated)) // subset_size
    if subset_size < 2 or blocks < 1:
        raise VaegenError(
            f"disjoint KID subsets of {subset_size} need at least that many points a side, "
            f"got {len(real)} real and {len(generated)} generated"
        )
    gen = torch.Generator().manual_seed(seed)
    r_order = torch.randperm(len(real), generator=gen)
    g_order = torch.randperm(len(generated), generator=gen)
    values = np.empty(blocks)
    for b in range(blocks):
        part = slice(b * subset_size, (b + 1) * subset_size)
        x = real[r_order[part]].double()
        y = generated[g_order[part]].double()
        values[b] = _mmd2_unbiased(x, y, chunk)
    return values


# ------------------------------------------------------------- alpha-precision and beta-recall


def _default_alphas() -> torch.Tensor:
    return torch.linspace(0, 1, AB_STEPS, dtype=torch.float64)


def alpha_beta_curves(
    real: torch.Tensor,
    generated: torch.Tensor,
    *,
    alphas: torch.Tensor | None = None,
    k: int = 1,
    chunk: int = 512,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The alpha-precision and beta-recall curves of generated features against real ones
    (Alaa, van Breugel, Saveliev & van der Schaar 2022, "How Faithful is your Synthetic Data?"),
    computed in the features themselves, as synthcity's `AlphaPrecision.metrics` with
    emb_center=None (vanderschaarlab/synthcity, src/synthcity/metrics/eval_statistical.py;
    the same code as the authors' ahmedmalaa/evaluating-generative-models,
    metrics/evaluation.py `compute_alpha_precision`).

    real: N x F (N > k), generated: M x F; alphas: A levels in [0, 1] (default linspace(0, 1, 30),
    as theirs). Returns (alphas, precision, recall), each A float64 values (unitless fractions).

    precision[a] = fraction of generated points Y_j with |Y_j - c| <= R_a, where c is the mean
        of the real features and R_a the alphas[a]-quantile of the real points' distances to c
        (numpy's and torch's linear interpolation): the share of generated points inside the
        smallest centred ball holding a fraction alpha of the real data. Ideal: alpha (a
        generator drawing from the real distribution).
    recall[b] = fraction of real points X_i whose nearest generated point Y*(i) satisfies both
        |X_i - Y*(i)| <= NND_k(X_i), the distance from X_i to its k-th nearest other real point
        (synthcity: k = 1), and |Y*(i) - c_g| <= Q_b, c_g the mean of the generated features and
        Q_b the alphas[b]-quantile of |Y*(i) - c_g| over the real points.

    What this is not. The paper first learns a one-class embedding (Deep SVDD) in which the
    real data's alpha-supports are concentric balls, and measures everything in it; here the
    supports are balls around the real mean in feature space, exact for a spherical Gaussian and
    an approximation otherwise (synthcity's "naive" variant, there on min-max scaled columns;
    here on the features as given). The beta-support is the same estimate as synthcity's, not a
    minimum-volume set. A consequence of their recall estimator, kept here: with k = 1 a
    generator drawing from the real distribution scores recall[b] near alphas[b] * M / (N - 1 + M)
    (about half when M = N: a real point's nearest neighbour among the others is as likely real
    as generated), not alphas[b]; in general alphas[b] * (1 - prod_{i<k} (N-1-i)/(N-1+M-i)).

    Work: nearest neighbours by exact distances in chunks of `chunk` rows (a few chunk x N or
    chunk x M float32 arrays at once); the centre distances in float64.
    """
    _check_pair(real, generated)
    if k < 1:
        raise VaegenError(f"k = {k} is not valid: use an integer >= 1")
    if chunk < 1:
        raise VaegenError(f"chunk = {chunk} is not valid: use an integer >= 1")
    if len(real) <= k:
        raise VaegenError(f"beta-recall with k = {k} needs more than {k} real points")
    alphas = _default_alphas() if alphas is None else torch.as_tensor(alphas, dtype=torch.float64)
    if alphas.dim() != 1 or len(alphas) == 0 or bool((alphas < 0).any() | (alphas > 1).any()):
        raise VaegenError("alphas must be a non-empty 1-D list of levels in [0, 1]")

    real_to_centre, gen_to_centre, close, spread = alpha_beta_points(
        real, generated, k=k, chunk=chunk
    )
    precision = precision_curve(alphas, real_to_centre, gen_to_centre)
    return alphas, precision, recall_curve(alphas, close, spread)


def alpha_beta_points(
    real: torch.Tensor, generated: torch.Tensor, *, k: int = 1, chunk: int = 512
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The per-point quantities the alpha-beta curves are read from (see alpha_beta_curves):
    each real point's distance to the real mean (N), each generated point's (M), whether each
    real point's nearest generated point lies within its k-NN radius (N bools), and that
    generated point's distance to the generated mean (N); float64 distances. Evaluate resamples
    them for the intervals, the centres and neighbours held fixed."""
    real64, gen64 = real.double(), generated.double()
    centre = real64.mean(0)
    real_to_centre = (real64 - centre).norm(dim=1)
    gen_to_centre = (gen64 - centre).norm(dim=1)
    real32, gen32 = real.float(), generated.float()
    real_to_real = kth_nearest_sq(real32, real32, k + 1, chunk)  # N, own 0 counted first
    real_to_gen, gen_index = nearest(real32, gen32, chunk)  # N
    close = real_to_gen <= real_to_real
    spread = (gen64[gen_index] - gen64.mean(0)).norm(dim=1)  # N: |Y*(i) - c_g|
    return real_to_centre, gen_to_centre, close, spread


def precision_curve(
    alphas: torch.Tensor, real_to_centre: torch.Tensor, gen_to_centre: torch.Tensor
) -> torch.Tensor:
    """The alpha-precision curve (A values) at the levels `alphas` from the real (N) and
    generated (M) points' distances to the real mean (alpha_beta_points)."""
    radii = torch.quantile(real_to_centre, alphas)  # A distances
    return (gen_to_centre[None, :] <= radii[:, None]).double().mean(1)


def recall_curve(alphas: torch.Tensor, close: torch.Tensor, spread: torch.Tensor) -> torch.Tensor:
    """The beta-recall curve (A values) at the levels `alphas` from each real point's `close`
    and `spread` (N each; alpha_beta_points)."""
    levels = torch.quantile(spread, alphas)  # A
    return ((spread[None, :] <= levels[:, None]) & close[None, :]).double().mean(1)


def integrated(alphas: torch.Tensor, curve: torch.Tensor) -> float:
    """1 - sum |alphas - curve| / sum alphas: a curve's summary (see
    alpha_precision_beta_recall)."""
    total = float(alphas.sum())
    if total == 0:
        raise VaegenError("alphas must hold at least one level above 0")
    return 1 - float((alphas - curve).abs().sum()) / total


def alpha_precision_beta_recall(
    real: torch.Tensor,
    generated: torch.Tensor,
    *,
    alphas: torch.Tensor | None = None,
    k: int = 1,
    chunk: int = 512,
) -> tuple[float, float]:
    """Integrated alpha-precision and beta-recall (the paper's Delta P_alpha and Delta R_beta)
    of generated features against real ones, from alpha_beta_curves (see there for what the
    curves are and how they differ from the paper's).

    Each is 1 - sum_a |alphas[a] - curve[a]| / sum_a alphas[a], as synthcity computes
    `Delta_precision_alpha` and `Delta_coverage_beta` (for an even grid over [0, 1] this is the
    paper's 1 - 2 integral_0^1 |curve(alpha) - alpha| d alpha; the authors' own code multiplies
    the sum by 2 * step instead of dividing by the sum of the grid, which differs by the factor
    (A - 1) / A). Unitless: 1 when the curve is the diagonal; 0 for a generator that puts every
    point at the real mean (precision 1 at every level); it can fall below 0 for curves further
    from the diagonal, where synthcity raises and this returns the number. With the default
    k = 1, a generator drawing from the real distribution scores recall near 0.5 when M = N
    (see alpha_beta_curves).
    """
    grid, precision, recall = alpha_beta_curves(real, generated, alphas=alphas, k=k, chunk=chunk)
    return integrated(grid, precision), integrated(grid, recall)

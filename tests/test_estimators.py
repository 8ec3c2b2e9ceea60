"""The estimators of evaluation/estimators.py (IWAE bound, Frechet distance, kNN, precision and
recall, class agreement) against closed forms and answers worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from vaegen.errors import VaegenError
from vaegen.evaluation.estimators import (
    class_agreement,
    feature_stats,
    frechet_distance,
    frechet_distance_features,
    inside_manifold,
    iwae_log_likelihood,
    knn_accuracy,
    knn_predict,
    kth_nearest_sq,
    manifold_radii,
    precision_recall,
)
from vaegen.model.likelihoods import GAUSSIAN, GAUSSIAN_SIGMA

# ------------------------------------------------------------------- linear-Gaussian model


class LinearGaussian(nn.Module):
    """x = W z + b + N(0, I) noise with z ~ N(0, I): marginal N(b, W W^T + I).

    W has orthogonal columns, so the exact posterior N(M^-1 W^T (x - b), M^-1), M = I + W^T W,
    is diagonal and an encoder can give it exactly. `shift`/`scale` spoil the encoder.
    """

    def __init__(self, dim: int = 6, latent: int = 2, shift: float = 0.0, scale: float = 1.0):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        q, _ = torch.linalg.qr(torch.randn(dim, latent, generator=g, dtype=torch.float64))
        self.W = nn.Parameter(q * torch.tensor([2.0, 0.7], dtype=torch.float64)[:latent])
        self.b = nn.Parameter(torch.randn(dim, generator=g, dtype=torch.float64))
        self.post_var = 1.0 / (1.0 + (self.W**2).sum(0)).detach()  # diag of M^-1
        self.shift, self.scale = shift, scale

    def encode(self, x, y=None):
        mu = (x.flatten(1) - self.b) @ self.W * self.post_var + self.shift
        logvar = torch.log(self.post_var * self.scale).expand_as(mu)
        return mu, logvar

    def decode(self, z, y=None):
        return (z @ self.W.T + self.b).view(-1, 1, 1, self.W.shape[0])

    def log_px(self, x):
        cov = self.W @ self.W.T + torch.eye(self.W.shape[0], dtype=torch.float64)
        dist = torch.distributions.MultivariateNormal(self.b, covariance_matrix=cov)
        return dist.log_prob(x.flatten(1))

    def elbo(self, x):
        """Closed-form ELBO: E_q[log p(x|z)] - KL(q || p)."""
        mu, logvar = self.encode(x)
        var = logvar.exp()
        resid = x.flatten(1) - mu @ self.W.T - self.b
        dim = self.W.shape[0]
        expected_ll = -0.5 * (resid**2).sum(1) - 0.5 * (var * (self.W**2).sum(0)).sum(1)
        expected_ll = expected_ll - 0.5 * dim * math.log(2 * math.pi)
        kl = -0.5 * (1 + logvar - mu**2 - var).sum(1)
        return expected_ll - kl


def sample_x(model: LinearGaussian, n: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        z = torch.randn(n, model.W.shape[1], generator=g, dtype=torch.float64)
        noise = torch.randn(n, model.W.shape[0], generator=g, dtype=torch.float64)
        return (z @ model.W.T + model.b + noise).view(n, 1, 1, -1)


@pytest.mark.parametrize("k, max_rows", [(1, 8192), (10, 8192), (10, 7), (300, 64)])
def test_iwae_is_exact_with_the_exact_posterior(k, max_rows):
    model = LinearGaussian()
    x = sample_x(model, 50)
    got = iwae_log_likelihood(model, x, None, GAUSSIAN, k=k, seed=3, max_rows=max_rows)
    assert torch.allclose(got, model.log_px(x).detach(), atol=1e-9, rtol=0)


class LinearGaussianSigma(LinearGaussian):
    """The same with noise N(0, sigma^2 I) and a decoder that returns [mean, log sigma], as a
    learned-sigma model's does: marginal N(b, W W^T + sigma^2 I), exact posterior
    N(M^-1 W^T (x - b) / sigma^2, M^-1) with M = I + W^T W / sigma^2."""

    def __init__(self, sigma: float) -> None:
        super().__init__()
        self.sigma = sigma
        self.post_var = 1.0 / (1.0 + (self.W**2).sum(0) / sigma**2).detach()

    def encode(self, x, y=None):
        mu = (x.flatten(1) - self.b) @ self.W * self.post_var / self.sigma**2
        return mu, torch.log(self.post_var).expand_as(mu)

    def decode(self, z, y=None):
        mean = super().decode(z)
        return torch.cat([mean, torch.full_like(mean, math.log(self.sigma))], dim=1)

    def log_px(self, x):
        cov = self.W @ self.W.T + self.sigma**2 * torch.eye(self.W.shape[0], dtype=torch.float64)
        dist = torch.distributions.MultivariateNormal(self.b, covariance_matrix=cov)
        return dist.log_prob(x.flatten(1))


def test_iwae_is_exact_with_the_exact_posterior_of_a_learned_sigma_decoder():
    """The learned-sigma likelihood's log-density, through the IWAE bound, is the model's exact
    log p(x) (a wrong sigma in the density, or mean and sigma swapped, would not be)."""
    model = LinearGaussianSigma(sigma=0.3)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        z = torch.randn(50, 2, generator=g, dtype=torch.float64)
        noise = 0.3 * torch.randn(50, 6, generator=g, dtype=torch.float64)
        x = (z @ model.W.T + model.b + noise).view(50, 1, 1, -1)
    got = iwae_log_likelihood(model, x, None, GAUSSIAN_SIGMA, k=7, seed=3)
    assert torch.allclose(got, model.log_px(x).detach(), atol=1e-9, rtol=0)


def test_iwae_with_an_imperfect_encoder_tightens_toward_log_px():
    model = LinearGaussian(shift=0.4, scale=2.5)
    x = sample_x(model, 4000)
    log_px = model.log_px(x).detach()
    elbo = model.elbo(x).detach()
    assert float((log_px - elbo).mean()) > 0.3  # the encoder is bad enough to matter
    # K = 1 is the ELBO in expectation (within 4 standard errors)
    one = iwae_log_likelihood(model, x, None, GAUSSIAN, k=1, seed=5)
    diff = one - elbo
    assert abs(float(diff.mean())) < 4 * float(diff.std()) / math.sqrt(len(x))
    # the bound rises with K and stays below log p(x), closing most of the gap by K = 1000
    x, target = x[:200], float(log_px[:200].mean())
    bounds = [
        float(iwae_log_likelihood(model, x, None, GAUSSIAN, k=k, seed=5, max_rows=50_000).mean())
        for k in (1, 10, 100, 1000)
    ]
    # strictly for the first steps; from K = 100 on the rise is below the noise of 200 images
    assert bounds[0] < bounds[1] < bounds[2] <= bounds[3] + 0.02
    assert max(bounds) <= target + 1e-3
    assert target - bounds[-1] < 0.05 * (target - bounds[0])


def test_iwae_is_repeatable_and_checks_k():
    model = LinearGaussian(shift=0.4)
    x = sample_x(model, 20)
    a = iwae_log_likelihood(model, x, None, GAUSSIAN, k=17, seed=2)
    assert torch.equal(a, iwae_log_likelihood(model, x, None, GAUSSIAN, k=17, seed=2))
    assert not torch.equal(a, iwae_log_likelihood(model, x, None, GAUSSIAN, k=17, seed=3))
    with pytest.raises(VaegenError, match="iw_samples = 0 is not valid"):
        iwae_log_likelihood(model, x, None, GAUSSIAN, k=0)


# ---------------------------------------------------------------------------------- Frechet


def test_frechet_distance_closed_forms():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(5, 5, generator=g, dtype=torch.float64)
    s = a @ a.T + 0.1 * torch.eye(5, dtype=torch.float64)
    mu1 = torch.randn(5, generator=g, dtype=torch.float64)
    mu2 = torch.randn(5, generator=g, dtype=torch.float64)
    assert frechet_distance(mu1, s, mu1, s) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(mu1, s, mu2, s) == pytest.approx(float(((mu1 - mu2) ** 2).sum()))
    d1 = torch.tensor([1.0, 4.0, 0.25, 9.0], dtype=torch.float64)
    d2 = torch.tensor([2.0, 1.0, 0.25, 0.0], dtype=torch.float64)  # one singular direction
    m = torch.zeros(4, dtype=torch.float64)
    want = float(((d1.sqrt() - d2.sqrt()) ** 2).sum()) + 3.0
    got = frechet_distance(m, torch.diag(d1), m + torch.tensor([1.0, 1, 1, 0]), torch.diag(d2))
    assert got == pytest.approx(want, rel=1e-10)
    # symmetric in its two arguments even for non-commuting covariances
    b = torch.randn(5, 5, generator=g, dtype=torch.float64)
    s2 = b @ b.T
    assert frechet_distance(mu1, s, mu2, s2) == pytest.approx(frechet_distance(mu2, s2, mu1, s))


def test_frechet_distance_on_samples_of_known_gaussians():
    g = torch.Generator().manual_seed(1)
    n, dim = 40000, 3
    x = torch.randn(n, dim, generator=g, dtype=torch.float64) * torch.tensor([1.0, 2.0, 0.5])
    y = torch.randn(n, dim, generator=g, dtype=torch.float64) * torch.tensor([3.0, 2.0, 1.0])
    y = y + torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64)
    want = (1 - 3) ** 2 + 0 + (0.5 - 1) ** 2 + 2.0
    assert frechet_distance_features(x, y) == pytest.approx(want, rel=0.03)
    mu, cov = feature_stats(x)
    assert mu.dtype == torch.float64 and cov.shape == (dim, dim)
    with pytest.raises(VaegenError, match="at least 2 samples"):
        feature_stats(x[:1])


# -------------------------------------------------------------------------------------- kNN


def test_knn_majority_vote_and_ties_toward_the_nearest():
    train_z = torch.tensor([[0.0], [1.0], [2.0], [3.0], [4.0], [10.0], [11.0]])
    train_y = torch.tensor([0, 0, 1, 1, 2, 2, 2])
    test_z = torch.tensor([[0.1], [2.6], [10.5], [1.9]])
    # 0.1: neighbours 0,1,2,3,4 -> labels 0,0,1,1,2: tie 0/1, nearest (label 0) wins
    # 2.6: neighbours 3(1),2(1),4(2),1(0),0(0) -> 1 wins 2 votes vs 2 votes of 0: tie, nearest is 1
    # 10.5: neighbours 10,11,4,3,2 -> 2,2,2,1,1 -> 2
    # 1.9: neighbours 2(1),1(0),3(1),0(0),4(2) -> tie 0/1, nearest is label 1
    pred = knn_predict(train_z, train_y, test_z, k=5, chunk=3)
    assert pred.tolist() == [0, 1, 2, 1]
    assert knn_accuracy(train_z, train_y, test_z, torch.tensor([0, 1, 2, 0])) == 0.75
    # k larger than the training set uses all of it
    assert knn_predict(train_z[:2], train_y[:2], test_z[:1], k=5).tolist() == [0]


def test_frechet_distance_of_feature_sets_to_themselves_and_to_a_shifted_copy():
    g = torch.Generator().manual_seed(2)
    a = torch.randn(300, 4, generator=g) @ torch.randn(4, 4, generator=g)  # correlated features
    shift = torch.tensor([0.5, -2.0, 0.0, 1.5])
    assert frechet_distance_features(a, a) == pytest.approx(0.0, abs=1e-9)
    # the same covariance: only the means differ, by `shift`
    assert frechet_distance_features(a, a + shift) == pytest.approx(float(shift.pow(2).sum()))
    assert frechet_distance_features(a + shift, a) == pytest.approx(float(shift.pow(2).sum()))


# ---------------------------------------------------------------------- precision and recall


def _features(n, dim=16, seed=0):
    """n ReLU'd Gaussian feature vectors, like a classifier's penultimate layer."""
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed)).relu() * 4


def test_precision_recall_of_a_set_with_itself_is_one_and_one():
    real = _features(300)
    # every point lies in its own ball (distance 0): no rounding may push it out
    assert precision_recall(real, real.clone(), chunk=64) == (1.0, 1.0)


def test_precision_recall_of_a_collapsed_generator_is_high_precision_and_no_recall():
    real = _features(400)
    g = torch.Generator().manual_seed(1)
    # every sample a hair away from one real point: realistic, but one image over and over
    generated = real[7] + 1e-3 * torch.rand(200, real.shape[1], generator=g)
    precision, recall = precision_recall(real, generated, chunk=64)
    assert precision == 1.0
    # the samples' balls are as tiny as their spread: at most the point they sit on is covered
    assert recall <= 1 / len(real)


def test_precision_recall_of_a_set_far_away_is_zero_and_zero():
    real = _features(300)
    assert precision_recall(real, _features(200, seed=1) + 1000.0) == (0.0, 0.0)


def _square(x, y, a=3.0, b=4.0):
    """The corners of an a x b rectangle at (x, y): each corner's 3rd nearest other corner is the
    opposite one, at the diagonal sqrt(a^2 + b^2) (5 for 3 x 4)."""
    return [[x, y], [x + a, y], [x, y + b], [x + a, y + b]]


def test_precision_recall_by_hand_in_two_dimensions():
    # real: three 3 x 4 rectangles, every ball of radius 5 (k = 3)
    s1, s2, s3 = _square(0, 0), _square(100, 0), _square(50.2, 0)
    real = torch.tensor(s1 + s2 + s3)
    # generated: a 0.3 x 0.4 rectangle in the middle of s1 (balls of radius 0.5), a 3 x 4 one
    # 0.2 from s3, and a 3 x 4 one whose left corners are exactly 5 right of s2's right corners
    t1, t2, t3 = _square(1.35, 1.8, 0.3, 0.4), _square(50, 0), _square(108, 0)
    generated = torch.tensor(t1 + t2 + t3)
    # precision: t1 lies inside s1's balls (2.25 from the nearest corner, <= 5); t2 within 0.2
    # of s3; t3's left corners on the boundary of s2's right corners' balls (5 <= 5, inside),
    # its right corners 8 away: 4 + 4 + 2 of 12
    # recall: s1's corners are 2.25 from t1, whose balls are 0.5, and 47 from t2: outside; s3
    # inside t2's balls; s2's right corners on the boundary of t3's, its left ones 8 away:
    # 0 + 4 + 2 of 12
    assert precision_recall(real, generated, k=3, chunk=5) == pytest.approx((10 / 12, 6 / 12))
    torch.testing.assert_close(manifold_radii(real, 3), torch.full((12,), 25.0))
    assert manifold_radii(generated, 3)[:4].tolist() == pytest.approx([0.25] * 4)
    # with k = 1 every real ball shrinks to the rectangles' short side, 3: t1 is 2.25 from s1
    # (inside), t2 0.2 from s3 (inside), t3 5 > 3 from s2 (outside)
    assert precision_recall(real, generated, k=1)[0] == pytest.approx(8 / 12)


def test_the_fast_screen_gives_the_answer_of_exact_distances_everywhere():
    """The estimator screens with matrix-product distances; on points full of exact ties and
    duplicates (an integer grid) it must agree with exact distances throughout."""
    g = torch.Generator().manual_seed(3)
    points = torch.randint(0, 3, (500, 4), generator=g).float()
    queries = torch.randint(0, 4, (300, 4), generator=g).float()
    exact = torch.cdist(points, points, compute_mode="donot_use_mm_for_euclid_dist").square()
    radii = exact.kthvalue(4, dim=1).values  # k = 3, a point's own distance 0 counted first
    to_points = torch.cdist(queries, points, compute_mode="donot_use_mm_for_euclid_dist")
    inside = (to_points.square() <= radii).any(1)
    assert 0.2 < float(inside.double().mean()) < 0.8  # neither answer is trivial
    assert torch.equal(manifold_radii(points, 3, chunk=37), radii)
    assert torch.equal(inside_manifold(queries, points, radii, chunk=37), inside)
    # far from the origin the matrix product's rounding (about 300 in squared units here) swamps
    # the distances (at most 36): the screen must leave every decision to exact distances, which
    # do not move with the shift (integers below 2^24 are exact in float32)
    far_points, far_queries = points + 3000.0, queries + 3000.0
    assert torch.equal(manifold_radii(far_points, 3, chunk=37), radii)
    assert torch.equal(inside_manifold(far_queries, far_points, radii, chunk=37), inside)
    # the nearest and the 5th nearest point of each query, ties and all, near and far
    for kth in (1, 5):
        want = to_points.square().kthvalue(kth, dim=1).values
        assert torch.equal(kth_nearest_sq(queries, points, kth, chunk=37), want)
        assert torch.equal(kth_nearest_sq(far_queries, far_points, kth, chunk=37), want)


def test_manifold_radii_needs_more_points_than_k():
    with pytest.raises(VaegenError, match="needs more than 3 points, got 3"):
        manifold_radii(torch.zeros(3, 2), 3)


# ------------------------------------------------------------------------------- agreement


def test_class_agreement_by_hand():
    predicted = torch.tensor([0, 1, 1, 2, 0])
    requested = torch.tensor([0, 1, 2, 2, 2])
    overall, per_class = class_agreement(predicted, requested, 4)
    assert overall == pytest.approx(3 / 5)
    assert per_class == [1.0, 1.0, pytest.approx(1 / 3), None]  # nothing asked of class 3
    with pytest.raises(VaegenError, match="at least one image"):
        class_agreement(predicted[:0], requested[:0], 4)

"""The estimators of metrics.py (IWAE bound, Frechet distance, kNN) against closed forms."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from vaegen.errors import VaegenError
from vaegen.losses import GAUSSIAN
from vaegen.metrics import (
    feature_stats,
    frechet_distance,
    frechet_distance_features,
    iwae_log_likelihood,
    knn_accuracy,
    knn_predict,
)

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
    got = iwae_log_likelihood(model, x, None, GAUSSIAN, k, seed=3, max_rows=max_rows)
    assert torch.allclose(got, model.log_px(x).detach(), atol=1e-9, rtol=0)


def test_iwae_with_an_imperfect_encoder_tightens_toward_log_px():
    model = LinearGaussian(shift=0.4, scale=2.5)
    x = sample_x(model, 4000)
    log_px = model.log_px(x).detach()
    elbo = model.elbo(x).detach()
    assert float((log_px - elbo).mean()) > 0.3  # the encoder is bad enough to matter
    # K = 1 is the ELBO in expectation (within 4 standard errors)
    one = iwae_log_likelihood(model, x, None, GAUSSIAN, 1, seed=5)
    diff = one - elbo
    assert abs(float(diff.mean())) < 4 * float(diff.std()) / math.sqrt(len(x))
    # the bound rises with K and stays below log p(x), closing most of the gap by K = 1000
    x, target = x[:200], float(log_px[:200].mean())
    bounds = [
        float(iwae_log_likelihood(model, x, None, GAUSSIAN, k, seed=5, max_rows=50_000).mean())
        for k in (1, 10, 100, 1000)
    ]
    # strictly for the first steps; from K = 100 on the rise is below the noise of 200 images
    assert bounds[0] < bounds[1] < bounds[2] <= bounds[3] + 0.02
    assert max(bounds) <= target + 1e-3
    assert target - bounds[-1] < 0.05 * (target - bounds[0])


def test_iwae_is_repeatable_and_checks_k():
    model = LinearGaussian(shift=0.4)
    x = sample_x(model, 20)
    a = iwae_log_likelihood(model, x, None, GAUSSIAN, 17, seed=2)
    assert torch.equal(a, iwae_log_likelihood(model, x, None, GAUSSIAN, 17, seed=2))
    assert not torch.equal(a, iwae_log_likelihood(model, x, None, GAUSSIAN, 17, seed=3))
    with pytest.raises(VaegenError, match="iw_samples = 0 is not valid"):
        iwae_log_likelihood(model, x, None, GAUSSIAN, 0)


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

"""`vaegen evaluate`: each estimator against a closed form, then the whole scorecard end to end."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from vaegen import load_run, train
from vaegen.classifier import Classifier, accuracy, load_reference_classifier, reference_info
from vaegen.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaegen.data import load_dataset
from vaegen.errors import VaegenError
from vaegen.evaluate import evaluate
from vaegen.losses import GAUSSIAN
from vaegen.metrics import (
    feature_stats,
    frechet_distance,
    frechet_distance_features,
    iwae_log_likelihood,
    knn_accuracy,
    knn_predict,
)
from vaegen.scorecard import format_table

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


# ---------------------------------------------------------------------------- end to end


def _tiny_conditional_run(tiny_data, tmp_path, loss="gaussian"):
    config = RunConfig(
        DataConfig(str(tiny_data)),
        ModelConfig(conditional=True, hidden=32),
        TrainConfig(epochs=3, batch_size=32, lr=3e-3, loss=loss),
    )
    train(config, tmp_path / f"run-{loss}", progress=False)
    return load_run(tmp_path / f"run-{loss}")


def test_evaluate_end_to_end_on_a_tiny_conditional_run(tiny_data, tmp_path):
    run = _tiny_conditional_run(tiny_data, tmp_path)
    kw = {"iw_samples": 30, "n_generated": 120, "quick": True, "seed": 0, "progress": False}
    result = evaluate(run, **kw)
    saved = json.loads((run.path / "eval.json").read_text())
    assert saved == json.loads(json.dumps(result))
    s = saved["settings"]
    assert (s["iw_samples"], s["n_generated"], s["seed"], s["quick"]) == (30, 120, 0, True)
    assert s["binarize"] is False and s["classifier_epochs"] >= 1
    assert saved["vaegen_version"]
    lk = saved["likelihood"]
    for key in ("negative_elbo", "reconstruction", "kl", "nll_bound_iwae"):
        assert set(lk[key]) == {"value", "units"} and math.isfinite(lk[key]["value"])
    assert (
        "gaussian-loss units" in lk["negative_elbo"]["units"]
        and lk["kl"]["units"] == "nats per image"
    )
    assert lk["negative_elbo"]["value"] == pytest.approx(
        lk["reconstruction"]["value"] + lk["kl"]["value"]
    )
    assert lk["nll_bound_iwae"]["value"] <= lk["negative_elbo"]["value"]
    g = lk["gaussian_nll_nats"]
    assert g["nll_bound_iwae"]["value"] == pytest.approx(
        lk["nll_bound_iwae"]["value"] + 0.5 * 144 * math.log(2 * math.pi)
    )
    assert 0 <= saved["latent_knn"]["accuracy"]["value"] <= 1
    assert "skipped" in saved["frechet"] and "(1, 28, 28)" in saved["frechet"]["skipped"]
    t = saved["tstr"]
    for key in ("synthetic_accuracy", "real_accuracy"):
        assert 0 <= t[key]["value"] <= 1 and t[key]["units"] == "fraction of test images"
    assert t["ratio"]["value"] == pytest.approx(
        t["synthetic_accuracy"]["value"] / t["real_accuracy"]["value"]
    )
    for part in ("likelihood", "knn", "frechet", "tstr", "total"):
        assert saved["seconds"][part]["units"] == "seconds"
    # the same seed gives the same numbers; another seed other ones
    again = evaluate(run, **kw)
    assert {k: v for k, v in again.items() if k != "seconds"} == {
        k: v for k, v in result.items() if k != "seconds"
    }
    other = evaluate(run, **{**kw, "seed": 1})
    assert other["likelihood"]["nll_bound_iwae"] != result["likelihood"]["nll_bound_iwae"]
    table = format_table(result)
    assert "NLL bound, IWAE K=30" in table and "train synthetic, test real" in table
    assert "Frechet distance" in table and "skipped" in table


def test_evaluate_unconditional_bernoulli_and_binarize(tiny_data, tmp_path):
    config = RunConfig(
        DataConfig(str(tiny_data)),
        ModelConfig(hidden=32),
        TrainConfig(epochs=1, batch_size=32, loss="bernoulli"),
    )
    run = train(config, tmp_path / "b", progress=False)
    kw = {"iw_samples": 5, "n_generated": 50, "quick": True, "progress": False}
    result = evaluate(run, binarize=True, **kw)
    assert result["tstr"] == {"not_applicable": "the model is not conditional"}
    assert "binarised" in result["likelihood"]["data"]
    assert result["likelihood"]["nll_bound_iwae"]["units"].startswith("nats per image")
    assert "gaussian_nll_nats" not in result["likelihood"]
    assert "not applicable: the model is not conditional" in format_table(result)
    seed_run = train(
        RunConfig(DataConfig(str(tiny_data)), ModelConfig(hidden=32), TrainConfig(epochs=1)),
        tmp_path / "s",
        progress=False,
    )
    with pytest.raises(
        VaegenError,
        match=r"--binarize needs a model trained with a likelihood of binary pixels \(--loss bernoulli\)",
    ):
        evaluate(seed_run, binarize=True, **kw)
    with pytest.raises(VaegenError, match="n_generated = 1 is not valid"):
        evaluate(seed_run, **{**kw, "n_generated": 1})


def test_classifier_adapts_to_the_image_shape():
    for shape in ((1, 28, 28), (3, 12, 12), (1, 5, 3), (2, 1, 1)):
        model = Classifier(shape, 4)
        x = torch.rand(2, *shape)
        assert model(x).shape == (2, 4) and model.features(x).shape == (2, 128)


@pytest.mark.real_data
def test_shipped_reference_classifier_reaches_91_percent(fashion_dir):
    info = reference_info()
    assert info["test_accuracy"] >= 0.91 and info["epochs"] >= 1
    test = load_dataset(str(fashion_dir), "test")
    acc = accuracy(load_reference_classifier(), test.images, test.labels)
    assert acc >= 0.91
    assert acc == pytest.approx(info["test_accuracy"], abs=2e-3)

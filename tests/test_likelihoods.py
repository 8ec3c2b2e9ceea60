"""Losses and the reparameterisation against independent facts."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Bernoulli, Normal, kl_divergence as torch_kl

from vaegen.model.likelihoods import BERNOULLI, GAUSSIAN, kl_divergence, likelihood
from vaegen.model.vae import reparameterize


def test_kl_matches_torch_distributions_closed_form():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(50, 3, generator=g, dtype=torch.float64)
    logvar = torch.randn(50, 3, generator=g, dtype=torch.float64)
    q = Normal(mu, torch.exp(0.5 * logvar))
    p = Normal(torch.zeros_like(mu), torch.ones_like(mu))
    torch.testing.assert_close(kl_divergence(mu, logvar), torch_kl(q, p).sum(1))


def test_kl_of_the_prior_is_zero_and_by_hand():
    assert kl_divergence(torch.zeros(1, 4), torch.zeros(1, 4)).item() == 0.0
    # 1-D, mu = 1, var = e: 0.5 * (e + 1 - 1 - 1) = 0.5 * (e - 1)
    value = kl_divergence(torch.tensor([[1.0]]), torch.tensor([[1.0]])).item()
    assert value == pytest.approx(0.5 * (math.e - 1), rel=1e-6)


def test_kl_matches_a_monte_carlo_estimate():
    g = torch.Generator().manual_seed(1)
    mu = torch.tensor([[0.7, -1.2]], dtype=torch.float64)
    logvar = torch.tensor([[-0.5, 0.8]], dtype=torch.float64)
    z = mu + torch.exp(0.5 * logvar) * torch.randn(400_000, 2, generator=g, dtype=torch.float64)
    q = Normal(mu, torch.exp(0.5 * logvar))
    p = Normal(0.0, 1.0)
    mc = (q.log_prob(z) - p.log_prob(z)).sum(1)
    assert mc.mean().item() == pytest.approx(
        kl_divergence(mu, logvar).item(), abs=4 * mc.std().item() / 632
    )


def test_gaussian_loss_is_half_the_summed_squared_error_per_image():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(6, 1, 28, 28, generator=g)
    recon = torch.rand(6, 1, 28, 28, generator=g)
    mu, logvar = torch.zeros(6, 2), torch.zeros(6, 2)
    terms = GAUSSIAN.terms(recon, x, mu, logvar)
    assert terms.recon.shape == (6,)
    # the article's batch loss: 0.5 * MSELoss(reduction="sum") over the batch
    article = 0.5 * F.mse_loss(recon, x, reduction="sum")
    torch.testing.assert_close(terms.recon.sum(), article)
    torch.testing.assert_close(terms.recon[0], 0.5 * ((recon[0] - x[0]) ** 2).sum())


def test_bernoulli_loss_is_the_summed_binary_cross_entropy_in_nats():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(4, 1, 5, 5, generator=g)
    logits = torch.randn(4, 1, 5, 5, generator=g)
    terms = BERNOULLI.terms(logits, x, torch.zeros(4, 2), torch.zeros(4, 2))
    p = torch.sigmoid(logits)
    by_hand = -(x * torch.log(p) + (1 - x) * torch.log(1 - p)).flatten(1).sum(1)
    torch.testing.assert_close(terms.recon, by_hand, rtol=1e-5, atol=1e-5)


def test_reparameterize_has_the_right_mean_and_variance():
    g = torch.Generator().manual_seed(4)
    mu = torch.full((200_000, 2), 1.5)
    logvar = torch.tensor([math.log(0.25), math.log(4.0)]).expand(200_000, 2)
    z = reparameterize(mu, logvar, g)
    assert z.mean(0).tolist() == pytest.approx([1.5, 1.5], abs=0.02)
    assert z.var(0).tolist() == pytest.approx([0.25, 4.0], rel=0.02)


def test_reparameterize_passes_gradients_to_mu_and_logvar():
    mu = torch.zeros(3, 2, requires_grad=True)
    logvar = torch.zeros(3, 2, requires_grad=True)
    reparameterize(mu, logvar, torch.Generator().manual_seed(0)).sum().backward()
    assert mu.grad is not None and torch.all(mu.grad == 1)
    assert logvar.grad is not None and torch.any(logvar.grad != 0)


def test_bernoulli_log_density_is_torch_distributions_log_prob_summed_over_pixels():
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(3, 4, 20, generator=g, dtype=torch.float64) * 3
    x = torch.bernoulli(torch.full((3, 1, 20), 0.4, dtype=torch.float64), generator=g)
    want = Bernoulli(logits=logits).log_prob(x.expand_as(logits)).sum(-1)
    got = BERNOULLI.log_density(logits, x)  # broadcasts images over samples, as the IWAE bound does
    assert got.shape == (3, 4)
    torch.testing.assert_close(got, want)
    assert torch.all(got <= 0)  # a log-probability of binary pixels
    # grey levels: the same formula, x log sigmoid(l) + (1 - x) log(1 - sigmoid(l))
    grey = torch.rand(3, 1, 20, generator=g, dtype=torch.float64)
    want = Bernoulli(logits=logits, validate_args=False).log_prob(grey.expand_as(logits)).sum(-1)
    torch.testing.assert_close(BERNOULLI.log_density(logits, grey), want)


def test_gaussian_log_density_is_the_unit_variance_normal_log_prob_summed_over_pixels():
    g = torch.Generator().manual_seed(6)
    mean = torch.randn(3, 4, 20, generator=g, dtype=torch.float64)
    x = torch.rand(3, 1, 20, generator=g, dtype=torch.float64)
    want = Normal(mean, 1.0).log_prob(x.expand_as(mean)).sum(-1)
    got = GAUSSIAN.log_density(mean, x)
    assert got.shape == (3, 4)
    torch.testing.assert_close(got, want)
    # the reconstruction term is the same density without its constant 0.5 * D * log(2 pi)
    recon = GAUSSIAN.recon(mean[:, :1].reshape(3, 1, 4, 5), x.reshape(3, 1, 4, 5))
    torch.testing.assert_close(-recon - 10 * math.log(2 * math.pi), want[:, 0])


def test_seed_stays_the_gaussian_loss_for_old_runs_and_commands(tiny_data, tmp_path, capsys):
    """Runs written before the registry say "seed" in config.json: they load, resume and
    generate as gaussian runs; `--loss seed` still works; an unknown name lists the choices."""
    import json

    from vaegen import load_run
    from vaegen.cli import main
    from vaegen.errors import VaegenError
    from vaegen.model.likelihoods import canonical_loss
    from vaegen.rundir.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from vaegen.training.loop import train

    assert TrainConfig(loss="seed").loss == "gaussian" == canonical_loss("seed")
    with pytest.raises(VaegenError, match=r"loss = 'mse' is not valid: one of .*seed = gaussian"):
        TrainConfig(loss="mse")
    cfg = RunConfig(
        DataConfig(str(tiny_data)), ModelConfig(hidden=8), TrainConfig(epochs=1, loss="gaussian")
    )
    out = tmp_path / "old"
    train(cfg, out, progress=False)
    config = json.loads((out / "config.json").read_text())
    config["train"]["loss"] = "seed"  # as vaegen 0.1 wrote it
    (out / "config.json").write_text(json.dumps(config))
    assert load_run(out).likelihood is GAUSSIAN
    argv = ["-q", "train", "--out", str(out), "--resume", "--epochs", "2", "--no-plots"]
    assert main(argv) == 0
    assert (
        main(
            [
                "-q",
                "train",
                "--data",
                str(tiny_data),
                "--hidden",
                "8",
                "--epochs",
                "1",
                "--loss",
                "seed",
                "--no-plots",
                "--out",
                str(tmp_path / "new"),
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "new" / "config.json").read_text())["train"]["loss"] == "gaussian"


# ----------------------------------------------------------------- learned sigma


def _scaled_output(mean: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """What a learned-scale decoder returns: [mean, log sigma] along the channels."""
    return torch.cat([mean, log_sigma.expand_as(mean)], dim=1)


@pytest.mark.parametrize("name", ["gaussian-sigma", "gaussian-pixel-sigma"])
def test_learned_sigma_loss_is_the_normal_negative_log_prob_in_nats(name):
    from vaegen.model.likelihoods import likelihood

    lk = likelihood(name)
    g = torch.Generator().manual_seed(7)
    x = torch.rand(4, 1, 5, 6, generator=g, dtype=torch.float64)
    mean = torch.rand(4, 1, 5, 6, generator=g, dtype=torch.float64)
    shape = (1, 1, 5, 6) if lk.scale == "pixel" else (1, 1, 1, 1)
    log_sigma = torch.rand(shape, generator=g, dtype=torch.float64) * -2  # sigma in (0.14, 1]
    out = _scaled_output(mean, log_sigma)
    want = -Normal(mean, log_sigma.exp()).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(lk.recon(out, x), want)
    # the IWAE bound's view: outputs ... x 2P against images ... x P, broadcast over samples
    flat = out.flatten(1).unsqueeze(1).expand(4, 3, -1)
    torch.testing.assert_close(
        lk.log_density(flat, x.flatten(1).unsqueeze(1)), -want[:, None].expand(4, 3)
    )
    torch.testing.assert_close(lk.mean(out), mean)  # images in [0, 1]: the mean, unclamped
    assert lk.nats_constant(30) == 0.0  # already nats


def test_learned_sigma_stops_at_one_grey_level():
    """Below sigma = 1/255 the loss is that of sigma = 1/255, and sigma gets no gradient."""
    from vaegen.model.likelihoods import GAUSSIAN_SIGMA

    x = torch.full((2, 1, 2, 2), 0.5, dtype=torch.float64)
    mean = x + 0.01
    log_sigma = torch.tensor([[[[-10.0]]]], dtype=torch.float64, requires_grad=True)
    loss = GAUSSIAN_SIGMA.recon(_scaled_output(mean, log_sigma), x)
    floor = -Normal(mean, 1 / 255).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(loss, floor)
    loss.sum().backward()
    assert log_sigma.grad.item() == 0.0


@pytest.mark.parametrize(
    ("name", "shape"), [("gaussian-sigma", (1, 1, 1, 1)), ("gaussian-pixel-sigma", (1, 1, 12, 12))]
)
def test_a_learned_sigma_run_learns_the_spread_of_its_errors(tiny_data, tmp_path, name, shape):
    """sigma is fitted with the weights: at the optimum of the Gaussian likelihood sigma^2 is the
    mean squared error (per pixel, or over all pixels), so after training the learned sigma
    matches the errors' spread. Starts at sigma = 1, far above it."""
    from vaegen import load_dataset
    from vaegen.data import to_float
    from vaegen.rundir.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from vaegen.training.loop import train

    cfg = RunConfig(
        DataConfig(str(tiny_data)),
        ModelConfig(hidden=32, latent_dim=4),
        TrainConfig(epochs=30, batch_size=16, lr=1e-2, loss=name),
    )
    run = train(cfg, tmp_path / "run", progress=False)
    log_sigma = run.model.log_sigma.detach()
    assert log_sigma.shape == shape
    x = to_float(load_dataset(str(tiny_data), "train").images, "cpu")
    with torch.no_grad():
        mean = run.model.decode(run.model.encode(x)[0])[:, :1]
    mse = (mean - x).pow(2).mean() if name == "gaussian-sigma" else (mean - x).pow(2).mean(0)
    sigma = log_sigma.exp().squeeze(0)
    assert sigma.max() < 0.5  # it left 1
    # encoder means, not sampled z: their errors are a little smaller than training's
    torch.testing.assert_close(sigma.pow(2).mean(), mse.mean(), rtol=0.5, atol=0)


# ------------------------------------------------------------------ closed-form sigma


def test_optimal_sigma_is_the_batch_root_mean_squared_error_and_minimises_the_loss():
    """A training forward pass sets sigma^2 to the batch's mean squared error, which is where
    the Gaussian negative log-likelihood of the batch is smallest: nudging sigma either way
    raises it. The loss is then Normal(mean, sigma)'s negative log-prob, and sigma is a buffer
    saved with the weights, which no optimiser moves and an evaluation pass leaves alone."""
    from vaegen.model.vae import VAE

    torch.manual_seed(0)
    model = VAE((1, 6, 6), latent_dim=3, hidden=16, scale="optimal").double()
    assert "log_sigma" not in dict(model.named_parameters())
    assert "log_sigma" in model.state_dict()
    x = torch.rand(20, 1, 6, 6, dtype=torch.float64)
    out = model(x)
    mean = out.recon[:, :1]
    mse = (mean - x).pow(2).mean()
    torch.testing.assert_close(model.log_sigma.squeeze(), 0.5 * mse.log())
    lk = likelihood("gaussian-optimal-sigma")
    loss = lk.recon(out.recon, x).sum()
    want = -Normal(mean, mse.sqrt()).log_prob(x).sum()
    torch.testing.assert_close(loss, want)
    for factor in (0.9, 1.1):
        nudged = _scaled_output(mean, model.log_sigma + math.log(factor))
        assert lk.recon(nudged, x).sum() > loss
    model.eval()
    before = model.log_sigma.clone()
    model(x + 0.3)
    assert torch.equal(model.log_sigma, before)


def test_own_images_by_default_train_with_the_closed_form_sigma(tmp_path, capsys):
    """Without --loss or --preset, images other than FashionMNIST and MNIST train with
    gaussian-optimal-sigma, and the command says so; a named dataset, --preset article or
    --loss keeps what they ask for."""
    import numpy as np

    from vaegen.cli import main
    from vaegen.rundir.config import default_loss

    assert default_loss("fashion-mnist") == default_loss("mnist") == "gaussian"
    rng = np.random.default_rng(0)
    npz = tmp_path / "own.npz"
    np.savez(npz, x=rng.integers(0, 256, (64, 6, 6), dtype=np.uint8), y=np.arange(64) % 2)
    common = ["--epochs", "1", "--hidden", "8", "--no-plots"]

    def loss_of(*flags: str) -> str:
        out = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
        assert main(["train", "--data", str(npz), "--out", str(out), *common, *flags]) == 0
        return json.loads((out / "config.json").read_text())["train"]["loss"]

    assert loss_of() == "gaussian-optimal-sigma"
    assert "gaussian-optimal-sigma is vaegen's default" in capsys.readouterr().out
    assert loss_of("--preset", "article") == "gaussian"
    assert loss_of("--loss", "bernoulli") == "bernoulli"
    out = tmp_path / "resumed"
    main(["train", "--data", str(npz), "--out", str(out), "--loss", "gaussian", *common])
    main(
        ["train", "--data", str(npz), "--out", str(out), "--epochs", "2", "--resume", "--no-plots"]
    )
    assert json.loads((out / "config.json").read_text())["train"]["loss"] == "gaussian"

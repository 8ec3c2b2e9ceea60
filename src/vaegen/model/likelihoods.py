"""VAE losses: the KL term and the likelihood registry. One entry per decoder likelihood.

Each loss returns its terms separately, one value per image (summed over pixels / latents). The
training objective of a batch is sum over images of (recon + beta * kl), as in the reference
article (reduction "sum"); every number written to a file or shown is that divided by the number
of images: a loss "per image".

A `Likelihood` owns everything that depends on what the decoder's output means: its
reconstruction term, its log-density (for the IWAE bound), the mean image shown to people, the
report's decoder activation and its units. No other module branches on a loss name: it asks
`likelihood(name)`. Entries: `gaussian` (the article's unit-variance Gaussian, 0.5 * squared
error; `seed` is its permanent alias), `bernoulli`, `gaussian-sigma` / `gaussian-pixel-sigma` (a
Gaussian whose standard deviation is learned: one, or one per pixel) and `gaussian-optimal-sigma`
(one standard deviation, set in closed form from each training batch's errors).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import VaegenError

LOG_2PI = math.log(2 * math.pi)


class LossTerms(NamedTuple):
    recon: torch.Tensor  # N: reconstruction term per image
    kl: torch.Tensor  # N: KL(q(z|x) || N(0, I)) per image, in nats


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per row, in nats: -0.5 * sum(1 + logvar - mu^2 - exp(logvar)).

    Kingma & Welling (2014), "Auto-Encoding Variational Bayes", appendix B. mu, logvar: N x D -> N.
    """
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1)


# ------------------------------------------------------------------------------- gaussian


def _gaussian_recon(recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """0.5 * ||recon - x||^2 per image: N x C x H x W -> N. The negative log-density of x under
    N(recon, I) in nats minus the constant 0.5 * D * log(2 pi)."""
    return 0.5 * (recon - x).pow(2).flatten(1).sum(dim=1)


def _gaussian_log_density(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log N(x; out, I) = -0.5 * ||x - out||^2 - 0.5 * P * log(2 pi) over the last axis (P)."""
    return -0.5 * (x - out).pow(2).sum(-1) - 0.5 * out.shape[-1] * LOG_2PI


def _gaussian_fast_output(
    h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor, out: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The hand-derived step's last layer: r = h W' + b, and (sum of recon terms, d recon / d r).

    dr = r - x = h W' + (b - x): the bias pass subtracts x too, saving a pass over B x P."""
    dr = torch.sub(bias, x, out=out).addmm_(h, weight.t())
    return 0.5 * torch.dot(dr.view(-1), dr.view(-1)), dr


# ------------------------------------------------------------------------------- bernoulli


def _bernoulli_recon(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy with logits summed over pixels, nats per image: N x C x H x W -> N.

    x in [0, 1] is read as pixel probabilities (Kingma & Welling 2014; pytorch/examples vae)."""
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(dim=1)


def _bernoulli_log_density(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """sum x log sigmoid(l) + (1 - x) log(1 - sigmoid(l)) = -sum(softplus(l) - x l) over the
    last axis: the negative BCE with logits (a log-probability when x is binary)."""
    return -(F.softplus(logits) - x * logits).sum(-1)


def _bernoulli_fast_output(
    h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor, out: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """r = h W' + b (logits), and (summed BCE, d BCE / d r = sigmoid(r) - x) in place of r."""
    torch.addmm(bias, h, weight.t(), out=out)
    recon = F.binary_cross_entropy_with_logits(out, x, reduction="sum")
    return recon, out.sigmoid_().sub_(x)


# ------------------------------------------------------------- gaussian with a learned sigma

# sigma is kept at or above one grey level: below it an 8-bit image carries no information, and
# a pixel that is black in every training image would otherwise drive its sigma (and the
# density) without bound.
LOG_SIGMA_MIN = math.log(1 / 255)


def _mean_and_log_sigma(out: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A learned-scale decoder's output [mean, log sigma] split along `dim` (see models)."""
    mean, log_sigma = out.chunk(2, dim=dim)
    return mean, log_sigma.clamp(min=LOG_SIGMA_MIN)


def _sigma_nll(mean: torch.Tensor, log_sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log N(x; mean, sigma^2) per pixel, nats: 0.5 ((x - mean) / sigma)^2 + log sigma +
    0.5 log(2 pi)."""
    return 0.5 * ((x - mean) * torch.exp(-log_sigma)).pow(2) + log_sigma + 0.5 * LOG_2PI


def _sigma_recon(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The Gaussian negative log-density of x in nats per image: out N x 2C x H x W, x N x C x H x W
    -> N."""
    mean, log_sigma = _mean_and_log_sigma(out, dim=1)
    return _sigma_nll(mean, log_sigma, x).flatten(1).sum(dim=1)


def _sigma_log_density(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, sigma^2) over the last axis: out ... x 2P ([mean, log sigma]), x ... x P."""
    mean, log_sigma = _mean_and_log_sigma(out, dim=-1)
    return -_sigma_nll(mean, log_sigma, x).sum(-1)


def _sigma_mean(out: torch.Tensor) -> torch.Tensor:
    return out.chunk(2, dim=1)[0].clamp(0.0, 1.0)


# -------------------------------------------------------------------------------- registry

FastOutput = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    tuple[torch.Tensor, torch.Tensor],
]


@dataclass(frozen=True)
class Likelihood:
    """A decoder likelihood p(x | z) and everything that depends on it.

    recon(out, x): N x C x H x W decoder outputs and images in [0, 1] -> N reconstruction terms.
    log_density(out, x): ... x P outputs and images -> log p(x | z) in nats (broadcasts).
    mean(out): the decoder's expected pixel values in [0, 1], for display and generation.
    activation: the same map as `mean`, by name, for the report's JavaScript decoder.
    nats_offset: per pixel; loss + nats_offset * pixels is a negative log-likelihood in nats
    (nonzero for a density on continuous pixels).
    fast_output: the hand-derived step's last layer (see `_gaussian_fast_output`), or None when
    the fast step cannot train this likelihood.
    scale: what the model learns of the decoder's spread (vaegen.model.vae.SCALES): "none", or
    "global" / "pixel" for a Gaussian whose sigma is a parameter, one for every pixel or one
    per pixel, or "optimal" for one sigma set from each training batch's mean squared error;
    the decoder's output is then [mean, log sigma] along the channels.
    """

    name: str
    description: str
    recon: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    log_density: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    mean: Callable[[torch.Tensor], torch.Tensor]
    activation: str  # "clamp" or "sigmoid"
    unit: str  # short: what a loss value is measured in
    units_note: str  # long: how to turn it into nats
    recon_definition: str  # the reconstruction term in words
    nats_offset: float  # per pixel
    nats_offset_formula: str  # the same for D pixels, in words: "0.5*D*log(2*pi)"
    binary_data: bool  # a likelihood of binary pixels: published binarised NLLs compare
    fast_output: FastOutput | None = None
    scale: str = "none"

    def terms(
        self, out: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor
    ) -> LossTerms:
        """(recon, kl) per image: out, x N x C x H x W; mu, logvar N x D."""
        return LossTerms(self.recon(out, x), kl_divergence(mu, logvar))

    def nats_constant(self, pixels: int) -> float:
        """What to add to a loss per image to read it as a negative log-likelihood in nats."""
        return self.nats_offset * pixels


GAUSSIAN = Likelihood(
    name="gaussian",
    description="unit-variance Gaussian, 0.5 * squared error (the article's loss)",
    recon=_gaussian_recon,
    log_density=_gaussian_log_density,
    mean=lambda out: out.clamp(0.0, 1.0),  # a Gaussian mean can leave [0, 1]
    activation="clamp",
    unit="gaussian-loss units",
    units_note="gaussian-loss units: 0.5 * squared error summed over the D pixels (+ KL); "
    "0.5*||x - mean||^2 is the negative log-density of x under N(mean, I) in nats minus the "
    "constant 0.5*D*log(2*pi), so add that constant (gaussian_nll_nats) for nats",
    recon_definition="0.5 × squared error summed over pixels (the Gaussian negative "
    "log-likelihood up to a constant)",
    nats_offset=0.5 * LOG_2PI,
    nats_offset_formula="0.5*D*log(2*pi)",
    binary_data=False,
    fast_output=_gaussian_fast_output,
)

BERNOULLI = Likelihood(
    name="bernoulli",
    description="Bernoulli pixels, binary cross-entropy with logits",
    recon=_bernoulli_recon,
    log_density=_bernoulli_log_density,
    mean=torch.sigmoid,
    activation="sigmoid",
    unit="nats",
    units_note="nats: BCE-with-logits summed over pixels (+ KL), the negative Bernoulli "
    "log-likelihood",
    recon_definition="binary cross-entropy with logits, summed over pixels (nats)",
    nats_offset=0.0,
    nats_offset_formula="0",
    binary_data=True,
    fast_output=_bernoulli_fast_output,
)

_SIGMA_UNITS = (
    "nats: the Gaussian negative log-density of the pixels (+ KL), with the learned sigma; a "
    "density on continuous grey levels, so below 0 when sigma is small, and not comparable "
    "with binarised-pixel likelihoods"
)

# The article's loss is this Gaussian with sigma fixed at 1: for pixels in [0, 1] that weighs the
# squared error so lightly against the KL term that the decoder learns blurred means. Learning
# sigma lets the data set the balance (Rybkin, Daniilidis & Levine 2021, "Simple and effective
# VAE training with calibrated decoders").
GAUSSIAN_SIGMA = Likelihood(
    name="gaussian-sigma",
    description="Gaussian with one learned standard deviation for all pixels",
    recon=_sigma_recon,
    log_density=_sigma_log_density,
    mean=_sigma_mean,
    activation="clamp",
    unit="nats",
    units_note=_SIGMA_UNITS,
    recon_definition="Gaussian negative log-density with a learned sigma, summed over pixels "
    "(nats)",
    nats_offset=0.0,
    nats_offset_formula="0",
    binary_data=False,
    scale="global",
)

GAUSSIAN_PIXEL_SIGMA = replace(
    GAUSSIAN_SIGMA,
    name="gaussian-pixel-sigma",
    description="Gaussian with a learned standard deviation per pixel",
    scale="pixel",
)

# sigma in closed form: each training batch's root mean squared error (vaegen.model.vae
# `_calibrate`); the last batch's is kept with the weights for the test loss and the IWAE bound
GAUSSIAN_OPTIMAL_SIGMA = replace(
    GAUSSIAN_SIGMA,
    name="gaussian-optimal-sigma",
    description="Gaussian with one standard deviation set to each training batch's root mean "
    "squared error",
    recon_definition="Gaussian negative log-density with sigma = the batch's root mean squared "
    "error, summed over pixels (nats)",
    scale="optimal",
)

LIKELIHOODS: dict[str, Likelihood] = {
    lk.name: lk
    for lk in (GAUSSIAN, BERNOULLI, GAUSSIAN_SIGMA, GAUSSIAN_PIXEL_SIGMA, GAUSSIAN_OPTIMAL_SIGMA)
}
# Names kept working forever, so that old runs and commands do: `seed` was the article's loss.
ALIASES: dict[str, str] = {"seed": "gaussian"}
LOSS_CHOICES: tuple[str, ...] = (*LIKELIHOODS, *ALIASES)


def canonical_loss(name: str) -> str:
    """The registry's name for `name` (an alias resolves to its entry); unknown names raise."""
    name = ALIASES.get(name, name)
    if name not in LIKELIHOODS:
        raise VaegenError(
            f"loss = {name!r} is not valid: one of {', '.join(LOSS_CHOICES)} "
            f"({', '.join(f'{a} = {b}' for a, b in ALIASES.items())})"
        )
    return name


def likelihood(name: str) -> Likelihood:
    """The registry entry for a loss name or alias."""
    return LIKELIHOODS[canonical_loss(name)]


# ------------------------------------------------------------------------- test-set loss


@torch.no_grad()
def evaluate_loss(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None,
    loss: str,
    seed: int,
    batch_size: int = 2000,
    *,
    per_image: bool = False,
) -> dict[str, Any]:
    """Per-image loss terms over a dataset, one sampled z per image from a fixed-seed generator
    (so the number is repeatable and does not disturb training's RNG streams).

    x: N x C x H x W floats in [0, 1]; y: N labels (conditional models) or None. Returns
    {"loss": recon + kl, "recon", "kl"} per image (beta = 1), in the likelihood's units, and
    "kl_per_dim": the KL term of each latent dimension, nats per image (a list of D numbers).
    per_image: also "recon_each" and "kl_each", each image's two terms (N float64 tensors on the
    CPU, whose means are "recon" and "kl"), for an interval over the images."""
    lk = likelihood(loss)
    was_training = model.training
    model.eval()
    gen = torch.Generator(device=x.device).manual_seed(seed)
    rec_sum = torch.zeros((), dtype=torch.float64, device=x.device)
    kl_sum = torch.zeros((), dtype=torch.float64, device=x.device)
    kl_dims = torch.zeros((), dtype=torch.float64, device=x.device)
    each: dict[str, list[torch.Tensor]] = {"recon_each": [], "kl_each": []}
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size]
        yb = None if y is None else y[i : i + batch_size]
        out = model(xb, yb, generator=gen)
        terms = lk.terms(out.recon, xb, out.mu, out.logvar)
        rec_sum += terms.recon.sum(dtype=torch.float64)
        kl_sum += terms.kl.sum(dtype=torch.float64)
        if per_image:
            each["recon_each"].append(terms.recon.detach().double().cpu())
            each["kl_each"].append(terms.kl.detach().double().cpu())
        per_dim = -0.5 * (1 + out.logvar - out.mu.pow(2) - out.logvar.exp())
        kl_dims = kl_dims + per_dim.sum(0, dtype=torch.float64)
    model.train(was_training)
    n = len(x)
    rec, kl = rec_sum.item() / n, kl_sum.item() / n
    out: dict[str, Any] = {"loss": rec + kl, "recon": rec, "kl": kl}
    out["kl_per_dim"] = (kl_dims / n).tolist()
    if per_image:
        out.update({name: torch.cat(parts) for name, parts in each.items()})
    return out

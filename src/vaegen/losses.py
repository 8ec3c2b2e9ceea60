"""VAE losses. Each returns its terms separately, one value per image (summed over pixels/latents).

The training objective of a batch is sum over images of (recon + beta * kl), as in the reference
article (reduction "sum"); every number written to a file or shown is that divided by the number
of images: a loss "per image".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F


class LossTerms(NamedTuple):
    recon: torch.Tensor  # N: reconstruction term per image
    kl: torch.Tensor  # N: KL(q(z|x) || N(0, I)) per image, in nats


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per row, in nats: -0.5 * sum(1 + logvar - mu^2 - exp(logvar)).

    Kingma & Welling (2014), "Auto-Encoding Variational Bayes", appendix B. mu, logvar: N x D -> N.
    """
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1)


def seed_loss(
    recon: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor
) -> LossTerms:
    """The reference article's loss: 0.5 * squared error summed over pixels, plus the KL term.

    0.5 * ||recon - x||^2 is the negative log-likelihood of x under N(recon, I) up to the constant
    0.5 * D * log(2 pi). recon, x: N x C x H x W (x in [0, 1]); mu, logvar: N x D.
    """
    rec = 0.5 * (recon - x).pow(2).flatten(1).sum(dim=1)
    return LossTerms(rec, kl_divergence(mu, logvar))


def bernoulli_loss(
    logits: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor
) -> LossTerms:
    """Bernoulli decoder: binary cross-entropy with logits summed over pixels (nats), plus KL.

    x in [0, 1] is read as pixel probabilities (Kingma & Welling 2014; pytorch/examples vae).
    logits, x: N x C x H x W; mu, logvar: N x D.
    """
    rec = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(dim=1)
    return LossTerms(rec, kl_divergence(mu, logvar))


LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], LossTerms]
LOSSES: dict[str, LossFn] = {"seed": seed_loss, "bernoulli": bernoulli_loss}


def decoder_mean(recon: torch.Tensor, loss: str) -> torch.Tensor:
    """The decoder's expected pixel values in [0, 1] for display: clamp(recon) for `seed`
    (a Gaussian mean can leave [0, 1]), sigmoid(logits) for `bernoulli`."""
    if loss == "bernoulli":
        return torch.sigmoid(recon)
    return recon.clamp(0.0, 1.0)

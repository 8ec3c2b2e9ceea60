"""VAE models. Each reads like the math: encode -> (mu, logvar), reparameterize, decode.

Inputs are float images in [0, 1], N x C x H x W; layer sizes come from the image shape.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

# exp(logvar) stays within float32 range and away from 0 (exp(-30) ~ 1e-13, exp(20) ~ 5e8):
# a runaway log-variance then gives a large loss instead of inf/NaN.
LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0


class VAEOutput(NamedTuple):
    recon: torch.Tensor  # N x C x H x W: pixel means (`seed` loss) or logits (`bernoulli`)
    mu: torch.Tensor  # N x latent_dim
    logvar: torch.Tensor  # N x latent_dim, log of the posterior variance
    z: torch.Tensor  # N x latent_dim, the sample that was decoded


def reparameterize(
    mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """z = mu + eps * sigma with eps ~ N(0, I) and sigma = exp(logvar / 2)."""
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + eps * torch.exp(0.5 * logvar)


class VAE(nn.Module):
    """The reference MLP VAE (784 -> 256 -> 2 x latent -> 256 -> 784), optionally conditional.

    Unconditional, it is exactly the article's model: Linear + ReLU, two Linear heads for the mean
    and log-variance, and a decoder Linear + ReLU, Linear with no output activation.
    Conditional (num_classes > 0), it is the article series' CVAE: the one-hot label goes through
    Linear(num_classes, hidden) + ReLU and is concatenated to the encoder's hidden layer; the
    decoder reads [z, one_hot].
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (1, 28, 28),
        latent_dim: int = 2,
        hidden: int = 256,
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.latent_dim = latent_dim
        self.num_classes = num_classes
        pixels = math.prod(image_shape)
        self.fc1 = nn.Linear(pixels, hidden)
        head_in = hidden
        if num_classes:
            self.fc_label = nn.Linear(num_classes, hidden)
            head_in += hidden
        self.fc_mu = nn.Linear(head_in, latent_dim)
        self.fc_logvar = nn.Linear(head_in, latent_dim)
        self.fc3 = nn.Linear(latent_dim + num_classes, hidden)
        self.fc4 = nn.Linear(hidden, pixels)

    def _one_hot(self, y: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
        if not self.num_classes:
            return None
        if y is None:
            raise ValueError("this model is conditional: pass the class labels y")
        return F.one_hot(y, self.num_classes).to(dtype)

    def encode(
        self, x: torch.Tensor, y: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x: N x C x H x W in [0, 1] -> (mu, logvar), each N x latent_dim."""
        h = F.relu(self.fc1(x.flatten(1)))
        one_hot = self._one_hot(y, h.dtype)
        if one_hot is not None:
            h = torch.cat([h, F.relu(self.fc_label(one_hot))], dim=1)
        logvar = self.fc_logvar(h).clamp(LOGVAR_MIN, LOGVAR_MAX)
        return self.fc_mu(h), logvar

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """z: N x latent_dim -> N x C x H x W (no output activation)."""
        one_hot = self._one_hot(y, z.dtype)
        if one_hot is not None:
            z = torch.cat([z, one_hot], dim=1)
        return self.fc4(F.relu(self.fc3(z))).view(-1, *self.image_shape)

    def forward(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> VAEOutput:
        mu, logvar = self.encode(x, y)
        z = reparameterize(mu, logvar, generator)
        return VAEOutput(self.decode(z, y), mu, logvar, z)


MODELS: dict[str, type[nn.Module]] = {"mlp": VAE}

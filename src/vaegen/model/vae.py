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
# What a model learns of the decoder's spread besides its mean (model.likelihoods: a likelihood's
# `scale`): nothing, one log standard deviation for every pixel, or one per pixel, each learned
# by gradient; or "optimal": one, set in closed form from each training batch.
SCALES = ("none", "global", "pixel", "optimal")


class VAEOutput(NamedTuple):
    recon: torch.Tensor  # the decoder's output: see `decode`
    mu: torch.Tensor  # N x latent_dim
    logvar: torch.Tensor  # N x latent_dim, log of the posterior variance
    z: torch.Tensor  # N x latent_dim, the sample that was decoded


def reparameterize(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    generator: torch.Generator | None = None,
    eps: torch.Tensor | None = None,
) -> torch.Tensor:
    """z = mu + eps * sigma with eps ~ N(0, I) (drawn here unless given) and sigma = exp(logvar / 2)."""
    if eps is None:
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + eps * torch.exp(0.5 * logvar)


class _VAEBase(nn.Module):
    """What every model shares: optional class conditioning and the forward pass."""

    def __init__(
        self, image_shape: tuple[int, int, int], latent_dim: int, num_classes: int, scale: str
    ) -> None:
        super().__init__()
        if len(image_shape) != 3 or min(image_shape) < 1:
            raise ValueError(
                f"image_shape must be C x H x W with every size at least 1, got "
                f"{tuple(image_shape)}; check the dataset's images"
            )
        self.image_shape = tuple(image_shape)
        self.latent_dim = latent_dim
        self.num_classes = num_classes
        if scale not in SCALES:
            raise ValueError(f"scale = {scale!r} is not one of {', '.join(SCALES)}")
        self.scale = scale
        # log sigma of a Gaussian decoder (starts at sigma = 1, the article's fixed variance):
        # 1 x 1 x 1 x 1, or 1 x C x H x W for "pixel"; a buffer for "optimal", which no
        # gradient moves (see `_calibrate`), saved with the weights all the same
        shape = (1, *(image_shape if scale == "pixel" else (1, 1, 1)))
        if scale == "optimal":
            self.register_buffer("log_sigma", torch.zeros(shape))
        else:
            self.log_sigma = None if scale == "none" else nn.Parameter(torch.zeros(shape))

    def _add_heads(self, hidden: int) -> None:
        """The layers between the encoder's features and the decoder's hidden layer: the label
        embedding (conditional models), the mean and log-variance heads, and the decoder's first
        Linear. Created in this order, which the seed model's initialisation follows."""
        head_in = hidden
        if self.num_classes:
            self.fc_label = nn.Linear(self.num_classes, hidden)
            head_in += hidden
        self.fc_mu = nn.Linear(head_in, self.latent_dim)
        self.fc_logvar = nn.Linear(head_in, self.latent_dim)
        self.fc3 = nn.Linear(self.latent_dim + self.num_classes, hidden)

    def _one_hot(self, y: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
        if not self.num_classes:
            return None
        if y is None:
            raise ValueError("this model is conditional: pass the class labels y")
        return F.one_hot(y, self.num_classes).to(dtype)

    def _heads(self, h: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder features N x hidden (+ the embedded label) -> (mu, logvar)."""
        one_hot = self._one_hot(y, h.dtype)
        if one_hot is not None:
            h = torch.cat([h, F.relu(self.fc_label(one_hot))], dim=1)
        return self.fc_mu(h), self.fc_logvar(h).clamp(LOGVAR_MIN, LOGVAR_MAX)

    def _with_label(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """The decoder's input: z, or [z, one_hot(y)] for a conditional model."""
        one_hot = self._one_hot(y, z.dtype)
        return z if one_hot is None else torch.cat([z, one_hot], dim=1)

    def encode(
        self, x: torch.Tensor, y: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def _with_scale(self, mean: torch.Tensor) -> torch.Tensor:
        """The decoder's output: the mean N x C x H x W, or, for a model with a learned spread,
        [mean, log sigma] along the channels (N x 2C x H x W), which the likelihood splits."""
        if self.log_sigma is None:
            return mean
        return torch.cat([mean, self.log_sigma.expand_as(mean)], dim=1)

    @torch.no_grad()
    def _calibrate(self, out: torch.Tensor, x: torch.Tensor) -> None:
        """Set sigma to the one that maximises the batch's Gaussian likelihood, given the means:
        sigma^2 = the mean squared error over the batch's images and pixels (Rybkin, Daniilidis &
        Levine 2021, "optimal sigma-VAE"). sigma then follows the decoder from the first step,
        where a learned sigma moves by about the learning rate per step: on a small dataset, too
        slowly to keep the latent from collapsing first."""
        # tensors, not Python numbers: no host synchronisation, and a CUDA graph can record it
        sums = torch.stack([(out[:, : x.shape[1]] - x).pow(2).sum(), x.new_full((), x.numel())])
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # the whole batch's sigma, as in one process (a process may hold no image at all)
            torch.distributed.all_reduce(sums)
        mse = (sums[0] / sums[1]).clamp_min(1e-12)  # clamped: a finite log sigma
        self.log_sigma.fill_(0.5 * mse.log())  # type: ignore[union-attr]

    def forward(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        eps: torch.Tensor | None = None,
    ) -> VAEOutput:
        """x: N x C x H x W, y: N labels (conditional models); eps: N x latent_dim, the noise of
        the reparameterisation when the caller draws it (several processes sharing a batch)."""
        mu, logvar = self.encode(x, y)
        z = reparameterize(mu, logvar, generator, eps)
        out = self.decode(z, y)
        if self.scale == "optimal" and self.training:
            self._calibrate(out, x)
            out = self._with_scale(out[:, : x.shape[1]])
        return VAEOutput(out, mu, logvar, z)


class VAE(_VAEBase):
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
        scale: str = "none",
    ) -> None:
        super().__init__(image_shape, latent_dim, num_classes, scale)
        pixels = math.prod(image_shape)
        self.fc1 = nn.Linear(pixels, hidden)
        self._add_heads(hidden)
        self.fc4 = nn.Linear(hidden, pixels)

    def encode(
        self, x: torch.Tensor, y: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x: N x C x H x W in [0, 1] -> (mu, logvar), each N x latent_dim."""
        h = F.relu(self.fc1(x.flatten(1)))
        return self._heads(h, y)

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """z: N x latent_dim -> N x C x H x W (no output activation: pixel means or logits, as
        the likelihood reads them), or N x 2C x H x W ([mean, log sigma]) with a learned scale."""
        z = self._with_label(z, y)
        return self._with_scale(self.fc4(F.relu(self.fc3(z))).view(-1, *self.image_shape))


class ConvVAE(_VAEBase):
    """A small convolutional VAE for sharper samples, optionally conditional like `VAE`.

    Encoder: two stride-2 4x4 convolutions (32, 64 channels) + ReLU, Linear(64*H'/4*W'/4, hidden)
    + ReLU, [label embedding], heads. Decoder: the mirror image with transposed convolutions.
    Any C x H x W works: H' and W' are H and W rounded up to multiples of 4; the encoder pads each
    image with zeros at the bottom and right to H' x W', and the decoder's H' x W' output is
    cropped back to its top-left H x W, so nothing outside the image reaches the likelihood.
    When H and W are multiples of 4 there is no padding and no crop: the layers and the
    arithmetic are exactly those of a model that never pads.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (1, 28, 28),
        latent_dim: int = 2,
        hidden: int = 256,
        num_classes: int = 0,
        scale: str = "none",
    ) -> None:
        super().__init__(image_shape, latent_dim, num_classes, scale)
        c, h, w = image_shape
        # rows and columns of zeros added at the bottom and right: each stride-2 layer halves
        # the size exactly, and the transposed ones double it back to the padded size
        self.pad = (-h % 4, -w % 4)
        self.feature_shape = (64, (h + self.pad[0]) // 4, (w + self.pad[1]) // 4)
        features = math.prod(self.feature_shape)
        self.conv1 = nn.Conv2d(c, 32, 4, stride=2, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 4, stride=2, padding=1)
        self.fc1 = nn.Linear(features, hidden)
        self._add_heads(hidden)
        self.fc4 = nn.Linear(hidden, features)
        self.deconv1 = nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1)
        self.deconv2 = nn.ConvTranspose2d(32, c, 4, stride=2, padding=1)

    def encode(
        self, x: torch.Tensor, y: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x: N x C x H x W in [0, 1] -> (mu, logvar), each N x latent_dim."""
        if any(self.pad):  # F.pad's order: (left, right, top, bottom) of the last two dims
            x = F.pad(x, (0, self.pad[1], 0, self.pad[0]))
        h = F.relu(self.conv2(F.relu(self.conv1(x))))
        h = F.relu(self.fc1(h.flatten(1)))
        return self._heads(h, y)

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """z: N x latent_dim -> N x C x H x W (no output activation: pixel means or logits, as
        the likelihood reads them), or N x 2C x H x W ([mean, log sigma]) with a learned scale."""
        z = self._with_label(z, y)
        h = F.relu(self.fc4(F.relu(self.fc3(z)))).view(-1, *self.feature_shape)
        out = self.deconv2(F.relu(self.deconv1(h)))  # N x C x H' x W'
        if any(self.pad):
            # contiguous, as the uncropped output is: callers .view() it
            out = out[:, :, : self.image_shape[1], : self.image_shape[2]].contiguous()
        return self._with_scale(out)


MODELS: dict[str, type[_VAEBase]] = {"mlp": VAE, "conv": ConvVAE}

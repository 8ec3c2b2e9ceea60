"""The encoder applied to a whole image set in batches: the latent posteriors' means and
log-variances, the codes that priors are fitted to and that figures and metrics read."""

from __future__ import annotations

import torch
from torch import nn

from ..data import to_float


@torch.no_grad()
def latent_posteriors(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None, batch_size: int = 4096
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images N x C x H x W (and labels for a conditional model) -> the encoder's mu and
    logvar, each N x latent_dim float32 on the CPU."""
    model.eval()
    device = next(model.parameters()).device
    mus, logvars = [], []
    for i in range(0, len(images), batch_size):
        yb = None if labels is None else labels[i : i + batch_size].to(device)
        mu, logvar = model.encode(to_float(images[i : i + batch_size], device), yb)
        mus.append(mu.cpu())
        logvars.append(logvar.cpu())
    return torch.cat(mus), torch.cat(logvars)


def latent_means(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None, batch_size: int = 4096
) -> torch.Tensor:
    """uint8 images N x C x H x W (and labels for a conditional model) -> mu, N x latent_dim (CPU)."""
    return latent_posteriors(model, images, labels, batch_size)[0]

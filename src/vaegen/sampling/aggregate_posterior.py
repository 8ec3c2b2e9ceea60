"""The aggregate posterior: the encoder's own distribution of latent codes over the training set.

(1/N) sum_i q(z | x_i), one mixture of the training images' posteriors per class for a conditional
model: the prior that maximises the ELBO for a trained encoder (Hoffman & Johnson 2016; Tomczak &
Welling 2018's VampPrior with every training image as a pseudo-input). sampling.priors stores it in
a run (`--prior posterior`) and fits its Gaussian mixtures to codes drawn from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .._version import __version__
from ..errors import RunError, VaegenError


def class_rows(conditional: bool, labels: torch.Tensor | None, n: int) -> torch.Tensor:
    """The class of each of n codes to draw (int64, CPU): the labels, or class 0 for a prior of
    one class; an error when a prior fitted per class is not given them."""
    if conditional and labels is None:
        raise VaegenError("this prior was fitted per class: pass the labels to sample")
    return torch.zeros(n, dtype=torch.int64) if labels is None else labels.cpu().long()


@dataclass
class AggregatePosterior:
    """The training images' posteriors q(z | x_i) = N(mu_i, diag(sigma_i^2)), as one mixture per
    class (one "class" for an unconditional model) with equal weights.

    mu, sigma: N x D float32; labels: N class indices, or None (unconditional). Sampling picks a
    training image of the requested class uniformly, then z = mu_i + T * sigma_i * eps: at
    temperature T each posterior's spread is scaled."""

    mu: torch.Tensor
    sigma: torch.Tensor
    labels: torch.Tensor | None
    info: dict[str, Any]
    kind: str = "posterior"

    def __post_init__(self) -> None:
        n = len(self.mu)
        if self.mu.ndim != 2 or self.sigma.shape != self.mu.shape or n == 0:
            raise RunError(
                f"an aggregate posterior needs mu and sigma N x D, N >= 1; got "
                f"{tuple(self.mu.shape)} and {tuple(self.sigma.shape)}"
            )
        if self.labels is not None and self.labels.shape != (n,):
            raise RunError(f"an aggregate posterior of {n} codes needs {n} labels")
        labels = torch.zeros(n, dtype=torch.int64) if self.labels is None else self.labels.long()
        # the images of class c are _order[_start[c] : _start[c] + _count[c]]
        self._order = torch.argsort(labels, stable=True)
        self._count = labels.bincount()
        self._start = self._count.cumsum(0) - self._count

    @property
    def conditional(self) -> bool:
        return self.labels is not None

    def sample(
        self,
        labels: torch.Tensor | None,
        n: int,
        generator: torch.Generator,
        temperature: float = 1.0,
    ) -> torch.Tensor:
        rows = class_rows(self.conditional, labels, n)
        empty = [c for c in rows.unique().tolist() if c >= len(self._count) or not self._count[c]]
        if empty:
            raise VaegenError(f"the aggregate posterior holds no training image of class {empty}")
        count = self._count[rows]
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        pick = self._order[self._start[rows] + (u * count).long().clamp_(max=count - 1)]
        eps = torch.randn(n, self.mu.shape[1], generator=generator)
        return self.mu[pick] + temperature * self.sigma[pick] * eps

    def draws(self, r: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        """r codes drawn from every image's posterior: (r N x D codes, draw j of image i in row
        j N + i; their r N labels, or None), for fitting a density to the aggregate posterior."""
        eps = torch.randn(r, *self.mu.shape, generator=generator)
        codes = (self.mu + self.sigma * eps).reshape(-1, self.mu.shape[1])
        return codes, None if self.labels is None else self.labels.repeat(r)


def aggregate_posterior(
    mu: torch.Tensor, logvar: torch.Tensor, labels: torch.Tensor | None, num_classes: int
) -> AggregatePosterior:
    """The aggregate posterior of N training images from their encoder's mu and logvar (N x D);
    labels: N class indices for a conditional model, else None."""
    info = {
        "kind": "posterior",
        "conditional": labels is not None,
        "classes": num_classes if labels is not None else 1,
        "fitted_to": f"encoder posteriors of {len(mu)} training images",
        "vaegen_version": __version__,
    }
    sigma = (0.5 * logvar.float()).exp()
    return AggregatePosterior(
        mu.float().contiguous(), sigma, None if labels is None else labels.long(), info
    )

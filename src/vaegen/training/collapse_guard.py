"""Posterior collapse: a latent that carries no information about the images.

A VAE can reach a low loss by ignoring z: the decoder draws the average image (of each class, for
a conditional model) and the encoder puts every code at the prior, KL 0. Samples then all look
alike. The trainer counts the latent dimensions that still carry information after each epoch
(`active_dims` in metrics.jsonl) and warns at the end of training when none does.
"""

from __future__ import annotations

import logging
import warnings

from ..model.likelihoods import likelihood
from ..rundir.config import RunConfig

log = logging.getLogger(__name__)

# A latent dimension whose KL term averages below this many nats per image is collapsed: the
# KL is an upper bound on the information its code carries about an image (E_x KL(q(z_d|x) ||
# p(z_d)) >= I(x; z_d)), and 0.01 nats (0.014 bits) cannot tell images apart. A well-trained
# FashionMNIST model carries about 2 nats in each of its 2 dimensions; a collapsed one 0.001.
COLLAPSED_KL = 0.01


class PosteriorCollapseWarning(UserWarning):
    """Every latent dimension carries (almost) no information: samples of a class look alike."""


def active_dims(kl_per_dim: list[float]) -> int:
    """How many latent dimensions carry at least COLLAPSED_KL nats per image."""
    return sum(kl >= COLLAPSED_KL for kl in kl_per_dim)


def warn(config: RunConfig, kl_per_dim: list[float]) -> None:
    """The latent has collapsed (`active_dims` is 0): say so, and what to try."""
    m, t = config.model, config.train
    remedies = [
        f"a smaller --beta (now {t.beta:g}; try {t.beta / 4:g}), which makes the KL cheaper"
    ]
    lk = likelihood(t.loss)
    if lk.scale != "optimal" and not lk.binary_data:
        # 0.5 * squared error of pixels in [0, 1] is the likelihood of a Gaussian with variance 1:
        # so noisy that on small images what z could explain is worth less than its KL; a sigma
        # fitted to the errors weighs them as they deserve
        remedies.append(
            "--loss gaussian-optimal-sigma, which sets the decoder's sigma from its errors, or "
            "--loss bernoulli, which values each pixel's error far more"
        )
    remedies.append("more training images")
    message = (
        f"posterior collapse: the KL term of every latent dimension is below {COLLAPSED_KL} nats "
        f"per image (largest {max(kl_per_dim):.2g}), so z carries almost nothing and every "
        f"sample{' of a class' if m.conditional else ''} will look nearly the same; try "
        + "; ".join(remedies)
    )
    log.warning("%s", message)
    warnings.warn(message, PosteriorCollapseWarning, stacklevel=5)

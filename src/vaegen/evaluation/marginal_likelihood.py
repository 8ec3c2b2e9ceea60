"""How likely is the test set? The negative ELBO and the IWAE bound, in the run's loss units."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..data import to_float
from ..model.likelihoods import evaluate_loss
from ..seeds import EVALUATION
from .context import BOOTSTRAP_RESAMPLES, NATS, Context, loss_units, q, qi
from .estimators import iwae_log_likelihood
from .intervals import bootstrap_interval


def marginal_likelihood(ctx: Context, k: int, binarize: bool) -> dict[str, Any]:
    """Negative ELBO, its parts and the IWAE bound on the test set, in the run's loss units."""
    run, seed = ctx.run, ctx.seed
    lk, conditional, device = run.likelihood, run.config.model.conditional, run.device
    y_test = ctx.test.labels.to(device) if conditional else None  # type: ignore[union-attr]
    x_test = to_float(ctx.test.images, device)
    if binarize:
        bgen = torch.Generator().manual_seed(seed + EVALUATION.binarize)
        x_test = torch.bernoulli(x_test.cpu(), generator=bgen).to(device)
    elbo = evaluate_loss(
        run.model, x_test, y_test, lk.name, seed=seed + EVALUATION.elbo, per_image=True
    )  # beta 1: the bound
    log_px = iwae_log_likelihood(
        run.model, x_test, y_test, lk, k=k, seed=seed + EVALUATION.iwae, progress=ctx.progress
    )
    nll_iwae = -float(log_px.mean())  # nats (a density for a continuous likelihood)
    constant = lk.nats_constant(math.prod(run.image_shape))  # loss + this = NLL in nats
    units = loss_units(lk)
    per_image = (-log_px.double().cpu() - constant).numpy()
    boot = {"n_resamples": BOOTSTRAP_RESAMPLES, "seed": seed + EVALUATION.bootstrap}
    bound = bootstrap_interval(np.mean, per_image, **boot)
    recon_each, kl_each = elbo["recon_each"].numpy(), elbo["kl_each"].numpy()

    def mean_sum(r: np.ndarray, k: np.ndarray) -> float:  # each image's pair resampled together
        return float(np.mean(r) + np.mean(k))

    likelihood: dict[str, Any] = {
        "data": f"{len(x_test)} test images, "
        + (
            f"stochastically binarised (pixel ~ Bernoulli(x), seed {seed + EVALUATION.binarize})"
            if binarize
            else "grey levels in [0, 1]"
        ),
        "conditional_on_label": conditional,
        "iw_samples": k,
        "units": lk.units_note,
        "negative_elbo": qi(
            bootstrap_interval(mean_sum, recon_each, kl_each, paired=True, **boot), units
        ),
        "reconstruction": qi(bootstrap_interval(np.mean, recon_each, **boot), units),
        "kl": qi(bootstrap_interval(np.mean, kl_each, **boot), NATS),
        "nll_bound_iwae": qi(bound, units),
        "notes": [
            "negative_elbo >= nll_bound_iwae >= the true negative log-likelihood; "
            "the ELBO uses one sampled z per image and the analytic KL, with beta = 1 "
            f"whatever beta the run was trained with ({run.config.train.beta:g})",
            "intervals: bootstrap over the test images (percentile), each image's sampled z "
            "and importance samples held fixed",
        ],
    }
    if constant:
        likelihood["gaussian_nll_nats"] = {
            "negative_elbo": q(elbo["recon"] + elbo["kl"] + constant, NATS),
            "nll_bound_iwae": q(nll_iwae, NATS),
            "constant_0.5*D*log(2*pi)": q(constant, NATS),
        }
        likelihood["notes"].append(
            "gaussian_nll_nats is a density on continuous pixels (N(decoder mean, I)); it is "
            "not comparable with published NLLs of binarised images"
        )
    elif not lk.binary_data:  # a Gaussian with its own sigma: already a density in nats
        likelihood["notes"].append(
            "a Gaussian density on continuous grey levels, in nats; not comparable with "
            "published NLLs of binarised images"
        )
    elif not binarize:
        likelihood["notes"].append(
            "the Bernoulli likelihood of grey-level pixels is not a normalised likelihood; for a "
            "number comparable with published FashionMNIST NLLs (plain VAE ~ 229 nats), use "
            "binarize=True (--binarize)"
        )
    else:
        likelihood["notes"].append(
            "comparable with published NLLs on stochastically binarised FashionMNIST "
            "(plain VAE ~ 229 nats), up to the draw of the binarisation"
        )
    if conditional:
        likelihood["notes"].append("conditional model: the bounds are on -log p(x | label)")
    return likelihood

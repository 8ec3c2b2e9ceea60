"""Gaussian mixtures fitted by scikit-learn's EM, one per group of points, several at once.

vaegen's fitted prior (sampling.priors) is one such mixture per class of latent codes. EM's work is
many small products (N x D against D x D per component), which more BLAS threads do not speed up:
measured on 2 cores, a 100-component fit to 18,000 64-D codes took 14.7 s with 2 BLAS threads and
14.4 s with 1. So the groups are fitted side by side, one thread and one BLAS thread each, and
each in float32 first, which takes 0.5-0.6x the time of float64 (three classes of `--preset
synth`'s codes); the parameters are kept in float64.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)


def fit_one(x: np.ndarray, k: int, seed: int, reg_covar: float) -> Any:
    """scikit-learn's GaussianMixture of k full-covariance components fitted to x (n x D), with
    reg_covar added to each covariance's diagonal (squared units of x). In float32 first; in
    float64 where float32's covariances turn out singular (as scikit-learn's error advises; seen
    for one class of the 64-D `--preset synth` with 100 components)."""
    from sklearn.mixture import GaussianMixture

    def fit(dtype: type) -> Any:
        gm = GaussianMixture(
            n_components=k,
            covariance_type="full",
            reg_covar=reg_covar,
            random_state=seed % 2**32,  # scikit-learn takes 0..2**32 - 1; torch any int64
        )
        return gm.fit(x.astype(dtype))

    try:
        return fit(np.float32)
    except ValueError:  # "ill-defined empirical covariance"
        log.info("the float32 fit of %d components broke down; fitting it in float64", k)
        return fit(np.float64)


def fit_mixtures(
    groups: list[np.ndarray],
    components: int,
    seed: int,
    reg_covar: float = 1e-6,
    workers: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[dict[str, Any]]]:
    """One mixture of min(components, n_g // 2) Gaussians per group g (n_g x D points), each with
    random_state `seed` and reg_covar (see fit_one), `workers` at once (default
    torch.get_num_threads()); the result does not depend on `workers`. Returns float64 weights
    G x K (a group with fewer components has weight 0 on the rest), means G x K x D, covariances
    G x K x D x D (identity where unused), and per group: components, converged, iterations and
    the dtype it was fitted in."""
    # scikit-learn (and the BLAS of scipy, which it loads) first: threadpool_limits limits only
    # the libraries already loaded, and scipy's BLAS left at 2 threads inside scikit-learn's
    # OpenMP loops makes OpenBLAS warn ("Detect OpenMP Loop") once per call
    import sklearn.mixture  # noqa: F401
    from threadpoolctl import threadpool_limits

    workers = max(1, min(workers or torch.get_num_threads(), len(groups)))
    with threadpool_limits(limits=1), ThreadPoolExecutor(workers) as pool:
        fits = list(
            pool.map(lambda x: fit_one(x, min(components, len(x) // 2), seed, reg_covar), groups)
        )
    g, d = len(groups), groups[0].shape[1]
    weights = torch.zeros(g, components, dtype=torch.float64)
    means = torch.zeros(g, components, d, dtype=torch.float64)
    covs = torch.eye(d, dtype=torch.float64).repeat(g, components, 1, 1)
    for row, gm in enumerate(fits):
        k = gm.n_components
        weights[row, :k] = torch.from_numpy(gm.weights_.astype(np.float64))
        means[row, :k] = torch.from_numpy(gm.means_.astype(np.float64))
        covs[row, :k] = torch.from_numpy(gm.covariances_.astype(np.float64))
    fitted = [
        {
            "components": gm.n_components,
            "converged": bool(gm.converged_),
            "iterations": int(gm.n_iter_),
            "dtype": str(gm.means_.dtype),
        }
        for gm in fits
    ]
    return weights, means, covs, fitted

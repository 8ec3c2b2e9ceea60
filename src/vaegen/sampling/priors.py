"""Latent priors: where the z of generated images come from.

`standard` is the VAE's own prior N(0, I), what the article samples. A trained VAE's encoder does
not fill N(0, I) evenly: its codes cluster, and N(0, I) also draws from the holes between the
clusters, which decode to blends of classes. A prior fitted after training to where the encoder
actually puts the training images avoids them (Ghosh et al. 2020, "From Variational to
Deterministic Autoencoders": a Gaussian mixture on the latent codes; Dai & Wipf 2019, "Diagnosing
and Enhancing VAE Models": a second VAE on them).

`GaussianMixturePrior` is that fit: scikit-learn's `GaussianMixture` (full covariances; see
vaegen.sampling.mixture) on the latent means of the training images, or on codes drawn from their
posteriors, one mixture per class for a conditional model; its size, the draws and the variance
added to each component are part of the run's config (train.prior_components, prior_draws,
prior_reg_covar). It is stored in RUN/prior/ as safetensors (the parameters) and JSON (how it
was fitted); nothing is unpickled. The JSON records the SHA-256 of the weights it was fitted to,
and a prior fitted to other weights (the run trained on since) is refused, not sampled.

`AggregatePosterior` ("posterior", defined in aggregate_posterior) is the encoder's own
distribution of codes over the training set, (1/N) sum_i q(z | x_i): the prior that maximises the ELBO for a
trained encoder (Hoffman & Johnson 2016; Tomczak & Welling 2018's VampPrior with every training
image as a pseudo-input). A sample is a random training image's code, drawn from its posterior.
Stored beside the mixture (every training image's mu and sigma), and only used when asked for:
its samples are new images near particular training images, not draws from a density that
generalises beyond them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import torch

from .. import rundir, tensorfiles
from .._version import __version__
from ..data import ImageDataset
from ..errors import RunError, VaegenError
from ..files import write_group
from ..model.encode import latent_posteriors
from ..rundir import layout
from ..rundir.config import TrainConfig, check_seed
from ..seeds import TRAINING
from ..training.trainset import check_prior_fit
from .aggregate_posterior import AggregatePosterior, aggregate_posterior, class_rows
from .mixture import fit_mixtures

log = logging.getLogger(__name__)

PRIOR_CHOICES = ("fitted", "posterior", "standard")
PARAMS = "prior.safetensors"
INFO = "prior.json"
POSTERIOR_PARAMS = "posterior.safetensors"
POSTERIOR_INFO = "posterior.json"
FITTED_WEIGHTS = "model_sha256"  # in their JSON: run.weights_sha256() of the weights fitted to
DEFAULT_COMPONENTS = TrainConfig().prior_components


class Prior(Protocol):
    """Draws latent codes: `sample(labels, n, generator, temperature)` -> n x latent_dim float32
    on the CPU; labels: n class indices (conditional runs) or None."""

    kind: str

    def sample(
        self,
        labels: torch.Tensor | None,
        n: int,
        generator: torch.Generator,
        temperature: float = 1.0,
    ) -> torch.Tensor: ...


@dataclass(frozen=True)
class StandardNormal:
    """N(0, T^2 I): z = T * eps, eps from `generator` (the article's sampling)."""

    latent_dim: int
    kind: str = "standard"

    def sample(
        self,
        labels: torch.Tensor | None,
        n: int,
        generator: torch.Generator,
        temperature: float = 1.0,
    ) -> torch.Tensor:
        return torch.randn(n, self.latent_dim, generator=generator) * temperature


@dataclass
class GaussianMixturePrior:
    """A Gaussian mixture per class (one "class" for an unconditional model).

    weights: C x K (rows sum to 1), means: C x K x D, covariances: C x K x D x D, all float64.
    A class fitted with fewer than K components has weight 0 on the rest. Sampling picks a
    component by weight, then z = mean + T * L eps with L the covariance's Cholesky factor: at
    temperature T the spread of each component is scaled, not the mixture's layout."""

    weights: torch.Tensor
    means: torch.Tensor
    covariances: torch.Tensor
    info: dict[str, Any]
    kind: str = "gmm"

    def __post_init__(self) -> None:
        c, k, d = self.means.shape
        if self.weights.shape != (c, k) or self.covariances.shape != (c, k, d, d):
            raise RunError(
                f"a Gaussian mixture prior needs weights C x K, means C x K x D and covariances "
                f"C x K x D x D; got {tuple(self.weights.shape)}, {tuple(self.means.shape)}, "
                f"{tuple(self.covariances.shape)}"
            )
        self._chol = torch.linalg.cholesky(self.covariances)

    @property
    def conditional(self) -> bool:
        return bool(self.info.get("conditional"))

    def sample(
        self,
        labels: torch.Tensor | None,
        n: int,
        generator: torch.Generator,
        temperature: float = 1.0,
    ) -> torch.Tensor:
        rows = class_rows(self.conditional, labels, n)
        component = torch.multinomial(self.weights[rows], 1, generator=generator).squeeze(1)
        eps = torch.randn(n, self.means.shape[2], generator=generator, dtype=torch.float64)
        z = self.means[rows, component]
        # one product per (class, component) drawn, not an n x D x D table of factors
        k = self.means.shape[1]
        which = rows * k + component
        for key in which.unique().tolist():
            chosen = which == key
            z[chosen] += temperature * (eps[chosen] @ self._chol[key // k, key % k].T)
        return z.float()


def fit_gaussian_mixture(
    z: torch.Tensor,
    labels: torch.Tensor | None,
    num_classes: int,
    components: int = DEFAULT_COMPONENTS,
    seed: int = 0,
    reg_covar: float = TrainConfig.prior_reg_covar,
) -> GaussianMixturePrior:
    """Fit one mixture of `components` full-covariance Gaussians per class to latent codes
    z (N x D) with scikit-learn's EM (sampling.mixture: the classes side by side, float32 first);
    labels: N class indices, or None for one mixture of all. reg_covar: the variance (squared
    latent units) added to each component's covariance."""
    if components < 1:
        raise VaegenError(f"components = {components} is not valid: use an integer >= 1")
    x = z.detach().float().cpu().numpy()
    groups = []
    for cls in range(num_classes) if labels is not None else [0]:
        xc = x if labels is None else x[labels.cpu().numpy() == cls]
        if len(xc) < 2:
            raise VaegenError(
                f"class {cls} has {len(xc)} training image(s): a prior cannot be fitted to it"
            )
        groups.append(xc)
    weights, means, covs, fitted = fit_mixtures(groups, components, seed, reg_covar)
    info = {
        "kind": "gmm",
        "conditional": labels is not None,
        "components": components,
        "per_class": fitted,
        "fitted_to": f"{len(x)} latent codes",
        "seed": seed,
        "library": "scikit-learn GaussianMixture, full covariances",
        "reg_covar": reg_covar,
        "vaegen_version": __version__,
    }
    return GaussianMixturePrior(weights, means, covs, info)


# ---------------------------------------------------------------------------- in a run


def fit_prior(
    run: rundir.Run,
    train: ImageDataset | None = None,
    *,
    components: int | None = None,
    seed: int | None = None,
    draws: int | None = None,
    reg_covar: float | None = None,
) -> GaussianMixturePrior:
    """Fit the run's Gaussian mixture prior, save it in RUN/prior/ beside the training images'
    aggregate posterior, and return the mixture. It is fitted to the training images' latent
    means (draws = 0), or to `draws` codes sampled from each image's posterior q(z|x) (seeded
    with `seed`): the aggregate posterior itself, at `draws` times the fitting time.
    components, draws, reg_covar, seed: None takes the run's config (train.prior_components, or
    DEFAULT_COMPONENTS where that is 0; train.prior_draws; train.prior_reg_covar; train.seed).
    train: the training set (loaded from the run's config when None)."""
    if components is None:
        components = run.config.train.prior_components or DEFAULT_COMPONENTS
    if draws is None:
        draws = run.config.train.prior_draws
    if reg_covar is None:
        reg_covar = run.config.train.prior_reg_covar
    if seed is None:
        seed = run.config.train.seed + TRAINING.prior
    check_seed("seed", seed)  # components and draws: check_prior_fit, before encoding
    if draws < 0:  # (the message the API has always given)
        raise VaegenError(f"draws = {draws} is not valid: use 0 (the means) or more")
    if not 0 <= reg_covar < math.inf:  # NaN fails this too
        raise VaegenError(f"reg_covar = {reg_covar} is not valid: use a finite number >= 0")
    if train is None:
        train = rundir.load_split(run, "train")
    elif tuple(train.image_shape) != tuple(run.image_shape):
        raise VaegenError(
            f"the run was trained on {tuple(run.image_shape)} images but the training set now "
            f"holds {train.image_shape} images"
        )
    conditional = run.config.model.conditional
    labels = train.labels if conditional else None
    check_prior_fit(
        labels,
        n=len(train),
        classes=run.classes,
        latent_dim=run.config.model.latent_dim,
        components=components,
        draws=draws,
        source=run.config.data.source,
    )
    with layout.lock_for_writing(run.path, "fitting the prior"):  # not while evaluate reads it
        mu, logvar = latent_posteriors(run.model, train.images, labels)
        folder = run.path / layout.PRIOR
        posterior = aggregate_posterior(mu, logvar, labels, len(run.classes))
        z, z_labels, fitted_to = mu, labels, f"latent means of {len(mu)} training images"
        if draws:
            z, z_labels = posterior.draws(draws, torch.Generator().manual_seed(seed))
            fitted_to = f"{draws} codes drawn from each of {len(mu)} training images' posteriors"
        prior = fit_gaussian_mixture(z, z_labels, len(run.classes), components, seed, reg_covar)
        prior.info.update(fitted_to=fitted_to, draws=draws)
        # written only once both are fitted (a failed or interrupted fit keeps the previous
        # pair), each stamped with the weights it belongs to (load_prior refuses other weights)
        weights = run.weights_sha256()
        posterior.info[FITTED_WEIGHTS] = prior.info[FITTED_WEIGHTS] = weights
        write_group(folder, {**_posterior_files(posterior), **_prior_files(prior)})
        _record_settings(run, components, draws, reg_covar)
    log.info(
        "fitted a %d-component Gaussian mixture%s to %s: %s",
        components,
        " per class" if conditional else "",
        fitted_to,
        folder,
    )
    return prior


def _record_settings(run: rundir.Run, components: int, draws: int, reg_covar: float) -> None:
    """config.json names the mixture the run now has, so that `train --resume` keeps it."""
    fields = {"prior_components": components, "prior_draws": draws, "prior_reg_covar": reg_covar}
    if all(getattr(run.config.train, k) == v for k, v in fields.items()):
        return
    saved, facts = rundir.load_config(run.path)
    rundir.save_config(run.path, replace(saved, train=replace(saved.train, **fields)), facts)
    run.config = replace(run.config, train=replace(run.config.train, **fields))


def mixture_is_current(run: rundir.Run) -> bool:
    """Whether RUN/prior/ holds the mixture run.config names, fitted to the run's weights."""
    path = run.path / layout.PRIOR / INFO
    if not path.exists():
        return False
    info, tc = tensorfiles.read_json(path), run.config.train
    return isinstance(info, dict) and (
        info.get(FITTED_WEIGHTS) == run.weights_sha256()
        and (info.get("components"), info.get("draws"), info.get("reg_covar"))
        == (tc.prior_components, tc.prior_draws, tc.prior_reg_covar)
    )


def drop_mixture(run: rundir.Run) -> bool:
    """Remove the run's fitted mixture (a run set to --prior-components 0 samples N(0, I)); its
    aggregate posterior stays. Whether there was one."""
    folder = run.path / layout.PRIOR
    found = (folder / INFO).exists()
    if found:
        with layout.lock_for_writing(run.path, "removing the prior"):
            write_group(folder, {}, drop=(PARAMS, INFO))
    return found


def _prior_files(prior: GaussianMixturePrior) -> dict[str, bytes]:
    """RUN/prior/prior.safetensors (float64 parameters) and prior.json."""
    tensors = {"weights": prior.weights, "means": prior.means, "covariances": prior.covariances}
    return {
        PARAMS: tensorfiles.tensors_to_bytes(tensors),
        INFO: (json.dumps(prior.info, indent=1) + "\n").encode(),
    }


def _posterior_files(posterior: AggregatePosterior) -> dict[str, bytes]:
    """RUN/prior/posterior.safetensors (mu, sigma: float32 N x D; labels: int64 N for a
    conditional run) and posterior.json."""
    tensors = {"mu": posterior.mu, "sigma": posterior.sigma}
    if posterior.labels is not None:
        tensors["labels"] = posterior.labels
    return {
        POSTERIOR_PARAMS: tensorfiles.tensors_to_bytes(tensors),
        POSTERIOR_INFO: (json.dumps(posterior.info, indent=1) + "\n").encode(),
    }


def prior_sha256(run: rundir.Run, kind: str) -> str | None:
    """SHA-256 (hex) of the file a prior of `kind` draws its codes from in the run directory
    (RUN/prior/prior.safetensors for "gmm", RUN/prior/posterior.safetensors for "posterior"), or
    None for N(0, I) ("standard"), which has no file. What eval.json and a generated output's
    manifest record, so that numbers measured with one fitted prior are not shown for another."""
    name = {"gmm": PARAMS, "posterior": POSTERIOR_PARAMS}.get(kind)
    if name is None:
        return None
    return hashlib.sha256((run.path / layout.PRIOR / name).read_bytes()).hexdigest()


def load_prior(run: rundir.Run, which: str = "fitted") -> Prior:
    """The prior `which` names for this run: "standard" is N(0, I); "fitted" is the run's fitted
    prior when it has one (RUN/prior/), else N(0, I), so that runs without one behave as before;
    "posterior" is the training images' aggregate posterior, an error when the run has none."""
    if which not in PRIOR_CHOICES:
        raise VaegenError(f"prior = {which!r} is not valid: one of {', '.join(PRIOR_CHOICES)}")
    standard = StandardNormal(run.config.model.latent_dim)
    folder = run.path / layout.PRIOR
    if which == "posterior":
        return _load_posterior(run, folder)
    if which == "standard" or not (folder / INFO).exists():
        return standard
    info = tensorfiles.read_json(folder / INFO)
    if not isinstance(info, dict) or info.get("kind") != "gmm":
        raise RunError(f"{folder / INFO}: not a vaegen prior (kind {info.get('kind')!r})")
    _check_weights(run, info, folder / INFO)
    f64 = torch.float64
    t = _read(folder / PARAMS, {"weights": f64, "means": f64, "covariances": f64})
    try:
        prior = GaussianMixturePrior(t["weights"], t["means"], t["covariances"], info)
    except torch.linalg.LinAlgError:
        raise RunError(f"{folder / PARAMS}: a covariance is not positive definite") from None
    c, _, d = prior.means.shape
    want_c = len(run.classes) if run.config.model.conditional else 1
    if d != standard.latent_dim or c != want_c or prior.conditional != run.config.model.conditional:
        raise RunError(
            f"{folder}: the prior is for {c} class(es) and {d}-D codes; this run needs "
            f"{want_c} and {standard.latent_dim}-D: refit it with `vaegen fit-prior {run.path}`"
        )
    if not math.isclose(float(prior.weights.sum(1).min()), 1.0, rel_tol=1e-6):
        raise RunError(f"{folder / PARAMS}: mixture weights do not sum to 1")
    return prior


def _read(path: Path, want: dict[str, torch.dtype]) -> dict[str, torch.Tensor]:
    """The tensors of `path` named in `want` ("name?": optional), each of its dtype and finite;
    a RunError naming the file and the tensor otherwise (a NaN would decode to black images)."""
    t = tensorfiles.read_tensors(path)
    for key, dtype in want.items():
        name = key.rstrip("?")
        if name not in t and key.endswith("?"):
            continue
        if name not in t:
            found = "missing"
        elif t[name].dtype != dtype:
            found = f"it is {t[name].dtype}"
        elif not bool(t[name].isfinite().all()):
            found = "it holds NaN or infinity"
        else:
            continue
        raise RunError(
            f"{path}: tensor {name!r} must be finite {dtype} ({found}); refit it with "
            f"`vaegen fit-prior {path.parents[1]}`"
        )
    return t


def _check_weights(run: rundir.Run, info: dict[str, Any], path: Path) -> None:
    """A RunError when `info` was fitted to other weights than the run's (one written by an
    earlier vaegen records none, and is trusted)."""
    fitted = info.get(FITTED_WEIGHTS)
    if fitted is not None and fitted != run.weights_sha256():
        raise RunError(
            f"{path}: fitted to other weights than {run.path / layout.WEIGHTS} holds (an earlier "
            f"state of the run's training, or another run): refit it with "
            f"`vaegen fit-prior {run.path}`, or pass --prior standard"
        )


def _load_posterior(run: rundir.Run, folder: Path) -> AggregatePosterior:
    if not (folder / POSTERIOR_INFO).exists():
        raise VaegenError(
            f"{run.path} holds no aggregate posterior ({folder / POSTERIOR_INFO}): "
            f"`vaegen fit-prior {run.path}` stores one"
        )
    info = tensorfiles.read_json(folder / POSTERIOR_INFO)
    if not isinstance(info, dict) or info.get("kind") != "posterior":
        raise RunError(f"{folder / POSTERIOR_INFO}: not a vaegen aggregate posterior")
    _check_weights(run, info, folder / POSTERIOR_INFO)
    f32 = torch.float32
    t = _read(folder / POSTERIOR_PARAMS, {"mu": f32, "sigma": f32, "labels?": torch.int64})
    posterior = AggregatePosterior(t["mu"], t["sigma"], t.get("labels"), info)
    conditional = run.config.model.conditional
    d = run.config.model.latent_dim
    labels = posterior.labels
    bad_labels = labels is not None and (labels.min() < 0 or labels.max() >= len(run.classes))
    if posterior.mu.shape[1] != d or posterior.conditional != conditional or bad_labels:
        raise RunError(
            f"{folder / POSTERIOR_PARAMS} does not fit this run ({d}-D codes, "
            f"{'conditional' if conditional else 'unconditional'}, {len(run.classes)} classes): "
            f"refit it with `vaegen fit-prior {run.path}`"
        )
    if not bool((posterior.sigma > 0).all() & posterior.sigma.isfinite().all()) or not bool(
        posterior.mu.isfinite().all()
    ):
        raise RunError(f"{folder / POSTERIOR_PARAMS}: a mu is not finite or a sigma not positive")
    return posterior

"""`vaegen evaluate`: an honest quality scorecard of a trained run, written to RUN/eval.json.

Four questions, each answered with its units stated, each in its own module:
1. How likely is the test set? (likelihood) The negative ELBO (reconstruction + KL) and the
   tighter importance-weighted bound on the negative log-likelihood (IWAE, Burda et al. 2016).
2. Is the latent space useful? (latent) k-nearest-neighbour accuracy of test latent means
   against training latent means.
3. Do samples look like the data? (samples) In the feature space of a classifier (features:
   vaegen's shipped FashionMNIST classifier for FashionMNIST runs, else the same architecture
   trained on the run's own training split, saved and reused): the Frechet distance between
   generated and test images (as FID does with Inception) and the improved precision and recall
   (Kynkaenniemi et al. 2019), each beside the same numbers for real training images, what a
   perfect generator would reach; the Frechet distance of the test set's reconstructions, what
   the decoder alone costs; density and coverage, KID, alpha-precision and beta-recall; and a
   classifier's attempt to tell generated from test images (held-out AUC).
4. Do samples copy training images? (copying) How near samples lie to particular training
   images, against how near the test images lie to them; the DCR share and the authentic
   share, each beside fresh real images' (the memorisation floor).
5. Is the simulated data useful? (synthetic; conditional runs only) Is each image of the class it
   was asked for, by that classifier; train on synthetic, test on real (TSTR).

Every number carries an interval (value [low, high], with the number of images or seeds behind
it and how it was made: vaegen.evaluation.intervals) and, where one exists, the same number for
real data (its floor). context holds what the parts share; evaluation.certificate picks the
headline numbers; evaluation.scorecard formats the result as the printed table.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from .. import rundir
from .._version import __version__
from ..data import load_images, load_splits
from ..errors import VaegenError
from ..files import atomic_write_text
from ..rundir import Run, layout
from ..rundir.config import MAX_EPOCHS, DataConfig, check_count, check_seed
from ..rundir.layout import EVAL
from ..sampling.generate import MAX_IMAGES
from ..sampling.priors import load_prior, prior_sha256
from ..seeds import EVALUATION
from .certificate import certificate
from .context import SECONDS, Context, loss_units, q
from .copying import memorisation, nearest_training
from .estimators import KNN_K, PR_K
from .features import Subject, subject_of
from .latent import latent_knn
from .marginal_likelihood import marginal_likelihood
from .reference_classifier import CLASSIFIER_LR
from .samples import (
    alpha_beta,
    density_coverage,
    frechet,
    kernel_distance,
    precision_and_recall,
    two_sample,
)
from .synthetic import class_agreement, tstr
from .tstr_classifiers import MLP_HIDDEN, MLP_LR, mlp_epochs

__all__ = ["FULL", "QUICK", "evaluate", "evaluate_samples", "loss_units"]

# the TSTR classifier's training, measured: see classifier.CLASSIFIER_LR
FULL = {"classifier_epochs": 5}
# the IWAE bound's K: 5000 is the largest in the literature (Burda et al. 2016); each sample
# costs a decoder pass per test image, so 10**6 would take days: larger is a typo
MAX_IW_SAMPLES = 1_000_000
QUICK = {"iw_samples": 100, "n_generated": 2000, "classifier_epochs": 2}  # caps, not floors


def evaluate(
    run: Run,
    *,
    iw_samples: int = 1000,
    n_generated: int = 60000,
    binarize: bool = False,
    quick: bool = False,
    seed: int = 0,
    progress: bool = True,
    prior: str = "fitted",
    feature_net: str | Path | None = None,
    feature_epochs: int | None = None,
) -> dict[str, Any]:
    """Measure a run (see the module docstring), write RUN/eval.json atomically and return it.

    iw_samples: K of the IWAE bound. n_generated: N images generated for the Frechet distance,
    precision and recall, class agreement and TSTR (and N real training images for their
    references). binarize: evaluate the likelihood on stochastically binarised test images (runs
    with a likelihood of binary pixels only). quick: cap K, N and the classifier epochs at QUICK.
    prior: where generated images' z come from (sampling.priors: the run's fitted prior, or N(0, I)
    for "standard" and for a run without one). feature_net: the folder of the feature network of
    a run whose data is not FashionMNIST (default RUN/feature_net; one folder shared by runs on
    the same data makes their numbers comparable; see vaegen.evaluation.features). feature_epochs:
    its training epochs (None: the saved network's, or a default scaled to the training set;
    quick does not change it, so quick and full evaluations share one network). The same
    arguments give the same numbers on the same device.
    The run directory is locked meanwhile: a trainer cannot rewrite the weights being measured.
    """
    with layout.lock_for_writing(run.path, "evaluation"):
        return _evaluate(
            run,
            iw_samples,
            n_generated,
            binarize,
            quick,
            seed,
            progress,
            prior,
            None if feature_net is None else Path(feature_net),
            feature_epochs,
        )


def _evaluate(
    run: Run,
    iw_samples: int,
    n_generated: int,
    binarize: bool,
    quick: bool,
    seed: int,
    progress: bool,
    prior: str,
    feature_net: Path | None,
    feature_epochs: int | None,
) -> dict[str, Any]:
    # all checked before anything is loaded: a bad --feature-epochs was found only after the
    # data was read, and a huge --iw-samples asked the allocator for K x D values per image
    if iw_samples < 1:
        raise VaegenError(f"iw_samples = {iw_samples} is not valid: use an integer >= 1")
    if n_generated <= PR_K:  # precision and recall look at each image's PR_K nearest others
        raise VaegenError(f"n_generated = {n_generated} is not valid: use an integer > {PR_K}")
    check_count("iw_samples", iw_samples, 1, MAX_IW_SAMPLES)
    check_count("n_generated", n_generated, PR_K + 1, MAX_IMAGES)
    check_seed("seed", seed)
    if feature_epochs is not None:
        check_count("feature_epochs", feature_epochs, 1, MAX_EPOCHS)
    loss, lk = run.config.train.loss, run.likelihood
    if binarize and not lk.binary_data:
        # an error, not a note: a Gaussian density on 0/1 pixels is a number on another scale,
        # and printing it beside published binarised NLLs would invite a false comparison
        raise VaegenError(
            f"--binarize needs a model trained with a likelihood of binary pixels (--loss "
            f"bernoulli); this run uses the {loss} loss ({lk.description}), whose numbers are "
            "not comparable with "
            "published binarised-FashionMNIST NLLs. Evaluate it without --binarize."
        )
    k, n_req, epochs = iw_samples, n_generated, FULL["classifier_epochs"]
    if quick:
        k, n_req = min(k, QUICK["iw_samples"]), min(n_req, QUICK["n_generated"])
        epochs = QUICK["classifier_epochs"]

    t_start = time.perf_counter()
    seconds: dict[str, Any] = {}
    train_ds, test_ds = rundir.load_both_splits(run)
    conditional = run.config.model.conditional
    device = run.device
    run.model.eval()
    used_prior = load_prior(run, prior)  # loaded (and checked against the weights) once
    n = min(n_req, len(train_ds))  # generated and real sets must be the same size to compare
    if n <= PR_K:
        raise VaegenError(
            f"{run.path}: its training set has {len(train_ds)} images; evaluating it needs more "
            f"than {PR_K}"
        )
    gen = torch.Generator().manual_seed(seed + EVALUATION.real_subset)
    real_idx = torch.randperm(len(train_ds), generator=gen)[:n]  # N real training images
    settings = {
        "iw_samples": k,
        "n_generated": n,
        "binarize": binarize,
        "quick": quick,
        "seed": seed,
        "classifier_epochs": epochs,
        "classifier_lr": CLASSIFIER_LR,
        "knn_k": KNN_K,
        "precision_recall_k": PR_K,
        "device": str(device),
        "prior": {
            "requested": prior,
            "used": used_prior.kind,
            "sha256": prior_sha256(run, used_prior.kind),
        },
        "requested": {"iw_samples": iw_samples, "n_generated": n_generated},
        "quick_caps": QUICK if quick else None,
        "feature_net": None if feature_net is None else str(feature_net),
        "feature_epochs": feature_epochs,
    }
    notes = []
    if n < n_req:
        notes.append(
            f"n_generated lowered to {n}: the training set has only {len(train_ds)} images"
        )

    ctx = Context(
        run,
        subject_of(run),
        train_ds,
        test_ds,
        n,
        real_idx,
        seed,
        progress,
        used_prior,
        feature_net,
        feature_epochs,
        recipe=_recipe(n, seed, epochs, device),
    )
    images = sample_parts(ctx, epochs)
    parts = {
        # found, loaded or trained first, so that its training is not timed as Frechet's
        "feature_network": images.pop("feature_network"),
        "likelihood": lambda: marginal_likelihood(ctx, k, binarize),
        "knn": lambda: latent_knn(ctx),
        **images,
    }
    measured = _measure(parts, seconds)
    ctx.real_side().save()
    settings["real_side"] = ctx.real_side().summary()
    seconds["total"] = time.perf_counter() - t_start

    net, likelihood, knn = (measured.pop(k) for k in ("feature_network", "likelihood", "knn"))
    result = {
        "vaegen_version": __version__,
        "run": str(run.path),
        "model": {
            "loss": loss,
            "conditional": conditional,
            "latent_dim": run.config.model.latent_dim,
            "image_shape": list(run.image_shape),
            "data": run.config.data.source,
            "epochs_trained": len(run.metrics),
            "weights_sha256": run.weights_sha256(),
        },
        "settings": settings,
        "feature_network": net or {"skipped": ctx.feature_skip()},
        "likelihood": likelihood,
        "latent_knn": knn,
        **measured,  # the image-based parts, in sample_parts' order: none is left out
        "seconds": {name: q(round(s, 3), SECONDS) for name, s in seconds.items()},
        "notes": notes,
    }
    result["certificate"] = certificate(result)
    atomic_write_text(run.path / EVAL, json.dumps(result, indent=2) + "\n")
    return result


def _recipe(n: int, seed: int, epochs: int, device: torch.device) -> dict[str, Any]:
    """What the real side of an evaluation depends on besides the data and the feature network
    (real_cache): N, the seed, the classifiers' recipe and the device they train on."""
    return {
        "n": n,
        "seed": seed,
        "classifier_epochs": epochs,
        "classifier_lr": CLASSIFIER_LR,
        "mlp": {"epochs": mlp_epochs(epochs), "lr": MLP_LR, "hidden": MLP_HIDDEN},
        "device": str(device),
    }


def _measure(parts: dict[str, Callable[[], Any]], seconds: dict[str, Any]) -> dict[str, Any]:
    """Each part's result, in order, its seconds recorded in `seconds`."""
    measured = {}
    for name, part in parts.items():
        t0 = time.perf_counter()
        measured[name] = part()
        seconds[name] = time.perf_counter() - t0
    return measured


def sample_parts(ctx: Context, classifier_epochs: int) -> dict[str, Callable[[], Any]]:
    """The parts of an evaluation that need only images (no model): what `evaluate_samples`
    measures, and what a run's evaluation measures beside its likelihood and latent space."""
    return {
        "feature_network": lambda: ctx.feature_net().label,
        "frechet": lambda: frechet(ctx),
        "precision_recall": lambda: precision_and_recall(ctx),
        "density_coverage": lambda: density_coverage(ctx),
        "kernel_distance": lambda: kernel_distance(ctx),
        "alpha_beta": lambda: alpha_beta(ctx),
        "two_sample": lambda: two_sample(ctx),
        "nearest_training": lambda: nearest_training(ctx),
        "memorisation": lambda: memorisation(ctx),
        "class_agreement": lambda: class_agreement(ctx),
        "tstr": lambda: tstr(ctx, classifier_epochs),
    }


def evaluate_samples(
    samples: str | Path,
    data: DataConfig,
    *,
    n: int | None = None,
    quick: bool = False,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    feature_net: str | Path | None = None,
    feature_epochs: int | None = None,
) -> dict[str, Any]:
    """The image-based part of `evaluate` for images made anywhere: any generator's output
    against a dataset, with no run (`vaegen evaluate --samples FILE --data SOURCE`).

    samples: an .npz, a folder of IDX files or a folder of images (data.load_images), labelled
    with the data's classes (class agreement and TSTR) or not. data: the real dataset as a run's
    config.json names it (source and options; the same channels and image size are applied to
    the samples, which must then have the data's image shape). n: images compared (None: all
    given, at most the training set's size, and with quick at most QUICK's; more given than n:
    a seeded random n of them), against n random real training images. The feature network is
    the reference for FashionMNIST, else one trained on the data's training split, kept in
    vaegen's cache or in `feature_net` (see vaegen.evaluation.features).
    Returns the result (as eval.json holds one, with "samples" in place of "run" and "model",
    and the certificate); writes nothing itself. Numbers equal a run's evaluation of the same
    images with the same seed and N.
    """
    check_seed("seed", seed)
    if feature_epochs is not None:
        check_count("feature_epochs", feature_epochs, 1, MAX_EPOCHS)
    if n is not None:
        check_count("n", n, PR_K + 1, MAX_IMAGES)
    t_start = time.perf_counter()
    given = load_images(samples, channels=data.channels, image_size=data.image_size)
    train_ds, test_ds = load_splits(data.source, **data.load_options())
    if given.image_shape != train_ds.image_shape:
        raise VaegenError(
            f"--samples {samples}: its images are {given.image_shape}, the data's "
            f"({data.source}) are {train_ds.image_shape}; convert one or both with --channels "
            "and --image-size"
        )
    labels = given.labels
    if labels is not None and list(given.classes) != list(train_ds.classes):
        raise VaegenError(
            f"--samples {samples}: its classes ({', '.join(given.classes)}) are not the data's "
            f"({', '.join(train_ds.classes)}); class agreement and TSTR need the same classes "
            "in the same order (or give the images without labels)"
        )
    cap = QUICK["n_generated"] if quick else MAX_IMAGES
    count = min(len(given), len(train_ds), cap, n if n is not None else len(given))
    if count <= PR_K:
        raise VaegenError(
            f"--samples {samples}: {len(given)} images given, {len(train_ds)} training images "
            f"in {data.source}; evaluating needs more than {PR_K} of each"
        )
    epochs = QUICK["classifier_epochs"] if quick else FULL["classifier_epochs"]
    pick = torch.Generator().manual_seed(seed + EVALUATION.generated)
    chosen = torch.randperm(len(given), generator=pick)[:count] if count < len(given) else None
    images = given.images if chosen is None else given.images[chosen]
    if labels is not None and chosen is not None:
        labels = labels[chosen]
    gen = torch.Generator().manual_seed(seed + EVALUATION.real_subset)
    real_idx = torch.randperm(len(train_ds), generator=gen)[:count]
    shape = train_ds.image_shape
    subject = Subject(data, shape, tuple(train_ds.classes), torch.device(device))
    ctx = Context(
        None,
        subject,
        train_ds,
        test_ds,
        count,
        real_idx,
        seed,
        progress,
        feature_dir=None if feature_net is None else Path(feature_net),
        feature_epochs=feature_epochs,
        recipe=_recipe(count, seed, epochs, torch.device(device)),
        _generated=(images, labels),
    )
    seconds: dict[str, Any] = {}
    measured = _measure(sample_parts(ctx, epochs), seconds)
    ctx.real_side().save()
    seconds["total"] = time.perf_counter() - t_start
    result: dict[str, Any] = {
        "vaegen_version": __version__,
        "samples": {
            "path": str(Path(samples).absolute()),
            "given": len(given),
            "labelled": given.labels is not None,
            "image_shape": list(shape),
        },
        "data": asdict(data),
        "settings": {
            "n_generated": count,
            "quick": quick,
            "seed": seed,
            "classifier_epochs": epochs,
            "classifier_lr": CLASSIFIER_LR,
            "precision_recall_k": PR_K,
            "device": str(device),
            "requested": {"n": n},
            "feature_net": None if feature_net is None else str(feature_net),
            "feature_epochs": feature_epochs,
            "real_side": ctx.real_side().summary(),
        },
        **{k: v for k, v in measured.items() if k != "feature_network"},
        "feature_network": measured["feature_network"] or {"skipped": ctx.feature_skip()},
        "seconds": {name: q(round(s, 3), SECONDS) for name, s in seconds.items()},
        "notes": [] if chosen is None else [f"{count} of the {len(given)} images given, at random"],
    }
    result["certificate"] = certificate(result)
    return result

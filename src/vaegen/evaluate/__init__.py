"""`vaegen evaluate`: an honest quality scorecard of a trained run, written to RUN/eval.json.

Four questions, each answered with its units stated:
1. How likely is the test set? The negative ELBO (reconstruction + KL) and the tighter
   importance-weighted bound on the negative log-likelihood (IWAE, Burda et al. 2016).
2. Is the latent space useful? k-nearest-neighbour accuracy of test latent means against training
   latent means.
3. Do samples look like the data? The Frechet distance between generated and test images in the
   feature space of vaegen's shipped FashionMNIST classifier (as FID does with Inception), next to
   the same distance for real training images: the floor a perfect generator would reach.
4. Is the simulated data useful? Train on synthetic, test on real (TSTR; conditional runs only).

vaegen.scorecard formats the result as the table the command prints.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any

import torch

from . import run as rundir
from ._io import atomic_write_text
from ._version import __version__
from .classifier import (
    REFERENCE_SHAPE,
    accuracy,
    extract_features,
    load_reference_classifier,
    reference_info,
    train_classifier,
)
from .data import ImageDataset, load_dataset, to_float
from .errors import VaegenError
from .generate import generate
from .losses import Likelihood, evaluate_loss
from .metrics import (
    KNN_K,
    frechet_distance_features,
    iwae_log_likelihood,
    knn_accuracy,
    latent_means,
)
from .run import EVAL, Run

FULL = {"classifier_epochs": 5}
QUICK = {"iw_samples": 100, "n_generated": 2000, "classifier_epochs": 2}  # caps, not floors

NATS = "nats per image"
FRACTION = "fraction of test images"
SECONDS = "seconds"


def loss_units(lk: Likelihood) -> str:
    """The units of a run's loss values per image, as metrics.jsonl and training print them."""
    if lk.nats_offset:
        return f"{lk.unit} per image (nats minus {lk.nats_offset_formula})"
    return f"{lk.unit} per image"


def _q(value: float | None, units: str) -> dict[str, Any]:
    """A number with its units, as every number in eval.json is written."""
    return {"value": value, "units": units}


# ------------------------------------------------------------------------------------ evaluate


def evaluate(
    run: Run,
    iw_samples: int = 1000,
    n_generated: int = 10000,
    binarize: bool = False,
    quick: bool = False,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Measure a run (see the module docstring), write RUN/eval.json atomically and return it.

    iw_samples: K of the IWAE bound. n_generated: N images generated for the Frechet distance and
    TSTR (and N real training images for their baselines). binarize: evaluate the likelihood on
    stochastically binarised test images (runs with a likelihood of binary pixels only). quick: cap K, N and the
    classifier epochs at QUICK. The same arguments give the same numbers on the same device.
    The run directory is locked meanwhile: a trainer cannot rewrite the weights being measured.
    """
    with rundir.lock_for_writing(run.path, "evaluation"):
        return _evaluate(run, iw_samples, n_generated, binarize, quick, seed, progress)


def _evaluate(
    run: Run,
    iw_samples: int,
    n_generated: int,
    binarize: bool,
    quick: bool,
    seed: int,
    progress: bool,
) -> dict[str, Any]:
    if iw_samples < 1:
        raise VaegenError(f"iw_samples = {iw_samples} is not valid: use an integer >= 1")
    if n_generated < 2:
        raise VaegenError(f"n_generated = {n_generated} is not valid: use an integer >= 2")
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
    data = run.config.data
    train_ds = load_dataset(data.source, "train", data.data_dir)
    test_ds = load_dataset(data.source, "test", data.data_dir)
    for ds in (train_ds, test_ds):
        if ds.image_shape != tuple(run.image_shape):
            raise VaegenError(
                f"the run was trained on {tuple(run.image_shape)} images but {data.source!r} "
                f"now holds {ds.image_shape} images"
            )
    conditional = run.config.model.conditional
    device = run.device
    run.model.eval()
    n = min(n_req, len(train_ds))  # generated and real sets must be the same size to compare
    gen = torch.Generator().manual_seed(seed)
    real_idx = torch.randperm(len(train_ds), generator=gen)[:n]  # N real training images
    settings = {
        "iw_samples": k, "n_generated": n, "binarize": binarize, "quick": quick, "seed": seed,
        "classifier_epochs": epochs, "knn_k": KNN_K, "device": str(device),
        "requested": {"iw_samples": iw_samples, "n_generated": n_generated},
        "quick_caps": QUICK if quick else None,
    }  # fmt: skip
    notes = []
    if n < n_req:
        notes.append(
            f"n_generated lowered to {n}: the training set has only {len(train_ds)} images"
        )

    ctx = _Context(run, train_ds, test_ds, n, real_idx, seed, progress)
    parts = {
        "likelihood": lambda: _likelihood(ctx, k, binarize),
        "knn": lambda: _latent_knn(ctx),
        "frechet": lambda: _frechet(ctx),
        "tstr": lambda: _tstr(ctx, epochs),
    }
    measured = {}
    for name, part in parts.items():
        t0 = time.perf_counter()
        measured[name] = part()
        seconds[name] = time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - t_start

    result = {
        "vaegen_version": __version__,
        "run": str(run.path),
        "model": {
            "loss": loss, "conditional": conditional, "latent_dim": run.config.model.latent_dim,
            "image_shape": list(run.image_shape), "data": data.source,
            "epochs_trained": len(run.metrics),
        },
        "settings": settings,
        "likelihood": measured["likelihood"],
        "latent_knn": measured["knn"],
        "frechet": measured["frechet"],
        "tstr": measured["tstr"],
        "seconds": {name: _q(round(s, 3), SECONDS) for name, s in seconds.items()},
        "notes": notes,
    }  # fmt: skip
    atomic_write_text(run.path / EVAL, json.dumps(result, indent=2) + "\n")
    return result


@dataclass
class _Context:
    """What every part of evaluate() reads: the run, its data, N and its real images, the seed."""

    run: Run
    train: ImageDataset
    test: ImageDataset
    n: int  # generated images, and real training images to compare them with
    real_idx: torch.Tensor  # n indices into the training set
    seed: int
    progress: bool
    _generated: tuple[torch.Tensor, torch.Tensor | None] | None = None

    def generated(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """N generated images (and labels for a conditional model), made once, seeded."""
        if self._generated is None:
            self._generated = generate(self.run, self.n, seed=self.seed + 4)
        return self._generated


def _likelihood(ctx: _Context, k: int, binarize: bool) -> dict[str, Any]:
    """Negative ELBO, its parts and the IWAE bound on the test set, in the run's loss units."""
    run, seed = ctx.run, ctx.seed
    lk, conditional, device = run.likelihood, run.config.model.conditional, run.device
    y_test = ctx.test.labels.to(device) if conditional else None  # type: ignore[union-attr]
    x_test = to_float(ctx.test.images, device)
    if binarize:
        bgen = torch.Generator().manual_seed(seed + 2)
        x_test = torch.bernoulli(x_test.cpu(), generator=bgen).to(device)
    elbo = evaluate_loss(run.model, x_test, y_test, lk.name, seed=seed + 1)  # beta 1: the bound
    log_px = iwae_log_likelihood(
        run.model, x_test, y_test, lk, k, seed=seed + 3, progress=ctx.progress
    )
    nll_iwae = -float(log_px.mean())  # nats (a density for a continuous likelihood)
    constant = lk.nats_constant(math.prod(run.image_shape))  # loss + this = NLL in nats
    units = loss_units(lk)
    likelihood: dict[str, Any] = {
        "data": f"{len(x_test)} test images, "
        + (f"stochastically binarised (pixel ~ Bernoulli(x), seed {seed + 2})" if binarize
           else "grey levels in [0, 1]"),
        "conditional_on_label": conditional,
        "iw_samples": k,
        "units": lk.units_note,
        "negative_elbo": _q(elbo["recon"] + elbo["kl"], units),
        "reconstruction": _q(elbo["recon"], units),
        "kl": _q(elbo["kl"], NATS),
        "nll_bound_iwae": _q(nll_iwae - constant, units),
        "notes": [
            "negative_elbo >= nll_bound_iwae >= the true negative log-likelihood; "
            "the ELBO uses one sampled z per image and the analytic KL, with beta = 1 "
            f"whatever beta the run was trained with ({run.config.train.beta:g})",
        ],
    }  # fmt: skip
    if constant:
        likelihood["gaussian_nll_nats"] = {
            "negative_elbo": _q(elbo["recon"] + elbo["kl"] + constant, NATS),
            "nll_bound_iwae": _q(nll_iwae, NATS),
            "constant_0.5*D*log(2*pi)": _q(constant, NATS),
        }
        likelihood["notes"].append(
            "gaussian_nll_nats is a density on continuous pixels (N(decoder mean, I)); it is "
            "not comparable with published NLLs of binarised images"
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


def _latent_knn(ctx: _Context) -> dict[str, Any]:
    """kNN accuracy of test latent means against training latent means."""
    run, train_ds, test_ds, progress = ctx.run, ctx.train, ctx.test, ctx.progress
    conditional = run.config.model.conditional
    if train_ds.labels is not None and test_ds.labels is not None:
        z_train = latent_means(run.model, train_ds.images, train_ds.labels if conditional else None)
        z_test = latent_means(run.model, test_ds.images, test_ds.labels if conditional else None)
        acc = knn_accuracy(
            z_train, train_ds.labels, z_test, test_ds.labels, KNN_K, progress=progress
        )
        knn: dict[str, Any] = {
            "accuracy": _q(acc, FRACTION),
            "k": KNN_K,
            "chance": _q(1 / len(run.classes), FRACTION),
            "notes": [
                "test latent means vs all training latent means, Euclidean, majority vote, "
                "ties broken toward the nearest neighbour"
            ],
        }
        if conditional:
            knn["notes"].append(
                "conditional model: the encoder is given the label, so its latent need not "
                "carry the class and a low accuracy is expected"
            )
    else:
        knn = {"not_applicable": "the dataset has no labels"}
    return knn


def _frechet(ctx: _Context) -> dict[str, Any]:
    """Frechet distances, generated vs test and real training vs test, in reference features."""
    run, train_ds, test_ds, n, seed = ctx.run, ctx.train, ctx.test, ctx.n, ctx.seed
    progress, data = ctx.progress, run.config.data
    if tuple(run.image_shape) != REFERENCE_SHAPE:
        frechet: dict[str, Any] = {
            "skipped": f"the reference classifier reads {REFERENCE_SHAPE} FashionMNIST images "
            f"and this run's images are {tuple(run.image_shape)}; a feature network trained on "
            "the fly would make the distance incomparable between runs"
        }
    else:
        clf = load_reference_classifier(run.device)
        feats = {
            name: extract_features(clf, images, progress=progress)
            for name, images in (
                ("test", test_ds.images),
                ("generated", ctx.generated()[0]),
                ("train", train_ds.images[ctx.real_idx]),
            )
        }
        fu = f"squared units of the reference classifier's {feats['test'].shape[1]}-d features"
        frechet = {
            "generated_vs_test": _q(
                frechet_distance_features(feats["generated"], feats["test"]), fu
            ),
            "train_vs_test_floor": _q(frechet_distance_features(feats["train"], feats["test"]), fu),
            "n": n,
            "n_test": len(test_ds),
            "feature_network": {
                "name": "vaegen reference FashionMNIST classifier, penultimate layer",
                "test_accuracy": reference_info().get("test_accuracy"),
            },
            "notes": [
                f"N = {n} generated (seed {seed + 4}) and N random real training images, each "
                "against all test images; the distance depends on N, so compare numbers of equal N"
            ],
        }
        if data.source != "fashion-mnist":
            frechet["notes"].append(
                f"the data is {data.source!r}, not FashionMNIST: the features are those of a "
                "FashionMNIST classifier, so the distance is only a rough guide"
            )
    return frechet


def _tstr(ctx: _Context, epochs: int) -> dict[str, Any]:
    """Train on N synthetic labelled images / on N real ones, test both on the real test set."""
    run, train_ds, test_ds, n, seed = ctx.run, ctx.train, ctx.test, ctx.n, ctx.seed
    progress, device = ctx.progress, run.device
    conditional = run.config.model.conditional
    if not conditional:
        tstr: dict[str, Any] = {"not_applicable": "the model is not conditional"}
    else:
        gen_images, gen_labels = ctx.generated()
        assert gen_labels is not None and train_ds.labels is not None  # conditional => labels
        common = {"epochs": epochs, "seed": seed + 5, "num_classes": len(run.classes)}
        synth_clf = train_classifier(
            gen_images, gen_labels, device=device, progress=progress, **common
        )
        real_clf = train_classifier(
            train_ds.images[ctx.real_idx], train_ds.labels[ctx.real_idx], device=device,
            progress=progress, **common,
        )  # fmt: skip
        synth_acc = accuracy(synth_clf, test_ds.images, test_ds.labels)
        real_acc = accuracy(real_clf, test_ds.images, test_ds.labels)
        tstr = {
            "synthetic_accuracy": _q(synth_acc, FRACTION),
            "real_accuracy": _q(real_acc, FRACTION),
            "ratio": _q(synth_acc / real_acc if real_acc else None, "synthetic / real"),
            "n": n,
            "epochs": epochs,
            "notes": [
                f"the reference classifier's architecture trained from scratch (seed {seed + 5}) "
                "on N generated images with labels spread over the classes, and on N real "
                "training images; both tested on the real test set",
                "published anchor (FashionMNIST): a conditional VAE reaches 81.0% where real "
                "data gives 86.6% (ratio 0.935)",
            ],
        }
    return tstr

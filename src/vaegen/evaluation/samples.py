"""Do samples look like the data? Distances and manifolds in the features of the run's feature
network (vaegen.evaluation.features: the reference classifier for FashionMNIST, else one trained on
the run's data), which each result names.

frechet: the Frechet distance of N generated images to the test set, beside that of N real
training images (the floor a perfect generator would reach) and that of the test set's own
reconstructions (what the decoder alone costs).
precision_recall: how many samples are realistic and how much of the data they cover
(Kynkaenniemi et al. 2019), beside the same two numbers for N real training images.
density_coverage, kernel_distance, alpha_beta: fidelity and diversity measures that resist
outliers (Naeem et al. 2020; the KID of Binkowski et al. 2018; Alaa et al. 2022), each beside N
real training images' numbers.
two_sample: can a classifier tell generated features from test features? Held-out AUC, beside the
same test of real training images against the test images.

Every number carries an interval (vaegen.evaluation.intervals); each result's notes say which
kind and what it holds fixed. The floors are the same measure of N real training images against
the test set: what a generator as good as the data itself reaches at this N.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..seeds import EVALUATION
from .context import BOOTSTRAP_RESAMPLES, FRECHET_RESAMPLES, Context, qi
from .estimators import PR_K, precision_recall_inside
from .fidelity import (
    AB_STEPS,
    DC_K,
    KID_SUBSET_SIZE,
    alpha_beta_points,
    density_coverage_points,
    integrated,
    kid_disjoint,
    precision_curve,
    recall_curve,
)
from .intervals import (
    Interval,
    binomial_interval,
    bootstrap_interval,
    frechet_interval,
    seed_interval,
)
from .two_sample import TwoSampleResult, two_sample_auc


def _both(ctx: Context, part: str, side: Callable[[str], Any]) -> dict[str, Any]:
    """A part's numbers for the generated images, side("generated"), and for N real training
    images, side("train"), the floor: the same for every run of the dataset, so kept in the
    real side's cache (real_cache) under the part's name."""
    return {
        "generated": side("generated"),
        "train_vs_test_reference": ctx.real_side().number(
            f"{part}.train_vs_test_reference", lambda: side("train")
        ),
    }


def _share(inside: torch.Tensor) -> Interval:
    return binomial_interval(int(inside.sum()), len(inside))


def frechet(ctx: Context) -> dict[str, Any]:
    """Frechet distances to the test set of the generated images, of N real training images and
    (for a run) of the test set's reconstructions, in squared feature units."""
    skip = ctx.feature_skip()
    if skip is not None:
        return {"skipped": skip}
    net = ctx.feature_net()
    test = ctx.features("test")
    fu = f"squared units of {net.what}'s {test.shape[1]}-d features"
    seed = ctx.seed + EVALUATION.bootstrap

    def distance(name: str) -> Interval:
        return frechet_interval(ctx.features(name), test, n_resamples=FRECHET_RESAMPLES, seed=seed)

    samples = distance("generated")
    out: dict[str, Any] = {
        "generated_vs_test": qi(samples, fu),
        "train_vs_test_floor": ctx.real_side().number(
            "frechet.train_vs_test_floor", lambda: qi(distance("train"), fu)
        ),
    }
    notes = [
        f"N = {ctx.n} generated (seed {ctx.seed + EVALUATION.generated}) and N random real "
        "training images, each against all test images; the distance depends on N, so compare "
        "numbers of equal N",
        "intervals: bootstrap over both sets of images (blocks of rows, see "
        "vaegen.evaluation.intervals.frechet_interval), the spread of the resampled distances "
        "placed around the value: how far another draw of as many images would move the number",
    ]
    if ctx.run is not None:  # images from elsewhere have no decoder to reconstruct with
        recon = distance("reconstructions")
        out["reconstructions_vs_test"] = qi(recon, fu)
        out["samples_over_reconstructions"] = {
            "value": samples.value / recon.value if recon.value else None,
            "units": "generated_vs_test / reconstructions_vs_test",
        }
        cond = " with its label" if ctx.conditional else ""
        notes += [
            f"reconstructions: each test image decoded from its encoder mean{cond}, the "
            "likelihood's mean quantised to uint8 as generated images are; no sampling, so "
            "their distance is what the decoder's blur alone costs",
            "samples_over_reconstructions: how much farther the prior's samples are than the "
            "decoder's best renderings of real images. Near 1, the decoder limits the samples "
            "and a sharper decoder is what would help; well above 1, the prior adds its own "
            "error (samples from regions of the latent space the encoder does not use)",
        ]
    return {
        **out,
        "n": ctx.n,
        "n_test": len(ctx.test),
        "feature_network": net.label,
        "notes": notes,
    }


def precision_and_recall(ctx: Context) -> dict[str, Any]:
    """Improved precision and recall of the generated images, and of N real training images, both
    against the test set, in the feature network's features."""
    skip = ctx.feature_skip()
    if skip is not None:
        return {"skipped": skip}
    test = ctx.features("test")

    def side(name: str) -> Any:
        what = {"generated": "generated images", "train": "real training images"}[name]
        inside_test, inside_set = precision_recall_inside(test, ctx.features(name), k=PR_K)
        return {
            "precision": qi(
                _share(inside_test), f"fraction of the {what} inside the test images' manifold"
            ),
            "recall": qi(
                _share(inside_set), f"fraction of test images inside the {what}' manifold"
            ),
        }

    out = _both(ctx, "precision_recall", side)
    return {
        **out,
        "k": PR_K,
        "n": ctx.n,
        "n_test": len(ctx.test),
        "feature_network": ctx.feature_net().label,
        "notes": [
            "Kynkaenniemi et al. 2019: a set's manifold is the union of balls around its "
            f"feature vectors, each of radius the distance to its k-th nearest neighbour in the "
            f"set (k = {PR_K}). Precision: generated images inside the test set's manifold (realism). "
            "Recall: test images inside the generated images' manifold (coverage of the data's "
            "variety); a generator that repeats a few good images has high precision and low "
            "recall",
            "train_vs_test_reference: the same with N real training images in place of the "
            "generated ones, what a perfect generator would reach; both depend on N and on the "
            "test set's size, so compare numbers of equal N",
            "intervals: Wilson, over the images counted, with the other set's manifold held "
            "fixed (precision over the N images, recall over the test images): the counting "
            "noise, not that of the manifold's radii",
        ],
    }


def density_coverage(ctx: Context) -> dict[str, Any]:
    """Density and coverage (Naeem et al. 2020) of the generated images and of N real training
    images, against k-NN balls around the test images, with intervals."""
    skip = ctx.feature_skip()
    if skip is not None:
        return {"skipped": skip}
    test = ctx.features("test")
    seed = ctx.seed + EVALUATION.bootstrap

    def side(name: str) -> Any:
        counts, covered = density_coverage_points(test, ctx.features(name), k=DC_K)
        density = bootstrap_interval(
            lambda c: float(np.mean(c)) / DC_K,
            counts.numpy(),
            n_resamples=BOOTSTRAP_RESAMPLES,
            seed=seed,
        )
        return {
            "density": qi(density, "test images' balls holding an image, over k, per image"),
            "coverage": qi(_share(covered), "fraction of test images' balls holding an image"),
        }

    out = _both(ctx, "density_coverage", side)
    return {
        **out,
        "k": DC_K,
        "n": ctx.n,
        "n_test": len(test),
        "feature_network": ctx.feature_net().label,
        "notes": [
            f"Naeem et al. 2020: a ball around each test image out to its {DC_K}-th nearest "
            "other test image (the boundary inside). Density: the balls holding each image, "
            "over k, averaged (1 for images drawn as the data is; above 1 where images crowd "
            "the data's dense regions). Coverage: the share of balls holding an image (the "
            "data's variety reached). Balls around real images only, so an outlying generated "
            "image changes neither",
            "intervals: density's by bootstrap over the images (percentile), coverage's Wilson "
            "over the balls; the balls held fixed",
        ],
    }


def kernel_distance(ctx: Context) -> dict[str, Any]:
    """KID (Binkowski et al. 2018) of the generated images and of N real training images against
    the test images, over disjoint subsets, with the Student-t interval of their mean."""
    skip = ctx.feature_skip()
    if skip is not None:
        return {"skipped": skip}
    test = ctx.features("test")
    size = min(KID_SUBSET_SIZE, min(ctx.n, len(test)) // 10)
    if size < 2:
        return {"skipped": f"too few images for 10 disjoint subsets ({min(ctx.n, len(test))})"}

    def side(name: str) -> Any:
        values = kid_disjoint(
            test, ctx.features(name), subset_size=size, seed=ctx.seed + EVALUATION.kid
        )
        return qi(
            seed_interval(values, over="disjoint subsets"),
            "kernel units: cubic polynomial kernel of the features, MMD^2",
        )

    out = _both(ctx, "kernel_distance", side)
    return {
        **out,
        "subset_size": size,
        "n": ctx.n,
        "n_test": len(test),
        "feature_network": ctx.feature_net().label,
        "notes": [
            "the unbiased MMD^2 with the kernel (x.y / F + 1)^3 (KID), measured on disjoint "
            f"subsets of {size} test and {size} other images (as many as the smaller set "
            "holds), and averaged: 0 in expectation for images drawn as the data is, whatever "
            "N, so unlike the Frechet distance it compares across N. Not torch-fidelity's "
            "overlapping subsets: disjoint ones are independent, so the mean has an honest "
            "Student-t interval",
        ],
    }


def alpha_beta(ctx: Context) -> dict[str, Any]:
    """Integrated alpha-precision and beta-recall (Alaa et al. 2022) of the generated images and
    of N real training images against the test images, with bootstrap intervals."""
    skip = ctx.feature_skip()
    if skip is not None:
        return {"skipped": skip}
    test = ctx.features("test")
    alphas = torch.linspace(0, 1, AB_STEPS, dtype=torch.float64)
    seed = ctx.seed + EVALUATION.bootstrap

    def side(name: str) -> Any:
        real_c, gen_c, close, spread = alpha_beta_points(test, ctx.features(name))

        def precision(g: np.ndarray, r: np.ndarray) -> float:
            curve = precision_curve(alphas, torch.from_numpy(r), torch.from_numpy(g))
            return integrated(alphas, curve)

        def recall(c: np.ndarray, sp: np.ndarray) -> float:
            return integrated(
                alphas, recall_curve(alphas, torch.from_numpy(c), torch.from_numpy(sp))
            )

        return {
            "alpha_precision": qi(
                bootstrap_interval(
                    precision,
                    gen_c.numpy(),
                    real_c.numpy(),
                    n_resamples=BOOTSTRAP_RESAMPLES,
                    seed=seed,
                    method="centred",
                ),
                "1 - normalised area between the alpha-precision curve and the diagonal",
            ),
            "beta_recall": qi(
                bootstrap_interval(
                    recall,
                    close.numpy(),
                    spread.numpy(),
                    n_resamples=BOOTSTRAP_RESAMPLES,
                    seed=seed,
                    paired=True,
                    method="centred",
                ),
                "1 - normalised area between the beta-recall curve and the diagonal",
            ),
        }

    out = _both(ctx, "alpha_beta", side)
    return {
        **out,
        "n": ctx.n,
        "n_test": len(test),
        "feature_network": ctx.feature_net().label,
        "notes": [
            "Alaa et al. 2022 in the feature network's features (vaegen.evaluation.fidelity."
            "alpha_beta_curves: balls around the test images' mean, not a learned one-class "
            "embedding). alpha_precision: 1 when the share of images inside the ball holding "
            "alpha of the test images is alpha at every level; beta_recall (k = 1) reaches "
            "about 0.5, not 1, for images drawn as the data is when as many are compared: read "
            "it against the reference",
            "intervals: bootstrap over the images (centred: the resampled spread around the "
            "value, as resampling shifts the curves' quantiles), the centres and each test "
            "image's nearest image held fixed",
        ],
    }


def two_sample(ctx: Context) -> dict[str, Any]:
    """Can a classifier tell the generated images' features from the test images'? Held-out AUC
    of a cross-validated logistic regression with its interval, beside the same test of N real
    training images against the test images."""
    skip = ctx.feature_skip()
    if skip is not None:
        return {"skipped": skip}
    test = ctx.features("test")
    seed = ctx.seed + EVALUATION.two_sample
    done: list[TwoSampleResult] = []

    def side(name: str) -> Any:
        result = two_sample_auc(test, ctx.features(name), seed=seed, max_per_side=len(test))
        done.append(result)
        interval = Interval(
            result.auc, result.low, result.high, 2 * result.n_per_side, "delong-cv", 0.95
        )
        return qi(interval, "AUC of held-out probabilities (0.5: indistinguishable)")

    out = _both(ctx, "two_sample", side)
    result = done[0]  # the generated side's, always measured
    return {
        **out,
        "n_per_side": result.n_per_side,
        "folds": result.folds,
        "classifier": result.classifier,
        "feature_network": ctx.feature_net().label,
        "notes": [
            f"{result.classifier} separates test images (0) from the other set (1), "
            f"{result.n_per_side} a side, in the feature network's features; every image "
            f"scored by a classifier fitted on the other {result.folds - 1} of {result.folds} "
            "folds. 0.5: the classifier cannot tell them apart; 1: it separates them always",
            "the reference is the same test with real training images: what real data "
            "reaches (the feature network saw the training images, which can set them a "
            "little apart)",
            "interval: DeLong's variance of the AUC widened for cross-validation (Nadeau & "
            "Bengio's factor; see vaegen.evaluation.two_sample)",
        ],
    }

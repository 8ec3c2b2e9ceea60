"""Do samples look like the data? Distances and manifolds in the features of the run's feature
network (vaegen.evaluation.features: the reference classifier for FashionMNIST, else one trained on
the run's data), which each result names.

frechet: the Frechet distance of N generated images to the test set, beside that of N real
training images (the floor a perfect generator would reach) and that of the test set's own
reconstructions (what the decoder alone costs).
precision_recall: how many samples are realistic and how much of the data they cover
(Kynkaenniemi et al. 2019), beside the same two numbers for N real training images.
nearest_training: how near samples lie to particular training images, against how near unseen
real images (the test set) lie to them.
"""

from __future__ import annotations

from typing import Any

from ..seeds import EVALUATION
from .context import Context, q
from .estimators import (
    NEAR_QUANTILE,
    PR_K,
    frechet_distance_features,
    kth_nearest_sq,
    nearness,
    precision_recall,
)


def frechet(ctx: Context) -> dict[str, Any]:
    """Frechet distances to the test set of the generated images, of N real training images and
    of the test set's reconstructions, in squared feature units."""
    skip = ctx.feature_skip()
    if skip is not None:
        return {"skipped": skip}
    net = ctx.feature_net()
    test = ctx.features("test")
    fu = f"squared units of {net.what}'s {test.shape[1]}-d features"
    samples = frechet_distance_features(ctx.features("generated"), test)
    recon = frechet_distance_features(ctx.features("reconstructions"), test)
    cond = " with its label" if ctx.run.config.model.conditional else ""
    return {
        "generated_vs_test": q(samples, fu),
        "train_vs_test_floor": q(frechet_distance_features(ctx.features("train"), test), fu),
        "reconstructions_vs_test": q(recon, fu),
        "samples_over_reconstructions": q(
            samples / recon if recon else None, "generated_vs_test / reconstructions_vs_test"
        ),
        "n": ctx.n,
        "n_test": len(ctx.test),
        "feature_network": net.label,
        "notes": [
            f"N = {ctx.n} generated (seed {ctx.seed + EVALUATION.generated}) and N random real training images, "
            "each against all test images; the distance depends on N, so compare numbers of "
            "equal N",
            f"reconstructions: each test image decoded from its encoder mean{cond}, the "
            "likelihood's mean quantised to uint8 as generated images are; no sampling, so "
            "their distance is what the decoder's blur alone costs",
            "samples_over_reconstructions: how much farther the prior's samples are than the "
            "decoder's best renderings of real images. Near 1, the decoder limits the samples "
            "and a sharper decoder is what would help; well above 1, the prior adds its own "
            "error (samples from regions of the latent space the encoder does not use)",
        ],
    }


def precision_and_recall(ctx: Context) -> dict[str, Any]:
    """Improved precision and recall of the generated images, and of N real training images, both
    against the test set, in the feature network's features."""
    skip = ctx.feature_skip()
    if skip is not None:
        return {"skipped": skip}
    test = ctx.features("test")
    out: dict[str, Any] = {}
    for key, name, what in (
        ("generated", "generated", "generated images"),
        ("train_vs_test_reference", "train", "real training images"),
    ):
        precision, recall = precision_recall(test, ctx.features(name), k=PR_K)
        out[key] = {
            "precision": q(precision, f"fraction of the {what} inside the test images' manifold"),
            "recall": q(recall, f"fraction of test images inside the {what}' manifold"),
        }
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
        ],
    }


def nearest_training(ctx: Context) -> dict[str, Any]:
    """Distances in features from each generated image, each test image and each test image's
    reconstruction to its nearest of the N real training images: the ratio of the medians
    (generated over test, and reconstructions over test), and the fraction of each set nearer
    than all but 5 % of the test images."""
    skip = ctx.feature_skip()
    if skip is not None:
        return {"skipped": skip}
    train = ctx.features("train")
    test = kth_nearest_sq(ctx.features("test"), train, 1).sqrt()
    gen = kth_nearest_sq(ctx.features("generated"), train, 1).sqrt()
    recon = kth_nearest_sq(ctx.features("reconstructions"), train, 1).sqrt()
    gen_ratio, gen_copies = nearness(gen, test)
    recon_ratio, recon_copies = nearness(recon, test)
    units = "feature units"
    copies = (
        f"fraction of the {{}} nearer to a training image than {1 - NEAR_QUANTILE:.0%} of the "
        "test images are"
    )
    return {
        "median_generated": q(float(gen.median()), units),
        "median_test": q(float(test.median()), units),
        "median_ratio": q(gen_ratio, "median_generated / median_test"),
        "near_copies": q(gen_copies, copies.format("generated images")),
        "reconstructions_median_ratio": q(
            recon_ratio, "median for the test images' reconstructions / median_test"
        ),
        "reconstructions_near_copies": q(
            recon_copies, copies.format("test images' reconstructions")
        ),
        "n": ctx.n,
        "feature_network": ctx.feature_net().label,
        "notes": [
            "each image's Euclidean distance to its nearest of the N real training images, in the "
            "feature network's features; unseen real images (the test set) are the reference: "
            "a ratio near 1 and near_copies near 0.05 mean samples lie no nearer to particular "
            "training images than new real images do; a ratio well below 1 or many near "
            "copies mean samples reproduce training images",
            "the decoder's blur alone moves images nearer to the training images (towards "
            "their average): reconstructions of the test images, which no training image was "
            "used to make, show how much; read a generator's numbers against theirs",
            "with N below the training set's size, only N of its images are searched, so "
            "compare numbers of equal N",
        ],
    }

"""Do samples copy training images? Each measure beside what real images the model never saw
reach on it (the floor), each with its interval.

nearest_training  in the feature network's features: how near samples lie to particular training
                  images, against how near unseen real images (the test set) lie to them; the
                  share of near copies
memorisation      in pixels: the DCR share (nearer to a training image than to a held-out real
                  image; 0.5 when nothing is memorised) and the share of authentic samples (Alaa
                  et al. 2022), each beside the same measure of fresh real images
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..seeds import EVALUATION
from .context import BOOTSTRAP_RESAMPLES, Context, q, qi
from .estimators import NEAR_QUANTILE, kth_nearest_sq
from .intervals import binomial_interval, bootstrap_interval
from .memorisation import authenticity, dcr_scores

_RATIO = "median_generated / median_test"


def nearest_training(ctx: Context) -> dict[str, Any]:
    """Distances in features from each generated image, each test image and each test image's
    reconstruction to its nearest of the N real training images: the ratio of the medians
    (generated over test, and reconstructions over test), and the fraction of each set nearer
    than all but 5 % of the test images, with bootstrap (ratio) and Wilson (fraction) intervals."""
    skip = ctx.feature_skip()
    if skip is not None:
        return {"skipped": skip}
    train = ctx.features("train")
    test = kth_nearest_sq(ctx.features("test"), train, 1).sqrt()
    gen = kth_nearest_sq(ctx.features("generated"), train, 1).sqrt()
    recon = kth_nearest_sq(ctx.features("reconstructions"), train, 1).sqrt()
    near = torch.quantile(test.double(), NEAR_QUANTILE)
    seed = ctx.seed + EVALUATION.bootstrap

    def ratio(g: np.ndarray, t: np.ndarray) -> float:
        return float(np.median(g) / np.median(t))

    def copies(d: torch.Tensor) -> Any:
        return binomial_interval(int((d < near).sum()), len(d))

    units = "feature units"
    copies_units = (
        f"fraction of the {{}} nearer to a training image than {1 - NEAR_QUANTILE:.0%} of the "
        "test images are"
    )
    g_np, t_np, r_np = gen.double().numpy(), test.double().numpy(), recon.double().numpy()
    return {
        "median_generated": q(float(gen.median()), units),
        "median_test": q(float(test.median()), units),
        "median_ratio": qi(
            bootstrap_interval(
                ratio, g_np, t_np, n_resamples=BOOTSTRAP_RESAMPLES, seed=seed, method="centred"
            ),
            _RATIO,
        ),
        "near_copies": qi(copies(gen), copies_units.format("generated images")),
        "reconstructions_median_ratio": qi(
            bootstrap_interval(
                ratio, r_np, t_np, n_resamples=BOOTSTRAP_RESAMPLES, seed=seed, method="centred"
            ),
            "median for the test images' reconstructions / median_test",
        ),
        "reconstructions_near_copies": qi(
            copies(recon), copies_units.format("test images' reconstructions")
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
            "intervals: the ratio's by bootstrap over both sets of images (centred on the "
            "value: resampling shifts medians), the "
            "near copies' the Wilson interval over the images counted (the test images' 5 % "
            "threshold held fixed)",
        ],
    }


def memorisation(ctx: Context) -> dict[str, Any]:
    """The DCR share and the authentic share of the generated images, in pixels, against H
    training images and H held-out test images; beside the same two numbers of H fresh test
    images (the floor a generator that memorises nothing reaches); with intervals."""
    train_idx, holdout_idx, fresh_idx = ctx.holdout_split()
    h = len(train_idx)
    if h < 2:
        return {"skipped": f"the test set has {len(ctx.test)} images: too few to hold out"}
    train = ctx.train.images[train_idx]
    holdout = ctx.test.images[holdout_idx]
    fresh = ctx.test.images[fresh_idx]
    generated = ctx.generated()[0]
    seed = ctx.seed + EVALUATION.bootstrap
    out: dict[str, Any] = {}
    for key, images in (("generated", generated), ("fresh_real_floor", fresh)):
        scores = dcr_scores(images, train, holdout).numpy()
        authentic = authenticity(images, train)
        out[key] = {
            "dcr_share": qi(
                bootstrap_interval(np.mean, scores, n_resamples=BOOTSTRAP_RESAMPLES, seed=seed),
                "fraction of the images nearer to a training image than to a held-out one "
                "(ties one half)",
            ),
            "authentic": qi(
                binomial_interval(int(authentic.sum()), len(authentic)),
                "fraction of the images farther from their nearest training image than it lies "
                "from its own nearest training neighbour",
            ),
        }
    return {
        **out,
        "n": len(generated),
        "n_reference": h,
        "space": "pixels",
        "notes": [
            f"H = {h} random training images and H test images held out (seed "
            f"{ctx.seed + EVALUATION.holdout}); each image's Euclidean distance in pixels to its "
            "nearest of each set. dcr_share: the share nearer to the training images (0.5 when "
            "nothing is memorised; near 1 for a generator that copies); authentic: the share "
            "not nearer to their nearest training image than that image's own nearest "
            "training neighbour (Alaa et al. 2022)",
            "fresh_real_floor: H other test images, which the model never saw, measured the "
            "same way: what a generator that memorises nothing reaches (its authentic share is "
            "about 1/2 for data of many dimensions, not 1: fresh points are often each other's "
            "nearest neighbours with a training image). Read each generated number against "
            "its floor",
            "intervals: the DCR share's by bootstrap over the images (percentile), the "
            "authentic share's the Wilson interval over the images counted; both hold the "
            "reference sets fixed",
        ],
    }

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
    test = ctx.real_side().tensor(
        "nearest.test_to_train", lambda: kth_nearest_sq(ctx.features("test"), train, 1).sqrt()
    )
    gen = kth_nearest_sq(ctx.features("generated"), train, 1).sqrt()
    near = torch.quantile(test.double(), NEAR_QUANTILE)
    seed = ctx.seed + EVALUATION.bootstrap

    def ratio(g: np.ndarray, t: np.ndarray) -> float:  # torch's median: the lower middle
        return float(np.quantile(g, 0.5, method="lower") / np.quantile(t, 0.5, method="lower"))

    def copies(d: torch.Tensor) -> Any:
        return binomial_interval(int((d < near).sum()), len(d))

    units = "feature units"
    copies_units = (
        f"fraction of the {{}} nearer to a training image than {1 - NEAR_QUANTILE:.0%} of the "
        "test images are"
    )
    g_np, t_np = gen.double().numpy(), test.double().numpy()

    def ratio_interval(d: np.ndarray) -> Any:
        return bootstrap_interval(
            ratio, d, t_np, n_resamples=BOOTSTRAP_RESAMPLES, seed=seed, method="centred"
        )

    out: dict[str, Any] = {
        "median_generated": q(float(gen.median()), units),
        "median_test": q(float(test.median()), units),
        "median_ratio": qi(ratio_interval(g_np), _RATIO),
        "near_copies": qi(copies(gen), copies_units.format("generated images")),
    }
    notes = [
        "each image's Euclidean distance to its nearest of the N real training images, in the "
        "feature network's features; unseen real images (the test set) are the reference: a "
        "ratio near 1 and near_copies near 0.05 mean samples lie no nearer to particular "
        "training images than new real images do; a ratio well below 1 or many near copies "
        "mean samples reproduce training images",
        "with N below the training set's size, only N of its images are searched, so compare "
        "numbers of equal N",
        "intervals: the ratio's by bootstrap over both sets of images (centred on the value: "
        "resampling shifts medians), the near copies' the Wilson interval over the images "
        "counted (the test images' 5 % threshold held fixed)",
    ]
    if ctx.run is not None:  # images from elsewhere have no decoder to reconstruct with
        recon = kth_nearest_sq(ctx.features("reconstructions"), train, 1).sqrt()
        out["reconstructions_median_ratio"] = qi(
            ratio_interval(recon.double().numpy()),
            "median for the test images' reconstructions / median_test",
        )
        out["reconstructions_near_copies"] = qi(
            copies(recon), copies_units.format("test images' reconstructions")
        )
        notes.insert(
            1,
            "the decoder's blur alone moves images nearer to the training images (towards their "
            "average): reconstructions of the test images, which no training image was used to "
            "make, show how much; read a generator's numbers against theirs",
        )
    return {**out, "n": ctx.n, "feature_network": ctx.feature_net().label, "notes": notes}


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

    def measure(images: torch.Tensor) -> dict[str, Any]:
        scores = dcr_scores(images, train, holdout).numpy()
        authentic = authenticity(images, train)
        return {
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

    out: dict[str, Any] = {"generated": measure(generated)}
    if ctx.run is not None:  # what the decoder's blur alone does: no image of these was trained on
        out["fresh_reconstructions"] = measure(ctx.reconstructions()[fresh_idx])
    return {
        **out,
        # the same for every run of the dataset: kept in the real side's cache
        "fresh_real_floor": ctx.real_side().number(
            "memorisation.fresh_real_floor", lambda: measure(fresh)
        ),
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
            "fresh_reconstructions (a run's evaluation): the H fresh test images decoded from "
            "their encoder means. The decoder's blur pulls images towards the data's dense "
            "regions, nearer to some training image, which lowers the authentic share without "
            "any memorising: a generator's numbers between the fresh images' and their "
            "reconstructions' are the blur's, beyond the reconstructions' its own",
            "intervals: the DCR share's by bootstrap over the images (percentile), the "
            "authentic share's the Wilson interval over the images counted; both hold the "
            "reference sets fixed",
        ],
    }

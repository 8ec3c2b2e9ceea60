"""Is the simulated data useful? Conditional runs only.

class_agreement: is each generated image of the class it was asked for, in the judgement of the
run's feature network (vaegen.evaluation.features: the reference classifier for FashionMNIST, else
one trained on the run's data), beside the same judgement of the real test images.
tstr: train on synthetic, test on real; beside train on real, test on real.
"""

from __future__ import annotations

from typing import Any

import torch

from ..seeds import EVALUATION
from .context import FRACTION, Context, q, qi
from .intervals import binomial_interval
from .reference_classifier import CLASSIFIER_LR, predict, train_classifier

GENERATED = "fraction of generated images"


def _agreement(
    predicted: torch.Tensor, labels: torch.Tensor, names: list[str], units: str, per_unit: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The share of `predicted` equal to `labels`, overall and per class, each with its Wilson
    interval (a class nothing was asked of: value None)."""
    labels = labels.cpu().to(torch.int64)
    hit = predicted.cpu().to(torch.int64) == labels
    per_class = {}
    for i, name in enumerate(names):
        of_class = hit[labels == i]
        per_class[name] = (
            qi(binomial_interval(int(of_class.sum()), len(of_class)), per_unit)
            if len(of_class)
            else q(None, per_unit)
        )
    return qi(binomial_interval(int(hit.sum()), len(hit)), units), per_class


def class_agreement(ctx: Context) -> dict[str, Any]:
    """The feature network's class of each generated image against the class it was generated
    for: overall and per class, beside the network's accuracy on the test set."""
    run = ctx.run
    if not run.config.model.conditional:
        return {"not_applicable": "the model is not conditional"}
    skip = ctx.feature_skip()
    if skip is not None:
        return {"not_applicable": skip}
    net = ctx.feature_net()
    images, labels = ctx.generated()
    assert labels is not None and ctx.test.labels is not None  # conditional => labels
    clf = ctx.classifier()
    names = list(run.classes)
    overall, per_class = _agreement(
        predict(clf, images),
        labels,
        names,
        f"{GENERATED} classed as the class asked for",
        f"{GENERATED} of the class classed as it",
    )
    real, real_per_class = _agreement(
        predict(clf, ctx.test.images),
        ctx.test.labels,
        names,
        f"{FRACTION} classed as their label",
        "fraction of the class's test images classed as it",
    )
    return {
        "generated": overall,
        "per_class": per_class,
        "test_reference": real,
        "test_reference_per_class": real_per_class,
        "chance": q(1 / len(names), GENERATED),
        "n": len(images),
        "feature_network": net.label,
        "notes": [
            f"{net.what} (test accuracy {net.test_accuracy}) reads the N generated images (seed "
            f"{ctx.seed + EVALUATION.generated}), asked for in equal numbers of each class; test_reference: the "
            "same classifier on the real test images with their labels, what a perfect "
            "generator would reach",
            "a class below its reference is drawn ambiguously: its images look like another "
            "class (a conditional model that ignores its label scores about the chance level)",
            "intervals: Wilson, over the images of each share (the classifier held fixed)",
        ],
    }


def tstr(ctx: Context, epochs: int) -> dict[str, Any]:
    """Train on N synthetic labelled images / on N real ones, test both on the real test set."""
    run, train_ds, test_ds, n, seed = ctx.run, ctx.train, ctx.test, ctx.n, ctx.seed
    progress, device = ctx.progress, run.device
    if not run.config.model.conditional:
        return {"not_applicable": "the model is not conditional"}
    gen_images, gen_labels = ctx.generated()
    assert gen_labels is not None and train_ds.labels is not None  # conditional => labels
    common = {
        "epochs": epochs,
        "seed": seed + EVALUATION.tstr,
        "num_classes": len(run.classes),
        "lr": CLASSIFIER_LR,
        "device": device,
        "progress": progress,
    }
    synth_clf = train_classifier(gen_images, gen_labels, **common)
    real_clf = train_classifier(
        train_ds.images[ctx.real_idx], train_ds.labels[ctx.real_idx], **common
    )
    assert test_ds.labels is not None
    truth = test_ds.labels.cpu().to(torch.int64)
    synth_hits = int((predict(synth_clf, test_ds.images) == truth).sum())
    real_hits = int((predict(real_clf, test_ds.images) == truth).sum())
    synth_acc = binomial_interval(synth_hits, len(truth))
    real_acc = binomial_interval(real_hits, len(truth))
    return {
        "synthetic_accuracy": qi(synth_acc, FRACTION),
        "real_accuracy": qi(real_acc, FRACTION),
        "ratio": q(
            synth_acc.value / real_acc.value if real_acc.value else None, "synthetic / real"
        ),
        "n": n,
        "epochs": epochs,
        "lr": CLASSIFIER_LR,
        "notes": [
            f"the reference classifier's architecture trained from scratch (seed {seed + EVALUATION.tstr}; "
            f"Adam, lr {CLASSIFIER_LR:g} with a cosine decay, batch 128, {epochs} epochs) on N "
            "generated images with labels spread over the classes, and on N real training "
            "images; both tested on the real test set",
            "published anchor (FashionMNIST): a conditional VAE reaches 81.0% where real "
            "data gives 86.6% (ratio 0.935)",
            "intervals: Wilson, over the test images, for one trained classifier each: the "
            "test set's sampling, not the spread of the classifier's training over seeds",
        ],
    }

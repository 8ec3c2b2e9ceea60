"""Is the simulated data useful? Conditional runs only.

class_agreement: is each generated image of the class it was asked for, in the judgement of the
run's feature network (vaegen.evaluation.features: the reference classifier for FashionMNIST, else
one trained on the run's data), beside the same judgement of the real test images.
tstr: train on synthetic, test on real; beside train on real, test on real; for two classifier
architectures of different kinds (a CNN and an MLP on pixels, vaegen.evaluation.tstr_classifiers).
"""

from __future__ import annotations

from typing import Any

import torch

from ..seeds import EVALUATION
from .context import FRACTION, Context, q, qi
from .intervals import binomial_interval
from .reference_classifier import CLASSIFIER_LR, predict, train_classifier
from .tstr_classifiers import MLP_DROPOUT, MLP_HIDDEN, MLP_LR, mlp_epochs

GENERATED = "fraction of generated images"


def _unlabelled(ctx: Context) -> str:
    """Why a part that needs the class each image was made for does not apply."""
    if ctx.run is None:
        return "the images given have no labels"
    return "the model is not conditional"


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
    if not ctx.conditional:
        return {"not_applicable": _unlabelled(ctx)}
    skip = ctx.feature_skip()
    if skip is not None:
        return {"not_applicable": skip}
    net = ctx.feature_net()
    images, labels = ctx.generated()
    assert labels is not None and ctx.test.labels is not None  # conditional => labels
    clf = ctx.classifier()
    names = list(ctx.subject.classes)
    overall, per_class = _agreement(
        predict(clf, images),
        labels,
        names,
        f"{GENERATED} classed as the class asked for",
        f"{GENERATED} of the class classed as it",
    )
    test_labels = ctx.test.labels

    def reference() -> dict[str, Any]:  # the same for every run: kept in the real side's cache
        real, per_class = _agreement(
            predict(clf, ctx.test.images),
            test_labels,
            names,
            f"{FRACTION} classed as their label",
            "fraction of the class's test images classed as it",
        )
        return {"overall": real, "per_class": per_class}

    ref = ctx.real_side().number("class_agreement.test_reference", reference)
    real, real_per_class = ref["overall"], ref["per_class"]
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


def _train_and_test(
    ctx: Context, *, architecture: str, epochs: int, lr: float, seed: int
) -> dict[str, Any]:
    """One architecture's TSTR pair: trained from scratch on the N generated images and on the N
    real training images, each tested on the real test set. Returns synthetic_accuracy and
    real_accuracy (fractions of test images, Wilson intervals), their ratio, epochs and lr."""
    train_ds, test_ds = ctx.train, ctx.test
    gen_images, gen_labels = ctx.generated()
    assert gen_labels is not None and train_ds.labels is not None  # conditional => labels
    assert test_ds.labels is not None
    common: dict[str, Any] = {
        "epochs": epochs,
        "seed": seed,
        "num_classes": len(ctx.subject.classes),
        "lr": lr,
        "device": ctx.subject.device,
        "progress": ctx.progress,
        "architecture": architecture,
    }
    truth = test_ds.labels.cpu().to(torch.int64)

    def hits(images: torch.Tensor, labels: torch.Tensor) -> int:
        clf = train_classifier(images, labels, **common)
        return int((predict(clf, test_ds.images) == truth).sum())

    synth_hits = hits(gen_images, gen_labels)
    # the classifier trained on real images is the same for every run of the dataset: its
    # count is kept in the real side's cache (the key holds N, the seed and the recipe)
    real_hits = ctx.real_side().number(
        f"tstr.{architecture}.real_hits",
        lambda: hits(train_ds.images[ctx.real_idx], train_ds.labels[ctx.real_idx]),
    )
    synth_acc = binomial_interval(synth_hits, len(truth))
    real_acc = binomial_interval(int(real_hits), len(truth))
    return {
        "synthetic_accuracy": qi(synth_acc, FRACTION),
        "real_accuracy": qi(real_acc, FRACTION),
        "ratio": q(
            synth_acc.value / real_acc.value if real_acc.value else None, "synthetic / real"
        ),
        "epochs": epochs,
        "lr": lr,
    }


def tstr(ctx: Context, epochs: int) -> dict[str, Any]:
    """Train on N synthetic labelled images / on N real ones, test both on the real test set,
    for each architecture of tstr_classifiers.ARCHITECTURES: the CNN for `epochs` epochs, the
    MLP for mlp_epochs(epochs). The top-level numbers are the CNN's (as before there was an MLP);
    "architectures" holds both."""
    if not ctx.conditional:
        return {"not_applicable": _unlabelled(ctx)}
    cnn_seed, mlp_seed = ctx.seed + EVALUATION.tstr, ctx.seed + EVALUATION.tstr_mlp
    cnn = _train_and_test(ctx, architecture="cnn", epochs=epochs, lr=CLASSIFIER_LR, seed=cnn_seed)
    mlp = _train_and_test(
        ctx, architecture="mlp", epochs=mlp_epochs(epochs), lr=MLP_LR, seed=mlp_seed
    )
    return {
        **{k: cnn[k] for k in ("synthetic_accuracy", "real_accuracy", "ratio")},
        "n": ctx.n,
        "epochs": epochs,
        "lr": CLASSIFIER_LR,
        "architectures": {"cnn": cnn, "mlp": mlp},
        "notes": [
            "two architectures, each trained from scratch on N generated images with labels "
            "spread over the classes and, as its baseline, on N real training images; all tested "
            "on the real test set. A generator that suits one kind of classifier only shows as a "
            "ratio that differs between them",
            f"cnn (the top-level numbers): the reference classifier's architecture (seed "
            f"{cnn_seed}; Adam, lr {CLASSIFIER_LR:g} with a cosine decay, batch 128, {epochs} "
            "epochs)",
            f"mlp: fully connected on the pixels, {MLP_HIDDEN}-{MLP_HIDDEN} ReLU units with "
            f"dropout {MLP_DROPOUT:g} (seed {mlp_seed}; Adam, lr {MLP_LR:g} with a cosine decay, "
            f"batch 128, {mlp_epochs(epochs)} epochs)",
            "published anchor (FashionMNIST, a CNN): a conditional VAE reaches 81.0% where real "
            "data gives 86.6% (ratio 0.935)",
            "intervals: Wilson, over the test images, for one trained classifier each: the "
            "test set's sampling, not the spread of the classifier's training over seeds",
        ],
    }

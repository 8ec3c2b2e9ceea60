"""Is the latent space useful? kNN accuracy of test latent means against training latent means."""

from __future__ import annotations

from typing import Any

from ..model.encode import latent_means
from .context import FRACTION, Context, q, qi
from .estimators import KNN_K, knn_accuracy
from .intervals import binomial_interval


def latent_knn(ctx: Context) -> dict[str, Any]:
    """kNN accuracy of test latent means against training latent means."""
    run, train_ds, test_ds, progress = ctx.run, ctx.train, ctx.test, ctx.progress
    conditional = run.config.model.conditional
    if train_ds.labels is not None and test_ds.labels is not None:
        z_train = latent_means(run.model, train_ds.images, train_ds.labels if conditional else None)
        z_test = latent_means(run.model, test_ds.images, test_ds.labels if conditional else None)
        acc = knn_accuracy(
            z_train, train_ds.labels, z_test, test_ds.labels, KNN_K, progress=progress
        )
        hits = round(acc * len(z_test))  # knn_accuracy is hits / len: exact in float64
        knn: dict[str, Any] = {
            "accuracy": qi(binomial_interval(hits, len(z_test)), FRACTION),
            "k": KNN_K,
            "chance": q(1 / len(run.classes), FRACTION),
            "notes": [
                "test latent means vs all training latent means, Euclidean, majority vote, "
                "ties broken toward the nearest neighbour; interval: Wilson over the test images"
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

"""The scorecard `vaegen evaluate` prints: eval.json's numbers as one line each, with units.

Reads only the dict that `vaegen.evaluation.evaluate` returns (and writes as RUN/eval.json), so it
can format a saved eval.json as well as a fresh result.
"""

from __future__ import annotations

import math
from typing import Any

from ..model.likelihoods import likelihood
from .estimators import KNN_K, NEAR_QUANTILE

PRIOR_NAMES = {
    "gmm": "fitted Gaussian mixture",
    "posterior": "aggregate posterior",
    "standard": "N(0, I)",
}

# eval.json's timed parts, as the time line names them
_PARTS = {
    "feature_network": "feature network",
    "likelihood": "likelihood",
    "knn": "kNN",
    "frechet": "Frechet",
    "precision_recall": "precision/recall",
    "nearest_training": "nearest training",
    "class_agreement": "agreement",
    "tstr": "TSTR",
}


def _value(d: dict[str, Any], key: str) -> float:
    return d[key]["value"]


def _lowest(per_class: dict[str, Any]) -> tuple[str, float]:
    """The class with the lowest agreement among those asked for, and its agreement."""
    asked = {name: v["value"] for name, v in per_class.items() if v["value"] is not None}
    name = min(asked, key=asked.__getitem__)
    return name, asked[name]


def format_table(result: dict[str, Any]) -> str:
    """The scorecard `vaegen evaluate` prints: one line per number, with its units."""
    s = result["settings"]
    m = result["model"]
    lk = result["likelihood"]
    loss = m["loss"]
    unit = likelihood(loss).unit
    rows: list[tuple[str, str]] = []

    def add(name: str, text: str) -> None:
        rows.append((name, text))

    kind = "conditional" if m["conditional"] else "unconditional"
    data = "binarised test images" if s["binarize"] else "test images"
    add("negative ELBO", f"{_value(lk, 'negative_elbo'):.2f} {unit} per image ({data})")
    add("  reconstruction", f"{_value(lk, 'reconstruction'):.2f} {unit}")
    add("  KL", f"{_value(lk, 'kl'):.2f} nats")
    add(f"NLL bound, IWAE K={s['iw_samples']}", f"{_value(lk, 'nll_bound_iwae'):.2f} {unit}")
    if "gaussian_nll_nats" in lk:
        g = lk["gaussian_nll_nats"]
        add(
            "  as Gaussian NLL",
            f"{_value(g, 'nll_bound_iwae'):.2f} nats (ELBO: {_value(g, 'negative_elbo'):.2f} nats)",
        )
    knn = result["latent_knn"]
    if "accuracy" in knn:
        add(
            f"latent {knn['k']}-NN accuracy",
            f"{_value(knn, 'accuracy'):.2%} (chance {_value(knn, 'chance'):.0%})",
        )
    else:
        add(f"latent {KNN_K}-NN accuracy", f"not applicable: {knn['not_applicable']}")
    net = result.get("feature_network", {})  # absent from the eval.json of vaegen 0.1
    if "id" in net:  # trained on this run's data: its numbers compare only with its own
        add(
            "feature network",
            f"trained on this data, id {net['id']} (test accuracy "
            f"{_value(net, 'test_accuracy'):.2%}, {net['epochs']} epochs); Frechet, precision / "
            "recall and agreement compare only with runs measured with this id",
        )
    fr = result["frechet"]
    if "skipped" in fr:
        add("Frechet distance", f"skipped: {fr['skipped']}")
    else:
        add(
            f"Frechet distance, N={fr['n']}",
            f"{_value(fr, 'generated_vs_test'):.2f} generated vs test; "
            f"floor {_value(fr, 'train_vs_test_floor'):.2f} (real train vs test)",
        )
        if "reconstructions_vs_test" in fr:  # eval.json of vaegen 0.1 has no reconstructions
            add(
                "  reconstructions vs test",
                f"{_value(fr, 'reconstructions_vs_test'):.2f} (samples / reconstructions "
                f"{_value(fr, 'samples_over_reconstructions') or math.nan:.2f}: what the prior "
                "adds to the decoder's blur)",
            )
    pr = result.get("precision_recall")
    if pr is not None and "skipped" in pr:
        add("precision / recall", f"skipped: {pr['skipped']}")
    elif pr is not None:
        g, ref = pr["generated"], pr["train_vs_test_reference"]
        add(
            f"precision / recall, k={pr['k']}",
            f"{_value(g, 'precision'):.3f} / {_value(g, 'recall'):.3f} generated vs test; "
            f"reference {_value(ref, 'precision'):.3f} / {_value(ref, 'recall'):.3f} "
            "(real train vs test)",
        )
    nt = result.get("nearest_training")  # absent from eval.json before it was measured
    if nt is not None and "skipped" in nt:
        add("nearest training image", f"skipped: {nt['skipped']}")
    elif nt is not None:
        add(
            "nearest training image",
            f"median distance {_value(nt, 'median_ratio'):.3f}x the test images'; "
            f"{_value(nt, 'near_copies'):.1%} near copies (test images: {NEAR_QUANTILE:.0%}; their "
            f"reconstructions: {_value(nt, 'reconstructions_median_ratio'):.3f}x, "
            f"{_value(nt, 'reconstructions_near_copies'):.1%})",
        )
    ca = result.get("class_agreement")
    if ca is not None and "not_applicable" in ca:
        add("class agreement", f"not applicable: {ca['not_applicable']}")
    elif ca is not None:
        name, lowest = _lowest(ca["per_class"])
        add(
            "class agreement",
            f"{_value(ca, 'generated'):.2%} classed as asked (lowest: {name} {lowest:.0%}); "
            f"real test images {_value(ca, 'test_reference'):.2%}",
        )
    t = result["tstr"]
    if "not_applicable" in t:
        add("train synthetic, test real", f"not applicable: {t['not_applicable']}")
    else:
        # the published anchor is FashionMNIST's: no yardstick for another dataset
        fashion = result.get("model", {}).get("data") == "fashion-mnist"
        anchor = "; published FashionMNIST CVAE 81.0% vs 86.6%, 0.935" if fashion else ""
        add(
            f"train synthetic, test real, N={t['n']}",
            f"{_value(t, 'synthetic_accuracy'):.2%} vs {_value(t, 'real_accuracy'):.2%} real "
            f"(ratio {_value(t, 'ratio') or math.nan:.3f}{anchor})",
        )
    sec = result["seconds"]
    parts = ", ".join(
        f"{label} {_value(sec, key):.0f}" for key, label in _PARTS.items() if key in sec
    )
    add("time", f"{_value(sec, 'total'):.0f} s ({parts})")
    width = max(len(name) for name, _ in rows)
    prior = s.get("prior", {}).get("used")  # absent from the eval.json of vaegen 0.1
    head = (
        f"{result['run']}: {kind} {loss}-loss VAE, seed {s['seed']}"
        + (", quick" if s["quick"] else "")
        + (f", samples from the {PRIOR_NAMES.get(prior, prior)} prior" if prior else "")
    )
    return "\n".join([head, *(f"  {name:<{width}}  {text}" for name, text in rows)])

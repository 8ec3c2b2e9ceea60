"""The scorecard `vaegen evaluate` prints: eval.json's numbers as one line each, with units.

Reads only the dict that `vaegen.evaluation.evaluate` returns (and writes as RUN/eval.json), so it
can format a saved eval.json as well as a fresh result.
"""

from __future__ import annotations

import math
from collections.abc import Callable
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
    "density_coverage": "density/coverage",
    "kernel_distance": "KID",
    "alpha_beta": "alpha/beta",
    "two_sample": "two-sample",
    "nearest_training": "nearest training",
    "memorisation": "memorisation",
    "class_agreement": "agreement",
    "tstr": "TSTR",
}


def _value(d: dict[str, Any], key: str) -> float:
    return d[key]["value"]


def _vi(d: dict[str, Any], key: str, spec: str) -> str:
    """d[key]'s value in the format `spec`, followed by its interval "[low, high]" when eval.json
    has one (the eval.json of vaegen 0.2 and earlier has none)."""
    number = d[key]
    text = format(number["value"], spec)
    if number.get("low") is not None:
        text += f" [{number['low']:{spec}}, {number['high']:{spec}}]"
    return text


def _lowest(per_class: dict[str, Any]) -> tuple[str, float]:
    """The class with the lowest agreement among those asked for, and its agreement."""
    asked = {name: v["value"] for name, v in per_class.items() if v["value"] is not None}
    name = min(asked, key=asked.__getitem__)
    return name, asked[name]


def format_table(result: dict[str, Any]) -> str:
    """The scorecard `vaegen evaluate` prints: one line per number, with its units."""
    s = result["settings"]
    rows: list[tuple[str, str]] = []

    def add(name: str, text: str) -> None:
        rows.append((name, text))

    if "model" in result:  # a run's evaluation; images from elsewhere have no model to measure
        _model_rows(add, result)
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
            f"{_vi(fr, 'generated_vs_test', '.2f')} generated vs test; "
            f"floor {_vi(fr, 'train_vs_test_floor', '.2f')} (real train vs test)",
        )
        if "reconstructions_vs_test" in fr:  # eval.json of vaegen 0.1 has no reconstructions
            add(
                "  reconstructions vs test",
                f"{_vi(fr, 'reconstructions_vs_test', '.2f')} (samples / reconstructions "
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
            f"{_vi(g, 'precision', '.3f')} / {_vi(g, 'recall', '.3f')} generated vs test; "
            f"reference {_vi(ref, 'precision', '.3f')} / {_vi(ref, 'recall', '.3f')} "
            "(real train vs test)",
        )
    _pairs(
        add,
        result,
        (
            ("density_coverage", "density / coverage", ("density", "coverage"), ".3f"),
            (
                "alpha_beta",
                "alpha-precision / beta-recall",
                ("alpha_precision", "beta_recall"),
                ".3f",
            ),
        ),
    )
    kd = result.get("kernel_distance")
    if kd is not None and "skipped" in kd:
        add("kernel distance (KID)", f"skipped: {kd['skipped']}")
    elif kd is not None:
        add(
            f"KID, subsets of {kd['subset_size']}",
            f"{_vi(kd, 'generated', '.4f')} generated vs test; reference "
            f"{_vi(kd, 'train_vs_test_reference', '.4f')}",
        )
    ts = result.get("two_sample")
    if ts is not None and "skipped" in ts:
        add("real vs generated AUC", f"skipped: {ts['skipped']}")
    elif ts is not None:
        add(
            f"real vs generated AUC, {ts['n_per_side']} a side",
            f"{_vi(ts, 'generated', '.3f')} (0.5: indistinguishable); real train vs test "
            f"{_vi(ts, 'train_vs_test_reference', '.3f')}",
        )
    nt = result.get("nearest_training")  # absent from eval.json before it was measured
    if nt is not None and "skipped" in nt:
        add("nearest training image", f"skipped: {nt['skipped']}")
    elif nt is not None:
        recon = (
            f"; their reconstructions: {_value(nt, 'reconstructions_median_ratio'):.3f}x, "
            f"{_value(nt, 'reconstructions_near_copies'):.1%}"
            if "reconstructions_median_ratio" in nt  # images from elsewhere have none
            else ""
        )
        add(
            "nearest training image",
            f"median distance {_vi(nt, 'median_ratio', '.3f')}x the test images'; "
            f"{_vi(nt, 'near_copies', '.1%')} near copies (test images: {NEAR_QUANTILE:.0%}"
            f"{recon})",
        )
    mem = result.get("memorisation")
    if mem is not None and "skipped" in mem:
        add("DCR share / authentic", f"skipped: {mem['skipped']}")
    elif mem is not None:
        g, f = mem["generated"], mem["fresh_real_floor"]
        add(
            f"DCR share / authentic, H={mem['n_reference']}",
            f"{_vi(g, 'dcr_share', '.3f')} / {_vi(g, 'authentic', '.3f')} generated; fresh "
            f"real images {_vi(f, 'dcr_share', '.3f')} / {_vi(f, 'authentic', '.3f')}",
        )
    ca = result.get("class_agreement")
    if ca is not None and "not_applicable" in ca:
        add("class agreement", f"not applicable: {ca['not_applicable']}")
    elif ca is not None:
        name, lowest = _lowest(ca["per_class"])
        add(
            "class agreement",
            f"{_vi(ca, 'generated', '.2%')} classed as asked (lowest: {name} {lowest:.0%}); "
            f"real test images {_vi(ca, 'test_reference', '.2%')}",
        )
    t = result["tstr"]
    if "not_applicable" in t:
        add("train synthetic, test real", f"not applicable: {t['not_applicable']}")
    else:
        # the published anchor is FashionMNIST's: no yardstick for another dataset
        source = result["model"].get("data") if "model" in result else result["data"]["source"]
        fashion = source == "fashion-mnist"
        anchor = "; published FashionMNIST CVAE 81.0% vs 86.6%, 0.935" if fashion else ""
        # the top-level numbers are the CNN's; the eval.json of vaegen 0.2 and earlier has no MLP
        mlp = t.get("architectures", {}).get("mlp")
        add(
            f"train synthetic, test real, N={t['n']}",
            f"CNN {_vi(t, 'synthetic_accuracy', '.2%')} vs {_vi(t, 'real_accuracy', '.2%')} real "
            f"(ratio {_value(t, 'ratio') or math.nan:.3f}{anchor})"
            + (
                f"; MLP {_vi(mlp, 'synthetic_accuracy', '.2%')} vs "
                f"{_vi(mlp, 'real_accuracy', '.2%')} real "
                f"(ratio {_value(mlp, 'ratio') or math.nan:.3f})"
                if mlp is not None
                else ""
            ),
        )
    sec = result["seconds"]
    parts = ", ".join(
        f"{label} {_value(sec, key):.0f}" for key, label in _PARTS.items() if key in sec
    )
    add("time", f"{_value(sec, 'total'):.0f} s ({parts})")
    width = max(len(name) for name, _ in rows)
    if "model" in result:
        m = result["model"]
        kind = "conditional" if m["conditional"] else "unconditional"
        prior = s.get("prior", {}).get("used")  # absent from the eval.json of vaegen 0.1
        head = (
            f"{result['run']}: {kind} {m['loss']}-loss VAE, seed {s['seed']}"
            + (", quick" if s["quick"] else "")
            + (f", samples from the {PRIOR_NAMES.get(prior, prior)} prior" if prior else "")
        )
    else:
        given = result["samples"]
        head = (
            f"{given['path']}: {s['n_generated']} of {given['given']} images "
            f"({'labelled' if given['labelled'] else 'unlabelled'}) against "
            f"{result['data']['source']}, seed {s['seed']}" + (", quick" if s["quick"] else "")
        )
    lines = [head, *(f"  {name:<{width}}  {text}" for name, text in rows)]
    cert = result.get("certificate")
    if cert is not None:  # absent from the eval.json of vaegen 0.2 and earlier
        lines.append("certificate (95 % intervals; each against real data measured the same way):")
        lines.extend(f"  {row['reading']}" for row in cert["measures"])
    return "\n".join(lines)


def _pairs(
    add: Any, result: dict[str, Any], parts: tuple[tuple[str, str, tuple[str, str], str], ...]
) -> None:
    """One line for each part holding two numbers for the generated images and two for real
    training images (its reference)."""
    for key, label, (first, second), spec in parts:
        part = result.get(key)
        if part is None:
            continue
        if "skipped" in part:
            add(label, f"skipped: {part['skipped']}")
            continue
        g, ref = part["generated"], part["train_vs_test_reference"]
        add(
            label,
            f"{_vi(g, first, spec)} / {_vi(g, second, spec)} generated vs test; reference "
            f"{_vi(ref, first, spec)} / {_vi(ref, second, spec)}",
        )


def _model_rows(add: Callable[[str, str], None], result: dict[str, Any]) -> None:
    """The lines only a run's evaluation has: the likelihood and the latent space."""
    s = result["settings"]
    m = result["model"]
    lk = result["likelihood"]
    loss = m["loss"]
    unit = likelihood(loss).unit
    data = "binarised test images" if s["binarize"] else "test images"
    add("negative ELBO", f"{_vi(lk, 'negative_elbo', '.2f')} {unit} per image ({data})")
    add("  reconstruction", f"{_vi(lk, 'reconstruction', '.2f')} {unit}")
    add("  KL", f"{_vi(lk, 'kl', '.2f')} nats")
    add(f"NLL bound, IWAE K={s['iw_samples']}", f"{_vi(lk, 'nll_bound_iwae', '.2f')} {unit}")
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
            f"{_vi(knn, 'accuracy', '.2%')} (chance {_value(knn, 'chance'):.0%})",
        )
    else:
        add(f"latent {KNN_K}-NN accuracy", f"not applicable: {knn['not_applicable']}")

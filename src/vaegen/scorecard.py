"""The scorecard `vaegen evaluate` prints: eval.json's numbers as one line each, with units.

Reads only the dict that `vaegen.evaluate.evaluate` returns (and writes as RUN/eval.json), so it
can format a saved eval.json as well as a fresh result.
"""

from __future__ import annotations

import math
from typing import Any

from .losses import likelihood
from .metrics import KNN_K


def _value(d: dict[str, Any], key: str) -> float:
    return d[key]["value"]


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
    fr = result["frechet"]
    if "skipped" in fr:
        add("Frechet distance", f"skipped: {fr['skipped']}")
    else:
        add(
            f"Frechet distance, N={fr['n']}",
            f"{_value(fr, 'generated_vs_test'):.2f} generated vs test; "
            f"floor {_value(fr, 'train_vs_test_floor'):.2f} (real train vs test)",
        )
    t = result["tstr"]
    if "not_applicable" in t:
        add("train synthetic, test real", f"not applicable: {t['not_applicable']}")
    else:
        add(
            f"train synthetic, test real, N={t['n']}",
            f"{_value(t, 'synthetic_accuracy'):.2%} vs {_value(t, 'real_accuracy'):.2%} real "
            f"(ratio {_value(t, 'ratio') or math.nan:.3f}; published CVAE 81.0% vs 86.6%, 0.935)",
        )
    sec = result["seconds"]
    add(
        "time",
        f"{_value(sec, 'total'):.0f} s (likelihood {_value(sec, 'likelihood'):.0f}, "
        f"kNN {_value(sec, 'knn'):.0f}, Frechet {_value(sec, 'frechet'):.0f}, "
        f"TSTR {_value(sec, 'tstr'):.0f})",
    )
    width = max(len(name) for name, _ in rows)
    head = f"{result['run']}: {kind} {loss}-loss VAE, seed {s['seed']}" + (
        ", quick" if s["quick"] else ""
    )
    return "\n".join([head, *(f"  {name:<{width}}  {text}" for name, text in rows)])

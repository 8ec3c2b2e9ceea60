"""The certificate: the headline numbers of an evaluation, each with its interval, beside the same
number for real data (its floor), with a one-line reading. Written into eval.json as
"certificate", printed by `vaegen evaluate`, shown in the report and copied into the manifest of
what `vaegen generate` writes from the same weights and prior.

Reads only the dict `vaegen.evaluation.evaluate` returns, so a saved eval.json gives the same
certificate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .estimators import NEAR_QUANTILE


@dataclass(frozen=True)
class Measure:
    """Where one headline number sits in eval.json and how to read it.

    path     keys to the generated images' number ({"value", "low", "high", ...})
    floor    keys to real data's number measured the same way, or None (fixed: `ideal`)
    better   "lower", "higher" or "nearer" (nearer the floor, as density is)
    blur     keys to the same number of fresh test images' reconstructions (a run's only): what
             the decoder's blur alone does, no image having been trained on
    """

    key: str
    name: str
    path: tuple[str, ...]
    floor: tuple[str, ...] | None
    better: str
    ideal: float | None = None
    blur: tuple[str, ...] | None = None


MEASURES = (
    Measure(
        "frechet",
        "Frechet distance",
        ("frechet", "generated_vs_test"),
        ("frechet", "train_vs_test_floor"),
        "lower",
    ),
    Measure(
        "kid",
        "kernel distance (KID)",
        ("kernel_distance", "generated"),
        ("kernel_distance", "train_vs_test_reference"),
        "lower",
    ),
    Measure(
        "precision",
        "precision",
        ("precision_recall", "generated", "precision"),
        ("precision_recall", "train_vs_test_reference", "precision"),
        "higher",
    ),
    Measure(
        "recall",
        "recall",
        ("precision_recall", "generated", "recall"),
        ("precision_recall", "train_vs_test_reference", "recall"),
        "higher",
    ),
    Measure(
        "density",
        "density",
        ("density_coverage", "generated", "density"),
        ("density_coverage", "train_vs_test_reference", "density"),
        "nearer",
    ),
    Measure(
        "coverage",
        "coverage",
        ("density_coverage", "generated", "coverage"),
        ("density_coverage", "train_vs_test_reference", "coverage"),
        "higher",
    ),
    Measure(
        "alpha_precision",
        "alpha-precision",
        ("alpha_beta", "generated", "alpha_precision"),
        ("alpha_beta", "train_vs_test_reference", "alpha_precision"),
        "higher",
    ),
    Measure(
        "beta_recall",
        "beta-recall",
        ("alpha_beta", "generated", "beta_recall"),
        ("alpha_beta", "train_vs_test_reference", "beta_recall"),
        "higher",
    ),
    Measure(
        "two_sample_auc",
        "real-vs-generated AUC",
        ("two_sample", "generated"),
        ("two_sample", "train_vs_test_reference"),
        "lower",
    ),
    Measure(
        "dcr_share",
        "DCR share (nearer training)",
        ("memorisation", "generated", "dcr_share"),
        ("memorisation", "fresh_real_floor", "dcr_share"),
        "lower",
        blur=("memorisation", "fresh_reconstructions", "dcr_share"),
    ),
    Measure(
        "authentic",
        "authentic share",
        ("memorisation", "generated", "authentic"),
        ("memorisation", "fresh_real_floor", "authentic"),
        "higher",
        blur=("memorisation", "fresh_reconstructions", "authentic"),
    ),
    Measure(
        "near_copies",
        "near copies",
        ("nearest_training", "near_copies"),
        None,
        "lower",
        NEAR_QUANTILE,
    ),
    Measure(
        "class_agreement",
        "class agreement",
        ("class_agreement", "generated"),
        ("class_agreement", "test_reference"),
        "higher",
    ),
    Measure(
        "tstr",
        "train synthetic, test real (CNN)",
        ("tstr", "synthetic_accuracy"),
        ("tstr", "real_accuracy"),
        "higher",
    ),
    Measure(
        "tstr_mlp",
        "train synthetic, test real (MLP)",
        ("tstr", "architectures", "mlp", "synthetic_accuracy"),
        ("tstr", "architectures", "mlp", "real_accuracy"),
        "higher",
    ),
)


def _get(result: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any] | None:
    node: Any = result
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node if isinstance(node, dict) and "value" in node else None


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def reading(
    m: Measure,
    number: dict[str, Any],
    floor: dict[str, Any] | None,
    blur: dict[str, Any] | None = None,
) -> str:
    """One line: the number against its floor's interval (or its fixed ideal), and where it is
    worse, against what the decoder's blur alone does (`blur`, when measured)."""
    value, low, high = number["value"], number.get("low"), number.get("high")
    if floor is None:
        ref = m.ideal
        assert ref is not None
        if low is not None and low <= ref <= high:
            return f"{m.name}: as real images ({_fmt(ref)} is inside the interval)"
        side = "more" if value > ref else "fewer"
        return f"{m.name}: {side} than real images ({_fmt(ref)})"
    f_low, f_high = floor.get("low", floor["value"]), floor.get("high", floor["value"])
    if low is None:
        low = high = value
    if low <= f_high and f_low <= high:
        return f"{m.name}: as real data (the intervals overlap)"
    above = low > f_high
    if m.better == "nearer":
        return f"{m.name}: {'above' if above else 'below'} real data's"
    worse = above if m.better == "lower" else not above
    if not worse:
        return f"{m.name}: better than real data's"
    if blur is not None:
        b_low, b_high = blur.get("low", blur["value"]), blur.get("high", blur["value"])
        past = high < b_low if m.better == "higher" else low > b_high  # beyond the blur's
        if not past:
            return (
                f"{m.name}: worse than real data's, no worse than the decoder's blur alone "
                f"(fresh reconstructions {_fmt(blur['value'])})"
            )
        return (
            f"{m.name}: worse than real data's and than the decoder's blur alone (fresh "
            f"reconstructions {_fmt(blur['value'])})"
        )
    return f"{m.name}: worse than real data's"


def certificate(result: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of an evaluate result (a dict as eval.json holds): for each measure
    evaluated, its number with interval, its floor (real data measured the same way) and a
    one-line reading. Measures a run lacks (TSTR of an unconditional model) are left out."""
    rows = []
    for m in MEASURES:
        number = _get(result, m.path)
        if number is None:
            continue
        floor = _get(result, m.floor) if m.floor is not None else None
        blur = _get(result, m.blur) if m.blur is not None else None
        rows.append(
            {
                "measure": m.key,
                "name": m.name,
                **{k: number.get(k) for k in ("value", "low", "high", "n", "method", "units")},
                "floor": None
                if floor is None
                else {k: floor.get(k) for k in ("value", "low", "high", "n")},
                "ideal": m.ideal,
                "better": m.better,
                "reading": reading(m, number, floor, blur),
            }
        )
    return {
        "measures": rows,
        "n": result.get("settings", {}).get("n_generated"),
        "notes": [
            "each number with its 95 % interval; floor: the same measure of real data at the "
            "same N (real training images against the test images, or for memorisation fresh "
            "test images the model never saw). 'as real data' means the two intervals overlap",
        ],
    }

"""The certificate's intervals and readings: each interval against an independent fact (the spread
of fresh draws, a known answer), each reading against hand-made numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vaegen.evaluation.certificate import MEASURES, certificate, reading
from vaegen.evaluation.estimators import (
    feature_stats,
    frechet_distance,
    frechet_distance_batch,
    frechet_distance_features,
)
from vaegen.evaluation.fidelity import kid, kid_disjoint
from vaegen.evaluation.intervals import bootstrap_interval, frechet_interval, seed_interval
from vaegen.evaluation.memorisation import dcr_scores, dcr_share


def _pairs(n: int, width: int, rows: int, seed: int) -> list[tuple[torch.Tensor, ...]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        a = torch.randn(rows, width, generator=g) * torch.rand(width, generator=g)
        b = torch.randn(rows, width, generator=g) + 0.3
        out.append((*feature_stats(a), *feature_stats(b)))
    return out


def test_the_batched_frechet_distance_is_the_readable_one():
    pairs = _pairs(6, 12, 200, seed=0)
    batch = frechet_distance_batch(*(torch.stack(p) for p in zip(*pairs, strict=True)))
    for value, pair in zip(batch.tolist(), pairs, strict=True):
        assert value == pytest.approx(frechet_distance(*pair), rel=1e-9)


def test_the_batched_frechet_distance_of_a_singular_covariance_is_the_readable_one():
    # fewer rows than features, and a feature that never varies: S1 is only semi-definite
    g = torch.Generator().manual_seed(1)
    a = torch.randn(8, 12, generator=g)
    a[:, 3] = 0.5
    b = torch.randn(50, 12, generator=g)
    pair = (*feature_stats(a), *feature_stats(b))
    batch = frechet_distance_batch(*(t[None] for t in pair))
    assert float(batch[0]) == pytest.approx(frechet_distance(*pair), rel=1e-3)


def test_the_frechet_interval_is_as_wide_as_fresh_draws_scatter():
    """The interval's half width over 1.96 against the standard deviation of the distance over
    independent draws of as many images from the same two distributions."""
    scale = torch.linspace(0.5, 1.5, 16)

    def draw(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.randn(3000, 16, generator=g) * scale, torch.randn(1000, 16, generator=g) + 0.1

    g = torch.Generator().manual_seed(2)
    fresh = [frechet_distance_features(*draw(g)) for _ in range(150)]
    interval = frechet_interval(*draw(g), n_resamples=400, seed=3)
    assert interval.low <= interval.value <= interval.high
    ratio = (interval.width / (2 * 1.959964)) / np.std(fresh)
    assert 0.75 < ratio < 1.33, ratio
    # blocks of rows resample as rows do
    rows = frechet_interval(*draw(g), n_resamples=400, seed=3, blocks=10**6)
    blocks = frechet_interval(*draw(g), n_resamples=400, seed=3, blocks=100)
    assert 0.7 < blocks.width / rows.width < 1.4


def test_a_centred_bootstrap_interval_holds_the_value_a_percentile_one_may_not():
    """The median of 2 of 3 resampled values shifts under resampling; centred keeps the value
    inside and the percentile interval's width."""
    x = np.array([0.0] * 30 + [1.0] * 31 + [5.0] * 39)
    percentile = bootstrap_interval(np.median, x, n_resamples=500, seed=0)
    centred = bootstrap_interval(np.median, x, n_resamples=500, seed=0, method="centred")
    assert centred.low <= centred.value <= centred.high
    assert centred.width == pytest.approx(percentile.width)


def test_kid_of_disjoint_subsets_holds_zero_for_one_distribution_and_not_for_two():
    g = torch.Generator().manual_seed(4)
    real = torch.randn(4000, 8, generator=g)
    same = torch.randn(4000, 8, generator=g)
    shifted = torch.randn(4000, 8, generator=g) + 0.3
    assert seed_interval(kid_disjoint(real, same, subset_size=400), over="subsets").contains(0.0)
    apart = seed_interval(kid_disjoint(real, shifted, subset_size=400), over="subsets")
    assert apart.low > 0
    # one expectation: the overlapping subsets' KID agrees within the interval's reach
    mean, _ = kid(real, shifted, subset_size=400, subsets=50)
    assert apart.low - apart.width < mean < apart.high + apart.width


def test_kid_disjoint_needs_a_full_subset():
    with pytest.raises(Exception, match="disjoint KID subsets of 100"):
        kid_disjoint(torch.zeros(50, 4), torch.zeros(500, 4), subset_size=100)


def test_dcr_scores_average_to_the_share():
    g = torch.Generator().manual_seed(5)
    train, holdout = torch.randn(60, 5, generator=g), torch.randn(60, 5, generator=g)
    generated = torch.cat([train[:20] + 0.01, torch.randn(40, 5, generator=g)])
    scores = dcr_scores(generated, train, holdout)
    assert set(scores.tolist()) <= {0.0, 0.5, 1.0}
    assert float(scores.mean()) == dcr_share(generated, train, holdout)
    assert scores[:20].tolist() == [1.0] * 20  # the copies are nearer their originals


def _number(value: float, low: float, high: float) -> dict[str, float]:
    return {"value": value, "low": low, "high": high}


@pytest.mark.parametrize(
    ("key", "number", "floor", "verdict"),
    [
        ("frechet", (5.0, 4.0, 6.0), (1.0, 0.5, 1.5), "worse than real data's"),
        ("frechet", (1.2, 1.0, 1.4), (1.0, 0.5, 1.5), "as real data (the intervals overlap)"),
        ("precision", (0.9, 0.88, 0.92), (0.8, 0.78, 0.82), "better than real data's"),
        ("recall", (0.4, 0.38, 0.42), (0.6, 0.58, 0.62), "worse than real data's"),
        ("density", (1.3, 1.2, 1.4), (1.0, 0.9, 1.1), "above real data's"),
        ("dcr_share", (0.7, 0.65, 0.75), (0.5, 0.45, 0.55), "worse than real data's"),
        ("authentic", (0.2, 0.15, 0.25), (0.5, 0.45, 0.55), "worse than real data's"),
    ],
)
def test_a_reading_says_which_side_of_real_data_a_number_lies(key, number, floor, verdict):
    m = next(m for m in MEASURES if m.key == key)
    assert reading(m, _number(*number), _number(*floor)) == f"{m.name}: {verdict}"


def test_near_copies_are_read_against_the_share_real_images_have_by_construction():
    m = next(m for m in MEASURES if m.key == "near_copies")
    assert reading(m, _number(0.2, 0.15, 0.25), None) == f"{m.name}: more than real images (0.05)"
    assert "inside the interval" in reading(m, _number(0.05, 0.04, 0.06), None)


def test_the_certificate_leaves_out_what_was_not_measured():
    result = {
        "frechet": {
            "generated_vs_test": {**_number(3.0, 2.0, 4.0), "n": [10, 10], "units": "u"},
            "train_vs_test_floor": _number(1.0, 0.5, 1.5),
        },
        "tstr": {"not_applicable": "the model is not conditional"},
        "settings": {"n_generated": 10},
    }
    cert = certificate(result)
    assert [row["measure"] for row in cert["measures"]] == ["frechet"]
    row = cert["measures"][0]
    assert row["floor"] == {"value": 1.0, "low": 0.5, "high": 1.5, "n": None}
    assert row["reading"] == "Frechet distance: worse than real data's"


def test_the_frechet_interval_holds_the_value_where_resampling_biases_the_distance():
    """Two samples of one 64-D Gaussian: the distance is all finite-sample bias, and a resample's
    repeated rows about double it, so raw percentiles would lie wholly above the value."""
    g = torch.Generator().manual_seed(6)
    a, b = torch.randn(2000, 64, generator=g), torch.randn(1000, 64, generator=g)
    interval = frechet_interval(a, b, n_resamples=200, seed=0)
    assert interval.low <= interval.value <= interval.high
    assert interval.high < 1.5 * interval.value


def test_memorisation_is_read_against_what_the_decoders_blur_alone_does():
    """Fresh test images' reconstructions were never trained on: a generated number between
    theirs and the fresh images' is the blur's doing; one beyond both is the generator's own."""
    m = next(m for m in MEASURES if m.key == "authentic")
    floor, blur = _number(0.70, 0.69, 0.71), _number(0.44, 0.43, 0.46)
    within = reading(m, _number(0.56, 0.55, 0.57), floor, blur)
    assert within == (
        "authentic share: worse than real data's, no worse than the decoder's blur alone "
        "(fresh reconstructions 0.44)"
    )
    beyond = reading(m, _number(0.30, 0.29, 0.31), floor, blur)
    assert beyond.startswith("authentic share: worse than real data's and than the decoder's")
    d = next(m for m in MEASURES if m.key == "dcr_share")
    copying = reading(
        d, _number(0.9, 0.88, 0.92), _number(0.5, 0.49, 0.51), _number(0.51, 0.5, 0.52)
    )
    assert "and than the decoder's blur alone" in copying

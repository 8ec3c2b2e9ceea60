"""`vaegen evaluate` end to end, and its classifier (the estimators: test_metrics.py)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from vaegen import load_run, train
from vaegen.classifier import (
    Classifier,
    accuracy,
    extract_features,
    load_reference_classifier,
    predict,
    reference_info,
)
from vaegen.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaegen.data import load_dataset
from vaegen.errors import VaegenError
from vaegen.evaluate import evaluate
from vaegen.scorecard import format_table

# ---------------------------------------------------------------------------- end to end


def _tiny_conditional_run(tiny_data, tmp_path, loss="gaussian"):
    config = RunConfig(
        DataConfig(str(tiny_data)),
        ModelConfig(conditional=True, hidden=32),
        TrainConfig(epochs=3, batch_size=32, lr=3e-3, loss=loss),
    )
    train(config, tmp_path / f"run-{loss}", progress=False)
    return load_run(tmp_path / f"run-{loss}")


def test_evaluate_end_to_end_on_a_tiny_conditional_run(tiny_data, tmp_path):
    run = _tiny_conditional_run(tiny_data, tmp_path)
    kw = {"iw_samples": 30, "n_generated": 120, "quick": True, "seed": 0, "progress": False}
    result = evaluate(run, **kw)
    saved = json.loads((run.path / "eval.json").read_text())
    assert saved == json.loads(json.dumps(result))
    s = saved["settings"]
    assert (s["iw_samples"], s["n_generated"], s["seed"], s["quick"]) == (30, 120, 0, True)
    assert s["binarize"] is False and s["classifier_epochs"] >= 1
    assert saved["vaegen_version"]
    lk = saved["likelihood"]
    for key in ("negative_elbo", "reconstruction", "kl", "nll_bound_iwae"):
        assert set(lk[key]) == {"value", "units"} and math.isfinite(lk[key]["value"])
    assert (
        "gaussian-loss units" in lk["negative_elbo"]["units"]
        and lk["kl"]["units"] == "nats per image"
    )
    assert lk["negative_elbo"]["value"] == pytest.approx(
        lk["reconstruction"]["value"] + lk["kl"]["value"]
    )
    assert lk["nll_bound_iwae"]["value"] <= lk["negative_elbo"]["value"]
    g = lk["gaussian_nll_nats"]
    assert g["nll_bound_iwae"]["value"] == pytest.approx(
        lk["nll_bound_iwae"]["value"] + 0.5 * 144 * math.log(2 * math.pi)
    )
    assert 0 <= saved["latent_knn"]["accuracy"]["value"] <= 1
    assert "skipped" in saved["frechet"] and "(1, 28, 28)" in saved["frechet"]["skipped"]
    t = saved["tstr"]
    for key in ("synthetic_accuracy", "real_accuracy"):
        assert 0 <= t[key]["value"] <= 1 and t[key]["units"] == "fraction of test images"
    assert t["ratio"]["value"] == pytest.approx(
        t["synthetic_accuracy"]["value"] / t["real_accuracy"]["value"]
    )
    for part in ("likelihood", "knn", "frechet", "tstr", "total"):
        assert saved["seconds"][part]["units"] == "seconds"
    # the same seed gives the same numbers; another seed other ones
    again = evaluate(run, **kw)
    assert {k: v for k, v in again.items() if k != "seconds"} == {
        k: v for k, v in result.items() if k != "seconds"
    }
    other = evaluate(run, **{**kw, "seed": 1})
    assert other["likelihood"]["nll_bound_iwae"] != result["likelihood"]["nll_bound_iwae"]
    table = format_table(result)
    assert "NLL bound, IWAE K=30" in table and "train synthetic, test real" in table
    assert "Frechet distance" in table and "skipped" in table


def test_evaluate_unconditional_bernoulli_and_binarize(tiny_data, tmp_path):
    config = RunConfig(
        DataConfig(str(tiny_data)),
        ModelConfig(hidden=32),
        TrainConfig(epochs=1, batch_size=32, loss="bernoulli"),
    )
    run = train(config, tmp_path / "b", progress=False)
    kw = {"iw_samples": 5, "n_generated": 50, "quick": True, "progress": False}
    result = evaluate(run, binarize=True, **kw)
    assert result["tstr"] == {"not_applicable": "the model is not conditional"}
    assert "binarised" in result["likelihood"]["data"]
    assert result["likelihood"]["nll_bound_iwae"]["units"].startswith("nats per image")
    assert "gaussian_nll_nats" not in result["likelihood"]
    assert "not applicable: the model is not conditional" in format_table(result)
    seed_run = train(
        RunConfig(DataConfig(str(tiny_data)), ModelConfig(hidden=32), TrainConfig(epochs=1)),
        tmp_path / "s",
        progress=False,
    )
    with pytest.raises(
        VaegenError,
        match=r"--binarize needs a model trained with a likelihood of binary pixels \(--loss bernoulli\)",
    ):
        evaluate(seed_run, binarize=True, **kw)
    with pytest.raises(VaegenError, match="n_generated = 1 is not valid"):
        evaluate(seed_run, **{**kw, "n_generated": 1})


def test_classifier_adapts_to_the_image_shape():
    for shape in ((1, 28, 28), (3, 12, 12), (1, 5, 3), (2, 1, 1)):
        model = Classifier(shape, 4)
        x = torch.rand(2, *shape)
        assert model(x).shape == (2, 4) and model.features(x).shape == (2, 128)


def test_features_and_predictions_read_uint8_pixels_as_fractions_of_255():
    """extract_features and predict take uint8 images; the network reads floats in [0, 1]."""
    clf = load_reference_classifier()
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (7, 1, 28, 28), generator=g, dtype=torch.uint8)
    by_hand = images.double().div(255).float()
    with torch.no_grad():
        want_features, want_logits = clf.features(by_hand), clf(by_hand)
    got = extract_features(clf, images, batch_size=3)  # three batches, the last one short
    assert got.dtype == torch.float32 and got.shape == (7, 128)
    torch.testing.assert_close(got, want_features)
    assert torch.equal(predict(clf, images, batch_size=3), want_logits.argmax(1))


@pytest.mark.real_data
def test_shipped_reference_classifier_reaches_91_percent(fashion_dir):
    info = reference_info()
    assert info["test_accuracy"] >= 0.91 and info["epochs"] >= 1
    test = load_dataset(str(fashion_dir), "test")
    acc = accuracy(load_reference_classifier(), test.images, test.labels)
    assert acc >= 0.91
    assert acc == pytest.approx(info["test_accuracy"], abs=2e-3)

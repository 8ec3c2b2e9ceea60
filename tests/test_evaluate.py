"""`vaegen evaluate` end to end, and its classifier (the estimators: test_estimators.py)."""

from __future__ import annotations

import importlib
import json
import math
import re

import numpy as np
import pytest
import torch

from vaegen import load_run
from vaegen.cli import main
from vaegen.data import load_dataset
from vaegen.data.idx import write_idx
from vaegen.data.named import FASHION_MNIST
from vaegen.errors import VaegenError
from vaegen.evaluation import evaluate
from vaegen.evaluation.estimators import frechet_distance_features, kth_nearest_sq, precision_recall
from vaegen.evaluation.reference_classifier import (
    Classifier,
    accuracy,
    extract_features,
    load_classifier,
    load_reference_classifier,
    predict,
    reference_info,
)
from vaegen.evaluation.scorecard import format_table
from vaegen.evaluation.tstr_classifiers import MLP_LR, mlp_epochs
from vaegen.model.likelihoods import evaluate_loss
from vaegen.rundir.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaegen.sampling.generate import reconstruct, spread_labels
from vaegen.training.loop import train

from .conftest import as_fashion_mnist_run, make_images

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
        number = lk[key]
        assert set(number) == {"value", "low", "high", "n", "method", "level", "units"}
        assert number["low"] < number["value"] < number["high"] and number["n"] == 64
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
    # 12 x 12 shapes, not FashionMNIST: measured through a network trained on them, named
    net = saved["feature_network"]
    assert net["kind"] == "trained on this dataset" and net["path"] == str(run.path / "feature_net")
    for part in ("frechet", "precision_recall", "class_agreement"):
        assert saved[part]["feature_network"] == net
    assert saved["frechet"]["generated_vs_test"]["value"] >= 0
    assert 0 <= saved["class_agreement"]["generated"]["value"] <= 1
    t = saved["tstr"]
    for key in ("synthetic_accuracy", "real_accuracy"):
        assert 0 <= t[key]["value"] <= 1 and t[key]["units"] == "fraction of test images"
    assert t["ratio"]["value"] == pytest.approx(
        t["synthetic_accuracy"]["value"] / t["real_accuracy"]["value"]
    )
    assert (saved["tstr"]["epochs"], saved["tstr"]["lr"]) == (
        s["classifier_epochs"],
        s["classifier_lr"],
    )
    # both architectures, each beside its own real baseline; the top-level numbers are the CNN's
    archs = t["architectures"]
    assert list(archs) == ["cnn", "mlp"]
    keys = {"synthetic_accuracy", "real_accuracy", "ratio", "epochs", "lr"}
    assert set(archs["cnn"]) == set(archs["mlp"]) == keys
    assert {k: archs["cnn"][k] for k in keys} == {k: t[k] for k in keys}
    m = archs["mlp"]
    assert (m["epochs"], m["lr"]) == (mlp_epochs(s["classifier_epochs"]), MLP_LR)
    for key in ("synthetic_accuracy", "real_accuracy"):
        assert set(m[key]) == {"value", "low", "high", "n", "method", "level", "units"}
        assert m[key]["method"] == "wilson" and m[key]["n"] == 64  # the test images
        assert m[key]["low"] <= m[key]["value"] <= m[key]["high"]
        assert 0 <= m[key]["value"] <= 1 and m[key]["units"] == "fraction of test images"
    assert m["ratio"]["value"] == pytest.approx(
        m["synthetic_accuracy"]["value"] / m["real_accuracy"]["value"]
    )
    parts = ("feature_network", "likelihood", "knn", "frechet", "precision_recall")
    more = ("density_coverage", "kernel_distance", "alpha_beta", "two_sample", "memorisation")
    for part in (*parts, *more, "class_agreement", "tstr", "total"):
        assert saved["seconds"][part]["units"] == "seconds"
    # the same seed gives the same numbers, the second time from the real side's cache; another
    # seed other ones
    kept = result["settings"]["real_side"]
    assert "features.test" in kept["measured"] and not kept["found"]
    again = evaluate(run, **kw)
    found = again["settings"].pop("real_side")
    assert found["found"] == kept["measured"] and not found["measured"]

    def numbers(r: dict) -> dict:
        return {k: v for k, v in r.items() if k not in ("seconds", "settings")}

    assert numbers(again) == json.loads(json.dumps(numbers(result)))
    other = evaluate(run, **{**kw, "seed": 1})
    assert other["likelihood"]["nll_bound_iwae"] != result["likelihood"]["nll_bound_iwae"]
    table = format_table(result)
    assert "NLL bound, IWAE K=30" in table and "train synthetic, test real" in table
    tstr_line = next(line for line in table.splitlines() if "train synthetic, test real" in line)
    mlp_pair = (
        f"MLP {m['synthetic_accuracy']['value']:.2%} [{m['synthetic_accuracy']['low']:.2%}, "
        f"{m['synthetic_accuracy']['high']:.2%}] vs {m['real_accuracy']['value']:.2%} "
    )
    assert tstr_line.split(", test real, N=120")[1].lstrip().startswith("CNN ")
    assert mlp_pair in tstr_line and f"(ratio {m['ratio']['value']:.3f})" in tstr_line
    # an eval.json written before the MLP still formats, with the CNN's pair alone
    old_tstr = {k: v for k, v in result["tstr"].items() if k != "architectures"}
    old = format_table({**result, "tstr": old_tstr, "certificate": None})
    assert "MLP" not in old and "certificate" not in old
    # FashionMNIST's published anchor only beside a FashionMNIST run's numbers
    anchor = "published FashionMNIST CVAE 81.0% vs 86.6%, 0.935"
    assert anchor not in table
    assert anchor in format_table({**result, "model": {**result["model"], "data": "fashion-mnist"}})
    assert "Frechet distance" in table
    assert re.search(rf"\n  feature network +trained on this data, id {net['id']} ", table)
    assert "precision / recall" in table and "class agreement" in table
    # every number of the certificate has its interval, and holds its value inside it
    cert = saved["certificate"]
    names = [row["measure"] for row in cert["measures"]]
    assert names == [
        "frechet",
        "kid",
        "precision",
        "recall",
        "density",
        "coverage",
        "alpha_precision",
        "beta_recall",
        "two_sample_auc",
        "dcr_share",
        "authentic",
        "near_copies",
        "class_agreement",
        "tstr",
        "tstr_mlp",
    ]
    for row in cert["measures"]:
        assert row["low"] <= row["value"] <= row["high"], row
        assert row["n"] and row["method"] and row["reading"].startswith(row["name"] + ":")
        assert (row["floor"] is None) == (row["measure"] == "near_copies")
    mem = saved["memorisation"]
    assert mem["n_reference"] == 32 and mem["space"] == "pixels"  # half of the 64 test images
    for side in ("generated", "fresh_real_floor", "fresh_reconstructions"):
        assert 0 <= mem[side]["dcr_share"]["value"] <= 1
    assert "certificate (95 % intervals" in table and cert["measures"][0]["reading"] in table
    assert saved["model"]["weights_sha256"] == run.weights_sha256()
    assert s["prior"]["sha256"] is None or len(s["prior"]["sha256"]) == 64


def test_evaluate_unconditional_bernoulli_and_binarize(tiny_data, tmp_path):
    config = RunConfig(
        DataConfig(str(tiny_data)),
        ModelConfig(hidden=32),
        TrainConfig(epochs=1, batch_size=32, loss="bernoulli"),
    )
    run = train(config, tmp_path / "b", progress=False)
    kw = {"iw_samples": 5, "n_generated": 50, "quick": True, "progress": False, "feature_epochs": 2}
    result = evaluate(run, binarize=True, **kw)
    assert result["tstr"] == {"not_applicable": "the model is not conditional"}
    assert result["class_agreement"] == {"not_applicable": "the model is not conditional"}
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
    # precision and recall need more images than the neighbours they count (PR_K = 3)
    with pytest.raises(VaegenError, match="n_generated = 3 is not valid: use an integer > 3"):
        evaluate(seed_run, **{**kw, "n_generated": 3})
    from .conftest import write_idx_dataset

    few = TrainConfig(epochs=1, batch_size=32)
    small = train(
        RunConfig(
            DataConfig(str(write_idx_dataset(tmp_path / "d3", n_train=3))),
            ModelConfig(hidden=8),
            few,
        ),
        tmp_path / "s3",
        progress=False,
    )
    with pytest.raises(VaegenError, match="s3: its training set has 3 images; evaluating it"):
        evaluate(small, **kw)


# ------------------------------------------------------------ each part against a known answer

# the images every part of evaluate shares are made in its context module (the package exports
# the function `evaluate`, which hides the package of the same name)
CONTEXT = importlib.import_module("vaegen.evaluation.context")
SAMPLES = importlib.import_module("vaegen.evaluation.samples")
FEATURES = importlib.import_module("vaegen.evaluation.features")
SYNTHETIC = importlib.import_module("vaegen.evaluation.synthetic")


def _tiny_run(data, out, conditional=False, loss="gaussian"):
    """One epoch on a tiny dataset: the parts below do not depend on the model being good."""
    config = RunConfig(
        DataConfig(str(data)),
        ModelConfig(conditional=conditional, hidden=32),
        TrainConfig(epochs=1, batch_size=32, lr=3e-3, loss=loss),
    )
    return train(config, out, progress=False)


def test_a_learned_sigma_runs_likelihood_is_named_a_density_not_a_bernoulli(tiny_data, tmp_path):
    run = _tiny_run(tiny_data, tmp_path / "s", loss="gaussian-sigma")
    train_ds, test_ds = load_dataset(str(tiny_data), "train"), load_dataset(str(tiny_data), "test")
    subject = FEATURES.subject_of(run)
    ctx = CONTEXT.Context(run, subject, train_ds, test_ds, 8, torch.arange(8), 0, False)
    notes = importlib.import_module("vaegen.evaluation.marginal_likelihood").marginal_likelihood(
        ctx, 3, False
    )["notes"]
    assert any("a Gaussian density on continuous grey levels, in nats" in n for n in notes)
    assert not any("Bernoulli" in n or "--binarize" in n for n in notes)


def _hand_over_as_generated(monkeypatch, images, labels=None) -> list[int]:
    """Make evaluate's generator return `images` (and `labels`) whatever it is asked for.

    Returns the list of the n it is asked for, one per call."""
    asked: list[int] = []

    def fake(run, n, labels_wanted=None, seed=0, **kwargs):
        asked.append(n)
        return images, labels

    monkeypatch.setattr(CONTEXT, "generate", fake)
    return asked


def _shapes(n, size=12, seed=7):
    """n fresh images of conftest's shapes, N x 1 x size x size uint8, and their int64 labels."""
    x, y = make_images(n, size=size, seed=seed)
    return torch.from_numpy(x)[:, None], torch.from_numpy(y).long()


def test_tstr_trains_its_synthetic_classifier_on_the_generated_images(
    tiny_data, tmp_path, monkeypatch
):
    run = _tiny_run(tiny_data, tmp_path / "c", conditional=True)
    kw = {"iw_samples": 2, "n_generated": 120, "progress": False, "feature_epochs": 2}
    # new draws of the data's shapes handed over as generated, so none of them is among the N
    # real training images of the baseline: as useful as those, a ratio near 1
    images, labels = _shapes(120)
    asked = _hand_over_as_generated(monkeypatch, images, labels)
    t = evaluate(run, **kw)["tstr"]
    assert asked == [120]
    for each in (t, t["architectures"]["mlp"]):  # the CNN's numbers, then the MLP's
        assert each["real_accuracy"]["value"] >= 0.9
        assert each["synthetic_accuracy"]["value"] >= 0.9 and each["ratio"]["value"] >= 0.9
    # the same images, each labelled with the next class, teach every class the wrong name:
    # an accuracy near 0, far below chance (1/3)
    _hand_over_as_generated(monkeypatch, images, (labels + 1) % 3)
    t = evaluate(run, **kw)["tstr"]
    for each in (t, t["architectures"]["mlp"]):
        assert each["real_accuracy"]["value"] >= 0.9
        assert each["synthetic_accuracy"]["value"] <= 0.1 and each["ratio"]["value"] <= 0.1


def test_latent_knn_queries_with_the_test_set_and_scores_its_labels(tiny_data, tmp_path):
    run = _tiny_run(tiny_data, tmp_path / "u")
    kw = {"iw_samples": 2, "n_generated": 10, "progress": False, "feature_epochs": 2}
    right = evaluate(run, **kw)["latent_knn"]["accuracy"]["value"]
    assert right >= 0.9  # the three shapes are far apart in the latent space
    # every test label moved to the next class: the same neighbours now vote for a wrong class,
    # while the training set, queried with its own (unchanged) labels, would still score ~1
    labels_file = tiny_data / "t10k-labels-idx1-ubyte.gz"
    y = load_dataset(str(tiny_data), "test").labels.numpy()
    write_idx(labels_file, ((y + 1) % 3).astype(np.uint8))
    shifted = evaluate(run, **kw)["latent_knn"]["accuracy"]["value"]
    # a prediction equals at most one of a label and the next class
    assert shifted <= 1 - right + 1e-12 and shifted <= 0.1


def _shapes_dataset_28(folder):
    """conftest's shapes at 28 x 28 (the reference classifier's size): 256 train, 64 test."""
    folder.mkdir()
    for prefix, n, seed in (("train", 256, 0), ("t10k", 64, 1)):
        x, y = make_images(n, size=28, seed=seed)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", x)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", y)
    return folder


def test_frechet_compares_the_generated_and_the_real_images_with_the_test_set(
    tmp_path, monkeypatch
):
    data = _shapes_dataset_28(tmp_path / "d28")
    run = _tiny_run(data, tmp_path / "u28")
    train_ds, test = load_dataset(str(data), "train"), load_dataset(str(data), "test")
    n, seed = 100, 3
    kw = {"iw_samples": 2, "n_generated": n, "seed": seed, "progress": False, "feature_epochs": 2}

    # the test set handed over as generated is at distance 0 from itself
    _hand_over_as_generated(monkeypatch, test.images)
    result = evaluate(run, **kw)
    fr = result["frechet"]
    # 28 x 28 but not FashionMNIST: measured with a network trained on the run's data, saved there
    assert fr["feature_network"]["kind"] == "trained on this dataset"
    clf = load_classifier(run.path / "feature_net" / "classifier.safetensors", (1, 28, 28), 3)
    test_features = extract_features(clf, test.images)

    def by_hand(images):
        return frechet_distance_features(extract_features(clf, images), test_features)

    # evaluate's N real training images: the first N of a permutation seeded with the seed
    real_idx = torch.randperm(len(train_ds), generator=torch.Generator().manual_seed(seed))[:n]
    floor = by_hand(train_ds.images[real_idx])
    assert fr["train_vs_test_floor"]["value"] == pytest.approx(floor, rel=1e-6)
    assert fr["generated_vs_test"]["value"] == pytest.approx(0.0, abs=1e-6 * floor)
    # the reconstructions: each test image decoded from its encoder mean
    recon = by_hand(reconstruct(run, test.images))
    assert fr["reconstructions_vs_test"]["value"] == pytest.approx(recon, rel=1e-6)
    # and the same sets' precision and recall: the test set against itself, 1 and 1; the N real
    # training images as computed here
    pr = result["precision_recall"]
    assert pr["k"] == 3 and (pr["n"], pr["n_test"]) == (n, len(test))
    got = pr["generated"]
    assert (got["precision"]["value"], got["recall"]["value"]) == (1.0, 1.0)
    ref = pr["train_vs_test_reference"]
    want = precision_recall(test_features, extract_features(clf, train_ds.images[real_idx]))
    assert (ref["precision"]["value"], ref["recall"]["value"]) == want
    assert 0 < want[1] < 1  # 100 training images do not cover all 64 test images: not trivial
    # other images of the same shapes are at their own distance, not 0
    other, _ = _shapes(n, size=28, seed=7)
    _hand_over_as_generated(monkeypatch, other)
    fr = evaluate(run, **kw)["frechet"]
    assert fr["generated_vs_test"]["value"] == pytest.approx(by_hand(other), rel=1e-6)
    assert fr["generated_vs_test"]["value"] > 1e-3 * floor
    assert fr["train_vs_test_floor"]["value"] == pytest.approx(floor, rel=1e-6)
    assert fr["samples_over_reconstructions"]["value"] == pytest.approx(by_hand(other) / recon)


def test_nearest_training_tells_copies_of_training_images_from_new_images(tmp_path, monkeypatch):
    data = _shapes_dataset_28(tmp_path / "d28")
    run = _tiny_run(data, tmp_path / "u28")
    train_ds, test = load_dataset(str(data), "train"), load_dataset(str(data), "test")
    n, seed = 200, 3
    kw = {"iw_samples": 2, "n_generated": n, "seed": seed, "progress": False, "feature_epochs": 2}
    real_idx = torch.randperm(len(train_ds), generator=torch.Generator().manual_seed(seed))[:n]

    # copies of the very training images searched: at distance 0 from them, every one a copy
    _hand_over_as_generated(monkeypatch, train_ds.images[real_idx].flip(0))
    nt = evaluate(run, **kw)["nearest_training"]
    assert nt["median_ratio"]["value"] == 0.0 and nt["near_copies"]["value"] == 1.0
    assert nt["median_generated"]["value"] == 0.0 and nt["n"] == n

    # the test images themselves: the reference's own numbers, by hand
    clf = load_classifier(run.path / "feature_net" / "classifier.safetensors", (1, 28, 28), 3)
    f_train = extract_features(clf, train_ds.images[real_idx])
    d_test = kth_nearest_sq(extract_features(clf, test.images), f_train, 1).sqrt()
    assert d_test.min() > 0  # no test image is a training image
    _hand_over_as_generated(monkeypatch, test.images)
    nt = evaluate(run, **kw)["nearest_training"]
    assert nt["median_ratio"]["value"] == pytest.approx(1.0)
    assert nt["median_test"]["value"] == pytest.approx(float(d_test.median()), rel=1e-6)
    near = torch.quantile(d_test.double(), 0.05)
    assert nt["near_copies"]["value"] == pytest.approx(float((d_test < near).double().mean()))
    assert 0 < nt["near_copies"]["value"] < 0.1  # 4 of the 64 test images

    # new images of the same shapes lie about as far as the test images do; not 0
    other, _ = _shapes(n, size=28, seed=11)
    _hand_over_as_generated(monkeypatch, other)
    nt = evaluate(run, **kw)["nearest_training"]
    d_other = kth_nearest_sq(extract_features(clf, other), f_train, 1).sqrt()
    want = float(d_other.median() / d_test.median())
    assert nt["median_ratio"]["value"] == pytest.approx(want, rel=1e-6)
    assert 0.5 < want < 2 and nt["near_copies"]["value"] < 0.2
    # and the test images' reconstructions, the reference for a decoder's blur
    d_recon = kth_nearest_sq(extract_features(clf, reconstruct(run, test.images)), f_train, 1)
    got = nt["reconstructions_median_ratio"]["value"]
    assert got == pytest.approx(float(d_recon.sqrt().median() / d_test.median()), rel=1e-6)
    got = nt["reconstructions_near_copies"]["value"]
    assert got == pytest.approx(float((d_recon.sqrt() < near).double().mean()))
    assert "nearest training image" in format_table(evaluate(run, **kw))


def test_a_conditional_runs_reconstructions_are_decoded_with_their_labels(tmp_path):
    data = _shapes_dataset_28(tmp_path / "d28")
    run = _tiny_run(data, tmp_path / "c28", conditional=True)
    train_ds, test = load_dataset(str(data), "train"), load_dataset(str(data), "test")
    # the Frechet part alone, on evaluate's shared context
    subject = FEATURES.subject_of(run)
    ctx = CONTEXT.Context(
        run, subject, train_ds, test, 64, torch.arange(64), 0, False, feature_epochs=2
    )
    fr = SAMPLES.frechet(ctx)
    clf = ctx.classifier()  # the network trained on the run's data
    test_features = extract_features(clf, test.images)

    def by_hand(labels):
        images = reconstruct(run, test.images, labels)
        return frechet_distance_features(extract_features(clf, images), test_features)

    want = by_hand(test.labels)
    assert fr["reconstructions_vs_test"]["value"] == pytest.approx(want, rel=1e-6)
    # the label matters: decoded with the next class's, the distance is another
    assert by_hand((test.labels + 1) % 3) != pytest.approx(want, rel=1e-3)


def _fashion_subset(fashion_dir, folder, n_train=600, n_test=1000):
    """The first images of the real FashionMNIST, as an IDX folder with its class names."""
    folder.mkdir()
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        ds = load_dataset(str(fashion_dir), split)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", ds.images[:n, 0].numpy())
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", ds.labels[:n].numpy().astype(np.uint8))
    (folder / "classes.txt").write_text("\n".join(FASHION_MNIST.classes) + "\n")
    return folder


@pytest.mark.real_data
@pytest.mark.slow
def test_class_agreement_compares_the_classifiers_class_with_the_one_asked_for(
    fashion_dir, tmp_path, monkeypatch
):
    data = _fashion_subset(fashion_dir, tmp_path / "fashion")
    _tiny_run(data, tmp_path / "c", conditional=True)
    as_fashion_mnist_run(tmp_path / "c", fashion_dir)  # measured with the reference classifier
    run = load_run(tmp_path / "c")
    full = load_dataset(str(fashion_dir), "test")
    test = load_dataset(str(data), "test")  # its first 1000 images
    clf = load_reference_classifier()

    def agreement():
        """The class agreement part alone, on evaluate's context (which reads no training
        images for it)."""
        subject = FEATURES.subject_of(run)
        ctx = CONTEXT.Context(run, subject, full, full, 100, torch.arange(100), 0, False)
        return SYNTHETIC.class_agreement(ctx)

    # real test images handed over as generated with their own labels agree as often as the
    # classifier is right about them, class by class
    _hand_over_as_generated(monkeypatch, test.images, test.labels.long())
    ca = agreement()
    assert ca["feature_network"]["kind"] == "reference"
    assert ca["generated"]["value"] == pytest.approx(accuracy(clf, test.images, test.labels))
    assert ca["generated"]["value"] >= 0.9
    assert ca["test_reference"]["value"] == pytest.approx(accuracy(clf, full.images, full.labels))
    assert list(ca["per_class"]) == list(FASHION_MNIST.classes)
    for k, name in enumerate(FASHION_MNIST.classes):
        mine = test.labels == k
        want = accuracy(clf, test.images[mine], test.labels[mine])
        assert ca["per_class"][name]["value"] == pytest.approx(want)
    # trousers asked for as every class in turn: right only when a trouser was asked for. Each
    # class is asked of a tenth of them, so overall 1/10 of them agree in expectation whatever the
    # classifier makes of them: sum over c of 1/10 * P(classed as c) = 1/10
    trousers = full.images[full.labels == 1][:1000]
    _hand_over_as_generated(monkeypatch, trousers, spread_labels(len(trousers), range(10)))
    ca = agreement()
    assert ca["generated"]["value"] == pytest.approx(0.1, abs=0.02)
    assert ca["per_class"]["Trouser"]["value"] >= 0.9
    others = [v["value"] for name, v in ca["per_class"].items() if name != "Trouser"]
    assert max(others) <= 0.05


def test_binarize_bounds_the_likelihood_of_binarised_test_images(tiny_data, tmp_path, capsys):
    run = _tiny_run(tiny_data, tmp_path / "b", loss="bernoulli")
    seed = 2
    x = load_dataset(str(tiny_data), "test").images.double().div(255).float()
    # evaluate's draw: pixel ~ Bernoulli(grey level) from a CPU generator seeded seed + 2, and
    # the ELBO's z from one seeded seed + 1
    binary = torch.bernoulli(x, generator=torch.Generator().manual_seed(seed + 2))
    want = evaluate_loss(run.model, binary, None, "bernoulli", seed=seed + 1)["loss"]
    grey = evaluate_loss(run.model, x, None, "bernoulli", seed=seed + 1)["loss"]
    # the cross-entropy is linear in the pixels, so the two agree in expectation: only the draw
    # tells them apart, by far more than the rounding the comparisons below allow
    assert want != pytest.approx(grey, rel=1e-6)
    kw = {
        "iw_samples": 100,
        "n_generated": 10,
        "seed": seed,
        "progress": False,
        "feature_epochs": 2,
    }
    lk = evaluate(run, binarize=True, **kw)["likelihood"]
    assert lk["negative_elbo"]["value"] == pytest.approx(want, rel=1e-9)
    # the probability of binary pixels is at most 1, so 0 <= -log p(x) <= the IWAE bound <= -ELBO
    assert 0 < lk["nll_bound_iwae"]["value"] <= lk["negative_elbo"]["value"]
    grey_lk = evaluate(run, **kw)["likelihood"]
    assert grey_lk["negative_elbo"]["value"] == pytest.approx(grey, rel=1e-9)
    # and through the command line, with and without the flag
    argv = ["-q", "evaluate", str(run.path), "--iw-samples", "5", "--n-generated", "10"]
    for flag, value in ((["--binarize"], want), ([], grey)):
        assert main([*argv, "--seed", str(seed), *flag]) == 0
        saved = json.loads((run.path / "eval.json").read_text())
        assert saved["settings"]["binarize"] is bool(flag)
        assert saved["likelihood"]["negative_elbo"]["value"] == pytest.approx(value, rel=1e-9)
        assert ("(binarised test images)" in capsys.readouterr().out) is bool(flag)


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
@pytest.mark.slow
def test_shipped_reference_classifier_reaches_91_percent(fashion_dir):
    info = reference_info()
    assert info["test_accuracy"] >= 0.91 and info["epochs"] >= 1
    test = load_dataset(str(fashion_dir), "test")
    acc = accuracy(load_reference_classifier(), test.images, test.labels)
    assert acc >= 0.91
    assert acc == pytest.approx(info["test_accuracy"], abs=2e-3)


def test_evaluate_samples_refuses_to_replace_a_file_it_did_not_write(tmp_path, capsys):
    """--out names where the result goes: a user's file there is refused before anything is
    measured (nothing is loaded: the samples and data named do not even exist)."""
    mine = tmp_path / "notes.json"
    mine.write_text('{"mine": 1}\n')
    link = tmp_path / "link.json"
    link.symlink_to(mine)
    for out in (mine, link):
        argv = ["evaluate", "--samples", str(tmp_path / "no.npz"), "--data", str(tmp_path / "no")]
        assert main([*argv, "--out", str(out)]) != 0
        said = "is not an earlier result" if out == mine else "is a link or a folder"
        assert said in capsys.readouterr().err
    assert mine.read_text() == '{"mine": 1}\n' and link.is_symlink()

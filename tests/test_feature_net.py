"""`vaegen evaluate` on data other than FashionMNIST: the feature network trained on the run's own
training split, saved with its sidecar, reused, retrained, shared, and the numbers measured
through it; and FashionMNIST runs still measured with the reference classifier."""

from __future__ import annotations

import hashlib
import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vaegen import load_run
from vaegen._version import __version__
from vaegen.cli import main
from vaegen.data import load_dataset
from vaegen.data.idx import write_idx
from vaegen.data.named import FASHION_MNIST
from vaegen.errors import VaegenError
from vaegen.evaluation import evaluate
from vaegen.evaluation.estimators import frechet_distance_features
from vaegen.evaluation.reference_classifier import (
    accuracy,
    extract_features,
    load_classifier,
    load_reference_classifier,
)
from vaegen.evaluation.scorecard import format_table
from vaegen.report import write_report
from vaegen.rundir import Run, load_both_splits
from vaegen.rundir.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaegen.sampling.generate import spread_labels
from vaegen.training.loop import train

from .conftest import as_fashion_mnist_run, make_images, write_idx_dataset

# the package exports the function `evaluate`, which hides the package of the same name
CONTEXT = importlib.import_module("vaegen.evaluation.context")
FEATURES = importlib.import_module("vaegen.evaluation.features")

CLASSES = ["bar", "pole", "slash"]  # make_images' three shapes, in label order
FE = 10  # feature-network epochs: 8 x 8 shapes are told apart long before
KW = {"iw_samples": 2, "n_generated": 100, "seed": 3, "progress": False, "feature_epochs": FE}


def _npz(
    path: Path, n: int = 600, seed: int = 0, labelled: bool = True, mislabelled: int = 0
) -> Path:
    """n 8 x 8 images of make_images' three shapes (a tenth held out by the run), as an .npz;
    every `mislabelled`-th image (0: none) labelled as the next shape."""
    x, y = make_images(n, size=8, seed=seed)
    if mislabelled:
        y[::mislabelled] = (y[::mislabelled] + 1) % 3
    arrays = {"x": x, "y": y, "classes": np.array(CLASSES)} if labelled else {"x": x}
    np.savez(path, **arrays)
    return path


def _run(data: Path, out: Path, conditional: bool = False) -> Run:
    config = RunConfig(
        DataConfig(str(data)),
        ModelConfig(conditional=conditional, hidden=32),
        TrainConfig(epochs=1, batch_size=32, lr=3e-3),
    )
    return train(config, out, progress=False)


def _count_trainings(monkeypatch: pytest.MonkeyPatch) -> list[torch.Tensor]:
    """Count the feature network's trainings: the list of the images each was given."""
    calls: list[torch.Tensor] = []
    real = FEATURES.train_classifier

    def counting(images, *args, **kwargs):
        calls.append(images)
        return real(images, *args, **kwargs)

    monkeypatch.setattr(FEATURES, "train_classifier", counting)
    return calls


def _hand_over_as_generated(monkeypatch: pytest.MonkeyPatch, images, labels=None) -> None:
    """Make evaluate's generator return `images` (and `labels`) whatever it is asked for."""
    monkeypatch.setattr(CONTEXT, "generate", lambda *args, **kwargs: (images, labels))


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


NET_FILES = [".lock", "classifier.json", "classifier.safetensors"]

# ---------------------------------------------------------------------- trained, saved, reused


def test_the_network_is_trained_once_on_the_training_split_and_reused(tmp_path, monkeypatch):
    # one image in 7 mislabelled: no network is right about all of them, and the test split's
    # accuracy is not the training split's
    data = _npz(tmp_path / "shapes.npz", mislabelled=7)
    run = _run(data, tmp_path / "r")
    calls = _count_trainings(monkeypatch)
    first = evaluate(run, **KW)
    train_ds, test_ds = load_both_splits(run)
    assert len(calls) == 1 and torch.equal(calls[0], train_ds.images)  # the training split
    folder = run.path / "feature_net"
    assert _files(folder) == NET_FILES
    sidecar = json.loads((folder / "classifier.json").read_text())
    config = json.loads((run.path / "config.json").read_text())
    assert sidecar["data"]["source"] == str(data)
    assert sidecar["data"]["test_fraction"] == config["data"]["test_fraction"] == 0.1
    assert sidecar["data"]["split_seed"] == config["data"]["split_seed"] == 0
    assert (sidecar["image_shape"], sidecar["classes"]) == ([1, 8, 8], CLASSES)
    assert (sidecar["n_train"], sidecar["n_test"]) == (540, 60)
    assert (sidecar["epochs"], sidecar["seed"], sidecar["vaegen_version"]) == (FE, 0, __version__)
    weights = (folder / "classifier.safetensors").read_bytes()
    assert sidecar["weights_sha256"] == hashlib.sha256(weights).hexdigest()
    # its accuracy as the sidecar states it: the saved weights on the run's held-out test split
    clf = load_classifier(folder / "classifier.safetensors", (1, 8, 8), 3)
    assert sidecar["test_accuracy"] == accuracy(clf, test_ds.images, test_ds.labels) >= 0.75
    assert sidecar["test_accuracy"] != accuracy(clf, train_ds.images, train_ds.labels)
    net = first["feature_network"]
    assert net["id"] == sidecar["weights_sha256"][:16] and net["epochs"] == FE
    assert "only with runs evaluated with this same network (the same id)" in net["comparable"]
    assert first["frechet"]["feature_network"] == first["precision_recall"]["feature_network"]
    assert first["frechet"]["feature_network"] == net

    # later evaluations train nothing and measure the same numbers with the same file, whether
    # they ask for the saved epochs, leave them to the saved network, or are quick
    for kw in (KW, {**KW, "feature_epochs": None}, {**KW, "feature_epochs": None, "quick": True}):
        again = evaluate(run, **kw)
        assert len(calls) == 1
        assert again["frechet"] == first["frechet"]
        assert again["precision_recall"] == first["precision_recall"]
    assert (folder / "classifier.safetensors").read_bytes() == weights


def test_the_network_is_retrained_when_its_sidecar_does_not_match(tmp_path, monkeypatch):
    data = _npz(tmp_path / "shapes.npz")
    run = _run(data, tmp_path / "r")
    folder = run.path / "feature_net"
    calls = _count_trainings(monkeypatch)
    evaluate(run, **KW)
    first_weights = (folder / "classifier.safetensors").read_bytes()

    def check(trainings: int, **want) -> dict:
        """After an evaluation: trainings so far, and a sidecar that describes its weights."""
        assert len(calls) == trainings
        sidecar = json.loads((folder / "classifier.json").read_text())
        weights = (folder / "classifier.safetensors").read_bytes()
        assert sidecar["weights_sha256"] == hashlib.sha256(weights).hexdigest()
        assert _files(folder) == NET_FILES  # replaced in place: no temporaries left
        for key, value in want.items():
            assert sidecar["data"].get(key, sidecar.get(key)) == value
        return sidecar

    # another split of the same file (config.json's split_seed): trained again on the new split
    config = json.loads((run.path / "config.json").read_text())
    config["data"]["split_seed"] = 1
    (run.path / "config.json").write_text(json.dumps(config))
    run = load_run(run.path)
    evaluate(run, **KW)
    check(2, split_seed=1)
    assert torch.equal(calls[-1], load_both_splits(run)[0].images)
    evaluate(run, **KW)
    check(2)  # and then reused
    # other images in the same file, same split
    _npz(data, seed=5)
    evaluate(run, **KW)
    check(3)
    # other epochs asked for
    evaluate(run, **{**KW, "feature_epochs": FE + 1})
    check(4, epochs=FE + 1)
    # weights that are not the network the sidecar describes (a write cut between the two files,
    # which are written weights first): trained again rather than trusted
    (folder / "classifier.safetensors").write_bytes(first_weights)
    evaluate(run, **{**KW, "feature_epochs": FE + 1})
    check(5, epochs=FE + 1)
    # a sidecar that lacks what the scorecard reads of it: trained again, not a KeyError
    sidecar = json.loads((folder / "classifier.json").read_text())
    del sidecar["n_test"]
    (folder / "classifier.json").write_text(json.dumps(sidecar))
    evaluate(run, **{**KW, "feature_epochs": FE + 1})
    check(6, n_test=60)


# ------------------------------------------------------------------ the numbers measured with it


def test_real_images_score_as_real_data_and_a_wrong_generator_far_from_it(tmp_path, monkeypatch):
    data = _npz(tmp_path / "shapes.npz")
    run = _run(data, tmp_path / "r")
    train_ds, test_ds = load_both_splits(run)
    n, seed = KW["n_generated"], KW["seed"]
    # evaluate's N real training images are the first N of a permutation seeded with the seed;
    # N others of the training set handed over as generated are what a perfect generator draws
    perm = torch.randperm(len(train_ds), generator=torch.Generator().manual_seed(seed))
    _hand_over_as_generated(monkeypatch, train_ds.images[perm[n : 2 * n]])
    real = evaluate(run, **KW)
    # the images' background alone, no shapes: a generator that learned nothing
    noise, _ = make_images(n, size=8, classes=3, seed=9)
    noise = torch.from_numpy(np.minimum(noise, 40))[:, None]
    _hand_over_as_generated(monkeypatch, noise)
    wrong = evaluate(run, **KW)
    # only the first shape, whatever is asked: realistic images, a third of the data's variety
    bars, _ = make_images(3 * n, size=8, seed=11)
    _hand_over_as_generated(monkeypatch, torch.from_numpy(bars[::3])[:, None])
    collapsed = evaluate(run, **KW)

    floor = real["frechet"]["train_vs_test_floor"]["value"]
    far = wrong["frechet"]["generated_vs_test"]["value"]
    assert real["frechet"]["generated_vs_test"]["value"] < 0.02 * far
    assert abs(real["frechet"]["generated_vs_test"]["value"] - floor) < 0.02 * far
    assert collapsed["frechet"]["generated_vs_test"]["value"] > 10 * floor
    # measured through the run's saved network, as computed here from its file
    clf = load_classifier(run.path / "feature_net" / "classifier.safetensors", (1, 8, 8), 3)
    test_f = extract_features(clf, test_ds.images)
    by_hand = frechet_distance_features(extract_features(clf, noise), test_f)
    assert far == pytest.approx(by_hand, rel=1e-6)

    ref = real["precision_recall"]["train_vs_test_reference"]
    for key in ("precision", "recall"):
        got = real["precision_recall"]["generated"][key]["value"]
        assert got == pytest.approx(ref[key]["value"], abs=0.15) and got >= 0.8
    assert wrong["precision_recall"]["generated"]["precision"]["value"] <= 0.1
    assert collapsed["precision_recall"]["generated"]["precision"]["value"] >= 0.8
    assert collapsed["precision_recall"]["generated"]["recall"]["value"] <= 0.5


def test_class_agreement_of_a_generator_that_ignores_its_labels_is_low(tmp_path, monkeypatch):
    data = _npz(tmp_path / "shapes.npz")
    run = _run(data, tmp_path / "c", conditional=True)
    x, y = make_images(150, size=8, seed=7)  # fresh draws of the three shapes
    images, labels = torch.from_numpy(x)[:, None], torch.from_numpy(y).long()
    kw = {**KW, "quick": True}
    # drawn as asked: agreement as high as the network's own accuracy on the test images
    _hand_over_as_generated(monkeypatch, images, labels)
    ca = evaluate(run, **kw)["class_agreement"]
    assert ca["generated"]["value"] >= 0.9 and ca["test_reference"]["value"] >= 0.9
    assert list(ca["per_class"]) == CLASSES
    assert ca["chance"]["value"] == pytest.approx(1 / 3)
    # a bar whatever is asked: right only for the third of the images asked to be bars
    bars = images[labels == 0].repeat(3, 1, 1, 1)
    _hand_over_as_generated(monkeypatch, bars, spread_labels(len(bars), range(3)))
    ca = evaluate(run, **kw)["class_agreement"]
    assert ca["generated"]["value"] == pytest.approx(1 / 3, abs=0.04)
    assert ca["per_class"]["bar"]["value"] >= 0.9
    assert max(ca["per_class"][c]["value"] for c in ("pole", "slash")) <= 0.1
    assert ca["feature_network"]["kind"] == "trained on this dataset"


# ------------------------------------------------------------------------ skipped, shared, named


def test_an_unlabelled_run_skips_them_with_the_reason(tmp_path, monkeypatch):
    calls = _count_trainings(monkeypatch)
    run = _run(_npz(tmp_path / "x.npz", labelled=False), tmp_path / "u")
    result = evaluate(run, **KW)
    reason = result["frechet"]["skipped"]
    assert reason.startswith("the dataset has no labels")
    assert result["precision_recall"] == {"skipped": reason}
    assert result["feature_network"] == {"skipped": reason}
    assert calls == [] and not (run.path / "feature_net").exists()
    assert f"skipped: {reason}" in format_table(result)
    # one class is no better: a classifier needs two to tell apart
    x, _ = make_images(300, size=8, seed=0)
    np.savez(tmp_path / "one.npz", x=x, y=np.zeros(300, np.uint8), classes=np.array(["all"]))
    result = evaluate(_run(tmp_path / "one.npz", tmp_path / "one"), **KW)
    assert "the dataset has 1 class" in result["frechet"]["skipped"] and calls == []
    # labels for the training images but none for the test images: it says which
    idx = write_idx_dataset(tmp_path / "idx")
    (idx / "t10k-labels-idx1-ubyte.gz").unlink()
    result = evaluate(_run(idx, tmp_path / "i"), **KW)
    assert result["frechet"]["skipped"].startswith("the test split has no labels") and calls == []


def test_runs_on_the_same_data_share_a_network_through_feature_net(tmp_path, monkeypatch, capsys):
    data = _npz(tmp_path / "shapes.npz")
    a, b = _run(data, tmp_path / "a"), _run(data, tmp_path / "b")
    calls = _count_trainings(monkeypatch)
    first = evaluate(a, **KW)
    shared = a.path / "feature_net"
    argv = ["-q", "evaluate", str(b.path), "--iw-samples", "2", "--n-generated", "100"]
    assert main([*argv, "--feature-net", str(shared)]) == 0
    got = json.loads((b.path / "eval.json").read_text())
    assert len(calls) == 1 and not (b.path / "feature_net").exists()
    assert got["frechet"]["feature_network"] == first["frechet"]["feature_network"]
    assert got["settings"]["feature_net"] == str(shared)
    files = {name: (shared / name).read_bytes() for name in NET_FILES[1:]}
    assert json.loads(files["classifier.json"])["shared"] is True
    capsys.readouterr()
    # now its owner run cannot replace it behind b's back either (other epochs asked for)
    with pytest.raises(VaegenError, match=r"feature_net: its network has epochs .* not replaced"):
        evaluate(a, **{**KW, "feature_epochs": FE + 1})
    # a run on other data is refused that network, which is left as it was
    other = _run(_npz(tmp_path / "other.npz", seed=4), tmp_path / "o")
    assert main(["-q", "evaluate", str(other.path), "--feature-net", str(shared)]) == 2
    err = capsys.readouterr().err
    assert str(shared) in err and "trained on other data" in err and len(err.splitlines()) == 1
    assert {name: (shared / name).read_bytes() for name in NET_FILES[1:]} == files
    # a run directory is not a network's folder: the error names the one inside it
    with pytest.raises(VaegenError, match=f"its feature network is in {shared}"):
        evaluate(b, **{**KW, "feature_net": a.path})
    # a folder of the user's own is filled on first use, then shared
    mine = tmp_path / "nets" / "shapes"
    evaluate(b, **{**KW, "feature_net": mine})
    evaluate(a, **{**KW, "feature_net": mine})
    assert len(calls) == 2 and _files(mine) == NET_FILES
    # and the report shows which network measured the numbers
    page = write_report(load_run(a.path)).read_text()
    assert json.loads((a.path / "eval.json").read_text())["feature_network"]["id"] in page
    assert "only with runs evaluated with this same network (the same id)" in page


def test_the_data_source_decides_the_reference_not_the_shape():
    """MNIST and a user's IDX folder are 1 x 28 x 28 too; only the named FashionMNIST (still
    1 x 28 x 28) is measured with the reference classifier."""

    def run(source: str, shape: tuple[int, int, int]) -> Run:
        return Run(Path("r"), RunConfig(DataConfig(source)), torch.nn.Linear(1, 1), [], shape)

    assert FEATURES.is_fashion_mnist(FEATURES.subject_of(run("fashion-mnist", (1, 28, 28))))
    assert not FEATURES.is_fashion_mnist(FEATURES.subject_of(run("mnist", (1, 28, 28))))
    assert not FEATURES.is_fashion_mnist(
        FEATURES.subject_of(run("/usr/share/datasets/fashion-mnist", (1, 28, 28)))
    )
    assert not FEATURES.is_fashion_mnist(
        FEATURES.subject_of(run("fashion-mnist", (3, 28, 28)))
    )  # --channels 3
    assert not FEATURES.is_fashion_mnist(
        FEATURES.subject_of(run("fashion-mnist", (1, 32, 32)))
    )  # --image-size 32
    assert FEATURES.default_epochs(60_000) == 8  # the reference classifier's recipe
    assert FEATURES.default_epochs(10_000) == 48 and FEATURES.default_epochs(300) == 50


@pytest.mark.real_data
@pytest.mark.slow
def test_a_fashion_mnist_run_is_measured_with_the_reference_classifier(
    fashion_dir, tmp_path, monkeypatch
):
    # a run trained on 600 of FashionMNIST's images, made a run of the named dataset: what
    # decides is the run's data source, and the model's quality does not matter here
    folder = tmp_path / "fashion"
    folder.mkdir()
    for split, prefix in (("train", "train"), ("test", "t10k")):
        ds = load_dataset(str(fashion_dir), split)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", ds.images[:600, 0].numpy())
        write_idx(
            folder / f"{prefix}-labels-idx1-ubyte.gz", ds.labels[:600].numpy().astype(np.uint8)
        )
    (folder / "classes.txt").write_text("\n".join(FASHION_MNIST.classes) + "\n")
    _run(folder, tmp_path / "f")
    as_fashion_mnist_run(tmp_path / "f", fashion_dir)
    run = load_run(tmp_path / "f")
    calls = _count_trainings(monkeypatch)
    x, _ = make_images(100, size=28, seed=7)
    shapes = torch.from_numpy(x)[:, None]
    _hand_over_as_generated(monkeypatch, shapes)
    kw = {**KW, "feature_epochs": None}
    fr = evaluate(run, **kw)["frechet"]
    assert fr["feature_network"]["kind"] == "reference" and "id" not in fr["feature_network"]
    clf = load_reference_classifier()
    _, test = load_both_splits(run)
    want = frechet_distance_features(
        extract_features(clf, shapes), extract_features(clf, test.images)
    )
    assert fr["generated_vs_test"]["value"] == pytest.approx(want, rel=1e-6)
    assert calls == [] and not (run.path / "feature_net").exists()
    for flag in ({"feature_net": tmp_path / "n"}, {"feature_epochs": 3}):
        with pytest.raises(VaegenError, match="FashionMNIST runs are measured with vaegen's"):
            evaluate(run, **{**kw, **flag})

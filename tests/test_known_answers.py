"""Known answers of the certificate, each one `vaegen evaluate --samples FILE --data SOURCE`
away, on real FashionMNIST images (measured with the reference classifier):

- real training images the comparison does not use, evaluated as if generated: every measure
  inside or near its real-data floor, the DCR share near 0.5, the two-sample AUC near 0.5
- training images with a little noise (a copying generator): the DCR share near 1, few authentic
- one image repeated per class (a collapsed generator): coverage and recall near 0
- real images labelled with the wrong class: class agreement near 0

Each test names the estimator it pins; breaking that estimator by hand fails it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vaegen.cli import main
from vaegen.data import load_splits
from vaegen.evaluation import evaluate_samples
from vaegen.rundir.config import DataConfig
from vaegen.seeds import EVALUATION

pytestmark = pytest.mark.slow

N = 2000  # images compared: quick's cap


@pytest.fixture(scope="module")
def fashion(tmp_path_factory: pytest.TempPathFactory) -> tuple[DataConfig, object, object]:
    from .conftest import DEBIAN_DATA_DIR, IN_CI

    folder = DEBIAN_DATA_DIR / "fashion-mnist"
    if not (folder / "train-images-idx3-ubyte.gz").is_file():
        if IN_CI:
            pytest.fail(f"FashionMNIST not found in {folder}; .ci/run must install it")
        pytest.skip(f"FashionMNIST not found in {folder}")
    data = DataConfig("fashion-mnist", data_dir=str(folder))
    train, test = load_splits(data.source, **data.load_options())
    return data, train, test


def _unused(n_train: int, seed: int = 0) -> torch.Tensor:
    """Training images that the comparison's N real training images leave out (evaluate draws
    those with the real_subset stream)."""
    gen = torch.Generator().manual_seed(seed + EVALUATION.real_subset)
    order = torch.randperm(n_train, generator=gen)
    return order[N : 2 * N]


def _compared(n_train: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed + EVALUATION.real_subset)
    return torch.randperm(n_train, generator=gen)[:N]


def _write(path: Path, images: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> Path:
    np.savez(path, x=images.numpy(), y=labels.numpy(), classes=np.array(classes))
    return path


def _measure(fashion, tmp_path, name, images, labels) -> dict:
    data, train, _ = fashion
    path = _write(tmp_path / f"{name}.npz", images, labels, list(train.classes))
    return evaluate_samples(path, data, quick=True, progress=False)


def _row(result: dict, measure: str) -> dict:
    return next(r for r in result["certificate"]["measures"] if r["measure"] == measure)


def test_real_images_score_as_real_data(fashion, tmp_path):
    """dcr_share, two_sample_auc, density_coverage, frechet_interval, kid: real images the
    comparison does not use behave as the real-data floors say."""
    _, train, _ = fashion
    idx = _unused(len(train))
    result = _measure(fashion, tmp_path, "real", train.images[idx], train.labels[idx])
    dcr = _row(result, "dcr_share")
    assert dcr["low"] <= 0.5 <= dcr["high"] and abs(dcr["value"] - 0.5) < 0.05
    auc = _row(result, "two_sample_auc")
    floor = auc["floor"]
    assert floor["low"] <= auc["value"] <= floor["high"] or auc["low"] <= floor["value"]
    assert _row(result, "density")["value"] == pytest.approx(1.0, abs=0.12)
    for measure in ("frechet", "kid", "precision", "recall", "coverage"):
        row = _row(result, measure)
        assert row["reading"].endswith("as real data (the intervals overlap)"), row
    # the reference classifier was trained on these images, so it classes them better than the
    # test images it never saw: agreement reads above real data's, not below
    assert (
        _row(result, "class_agreement")["value"] > _row(result, "class_agreement")["floor"]["value"]
    )
    authentic = _row(result, "authentic")
    assert (
        authentic["low"] <= authentic["floor"]["high"]
        and authentic["floor"]["low"] <= authentic["high"]
    )


def test_a_copying_generator_is_caught(fashion, tmp_path):
    """dcr_scores and authenticity: training images the comparison uses, each with a little
    Gaussian noise (4 grey levels), sit nearer the training images than the held-out ones."""
    _, train, _ = fashion
    idx = _compared(len(train))
    g = torch.Generator().manual_seed(1)
    noisy = train.images[idx].float() + 4 * torch.randn(idx.shape[0], 1, 28, 28, generator=g)
    images = noisy.round().clamp(0, 255).to(torch.uint8)
    result = _measure(fashion, tmp_path, "copies", images, train.labels[idx])
    dcr = _row(result, "dcr_share")
    assert dcr["value"] > 0.95 and dcr["reading"].endswith("worse than real data's")
    authentic = _row(result, "authentic")
    assert authentic["value"] < 0.1 and authentic["reading"].endswith("worse than real data's")
    near = result["nearest_training"]["near_copies"]
    assert near["value"] > 0.5  # the feature-space reading agrees


def test_a_collapsed_generator_covers_nothing(fashion, tmp_path):
    """density_coverage_points and precision_recall_inside: one training image per class,
    repeated, reaches almost none of the test images' balls and manifold."""
    _, train, _ = fashion
    firsts = torch.stack([torch.nonzero(train.labels == c)[0, 0] for c in range(10)])
    labels = torch.arange(N) % 10
    result = _measure(fashion, tmp_path, "collapsed", train.images[firsts[labels]], labels)
    assert _row(result, "coverage")["value"] < 0.02
    assert _row(result, "recall")["value"] < 0.02
    assert _row(result, "beta_recall")["reading"].endswith("worse than real data's")
    assert _row(result, "two_sample_auc")["value"] > 0.9


def test_images_of_the_wrong_class_do_not_agree(fashion, tmp_path):
    """class agreement (and TSTR): real images labelled as the next class."""
    _, train, _ = fashion
    idx = _unused(len(train))
    result = _measure(fashion, tmp_path, "wrong", train.images[idx], (train.labels[idx] + 1) % 10)
    agreement = _row(result, "class_agreement")
    assert agreement["value"] < 0.1 and agreement["reading"].endswith("worse than real data's")
    assert _row(result, "tstr")["value"] < 0.2


def test_the_command_line_measures_a_file_and_writes_its_result(fashion, tmp_path, capsys):
    data, train, _ = fashion
    idx = _unused(len(train))[:300]
    path = _write(tmp_path / "s.npz", train.images[idx], train.labels[idx], list(train.classes))
    out = tmp_path / "result.json"
    args = ["-q", "evaluate", "--samples", str(path), "--data", "fashion-mnist", "--quick"]
    assert main([*args, "--data-dir", data.data_dir, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    saved = json.loads(out.read_text())
    assert saved["settings"]["n_generated"] == 300 and saved["samples"]["given"] == 300
    assert f"{path}: 300 of 300 images (labelled) against fashion-mnist" in printed
    assert "certificate (95 % intervals" in printed and "NLL bound" not in printed

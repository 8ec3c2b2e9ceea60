"""A user's own labelled folder of colour images, from `vaegen data info` to the report, through
the command line as the README's worked example runs it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vaegen.cli import main

from .conftest import make_images

TINTS = np.array([[1.0, 0.2, 0.2], [0.2, 1.0, 0.2], [0.2, 0.2, 1.0]])  # red, green, blue classes
NAMES = ["red bars", "green columns", "blue diagonals"]


def write_colour_folder(root: Path, n: int = 270, size: int = 12) -> Path:
    """n colour PNGs in one sub-folder per class: make_images' three shapes, tinted by class."""
    x, y = make_images(n, size=size)
    for i, (grey, label) in enumerate(zip(x, y, strict=True)):
        pixels = np.round(grey[..., None] * TINTS[label]).astype(np.uint8)
        folder = root / NAMES[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels, "RGB").save(folder / f"{i:04d}.png")
    return root


def dominant_channel(images: np.ndarray) -> np.ndarray:
    """uint8 N x 3 x H x W -> N: the channel with the most light in each image."""
    return images.reshape(len(images), 3, -1).astype(np.int64).sum(-1).argmax(1)


@pytest.mark.slow
def test_a_colour_folder_from_data_info_to_the_report(tmp_path, capsys):
    data = write_colour_folder(tmp_path / "photos")
    run = tmp_path / "run"

    assert main(["data", "info", str(data)]) == 0
    info = capsys.readouterr().out
    assert "270" in info and "3 x 12 x 12" in info and all(name in info for name in NAMES)

    assert (
        main(
            [
                "-q",
                "train",
                "--data",
                str(data),
                "--conditional",
                "--epochs",
                "60",
                "--hidden",
                "64",
                "--latent-dim",
                "4",
                "--batch-size",
                "32",
                "--out",
                str(run),
            ]
        )
        == 0
    )
    config = json.loads((run / "config.json").read_text())
    assert config["dataset"]["image_shape"] == [3, 12, 12]
    assert config["dataset"]["classes"] == sorted(NAMES)
    assert (config["dataset"]["train_size"], config["dataset"]["test_size"]) == (243, 27)

    # each class's samples carry its colour: generated arrays are N x 3 x H x W
    assert main(["generate", str(run), "--n", "60", "--out", str(tmp_path / "syn.npz")]) == 0
    with np.load(tmp_path / "syn.npz", allow_pickle=False) as f:
        x, y = f["x"], f["y"]
    assert x.shape == (60, 3, 12, 12)
    tint_of_class = [int(TINTS[NAMES.index(name)].argmax()) for name in sorted(NAMES)]
    assert (dominant_channel(x) == np.array(tint_of_class)[y]).mean() >= 0.9
    samples = np.asarray(Image.open(run / "figures" / "samples.png").convert("RGB")).astype(int)
    assert np.abs(samples[..., 0] - samples[..., 2]).max() > 50  # in colour, not grey

    assert (
        main(["-q", "evaluate", str(run), "--quick", "--n-generated", "243", "--iw-samples", "4"])
        == 0
    )
    ev = json.loads((run / "eval.json").read_text())
    assert ev["frechet"]["generated_vs_test"]["value"] > 0
    assert ev["frechet"]["n_test"] == 27  # the held-out split, not the training images
    assert "id" in ev["frechet"]["feature_network"]
    pr = ev["precision_recall"]
    assert 0 <= pr["generated"]["recall"]["value"] <= 1  # smooth means far from noisy photos
    assert pr["train_vs_test_reference"]["recall"]["value"] > 0.8
    assert ev["latent_knn"]["accuracy"]["value"] > 1 / 3
    assert ev["tstr"]["real_accuracy"]["value"] > 0.9
    assert ev["tstr"]["synthetic_accuracy"]["value"] > 0.9
    assert ev["class_agreement"]["generated"]["value"] > 0.9

    assert main(["report", str(run)]) == 0
    page = (run / "report.html").read_text()
    assert "generated_vs_test" in page and ev["frechet"]["feature_network"]["id"] in page

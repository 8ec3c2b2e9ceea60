"""Shared fixtures: tiny datasets the tests write themselves, and the real FashionMNIST when present."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from vaegen.data.idx import write_idx
from vaegen.data.named import DEBIAN_DATA_DIR


def in_ci(environ: Mapping[str, str]) -> bool:
    """CI systems set CI to true, True, 1 or yes; there a missing dataset is a failure, not a
    skip."""
    return environ.get("CI", "").strip().lower() in {"1", "true", "yes", "on"}


IN_CI = in_ci(os.environ)


def make_images(
    n: int, size: int = 12, classes: int = 3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """n uint8 size x size images of `classes` simple shapes (bars, a diagonal...) with noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.integers(0, 40, size=(n, size, size)).astype(np.float64)
    for c in range(classes):
        canvas = np.zeros((size, size))
        if c % 3 == 0:
            canvas[size // 2 - 1 : size // 2 + 1, :] = 1
        elif c % 3 == 1:
            canvas[:, size // 2 - 1 : size // 2 + 1] = 1
        else:
            np.fill_diagonal(canvas, 1)
        canvas = np.roll(canvas, c // 3, axis=0)
        x[y == c] += 200 * canvas
    return np.clip(x, 0, 255).astype(np.uint8), y.astype(np.uint8)


def write_idx_dataset(folder: Path, n_train: int = 256, n_test: int = 64, classes: int = 3) -> Path:
    """A folder of MNIST-style IDX .gz files (train-/t10k- prefixes) plus classes.txt."""
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        x, y = make_images(n, classes=classes, seed=seed)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", x)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", y)
    (folder / "classes.txt").write_text("\n".join(f"shape <{i}>" for i in range(classes)) + "\n")
    return folder


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    return write_idx_dataset(tmp_path / "tiny")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads or writes the user's real cache (named datasets, the folder cache) or
    $VAEGEN_DATA, whatever the environment says, and no benchmark a test runs appends to the
    committed records in benchmarks/results/ (benchmarks/record.py writes to
    $VAEGEN_RESULTS_DIR instead)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("VAEGEN_RESULTS_DIR", str(tmp_path / "results"))
    for name in ("VAEGEN_DATA", "VAEGEN_CACHE_DIR", "VAEGEN_NO_CACHE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fashion_dir() -> Path:
    """The real FashionMNIST files (Debian's dataset-fashion-mnist). Missing: skip, or fail in CI."""
    folder = DEBIAN_DATA_DIR / "fashion-mnist"
    if not (folder / "train-images-idx3-ubyte.gz").is_file():
        msg = f"FashionMNIST not found in {folder} (apt-get install dataset-fashion-mnist)"
        if IN_CI:
            pytest.fail(msg + "; .ci/run must install it")
        pytest.skip(msg)
    return folder


def as_fashion_mnist_run(run_dir: Path, fashion_dir: Path) -> None:
    """Make a run trained on FashionMNIST images of its own (an IDX folder of some of them, with
    FashionMNIST's class names) a run of the named dataset "fashion-mnist" found in
    `fashion_dir`: evaluate then reads the whole named dataset and measures the run with the
    reference classifier. For tests in which the model's quality does not matter, to spare a
    training on all 60,000 images."""
    config = json.loads((run_dir / "config.json").read_text())
    config["data"].update(source="fashion-mnist", data_dir=str(fashion_dir), test_fraction=None)
    (run_dir / "config.json").write_text(json.dumps(config))

"""On the real FashionMNIST (Debian's dataset-fashion-mnist; CI installs it, a skip there fails)."""

from __future__ import annotations

import gzip
import json
import multiprocessing
import warnings
from multiprocessing.synchronize import Barrier
from pathlib import Path
from queue import Queue

import pytest
import torch

from vaegen import load_dataset
from vaegen.cli import main
from vaegen.data import named
from vaegen.errors import DataError
from vaegen.training.collapse_guard import PosteriorCollapseWarning


def test_fashion_mnist_verifies_and_loads(fashion_dir, monkeypatch):
    monkeypatch.setattr(named, "DEBIAN_DATA_DIR", fashion_dir.parent)
    assert len(named.verify("fashion-mnist")) == 4
    train, test = load_dataset("fashion-mnist", "train"), load_dataset("fashion-mnist", "test")
    assert tuple(train.images.shape) == (60000, 1, 28, 28)
    assert tuple(test.images.shape) == (10000, 1, 28, 28)
    assert train.classes[0] == "T-shirt/top" and train.classes[9] == "Ankle boot"
    assert train.labels.bincount().tolist() == [6000] * 10
    assert test.labels.bincount().tolist() == [1000] * 10


@pytest.fixture
def plain_fashion_dir(fashion_dir, tmp_path, monkeypatch) -> Path:
    """Uncompressed copies of the real files (`x-ubyte.gz` -> `x-ubyte`), as many keep them; no
    other copy can be found, so whatever loads comes from them."""
    monkeypatch.setattr(named, "DEBIAN_DATA_DIR", tmp_path / "no-debian")
    plain = tmp_path / "plain"
    plain.mkdir()
    for gz in fashion_dir.glob("*-ubyte.gz"):
        (plain / gz.stem).write_bytes(gzip.decompress(gz.read_bytes()))
    return plain


@pytest.mark.real_data
def test_uncompressed_fashion_mnist_loads_like_the_gz(fashion_dir, plain_fashion_dir):
    checked = named.verify("fashion-mnist", plain_fashion_dir)
    assert sorted(checked) == sorted(plain_fashion_dir / gz.stem for gz in fashion_dir.glob("*.gz"))
    for split in ("train", "test"):
        a = load_dataset("fashion-mnist", split, data_dir=plain_fashion_dir)
        b = load_dataset("fashion-mnist", split, data_dir=fashion_dir)
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
        assert a.classes == b.classes


@pytest.mark.real_data
def test_a_tampered_uncompressed_file_is_named(plain_fashion_dir):
    path = plain_fashion_dir / "t10k-images-idx3-ubyte"
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF  # the last pixel: same size, same IDX header, different content
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="checksum mismatch") as info:
        load_dataset("fashion-mnist", "test", data_dir=plain_fashion_dir)
    assert f"{path}: checksum mismatch" in str(info.value)


@pytest.mark.slow
def test_cli_trains_the_reference_model_on_fashion_mnist(fashion_dir, tmp_path, capsys):
    out = tmp_path / "t"
    argv = ["-q", "train", "--data-dir", str(fashion_dir), "--epochs", "2", "--out", str(out)]
    with warnings.catch_warnings():  # the collapse guard stays silent on FashionMNIST
        warnings.simplefilter("error", PosteriorCollapseWarning)
        assert main(argv) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2 and records[-1]["active_dims"] == 2
    assert records[1]["test_loss"] < records[0]["test_loss"] < 25.0
    assert records[1]["test_loss"] < 19.0  # two epochs of the article's model reach about 17.8
    assert sorted(p.name for p in (out / "figures").iterdir()) == [
        "interpolation.png",
        "latent_scatter.png",
        "loss_curve.png",
        "manifold.png",
        "reconstructions.png",
        "samples.png",
    ]


def _download(dest: Path, mirror: str, start: Barrier, results: Queue) -> None:
    start.wait()
    try:
        named.download(named.NAMED_DATASETS["fashion-mnist"], dest, mirrors=[mirror])
        results.put("ok")
    except BaseException as e:  # reported to the test, which names it
        results.put(f"{type(e).__name__}: {e}")


def test_two_processes_downloading_into_one_folder(fashion_dir, tmp_path):
    """Two vaegen processes fetching the same dataset at once (two runs, or the processes of
    one torchrun job) each write under a temporary name of their own, so neither breaks."""
    dest = tmp_path / "cache"
    ctx = multiprocessing.get_context("fork")
    start, results = ctx.Barrier(2), ctx.Queue()
    args = (dest, fashion_dir.as_uri() + "/", start, results)
    procs = [ctx.Process(target=_download, args=args) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert sorted(results.get(timeout=5) for _ in procs) == ["ok", "ok"]
    assert sorted(p.name for p in dest.iterdir()) == sorted(
        p.name for p in fashion_dir.glob("*-ubyte.gz")
    )

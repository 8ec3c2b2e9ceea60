"""A user's own images: colour kept as colour, --channels, --image-size, the held-out test split,
`vaegen data info`, and every bad input as a one-line error naming the file. The tests write
their own folders and arrays; resized and converted pixels are checked against Pillow's own
functions applied to each image, not against vaegen's code."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vaegen import images as images_module
from vaegen import load_dataset, load_run, train
from vaegen.cli import main
from vaegen.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaegen.data import load_splits
from vaegen.datainfo import info_lines
from vaegen.errors import DataError, VaegenError
from vaegen.run import load_config, load_split
from vaegen.splits import held_out_counts, holdout

RNG = np.random.default_rng(0)


def write_folder(root: Path, per_class: dict[str, list[np.ndarray]], ext: str = ".png") -> Path:
    """root/<class>/<i>.png for each array (H x W grey or H x W x 3 RGB); returns root."""
    for name, arrays in per_class.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i, a in enumerate(arrays):
            Image.fromarray(a).save(root / name / f"{i:03d}{ext}")
    return root


def grey(h: int = 8, w: int = 8) -> np.ndarray:
    return RNG.integers(0, 256, (h, w), dtype=np.uint8)


def rgb(h: int = 8, w: int = 8) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def numbered(n: int, size: int = 4) -> np.ndarray:
    """n grey size x size images whose first two pixels spell their index (i % 256, i // 256)."""
    x = RNG.integers(0, 256, (n, size, size), dtype=np.uint8)
    x[:, 0, 0], x[:, 0, 1] = np.arange(n) % 256, np.arange(n) // 256
    return x


def indices_of(ds) -> list[int]:
    pixels = ds.images[:, 0, 0].long()
    return (pixels[:, 0] + 256 * pixels[:, 1]).tolist()


# ------------------------------------------------------------------------- colour


def test_a_colour_folder_gives_rgb_images(tmp_path):
    cats, dogs = [rgb() for _ in range(3)], [rgb() for _ in range(2)]
    ds = load_dataset(write_folder(tmp_path / "d", {"cat": cats, "dog": dogs}), test_fraction=0)
    assert ds.images.shape == (5, 3, 8, 8) and ds.classes == ["cat", "dog"]
    assert ds.labels.tolist() == [0, 0, 0, 1, 1] and ds.notes == []
    for got, want in zip(ds.images, cats + dogs, strict=True):
        assert np.array_equal(got.numpy().transpose(1, 2, 0), want)


def test_a_grey_folder_stays_grey(tmp_path):
    arrays = [grey() for _ in range(4)]
    ds = load_dataset(write_folder(tmp_path / "d", {"a": arrays[:2], "b": arrays[2:]}),
                      test_fraction=0)  # fmt: skip
    assert ds.images.shape == (4, 1, 8, 8)
    assert np.array_equal(ds.images[:, 0].numpy(), np.stack(arrays))


def test_grey_and_colour_in_one_folder_give_colour_and_say_so(tmp_path):
    g, c = grey(), rgb()
    folder = write_folder(tmp_path / "d", {"a": [g], "b": [c]})
    ds = load_dataset(folder, test_fraction=0)
    assert ds.images.shape == (2, 3, 8, 8)
    assert all(np.array_equal(ds.images[0, k].numpy(), g) for k in range(3))  # repeated
    assert np.array_equal(ds.images[1].numpy().transpose(1, 2, 0), c)
    assert any("1 grey and 1 colour images: colour wins" in note for note in ds.notes)
    assert any("colour wins" in line for line in info_lines(folder, test_fraction=0))


def test_channels_converts_on_purpose_with_pillows_luma(tmp_path):
    colour = [rgb() for _ in range(3)]
    folder = write_folder(tmp_path / "d", {"a": colour, "b": [grey()]})
    ds = load_dataset(folder, test_fraction=0, channels=1)
    assert ds.images.shape == (4, 1, 8, 8)
    for i, f in enumerate(sorted((folder / "a").iterdir())):
        want = np.asarray(Image.open(f).convert("L"))  # Pillow's own ITU-R 601-2 luma
        assert np.array_equal(ds.images[i, 0].numpy(), want)
        r, g, b = (colour[i][..., k].astype(float) for k in range(3))
        assert np.abs(ds.images[i, 0].numpy() - (0.299 * r + 0.587 * g + 0.114 * b)).max() <= 1
    # an .npz gets the same conversion as the folder's files
    np.savez(tmp_path / "c.npz", x=np.stack(colour))
    npz = load_dataset(tmp_path / "c.npz", test_fraction=0, channels=1)
    assert torch.equal(npz.images, ds.images[:3])
    # grey to colour: repetition
    greys = load_dataset(write_folder(tmp_path / "g", {"a": [grey(), grey()]}),
                         test_fraction=0, channels=3)  # fmt: skip
    assert greys.images.shape == (2, 3, 8, 8)
    assert torch.equal(greys.images[:, 0], greys.images[:, 2])


@pytest.mark.parametrize("layout", ["NHW", "NHWC1", "NHWC3", "NCHW3"])
def test_npz_layouts(tmp_path, layout):
    c = 3 if layout.endswith("3") else 1
    want = RNG.integers(0, 256, (5, c, 6, 7), dtype=np.uint8)  # N x C x H x W
    x = {"NHW": want[:, 0], "NCHW3": want}.get(layout, want.transpose(0, 2, 3, 1))
    np.savez(tmp_path / "d.npz", x=x)
    ds = load_dataset(tmp_path / "d.npz", test_fraction=0)
    assert torch.equal(ds.images, torch.from_numpy(want))


def test_npz_floats_in_the_unit_interval_become_round_x_times_255(tmp_path):
    x = RNG.random((6, 5, 5)).astype(np.float32)
    x[0, 0, :3] = [0.0, 1.0, 0.5]
    np.savez(tmp_path / "f.npz", x=x)
    ds = load_dataset(tmp_path / "f.npz", test_fraction=0)
    want = [round(float(v) * 255) for v in x.ravel()]
    assert ds.images.dtype == torch.uint8 and ds.images.flatten().tolist() == want


# --------------------------------------------------------------------------- sizes


def test_images_of_two_sizes_need_image_size(tmp_path):
    folder = write_folder(tmp_path / "d", {"a": [rgb(8, 8), rgb(8, 8)], "b": [rgb(12, 10)]})
    with pytest.raises(DataError, match="different sizes; --image-size S") as info:
        load_dataset(folder)
    msg = str(info.value)
    assert str(folder / "a" / "000.png") in msg and str(folder / "b" / "000.png") in msg
    assert "8 x 8" in msg and "10 x 12" in msg
    ds = load_dataset(folder, test_fraction=0, image_size=6)
    assert ds.images.shape == (3, 3, 6, 6)
    for i, f in enumerate([folder / "a" / "000.png", folder / "a" / "001.png",
                           folder / "b" / "000.png"]):  # fmt: skip
        want = np.asarray(Image.open(f).resize((6, 6), Image.Resampling.BILINEAR))
        assert np.array_equal(ds.images[i].numpy().transpose(1, 2, 0), want)


def test_image_size_resizes_grey_after_converting(tmp_path):
    folder = write_folder(tmp_path / "d", {"a": [rgb(9, 14)], "b": [grey(9, 14)]})
    ds = load_dataset(folder, test_fraction=0, image_size=5, channels=1)
    for i, f in enumerate([folder / "a" / "000.png", folder / "b" / "000.png"]):
        want = Image.open(f).convert("L").resize((5, 5), Image.Resampling.BILINEAR)
        assert np.array_equal(ds.images[i, 0].numpy(), np.asarray(want))
    np.savez(tmp_path / "d.npz", x=np.stack([grey(9, 14), grey(9, 14)]))
    npz = load_dataset(tmp_path / "d.npz", test_fraction=0, image_size=5)
    with np.load(tmp_path / "d.npz") as f:
        want = Image.fromarray(f["x"][1]).resize((5, 5), Image.Resampling.BILINEAR)
    assert np.array_equal(npz.images[1, 0].numpy(), np.asarray(want))


def test_decoding_in_parallel_keeps_the_files_order(tmp_path, monkeypatch):
    folder = write_folder(tmp_path / "d", {str(k): [rgb(), grey()] * 6 for k in range(3)})
    monkeypatch.setattr(images_module, "_workers", lambda n: 1)
    one = load_dataset(folder, test_fraction=0)
    monkeypatch.setattr(images_module, "_workers", lambda n: 4)
    four = load_dataset(folder, test_fraction=0)
    assert torch.equal(one.images, four.images) and torch.equal(one.labels, four.labels)


# --------------------------------------------------------------------------- the split


def test_the_split_is_seeded_stratified_disjoint_and_complete():
    labels = np.repeat([0, 1, 2], [200, 100, 20])
    RNG.shuffle(labels)
    for seed in range(5):
        train_idx, test_idx = holdout(labels, len(labels), 0.1, seed)
        again = holdout(labels, len(labels), 0.1, seed)
        assert np.array_equal(train_idx, again[0]) and np.array_equal(test_idx, again[1])
        assert np.bincount(labels[test_idx]).tolist() == [20, 10, 2]  # 10 % of each class
        assert np.intersect1d(train_idx, test_idx).size == 0
        assert np.array_equal(np.sort(np.concatenate([train_idx, test_idx])), np.arange(320))
    other = holdout(labels, len(labels), 0.1, 1)[1]
    assert not np.array_equal(holdout(labels, len(labels), 0.1, 0)[1], other)


def test_held_out_counts_share_out_the_total_by_largest_remainder():
    assert held_out_counts(np.array([50, 30, 20]), 0.25).tolist() == [13, 7, 5]  # 25 in all
    assert held_out_counts(np.array([2, 2]), 0.1).tolist() == [1, 0]  # at least one image
    assert held_out_counts(np.array([5, 5]), 0).tolist() == [0, 0]
    with pytest.raises(DataError, match="leaves none to train on"):
        held_out_counts(np.array([1]), 0.5)


def test_an_npz_holds_out_a_tenth_by_default_and_says_so(tmp_path, caplog):
    x = numbered(200)
    y = np.repeat([0, 1], [150, 50])
    np.savez(tmp_path / "d.npz", x=x, y=y)
    with caplog.at_level(logging.INFO, logger="vaegen"):
        train_ds, test_ds = load_splits(tmp_path / "d.npz")
    assert "10 % held out for testing" in caplog.text and "180 train, 20 test" in caplog.text
    a, b = indices_of(train_ds), indices_of(test_ds)
    assert sorted(a + b) == list(range(200)) and not set(a) & set(b)
    assert np.bincount(y[b]).tolist() == [15, 5]
    assert train_ds.labels.tolist() == y[a].tolist()
    same = load_dataset(tmp_path / "d.npz", "test")
    assert torch.equal(same.images, test_ds.images)  # one split, loaded alone, is the same


def test_test_fraction_zero_tests_on_the_training_images_with_a_warning(tmp_path, caplog):
    np.savez(tmp_path / "d.npz", x=numbered(30))
    with caplog.at_level(logging.WARNING, logger="vaegen"):
        train_ds, test_ds = load_splits(tmp_path / "d.npz", test_fraction=0)
    assert len(train_ds) == len(test_ds) == 30 and torch.equal(train_ds.images, test_ds.images)
    assert "measured on training images" in caplog.text


def test_sources_with_their_own_split_refuse_a_test_fraction(tmp_path, tiny_data, capsys):
    with pytest.raises(DataError, match="fashion-mnist is a named dataset, with its own"):
        load_dataset("fashion-mnist", test_fraction=0.2)
    with pytest.raises(DataError, match="IDX files, with its own train and test split"):
        load_dataset(tiny_data, test_fraction=0.2)
    assert len(load_dataset(tiny_data, "test")) == 64  # without it: the folder's own split
    out = tmp_path / "r"
    argv = ["train", "--data", str(tiny_data), "--test-fraction", "0.2", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--test-fraction 0.2" in err and not out.exists()


def test_the_split_is_recorded_and_reproduced_by_load_split(tmp_path):
    x, y = numbered(120, size=4), np.arange(120) % 3
    np.savez(tmp_path / "d.npz", x=x, y=y)
    argv = ["-q", "train", "--data", str(tmp_path / "d.npz"), "--hidden", "8", "--epochs", "1",
            "--out", str(tmp_path / "r"), "--test-fraction", "0.25", "--split-seed", "7",
            "--image-size", "4", "--channels", "1", "--skip-bad", "--no-plots",
            "--prior-components", "0"]  # fmt: skip
    assert main(argv) == 0
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["data"] == {
        "source": str(tmp_path / "d.npz"), "data_dir": None, "channels": 1, "image_size": 4,
        "test_fraction": 0.25, "split_seed": 7, "skip_bad": True,
    }  # fmt: skip
    assert (saved["dataset"]["train_size"], saved["dataset"]["test_size"]) == (90, 30)
    run = load_run(tmp_path / "r")
    want_train, want_test = holdout(y, 120, 0.25, 7)
    assert indices_of(load_split(run, "test")) == want_test.tolist()
    assert indices_of(load_split(run, "train")) == want_train.tolist()


def test_training_records_the_default_fraction_and_old_runs_keep_theirs(tmp_path, tiny_data):
    np.savez(tmp_path / "d.npz", x=numbered(40))
    cfg = RunConfig(DataConfig(str(tmp_path / "d.npz")), ModelConfig(hidden=8),
                    TrainConfig(epochs=1))  # fmt: skip
    run = train(cfg, tmp_path / "r", progress=False)
    assert run.config.data.test_fraction == 0.1 and len(load_split(run, "test")) == 4
    assert load_run(tmp_path / "r").config.data.test_fraction == 0.1
    longer = dataclasses.replace(cfg, train=TrainConfig(epochs=2))  # None again: resumes
    assert len(train(longer, tmp_path / "r", resume=True, progress=False).metrics) == 2
    # a config.json written before these fields: its .npz served as both splits, as it still does
    old = json.loads((tmp_path / "r" / "config.json").read_text())
    old["data"] = {"source": old["data"]["source"], "data_dir": None}
    (tmp_path / "r" / "config.json").write_text(json.dumps(old))
    assert load_config(tmp_path / "r")[0].data.test_fraction == 0.0
    assert len(load_split(load_run(tmp_path / "r"), "test")) == 40
    old["data"]["source"] = str(tiny_data)  # an IDX folder keeps its own split
    (tmp_path / "r" / "config.json").write_text(json.dumps(old))
    assert load_config(tmp_path / "r")[0].data.test_fraction is None


def test_data_config_checks_the_new_fields():
    assert DataConfig().channels is None and DataConfig().split_seed == 0
    for bad, match in (
        ({"channels": 2}, "channels = 2 is not valid"),
        ({"channels": "3"}, "channels = '3' is not valid: it must be an integer or null"),
        ({"image_size": 0}, "image_size = 0 is not valid"),
        ({"test_fraction": 1.0}, "test_fraction = 1.0 is not valid"),
        ({"test_fraction": True}, "it must be a number or null"),
        ({"split_seed": -1}, "split_seed = -1 is not valid"),
    ):
        with pytest.raises(VaegenError, match=match):
            RunConfig.from_dict({"data": bad})


# ----------------------------------------------------------------------- data info


def test_data_info_prints_what_would_be_loaded(tmp_path, capsys):
    folder = write_folder(tmp_path / "d", {"cat": [rgb() for _ in range(12)],
                                           "dog": [grey() for _ in range(8)]})  # fmt: skip
    assert main(["data", "info", str(folder), "--test-fraction", "0.25"]) == 0
    lines = capsys.readouterr().out.splitlines()
    ds = load_dataset(folder, test_fraction=0)
    lo, hi = int(ds.images.min()), int(ds.images.max())
    assert lines == [
        f"source: {folder} (a folder of images, one sub-folder per class)",
        "images: 20",
        "image shape: 3 x 8 x 8 (C x H x W)",
        "channels: 3, colour (RGB)",
        f"pixel values: min {lo}, max {hi} (uint8, 0..255)",
        "classes: 2",
        "  cat: 12 (train 9, test 3)",
        "  dog: 8 (train 6, test 2)",
        "test split: 25 % held out for testing, stratified by class (split seed 0): "
        "15 train, 5 test images",
        "note: 8 grey and 12 colour images: colour wins, the grey ones are repeated to 3 "
        "channels (--channels 1 or 3 chooses)",
    ]
    assert main(["data", "info", str(folder), "--channels", "1", "--image-size", "4"]) == 0
    out = capsys.readouterr().out
    assert "image shape: 1 x 4 x 4 (C x H x W), resized by --image-size (bilinear" in out
    assert "test split: 10 % held out" in out and "colour wins" not in out


def test_data_info_of_a_source_with_its_own_split(tiny_data, tmp_path):
    lines = info_lines(tiny_data)
    assert lines[1] == "images: 320 (train 256, test 64)" and lines[2].startswith("image shape: 1")
    assert "test split: the source's own: 256 train, 64 test images" in lines
    np.savez(tmp_path / "u.npz", x=numbered(10))
    unlabelled = info_lines(tmp_path / "u.npz", test_fraction=0)
    assert "classes: none (unlabelled)" in unlabelled
    assert unlabelled[-1].startswith("test split: none (test fraction 0): train and test")


# ----------------------------------------------------------------------- bad input


def _png_bytes(a: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"not an image at all", "not a readable image"),
        (_png_bytes(RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8))[:200], "truncated"),
    ],
)
def test_an_unreadable_image_is_named_and_skip_bad_skips_it(tmp_path, caplog, payload, message):
    folder = write_folder(tmp_path / "d", {"a": [rgb(32, 32)] * 3, "b": [rgb(32, 32)] * 2})
    bad = folder / "b" / "bad.png"
    bad.write_bytes(payload)
    with pytest.raises(DataError, match=message) as info:
        load_dataset(folder)
    assert str(info.value).startswith(f"{bad}: ") and "--skip-bad" in str(info.value)
    with caplog.at_level(logging.WARNING, logger="vaegen"):
        ds = load_dataset(folder, test_fraction=0, skip_bad=True)
    assert len(ds) == 5 and ds.labels.tolist() == [0, 0, 0, 1, 1]
    assert f"skipped 1 unreadable image file of 6 (--skip-bad); the first: {bad}" in caplog.text


@pytest.mark.parametrize("side", [12, 20])  # Pillow warns above the limit, refuses above twice it
def test_a_decompression_bomb_is_refused_and_named(tmp_path, monkeypatch, side):
    folder = write_folder(tmp_path / "d", {"a": [grey(8, 8)], "b": [grey(side, side)]})
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(DataError, match="decompression-bomb") as info:
        load_dataset(folder, image_size=8)
    assert str(info.value).startswith(str(folder / "b" / "000.png"))


def test_an_npz_of_objects_is_refused_unread(tmp_path):
    np.savez(tmp_path / "o.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(DataError, match="'x' holds Python objects") as info:
        load_dataset(tmp_path / "o.npz")
    assert str(info.value).startswith(str(tmp_path / "o.npz"))


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.full((4, 3, 3), np.nan)}, "x holds 36 NaN or infinite values"),
        ({"x": np.full((4, 3, 3), 1.5)}, r"floats from 1\.5 to 1\.5; float images must be in"),
        ({"x": np.zeros((4, 3, 3), np.int64)}, "x is int64; images must be uint8"),
        ({"x": np.zeros((4, 5, 5, 2), np.uint8)}, r"x has shape \(4, 5, 5, 2\); images must be"),
        (
            {"x": np.zeros((4, 3, 3), np.uint8), "y": np.arange(4), "classes": np.array(["a"] * 3)},
            "y holds the label 3 but classes names 3 classes",
        ),
        ({"x": np.zeros((4, 3, 3), np.uint8), "y": np.array([0, 1, -1, 0])}, "label -1"),
        ({"x": np.zeros((4, 3, 3), np.uint8), "y": np.zeros(4)}, "y is float64"),
        ({"x": np.zeros((4, 3, 3), np.uint8), "y": np.zeros(3, np.int64)}, "4 images but y"),
    ],
)
def test_bad_npz_arrays_are_named(tmp_path, arrays, message):
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(DataError, match=message) as info:
        load_dataset(tmp_path / "d.npz")
    assert str(info.value).startswith(f"{tmp_path / 'd.npz'}: ")


def test_bad_folders_are_named(tmp_path):
    folder = write_folder(tmp_path / "d", {"a": [grey()]})
    (folder / "empty").mkdir()
    with pytest.raises(DataError, match="an empty class sub-folder") as info:
        load_dataset(folder)
    assert str(info.value).startswith(str(folder / "empty"))
    (tmp_path / "none" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match=f"{tmp_path / 'none'}: no images in its class"):
        load_dataset(tmp_path / "none")
    (tmp_path / "flat").mkdir()
    Image.fromarray(grey()).save(tmp_path / "flat" / "x.png")
    with pytest.raises(DataError, match=r"flat: no class sub-folders \(1 images directly in it"):
        load_dataset(tmp_path / "flat")


def test_the_cli_reports_bad_data_in_one_line_and_writes_nothing(tmp_path, capsys):
    folder = write_folder(tmp_path / "d", {"a": [rgb(8, 8)], "b": [rgb(9, 9)]})
    out = tmp_path / "r"
    assert main(["train", "--data", str(folder), "--out", str(out), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vaegen: error: ") and err.count("\n") == 1 and "--image-size" in err
    assert not out.exists()
    assert main(["data", "info", str(folder)]) == 2
    assert str(folder / "b" / "000.png") in capsys.readouterr().err

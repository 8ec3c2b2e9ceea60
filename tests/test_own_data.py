"""A user's own images: colour kept as colour, --channels, --image-size, the held-out test split,
`vaegen data info`, and every bad input as a one-line error naming the file. The tests write
their own folders and arrays; resized and converted pixels are checked against Pillow's own
functions applied to each image, not against vaegen's code."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vaegen import load_dataset, load_run
from vaegen.cli import main
from vaegen.data import image_folders, load_splits
from vaegen.data.info import info_lines
from vaegen.data.splits import held_out_counts, holdout
from vaegen.errors import DataError, VaegenError
from vaegen.rundir import load_config, load_split
from vaegen.rundir.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaegen.training.loop import train

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
    ds = load_dataset(
        write_folder(tmp_path / "d", {"a": arrays[:2], "b": arrays[2:]}), test_fraction=0
    )
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
    greys = load_dataset(
        write_folder(tmp_path / "g", {"a": [grey(), grey()]}), test_fraction=0, channels=3
    )
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
    for i, f in enumerate(
        [folder / "a" / "000.png", folder / "a" / "001.png", folder / "b" / "000.png"]
    ):
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
    monkeypatch.setattr(image_folders, "_workers", lambda n: 1)
    one = load_dataset(folder, test_fraction=0)
    monkeypatch.setattr(image_folders, "_workers", lambda n: 4)
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
    argv = [
        "-q",
        "train",
        "--data",
        str(tmp_path / "d.npz"),
        "--hidden",
        "8",
        "--epochs",
        "1",
        "--out",
        str(tmp_path / "r"),
        "--test-fraction",
        "0.25",
        "--split-seed",
        "7",
        "--image-size",
        "4",
        "--channels",
        "1",
        "--skip-bad",
        "--no-plots",
        "--prior-components",
        "0",
    ]
    assert main(argv) == 0
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["data"] == {
        "source": str(tmp_path / "d.npz"),
        "data_dir": None,
        "channels": 1,
        "image_size": 4,
        "test_fraction": 0.25,
        "split_seed": 7,
        "skip_bad": True,
    }
    assert (saved["dataset"]["train_size"], saved["dataset"]["test_size"]) == (90, 30)
    run = load_run(tmp_path / "r")
    want_train, want_test = holdout(y, 120, 0.25, 7)
    assert indices_of(load_split(run, "test")) == want_test.tolist()
    assert indices_of(load_split(run, "train")) == want_train.tolist()


def test_training_records_the_default_fraction_and_old_runs_keep_theirs(tmp_path, tiny_data):
    np.savez(tmp_path / "d.npz", x=numbered(40))
    cfg = RunConfig(
        DataConfig(str(tmp_path / "d.npz")), ModelConfig(hidden=8), TrainConfig(epochs=1)
    )
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
    folder = write_folder(
        tmp_path / "d", {"cat": [rgb() for _ in range(12)], "dog": [grey() for _ in range(8)]}
    )
    ds = load_dataset(folder, test_fraction=0)  # decodes and caches: info then reads the cache
    assert main(["data", "info", str(folder), "--test-fraction", "0.25"]) == 0
    lines = capsys.readouterr().out.splitlines()
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
        "cache: hit, read from " + str(cache_files(tmp_path)[0]) + "; no image decoded",
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


def test_grey_palette_images_stay_grey_and_colour_palettes_are_colour(tmp_path):
    g = grey()
    folder = tmp_path / "d"
    (folder / "a").mkdir(parents=True)
    Image.fromarray(g).save(folder / "a" / "0.gif")  # Pillow stores a grey GIF as a palette
    Image.fromarray(g).convert("P").save(folder / "a" / "1.png")
    assert all(Image.open(f).mode == "P" for f in (folder / "a").iterdir())
    ds = load_dataset(folder, test_fraction=0)
    assert ds.images.shape == (2, 1, 8, 8) and ds.notes == []
    assert np.array_equal(ds.images[0, 0].numpy(), g)
    Image.fromarray(rgb()).quantize(16).save(folder / "a" / "2.png")  # a colour palette
    assert load_dataset(folder, test_fraction=0).images.shape == (3, 3, 8, 8)


def test_16_bit_grey_is_scaled_to_8_bits_and_unscaled_32_bit_pixels_are_refused(tmp_path):
    v = RNG.integers(0, 65536, (8, 8)).astype(np.uint16)
    v[0, :4] = [0, 128, 129, 65535]  # 0, 0.498 and 0.502 of a grey level, and white
    folder = tmp_path / "d"
    (folder / "a").mkdir(parents=True)
    Image.fromarray(v).save(folder / "a" / "0.png")
    Image.fromarray(v).save(folder / "a" / "1.tif")
    assert {Image.open(f).mode for f in (folder / "a").iterdir()} == {"I;16"}
    ds = load_dataset(folder, test_fraction=0)
    want = np.round(v / 257).astype(np.uint8)
    assert ds.images.shape == (2, 1, 8, 8) and want[0, :4].tolist() == [0, 0, 1, 255]
    assert np.array_equal(ds.images[0, 0].numpy(), want)
    assert np.array_equal(ds.images[1, 0].numpy(), want)
    # 32-bit floats: whole numbers in 0..255 are taken as they are, others have no known scale
    Image.fromarray(grey().astype(np.float32)).save(folder / "a" / "2.tif")
    assert len(load_dataset(folder, test_fraction=0)) == 3
    unit = folder / "a" / "3.tif"
    Image.fromarray(RNG.random((8, 8)).astype(np.float32)).save(unit)  # in [0, 1]: black as L
    with pytest.raises(DataError, match=r"floating-point pixels from .* their scale is unknown"):
        load_dataset(folder, test_fraction=0)
    unit.unlink()
    Image.fromarray(np.full((8, 8), 1000, np.int32)).save(folder / "a" / "4.tif")
    with pytest.raises(DataError, match=r"4\.tif: .*32-bit integer pixels from 1000 to 1000"):
        load_dataset(folder, test_fraction=0)


def test_images_stored_turned_are_loaded_as_their_exif_orientation_shows_them(tmp_path):
    """A phone stores a portrait photo landscape with EXIF Orientation 6 ("turn 90 degrees
    clockwise to show"); viewers show it upright, and so must the dataset."""
    stored = grey(4, 8)  # 4 rows, 8 columns
    upright = grey(8, 4)
    folder = tmp_path / "d"
    (folder / "a").mkdir(parents=True)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(folder / "a" / "0.png", exif=exif)
    Image.fromarray(upright).save(folder / "a" / "1.png")
    ds = load_dataset(folder, test_fraction=0)
    assert ds.images.shape == (2, 1, 8, 4)
    assert np.array_equal(ds.images[0, 0].numpy(), np.rot90(stored, k=-1))  # clockwise
    assert np.array_equal(ds.images[1, 0].numpy(), upright)
    assert any("image shape: 1 x 8 x 4" in line for line in info_lines(folder, test_fraction=0))
    # the memory check's estimate, from the headers alone, sees it upright too
    assert image_folders._header_shape([folder / "a" / "0.png"], None, None) == (1, 8, 4)


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
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match=f"{tmp_path / 'nothing'}: no images \\(image files end"):
        load_dataset(tmp_path / "nothing")


def test_the_cli_reports_bad_data_in_one_line_and_writes_nothing(tmp_path, capsys):
    folder = write_folder(tmp_path / "d", {"a": [rgb(8, 8)], "b": [rgb(9, 9)]})
    out = tmp_path / "r"
    assert main(["train", "--data", str(folder), "--out", str(out), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vaegen: error: ") and err.count("\n") == 1 and "--image-size" in err
    assert not out.exists()
    assert main(["data", "info", str(folder)]) == 2
    assert str(folder / "b" / "000.png") in capsys.readouterr().err


# ------------------------------------------------------------------ the folder cache


def cache_files(tmp_path: Path, pattern: str = "*") -> list[Path]:
    """The files in the folder cache (conftest points XDG_CACHE_HOME at tmp_path / "cache")."""
    return sorted((tmp_path / "cache" / "vaegen" / "folders").glob(pattern))


@pytest.fixture
def decodes(monkeypatch) -> list[Path]:
    """The files decoded from now on, in the order the pool took them (the real decoder runs)."""
    seen: list[Path] = []
    real = image_folders._decode

    def counting(path, mode, size):
        seen.append(path)
        return real(path, mode, size)

    monkeypatch.setattr(image_folders, "_decode", counting)
    return seen


def test_a_second_load_reads_the_cache_and_decodes_nothing(tmp_path, decodes):
    folder = write_folder(tmp_path / "d", {"a": [rgb() for _ in range(4)], "b": [grey()] * 3})
    first = load_dataset(folder, test_fraction=0)
    assert len(decodes) == 7 and first.cache.startswith("miss, decoded 7 files")
    second = load_dataset(folder, test_fraction=0)
    assert len(decodes) == 7 and second.cache.startswith("hit, read from")  # nothing decoded
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
    assert (second.classes, second.notes) == (["a", "b"], first.notes) and first.notes
    (entry,) = cache_files(tmp_path)
    assert str(entry) in second.cache
    # the file is what safetensors itself reads, and holds nothing else: 8 bytes of header
    # length, a JSON header, then exactly the raw bytes of the images and the labels
    from safetensors.numpy import load_file

    stored = load_file(entry)
    assert np.array_equal(stored["images"], first.images.numpy())
    assert stored["labels"].tolist() == [0, 0, 0, 0, 1, 1, 1]
    raw = entry.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    assert {k: v["dtype"] for k, v in header.items() if k != "__metadata__"} == {
        "images": "U8",
        "labels": "I64",
    }
    want = first.images.numpy().tobytes() + first.labels.numpy().astype("<i8").tobytes()
    assert raw[8 + n :] == want
    assert json.loads(header["__metadata__"]["classes"]) == ["a", "b"]


def test_vaegen_cache_dir_and_vaegen_no_cache(tmp_path, monkeypatch, decodes, capsys):
    folder = write_folder(tmp_path / "d", {"a": [grey()] * 2, "b": [grey()]})
    monkeypatch.setenv("VAEGEN_CACHE_DIR", str(tmp_path / "mine"))
    load_dataset(folder, test_fraction=0)
    assert len(list((tmp_path / "mine" / "folders").glob("*.safetensors"))) == 1
    assert cache_files(tmp_path) == []
    monkeypatch.setenv("VAEGEN_NO_CACHE", "1")
    off = load_dataset(folder, test_fraction=0)
    assert len(decodes) == 6 and off.cache.startswith("off (VAEGEN_NO_CACHE is set)")
    assert main(["data", "info", str(folder)]) == 0
    assert "cache: off (VAEGEN_NO_CACHE is set), decoded 3 files" in capsys.readouterr().out
    assert len(decodes) == 9
    monkeypatch.setenv("VAEGEN_NO_CACHE", "0")  # 0 is on
    assert load_dataset(folder, test_fraction=0).cache.startswith("hit")


def write_bmp(path: Path, a: np.ndarray) -> None:
    """A BMP's size depends only on the image's, so rewriting one keeps its size in bytes."""
    Image.fromarray(a).save(path, "BMP")


def test_a_file_changed_in_place_with_the_same_size_misses(tmp_path, decodes):
    folder = tmp_path / "d"
    for k in range(2):
        (folder / f"c{k}").mkdir(parents=True)
        for i in range(3):
            write_bmp(folder / f"c{k}" / f"{i}.bmp", grey())
    before = load_dataset(folder, test_fraction=0)
    target = folder / "c1" / "0.bmp"
    old = target.stat()
    new_pixels = 255 - before.images[3, 0].numpy()
    write_bmp(target, new_pixels)
    assert target.stat().st_size == old.st_size
    if target.stat().st_mtime_ns == old.st_mtime_ns:  # the same clock tick: as a later write
        os.utime(target, ns=(old.st_atime_ns, old.st_mtime_ns + 1_000_000))
    after = load_dataset(folder, test_fraction=0)
    assert len(decodes) == 12 and after.cache.startswith("miss")
    assert np.array_equal(after.images[3, 0].numpy(), new_pixels)
    assert torch.equal(after.images[:3], before.images[:3])
    assert len(cache_files(tmp_path)) == 1  # the folder's old entry is gone


def test_a_same_size_rewrite_whose_old_mtime_is_restored_misses(tmp_path, decodes):
    """As `cp -p`, `rsync -t` or `tar x` leave a changed file: same size, same mtime."""
    folder = tmp_path / "d"
    (folder / "a").mkdir(parents=True)
    target = folder / "a" / "0.bmp"
    write_bmp(target, np.zeros((8, 8), np.uint8))
    os.utime(target, ns=(0, 10**9))
    assert load_dataset(folder, test_fraction=0).images.max() == 0
    write_bmp(target, np.full((8, 8), 200, np.uint8))
    os.utime(target, ns=(0, 10**9))
    after = load_dataset(folder, test_fraction=0)
    assert after.cache.startswith("miss") and len(decodes) == 2
    assert after.images.min() == 200


def test_a_file_added_removed_or_moved_misses(tmp_path, decodes):
    folder = write_folder(tmp_path / "d", {"a": [grey()] * 2, "b": [grey()] * 2})
    load_dataset(folder, test_fraction=0)
    Image.fromarray(grey()).save(folder / "b" / "new.png")
    added = load_dataset(folder, test_fraction=0)
    assert len(decodes) == 4 + 5 and len(added) == 5 and added.labels.tolist()[-1] == 1
    (folder / "a" / "000.png").unlink()
    removed = load_dataset(folder, test_fraction=0)
    assert len(decodes) == 9 + 4 and removed.labels.tolist() == [0, 1, 1, 1]
    assert load_dataset(folder, test_fraction=0).cache.startswith("hit") and len(decodes) == 13
    # a file moved to another class, keeping its name, bytes and mtime, and the files' order
    (folder / "a" / "001.png").rename(folder / "a" / "0.png")
    (folder / "b" / "new.png").rename(folder / "b" / "9.png")
    load_dataset(folder, test_fraction=0)  # a: 0.png; b: 000.png, 001.png, 9.png
    decodes.clear()
    (folder / "b" / "000.png").rename(folder / "a" / "000.png")
    moved = load_dataset(folder, test_fraction=0)
    assert len(decodes) == 4 and moved.labels.tolist() == [0, 0, 1, 1]


def test_other_options_miss_and_a_folder_keeps_one_entry(tmp_path, decodes):
    folder = write_folder(tmp_path / "d", {"a": [rgb(), rgb()], "b": [rgb()]})
    plain = load_dataset(folder, test_fraction=0)
    grey_ = load_dataset(folder, test_fraction=0, channels=1)
    small = load_dataset(folder, test_fraction=0, channels=1, image_size=4)
    skipping = load_dataset(folder, test_fraction=0, channels=1, image_size=4, skip_bad=True)
    assert len(decodes) == 12  # each of the four decoded its three files
    assert (plain.image_shape, grey_.image_shape, small.image_shape) == (
        (3, 8, 8),
        (1, 8, 8),
        (1, 4, 4),
    )
    assert torch.equal(small.images, skipping.images)
    assert len(cache_files(tmp_path, "*.safetensors")) == 1  # one entry per folder
    other = write_folder(tmp_path / "e", {"a": [rgb()]})
    load_dataset(other, test_fraction=0)
    assert len(cache_files(tmp_path, "*.safetensors")) == 2  # another folder's is kept


@pytest.mark.parametrize("damage", ["truncate", "flip a pixel", "garbage", "other key"])
def test_a_corrupt_entry_is_a_miss_and_is_rewritten(tmp_path, decodes, caplog, damage):
    folder = write_folder(tmp_path / "d", {"a": [rgb() for _ in range(3)], "b": [rgb()]})
    want = load_dataset(folder, test_fraction=0)
    (entry,) = cache_files(tmp_path)
    raw = bytearray(entry.read_bytes())
    if damage == "truncate":
        raw = raw[: len(raw) - 10]
    elif damage == "flip a pixel":  # the header still agrees: only the checksum sees it
        raw[-4 * 8 - 5] ^= 0xFF
    elif damage == "garbage":
        raw = bytearray(b"\x80\x04not a safetensors file at all")
    else:  # whole and valid, but written for other files or options
        n = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8 : 8 + n])
        header["__metadata__"]["key"] = "0" * 64
        raw[8 : 8 + n] = json.dumps(header).encode().ljust(n)
    entry.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING, logger="vaegen"):
        again = load_dataset(folder, test_fraction=0)
    assert torch.equal(again.images, want.images) and len(decodes) == 8
    assert again.cache.startswith("miss") and "unreadable cache entry" in caplog.text
    assert load_dataset(folder, test_fraction=0).cache.startswith("hit")  # rewritten whole
    assert len(decodes) == 8


class _FailingFile:
    """A file whose second write fails as a full disk does (or as an interrupt would)."""

    def __init__(self, f, error):
        self.f, self.error, self.writes = f, error, 0

    def write(self, data):
        self.writes += 1
        if self.writes == 2:
            raise self.error
        return self.f.write(data)


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_an_interrupted_write_leaves_no_entry(tmp_path, monkeypatch, decodes, error):
    import contextlib

    from vaegen.data import folder_cache

    real = folder_cache.atomic_open

    @contextlib.contextmanager
    def failing(path):
        with real(path) as f:
            yield _FailingFile(f, error)

    monkeypatch.setattr(folder_cache, "atomic_open", failing)
    folder = write_folder(tmp_path / "d", {"a": [grey()] * 2, "b": [grey()]})
    if isinstance(error, OSError):  # a warning: the load goes on
        ds = load_dataset(folder, test_fraction=0)
        assert len(ds) == 3 and "not stored: cannot write" in ds.cache
        assert "No space left on device" in ds.cache
    else:
        with pytest.raises(KeyboardInterrupt):
            load_dataset(folder, test_fraction=0)
    assert cache_files(tmp_path, ".*") + cache_files(tmp_path) == []  # no temporary, no entry
    monkeypatch.setattr(folder_cache, "atomic_open", real)
    assert load_dataset(folder, test_fraction=0).cache.startswith("miss")


def test_storing_an_entry_removes_stale_temporaries_of_that_folder(tmp_path):
    folder = write_folder(tmp_path / "d", {"a": [grey()]})
    load_dataset(folder, test_fraction=0)
    (entry,) = cache_files(tmp_path)
    tag = entry.name.split("-")[0]
    stale, fresh = (entry.parent / f".{tag}-{name}.safetensors.x.tmp" for name in "ab")
    others = entry.parent / ".0123456789abcdef-c.safetensors.x.tmp"  # another folder's
    for f in (stale, fresh, others):
        f.write_bytes(b"half")
    hours_ago = os.stat(stale).st_mtime - 2 * 3600
    os.utime(stale, (hours_ago, hours_ago))
    os.utime(others, (hours_ago, hours_ago))
    Image.fromarray(grey()).save(folder / "a" / "more.png")
    load_dataset(folder, test_fraction=0)
    assert not stale.exists() and fresh.exists() and others.exists()


# ------------------------------------------------------------ unlabelled (flat) folders


def write_flat(folder: Path, arrays: list[np.ndarray]) -> Path:
    folder.mkdir(parents=True)
    for i, a in enumerate(arrays):
        Image.fromarray(a).save(folder / f"{i:04d}.png")
    return folder


def test_a_flat_folder_is_an_unlabelled_dataset(tmp_path, decodes):
    x = numbered(40)
    folder = write_flat(tmp_path / "flat", list(x))
    ds = load_dataset(folder, test_fraction=0)
    assert ds.labels is None and ds.classes == [] and ds.notes == []
    assert np.array_equal(ds.images[:, 0].numpy(), x)  # in the files' sorted order
    again = load_dataset(folder, test_fraction=0)  # the cache keeps "no labels"
    assert again.labels is None and again.classes == [] and len(decodes) == 40
    assert torch.equal(again.images, ds.images)


def test_a_flat_folders_test_split_is_seeded_and_random(tmp_path, caplog):
    folder = write_flat(tmp_path / "flat", list(numbered(200)))
    with caplog.at_level(logging.INFO, logger="vaegen"):
        train_ds, test_ds = load_splits(folder, test_fraction=0.25, split_seed=3)
    a, b = indices_of(train_ds), indices_of(test_ds)
    assert len(b) == 50 and sorted(a + b) == list(range(200)) and not set(a) & set(b)
    assert b == holdout(None, 200, 0.25, 3)[1].tolist()
    assert b != list(range(50)) and b != list(range(150, 200))  # not the first or last files
    assert 10 < sum(i < 100 for i in b) < 40  # from the whole folder, not one end of it
    assert indices_of(load_splits(folder, test_fraction=0.25, split_seed=3)[1]) == b
    assert indices_of(load_splits(folder, test_fraction=0.25, split_seed=4)[1]) != b
    assert "25 % held out for testing, at random (unlabelled, so not stratified)" in caplog.text


def test_data_info_of_a_flat_folder_says_unlabelled(tmp_path):
    folder = write_flat(tmp_path / "flat", [rgb() for _ in range(10)])
    lines = info_lines(folder)
    assert (
        lines[0] == f"source: {folder} (a folder of images without class sub-folders: unlabelled)"
    )
    assert "classes: none (unlabelled)" in lines
    assert (
        "test split: 10 % held out for testing, at random (unlabelled, so not stratified) "
        "(split seed 0): 9 train, 1 test images"
    ) in lines


def test_conditional_training_on_unlabelled_data_is_refused_before_reading(
    tmp_path, capsys, decodes, monkeypatch
):
    from vaegen import data as data_module

    folder = write_flat(tmp_path / "flat", [grey() for _ in range(20)])
    out = tmp_path / "r"
    argv = ["train", "--data", str(folder), "--conditional", "--out", str(out), "--epochs", "1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"vaegen: error: {folder}: --conditional")
    assert "no class sub-folders" in err and decodes == [] and not out.exists()
    # an .npz without y: refused before x is read
    np.savez(tmp_path / "u.npz", x=numbered(20))
    monkeypatch.setattr(data_module, "read_npz", lambda path: pytest.fail("read"))
    argv[2] = str(tmp_path / "u.npz")
    assert main(argv) == 2
    assert "u.npz: --conditional needs labels (a class per image)" in capsys.readouterr().err


def test_unconditional_training_on_a_flat_folder(tmp_path):
    folder = write_flat(tmp_path / "flat", [grey(4, 4) for _ in range(30)])
    argv = [
        "-q",
        "train",
        "--data",
        str(folder),
        "--hidden",
        "8",
        "--epochs",
        "1",
        "--out",
        str(tmp_path / "r"),
        "--no-plots",
        "--prior-components",
        "0",
    ]
    assert main(argv) == 0
    run = load_run(tmp_path / "r")
    assert run.classes == [] and load_split(run, "test").labels is None
    assert len(load_split(run, "test")) == 3


def test_a_folder_with_loose_images_and_sub_folders_is_ambiguous(tmp_path, capsys):
    folder = write_folder(tmp_path / "d", {"cat": [grey()], "dog": [grey()]})
    Image.fromarray(grey()).save(folder / "stray.png")
    with pytest.raises(DataError) as info:
        load_dataset(folder)
    msg = str(info.value)
    assert msg.startswith(f"{folder}: both images directly in it (1, the first stray.png)")
    assert "sub-folders (cat, dog)" in msg and "put every image in a class sub-folder" in msg
    assert main(["data", "info", str(folder)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


# --------------------------------------------------------------- the memory estimate


def gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.2g}"


@pytest.fixture
def memory_of(monkeypatch):
    """Set the memory vaegen believes is available, in bytes."""
    from vaegen.data import memory

    def set_to(n_bytes):
        monkeypatch.setattr(memory, "available_bytes", lambda: n_bytes)

    return set_to


def test_a_folder_too_large_for_memory_is_refused_before_decoding(tmp_path, memory_of, decodes):
    folder = write_folder(tmp_path / "d", {"a": [grey(48, 64)] * 4, "b": [rgb(48, 64)] * 2})
    need = 6 * 3 * 48 * 64 * 2  # uint8 N x C x H x W and one copy of it; colour wins: C = 3
    memory_of(need - 1)
    with pytest.raises(DataError) as info:
        load_dataset(folder)
    assert str(info.value) == (
        f"{folder}: 6 images of 3 x 48 x 64 need about {gib(need)} GiB of memory, "
        f"{gib(need - 1)} GiB is available; use --image-size or a subset"
    )
    assert decodes == []
    memory_of(need)
    assert len(load_dataset(folder)) == 5  # it fits
    # --image-size and --channels shrink what is needed, before any decoding
    decodes.clear()
    memory_of(6 * 1 * 8 * 8 * 2)
    with pytest.raises(DataError, match="6 images of 3 x 8 x 8 need about"):
        load_dataset(folder, image_size=8)
    assert decodes == []
    assert load_dataset(folder, image_size=8, channels=1).image_shape == (1, 8, 8)


def test_training_on_the_cpu_counts_its_float32_copies(tmp_path, memory_of, decodes):
    folder = write_folder(tmp_path / "d", {"a": [grey(8, 8)] * 10})
    per_image = 1 * 8 * 8
    memory_of(10 * per_image * (2 + 4))  # the images, a copy, and a float32 copy of each split
    load_splits(folder, float32_copy=True)
    with pytest.raises(DataError, match=f"need about {gib(10 * per_image * (2 + 8))} GiB"):
        load_splits(folder, float32_copy=True, test_fraction=0)  # train and test: all of them
    load_splits(folder, test_fraction=0)  # without float copies it fits
    assert len(decodes) == 10  # decoded once: the refusals and the rest read the cache


def test_a_cached_folder_is_checked_too(tmp_path, memory_of, monkeypatch):
    from vaegen.data import folder_cache

    folder = write_folder(tmp_path / "d", {"a": [grey(8, 8)] * 10})
    load_dataset(folder)
    memory_of(10 * 64 * 2 - 1)
    monkeypatch.setattr(folder_cache, "read_entry", lambda *a: pytest.fail("read"))
    with pytest.raises(DataError, match="10 images of 1 x 8 x 8 need about"):
        load_dataset(folder)


def test_an_npz_too_large_is_refused_before_reading(tmp_path, memory_of, monkeypatch):
    from vaegen import data as data_module

    np.savez(tmp_path / "f.npz", x=RNG.random((10, 6, 6, 3)))  # float64, channels last
    stored, uint8 = 10 * 6 * 6 * 3 * 8, 10 * 3 * 6 * 6
    need = stored + uint8  # x as stored, then the uint8 images' copy (the split)
    memory_of(need - 1)
    real = data_module.read_npz
    monkeypatch.setattr(data_module, "read_npz", lambda path: pytest.fail("read"))
    with pytest.raises(DataError) as info:
        load_dataset(tmp_path / "f.npz")
    assert str(info.value) == (
        f"{tmp_path / 'f.npz'}: 10 images of 3 x 6 x 6 need about {gib(need)} GiB of memory, "
        f"{gib(need - 1)} GiB is available; use --image-size or a subset"
    )
    monkeypatch.setattr(data_module, "read_npz", real)
    memory_of(need)
    assert load_dataset(tmp_path / "f.npz", test_fraction=0).image_shape == (3, 6, 6)


def test_available_memory_is_meminfo_capped_by_the_cgroup(tmp_path, monkeypatch):
    from vaegen.data import memory

    (tmp_path / "meminfo").write_text("MemTotal: 9000 kB\nMemAvailable:    1024 kB\n")
    monkeypatch.setattr(memory, "_MEMINFO", tmp_path / "meminfo")
    monkeypatch.setattr(memory, "_CGROUP", tmp_path / "none")
    assert memory.available_bytes() == 1024 * 1024
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "memory.max").write_text("500000\n")
    (v2 / "memory.current").write_text("300000\n")
    (v2 / "memory.stat").write_text("anon 200000\ninactive_file 100000\n")
    monkeypatch.setattr(memory, "_CGROUP", v2)
    assert memory.available_bytes() == 500000 - (300000 - 100000)
    (v2 / "memory.max").write_text("max\n")
    assert memory.available_bytes() == 1024 * 1024
    v1 = tmp_path / "v1" / "memory"
    v1.mkdir(parents=True)
    (v1 / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # v1's "no limit"
    monkeypatch.setattr(memory, "_CGROUP", v1.parent)
    assert memory.available_bytes() == 1024 * 1024
    (v1 / "memory.limit_in_bytes").write_text("700000\n")
    (v1 / "memory.usage_in_bytes").write_text("600000\n")
    (v1 / "memory.stat").write_text("cache 1\ntotal_inactive_file 400000\n")
    assert memory.available_bytes() == 700000 - (600000 - 400000)
    monkeypatch.setattr(memory, "_MEMINFO", tmp_path / "no-such-file")
    monkeypatch.setattr(memory, "_CGROUP", tmp_path / "none")
    assert memory.available_bytes() == os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")

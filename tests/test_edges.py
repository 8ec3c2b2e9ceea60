"""Edges the rest of the suite did not reach, each named after a mutation it kills: a state dict
with only missing or only extra tensors, old checkpoints dropped, a run folder without a
config.json and one whose config.json is not an object, the class one past the last, exact
covariances of small samples, a majority vote that differs from the nearest neighbour, and the
test split, an unconditional PNG folder and colour PNGs written by generate_to; then the sizes,
counts, labels, class names, JSON files and metrics records that are checked before anything
large is allocated or trained, each a one-line error naming the file, field or flag."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vaegen import load_run
from vaegen.errors import RunError, VaegenError
from vaegen.evaluation.estimators import feature_stats, knn_predict
from vaegen.model.vae import VAE
from vaegen.rundir.checkpoint import load_state
from vaegen.sampling.generate import generate, generate_to, resolve_labels
from vaegen.tensorfiles import check_state_dict
from vaegen.training.loop import train

from .test_train import tiny_config


def test_a_state_dict_with_only_missing_or_only_extra_tensors_is_refused():
    want = VAE(hidden=8).state_dict()
    missing = dict(want)
    missing.pop("fc1.bias")
    with pytest.raises(RunError, match=r"missing: \['fc1.bias'\]; unexpected: none"):
        check_state_dict(missing, want, "x.safetensors")
    extra = {**want, "stray": torch.zeros(1)}
    with pytest.raises(RunError, match=r"missing: none; unexpected: \['stray'\]"):
        check_state_dict(extra, want, "x.safetensors")


def test_old_checkpoints_are_dropped_and_a_resave_replaces_its_folder(tiny_data, tmp_path):
    out = tmp_path / "r"
    train(tiny_config(tiny_data, epochs=2), out, progress=False, checkpoint_every=3)
    folders = sorted(p.name for p in (out / "state").iterdir() if p.is_dir())
    assert folders == ["epoch-0002-step-00000016"]  # the mid-epoch and epoch-1 ones are gone
    state = load_state(out / "state")
    assert state is not None and state.progress.epoch == 2


def test_a_folder_without_config_json_is_named_as_no_run(tiny_data, tmp_path):
    out = tmp_path / "r"
    train(tiny_config(tiny_data, epochs=1), out, progress=False)
    (out / "config.json").unlink()
    with pytest.raises(RunError, match=r"r is not a vaegen run: it has no config\.json"):
        load_run(out)
    with pytest.raises(RunError, match=r"no such run directory"):
        load_run(tmp_path / "missing")


def test_a_config_json_that_is_not_an_object_is_named(tiny_data, tmp_path):
    out = tmp_path / "r"
    train(tiny_config(tiny_data, epochs=1), out, progress=False)
    (out / "config.json").write_text("[1, 2]")
    with pytest.raises(RunError, match=r"config\.json: expected a JSON object"):
        load_run(out)


def test_the_class_one_past_the_last_is_unknown(tiny_data, tmp_path):
    from vaegen import ModelConfig, RunConfig

    cfg = tiny_config(tiny_data, epochs=1)
    cfg = RunConfig(cfg.data, ModelConfig(hidden=16, conditional=True), cfg.train)
    run = train(cfg, tmp_path / "c", progress=False)
    assert resolve_labels(run, [2, "0"]) == [2, 0]
    with pytest.raises(VaegenError, match="unknown class 3"):
        resolve_labels(run, [3])
    with pytest.raises(VaegenError, match="unknown class -1"):
        resolve_labels(run, [-1])


def test_feature_stats_are_the_sample_mean_and_unbiased_covariance():
    x = torch.tensor([[1.0, 2.0], [3.0, 0.0], [5.0, 4.0]])
    mu, cov = feature_stats(x)
    assert mu.tolist() == [3.0, 2.0]
    assert torch.allclose(cov, torch.cov(x.T).double())  # divisor N - 1: [[4, 2], [2, 4]]
    assert cov.tolist() == [[4.0, 2.0], [2.0, 4.0]]
    with pytest.raises(VaegenError, match="at least 2 samples"):
        feature_stats(x[:1])
    assert feature_stats(x[:2])[1].shape == (2, 2)


def test_knn_is_a_majority_vote_not_the_nearest_neighbour():
    train_z = torch.tensor([[0.0], [1.1], [1.2], [1.3], [5.0]])
    train_y = torch.tensor([0, 1, 1, 1, 0], dtype=torch.int32)
    pred = knn_predict(train_z, train_y, torch.tensor([[0.1]]), k=5)
    assert pred.tolist() == [1]  # the nearest is class 0, three of five are class 1
    assert knn_predict(train_z, train_y, torch.tensor([[0.1]]), k=1).tolist() == [0]
    with pytest.raises(VaegenError, match="at least one training point"):
        knn_predict(train_z[:0], train_y[:0], torch.tensor([[0.1]]))


def test_generate_to_writes_the_test_split_and_unconditional_pngs(tiny_data, tmp_path):
    from PIL import Image

    from vaegen.data.idx import read_idx

    run = train(tiny_config(tiny_data, epochs=1), tmp_path / "plain", progress=False)
    images, _ = generate(run, 12, seed=1)
    generate_to(run, 12, tmp_path / "idx", seed=1, split="test")
    assert sorted(p.name for p in (tmp_path / "idx").iterdir()) == [
        ".vaegen-output.json",
        "t10k-images-idx3-ubyte.gz",
    ]
    assert np.array_equal(read_idx(tmp_path / "idx" / "t10k-images-idx3-ubyte.gz"), images[:, 0])
    generate_to(run, 12, tmp_path / "png", seed=1, fmt="png")
    files = sorted((tmp_path / "png" / "samples").iterdir())
    assert [p.name for p in files] == [f"{i:05d}.png" for i in range(12)]
    for i in (0, 11):
        assert np.array_equal(np.asarray(Image.open(files[i])), images[i, 0].numpy())


def test_colour_images_are_written_as_rgb_pngs(tmp_path):
    from PIL import Image

    from vaegen import DataConfig, ModelConfig, RunConfig, TrainConfig

    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, size=(64, 8, 8, 3), dtype=np.uint8)
    x[..., 0] = 250  # a red cast, so that a channel mix-up shows
    np.savez(tmp_path / "c.npz", x=x.transpose(0, 3, 1, 2))
    cfg = RunConfig(
        DataConfig(str(tmp_path / "c.npz")), ModelConfig(hidden=8), TrainConfig(epochs=1)
    )
    run = train(cfg, tmp_path / "r", progress=False)
    assert run.image_shape == (3, 8, 8)
    images, _ = generate(run, 3, seed=0)
    generate_to(run, 3, tmp_path / "png", seed=0, fmt="png")
    got = np.asarray(Image.open(tmp_path / "png" / "samples" / "00002.png"))
    assert got.shape == (8, 8, 3)
    assert np.array_equal(got, images[2].numpy().transpose(1, 2, 0))


def test_a_dataset_that_changed_shape_since_training_is_named(tmp_path):
    from vaegen import evaluate
    from vaegen.data.idx import write_idx
    from vaegen.sampling.priors import fit_prior

    from .conftest import make_images, write_idx_dataset

    data = write_idx_dataset(tmp_path / "data")
    run = train(tiny_config(data, epochs=1), tmp_path / "r", progress=False)
    for prefix in ("train", "t10k"):  # the folder now holds 8 x 8 images
        x, y = make_images(64, size=8)
        write_idx(data / f"{prefix}-images-idx3-ubyte.gz", x)
        write_idx(data / f"{prefix}-labels-idx1-ubyte.gz", y)
    message = r"trained on \(1, 12, 12\) images but .* now holds \(1, 8, 8\) images"
    with pytest.raises(VaegenError, match=message):
        fit_prior(load_run(run.path))
    with pytest.raises(VaegenError, match=message):
        evaluate(load_run(run.path), quick=True, progress=False)


# ------------------------------------------ sizes checked before allocation, one-line errors


def _write_config(run_dir, edit) -> None:
    import json

    path = run_dir / "config.json"
    d = json.loads(path.read_text())
    edit(d)
    path.write_text(json.dumps(d))


def test_a_config_json_of_another_model_is_named_before_the_model_is_built(tiny_data, tmp_path):
    out = tmp_path / "r"
    train(tiny_config(tiny_data, epochs=1), out, progress=False)
    # a wrong hidden width: the weights file and the config field are named
    _write_config(out, lambda d: d["model"].update(hidden=33))
    with pytest.raises(
        RunError,
        match=r"model\.safetensors: tensor 'fc1\.weight'.*config\.json"
        r".*hidden 33",
    ):
        load_run(out)
    # images of 100,000 x 100,000 with a hidden layer of 65,536 would be 2.6 PB of weights:
    # compared on the meta device, never allocated
    _write_config(
        out,
        lambda d: (
            d["model"].update(hidden=65536),
            d["dataset"].update(image_shape=[1, 100_000, 100_000]),
        ),
    )
    with pytest.raises(RunError, match=r"model\.safetensors.*config\.json"):
        load_run(out)


@pytest.mark.parametrize(
    ("section", "field", "value"),
    [
        ("model", "latent_dim", 4097),
        ("model", "hidden", 65537),
        ("train", "threads", 1025),
        ("train", "epochs", 10**7),
        ("train", "batch_size", 2**31),
        ("train", "prior_draws", 1001),
        ("train", "prior_components", 100_001),
        ("train", "seed", 2**63),
        ("train", "seed", -(2**63) - 1),
        ("data", "image_size", 10**5),
        ("data", "split_seed", 2**64),
    ],
)
def test_every_size_and_count_of_a_config_has_an_upper_bound(section, field, value):
    from vaegen import DataConfig, ModelConfig, TrainConfig

    cls = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}[section]
    with pytest.raises(VaegenError, match=rf"{field} = {value} is not valid"):
        cls(**{field: value})


def test_a_negative_seed_is_still_a_seed():
    from vaegen import TrainConfig

    assert TrainConfig(seed=-1).seed == -1
    assert TrainConfig(seed=-(2**63)).seed == -(2**63)


def test_the_cli_names_a_flag_out_of_bounds_before_reading_the_data(tmp_path, capsys):
    from vaegen.cli import main

    missing = str(tmp_path / "no-such.npz")  # never read: the bound is checked first
    for flag, value in (
        ("--hidden", "1000000000"),
        ("--latent-dim", "1000000000"),
        ("--threads", "100000"),
        ("--prior-draws", "100000"),
    ):
        assert (
            main(["-q", "train", "--data", missing, flag, value, "--out", str(tmp_path / "r")]) == 2
        )
        err = capsys.readouterr().err
        assert f"{flag[2:].replace('-', '_')} = {value} is not valid" in err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_generate_and_evaluate_check_their_counts_before_any_work(tiny_data, tmp_path, monkeypatch):
    from vaegen import evaluate, rundir
    from vaegen.sampling.generate import request

    run = train(tiny_config(tiny_data, epochs=1), tmp_path / "r", progress=False)
    with pytest.raises(VaegenError, match=r"n = 2147483648 is not valid"):
        request(run, 2**31)
    with pytest.raises(VaegenError, match=r"seed = 18446744073709551616 is not valid"):
        request(run, 10, seed=2**64)

    def no_data(*args, **kwargs):
        raise AssertionError("the data was loaded before the arguments were checked")

    monkeypatch.setattr(rundir, "load_both_splits", no_data)
    for kwargs, says in (
        ({"iw_samples": 10**7}, "iw_samples = 10000000"),
        ({"n_generated": 2**40}, "n_generated = 1099511627776"),
        ({"seed": 2**64}, "seed = 18446744073709551616"),
        ({"feature_epochs": 0}, "feature_epochs = 0"),
    ):
        with pytest.raises(VaegenError, match=says):
            evaluate(run, progress=False, **kwargs)


def _npz(path, counts, classes=None, label_of=None):
    from .conftest import make_images

    x, _ = make_images(sum(counts), size=8, classes=len(counts))
    y = np.repeat(np.arange(len(counts)), counts)
    arrays = {"x": x, "y": y if label_of is None else label_of(y)}
    if classes is not None:
        arrays["classes"] = np.array(classes)
    np.savez(path, **arrays)
    return path


def test_a_class_too_small_for_the_prior_fails_before_training(tmp_path, monkeypatch):
    from vaegen import DataConfig, ModelConfig, RunConfig, TrainConfig
    from vaegen.errors import DataError

    data = _npz(tmp_path / "d.npz", [30, 30, 1], ["cat", "dog", "emu"])
    cfg = RunConfig(
        DataConfig(str(data)),
        ModelConfig(hidden=8, conditional=True),
        TrainConfig(epochs=1, batch_size=16),
    )
    with pytest.raises(
        DataError,
        match=r"d\.npz: class 2 has [01] training image\(s\) \(named "
        r"'emu'\).*--prior-components 0",
    ):
        train(cfg, tmp_path / "r", progress=False)
    assert not (tmp_path / "r" / "model.safetensors").exists()  # not one epoch was trained
    # without a prior the same data trains
    no_prior = RunConfig(cfg.data, cfg.model, TrainConfig(epochs=1, prior_components=0))
    assert train(no_prior, tmp_path / "ok", progress=False).metrics
    # draws that would not fit in memory fail before training too
    import vaegen.training.trainset as trainset

    monkeypatch.setattr(trainset, "available_bytes", lambda: 1000)
    big = RunConfig(
        DataConfig(str(data), test_fraction=0.0),
        ModelConfig(hidden=8),
        TrainConfig(epochs=1, prior_draws=10),
    )
    with pytest.raises(DataError, match=r"--prior-draws 10 \(prior_draws\)"):
        train(big, tmp_path / "draws", progress=False)
    assert not (tmp_path / "draws" / "model.safetensors").exists()


@pytest.mark.parametrize("where", ["npz", "idx"])
def test_labels_in_the_billions_are_refused_naming_the_file(tmp_path, where):
    from vaegen.data import load_dataset
    from vaegen.data.idx import write_idx
    from vaegen.errors import DataError

    from .conftest import write_idx_dataset

    if where == "npz":
        source = path = _npz(
            tmp_path / "d.npz", [5, 5], label_of=lambda y: np.where(y == 1, 2_000_000_000, y)
        )
    else:
        source = write_idx_dataset(tmp_path / "idx", n_train=16, n_test=8)
        (source / "classes.txt").unlink()
        path = source / "train-labels-idx1-ubyte.gz"
        write_idx(path, np.array([0] * 15 + [2_000_000_000], dtype=np.int32))
    with pytest.raises(DataError, match=rf"{path.name}.*label 2000000000.*at most 65536"):
        load_dataset(source, test_fraction=0.5 if where == "npz" else None)
    if where == "idx":
        write_idx(path, np.array([0] * 15 + [-3], dtype=np.int8))
        with pytest.raises(DataError, match=rf"{path.name}: holds the label -3"):
            load_dataset(source)


def test_json_nested_too_deeply_is_a_one_line_error_naming_the_file(tiny_data, tmp_path):
    from vaegen.tensorfiles import read_json

    deep = "[" * 100_000 + "]" * 100_000
    (tmp_path / "prior.json").write_text(deep)
    with pytest.raises(RunError, match=r"prior\.json: .*nested too deeply"):
        read_json(tmp_path / "prior.json")
    out = tmp_path / "r"
    train(tiny_config(tiny_data, epochs=1), out, progress=False)
    good = (out / "metrics.jsonl").read_text()
    (out / "metrics.jsonl").write_text(good + deep + "\n")
    with pytest.raises(RunError, match=r"metrics\.jsonl, line 2: .*nested too deeply"):
        load_run(out)
    (out / "metrics.jsonl").write_text(good)
    (out / "config.json").write_text(deep)
    with pytest.raises(RunError, match=r"config\.json: .*nested too deeply"):
        load_run(out)


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("test_loss", "abc", r"'test_loss' is 'abc'; it must be a number"),
        ("epoch", None, r'"epoch" is None; it must be an integer >= 1'),
        ("test_kl", [1, 2], r"'test_kl' is \[1, 2\]; it must be a number"),
        ("train_loss", True, r"'train_loss' is True; it must be a number"),
        ("epoch", 0, r'"epoch" is 0'),
        ("seconds", "1 s", r"'seconds' is '1 s'"),
        ("test_recon", ..., r"the epoch's record has no 'test_recon'"),
    ],
)
def test_a_metrics_record_with_a_field_of_the_wrong_type_is_named(
    tiny_data, tmp_path, capsys, field, value, says
):
    import json

    from vaegen.cli import main

    out = tmp_path / "r"
    train(tiny_config(tiny_data, epochs=2), out, progress=False)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    record = json.loads(lines[1])
    if value is ...:
        del record[field]
    else:
        record[field] = value
    (out / "metrics.jsonl").write_text(lines[0] + "\n" + json.dumps(record) + "\n")
    with pytest.raises(RunError, match=rf"metrics\.jsonl, line 2: {says}"):
        load_run(out)
    for command in ("report", "plot"):
        assert main(["-q", command, str(out)]) == 2
        err = capsys.readouterr().err
        assert "metrics.jsonl, line 2" in err and "Traceback" not in err


def _photos(root, classes=("cat", "dog")):
    from PIL import Image

    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((4, 4), 40 * i, np.uint8)).save(root / c / f"{i}.png")
    return root


def test_a_symlink_loop_in_an_image_folder_is_named(tmp_path):
    from vaegen.data import load_dataset
    from vaegen.errors import DataError

    photos = _photos(tmp_path / "photos")
    (photos / "cat" / "loop").symlink_to(".")  # a folder in a class folder: never entered
    assert len(load_dataset(photos, test_fraction=0)) == 6
    (photos / "cat" / "a.png").symlink_to("b")
    (photos / "cat" / "b").symlink_to("a.png")
    with pytest.raises(DataError, match=r"cat/(a\.png|b): a link that cannot be followed"):
        load_dataset(photos, test_fraction=0)


def test_a_class_name_with_a_control_character_is_refused_at_load(tmp_path):
    from vaegen.data import load_dataset
    from vaegen.errors import DataError

    photos = _photos(tmp_path / "photos", ("ca\nt", "dog"))
    with pytest.raises(DataError, match=r"photos: the class name 'ca\\nt' holds the control"):
        load_dataset(photos, test_fraction=0)
    data = _npz(tmp_path / "d.npz", [3, 3], ["a\tb", "c"])
    with pytest.raises(DataError, match=r"d\.npz: the class name 'a\\tb'"):
        load_dataset(data, test_fraction=0)


def test_safe_names_of_long_class_names_are_bounded_and_distinct(tiny_data, tmp_path):
    from vaegen import ModelConfig, RunConfig

    long_a, long_b = "x" * 300, "x" * 299 + "y"
    # generate writes a PNG folder per class: with names of 300 bytes it failed (ENAMETOOLONG)
    cfg = tiny_config(tiny_data, epochs=1)
    cfg = RunConfig(cfg.data, ModelConfig(hidden=8, conditional=True), cfg.train)
    run = train(cfg, tmp_path / "c", progress=False)
    run.classes = [long_a, long_b, "é" * 300]
    generate_to(run, 6, tmp_path / "png", fmt="png", progress=False)
    folders = sorted(p.name for p in (tmp_path / "png").iterdir() if p.is_dir())
    assert len(folders) == 3 and len(list((tmp_path / "png").rglob("*.png"))) == 6
    assert all(len(name.encode()) <= 112 for name in folders)  # "00_" + at most 109 bytes

    from vaegen.data.class_names import safe_name

    assert safe_name(long_a) != safe_name(long_b)  # a hash of the whole name tells them apart
    assert safe_name("T-shirt/top") == "T-shirt_top"  # short names as before

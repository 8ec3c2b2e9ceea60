"""Simulated data: conditional sampling, files in three formats, repeatability, clear refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vaegen import RunConfig, generate, load_dataset, load_run
from vaegen.cli import main
from vaegen.errors import VaegenError
from vaegen.model.likelihoods import GAUSSIAN
from vaegen.rundir.config import DataConfig, ModelConfig, TrainConfig
from vaegen.sampling.generate import reconstruct, spread_labels
from vaegen.training.loop import train


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A conditional and an unconditional tiny run, for every model kind."""
    from .conftest import write_idx_dataset

    base = tmp_path_factory.mktemp("gen")
    data = write_idx_dataset(base / "data")
    out = {}
    for kind in ("mlp", "conv"):
        for conditional in (True, False):
            cfg = RunConfig(
                DataConfig(str(data)),
                ModelConfig(model=kind, hidden=32, conditional=conditional),
                TrainConfig(epochs=2, batch_size=32, loss="gaussian"),
            )
            name = f"{kind}-{'cond' if conditional else 'plain'}"
            out[name] = train(cfg, base / name, progress=False).path
    return out


def test_spread_labels_counts():
    y = spread_labels(10, [2, 0, 1])
    assert y.tolist() == [2, 2, 2, 2, 0, 0, 0, 1, 1, 1]


@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_generate_api(runs, kind):
    run = load_run(runs[f"{kind}-cond"])
    images, labels = generate(run, 7, labels=["shape <2>", 0], seed=3)
    assert images.shape == (7, 1, 12, 12) and images.dtype == torch.uint8
    assert labels.tolist() == [2, 2, 2, 2, 0, 0, 0]
    again, _ = generate(run, 7, labels=["shape <2>", 0], seed=3)
    assert torch.equal(images, again)
    other, _ = generate(run, 7, labels=["shape <2>", 0], seed=4)
    assert not torch.equal(images, other)
    plain = load_run(runs[f"{kind}-plain"])
    images, labels = generate(plain, 5)
    assert images.shape == (5, 1, 12, 12) and labels is None


@pytest.mark.parametrize("fmt", ["npz", "idx", "png"])
def test_cli_generate_files_read_back_as_a_dataset(runs, tmp_path, fmt, capsys):
    run = str(runs["mlp-cond"])
    out = tmp_path / ("g.npz" if fmt == "npz" else "g")
    argv = ["generate", run, "--n", "30", "--label", "shape <1>", "2"]
    if fmt == "png":
        argv += ["--format", "png"]
    assert main([*argv, "--out", str(out)]) == 0
    assert "wrote 30 images (shape <1>: 15, shape <2>: 15)" in capsys.readouterr().out
    ds = load_dataset(out, test_fraction=None if fmt == "idx" else 0)  # every image
    assert len(ds) == 30 and ds.image_shape == (1, 12, 12)
    counts = {ds.classes[k]: int(c) for k, c in enumerate(ds.labels.bincount()) if c}
    if fmt == "png":  # one sub-folder per class, named with the class index first
        assert counts == {"01_shape_1": 15, "02_shape_2": 15}
    else:
        assert ds.classes == ["shape <0>", "shape <1>", "shape <2>"]
        assert counts == {"shape <1>": 15, "shape <2>": 15}
    # the same seed gives the same bytes; the files equal what the API returns
    out2 = tmp_path / ("h.npz" if fmt == "npz" else "h")
    assert main([*argv, "--out", str(out2)]) == 0
    first = sorted(p for p in out.rglob("*") if p.is_file()) if out.is_dir() else [out]
    second = sorted(p for p in out2.rglob("*") if p.is_file()) if out2.is_dir() else [out2]
    assert [_undated(p) for p in first] == [_undated(p) for p in second]
    images, _ = generate(load_run(run), 30, labels=["shape <1>", "2"])
    order = torch.argsort(ds.labels, stable=True)
    assert torch.equal(ds.images[order], images)


def _prior_sample(run, n: int, seed: int) -> torch.Tensor:
    """The z ~ N(0, I) that generate draws: n x latent_dim from a CPU generator seeded `seed`."""
    return torch.randn(
        n, run.config.model.latent_dim, generator=torch.Generator().manual_seed(seed)
    )


def _decode_by_hand(run, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """uint8 images of the decoder's mean at z: a Gaussian decoder's output clamped to [0, 1],
    in 255ths rounded to the nearest."""
    assert run.likelihood is GAUSSIAN  # the fixture's runs; the mean of another is not a clamp
    with torch.no_grad():
        mean = run.model.decode(z, labels).clamp(0.0, 1.0)
    return (mean * 255.0).round().to(torch.uint8)


@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_temperature_scales_the_prior_sample(runs, kind, tmp_path):
    run = load_run(runs[f"{kind}-plain"])
    z = _prior_sample(run, 6, seed=11)
    images, _ = generate(run, 6, seed=11, temperature=0.5, batch_size=4)  # batches of 4 and 2
    assert torch.equal(images, _decode_by_hand(run, 0.5 * z, None))
    assert not torch.equal(images, _decode_by_hand(run, z, None))  # T matters for this model
    # the command line writes what the API returns
    out = tmp_path / "t.npz"
    argv = ["generate", str(run.path), "--n", "6", "--seed", "11", "--temperature", "0.5"]
    assert main([*argv, "--out", str(out)]) == 0
    with np.load(out, allow_pickle=False) as f:
        assert np.array_equal(f["x"], images[:, 0].numpy())


@pytest.mark.parametrize("kind", ["mlp", "conv"])
@pytest.mark.parametrize("requested", [["shape <2>", 0], None])
def test_each_image_is_decoded_with_its_own_label(runs, kind, requested):
    run = load_run(runs[f"{kind}-cond"])
    images, labels = generate(run, 7, labels=requested, seed=3, batch_size=3)
    want = [2, 2, 2, 2, 0, 0, 0] if requested else [0, 0, 0, 1, 1, 2, 2]
    assert labels.tolist() == want
    z = _prior_sample(run, 7, seed=3)
    assert torch.equal(images, _decode_by_hand(run, z, labels))
    # the label matters for this model, so a wrong label would show
    assert not torch.equal(images, _decode_by_hand(run, z, (labels + 1) % 3))


@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_reconstruct_decodes_each_images_encoder_mean_with_its_label(runs, kind):
    run = load_run(runs[f"{kind}-cond"])
    test = load_dataset(run.config.data.source, "test")
    images, labels = test.images[:7], test.labels[:7].long()
    got = reconstruct(run, images, labels, batch_size=3)  # batches of 3, 3 and 1
    with torch.no_grad():
        mu, _ = run.model.encode(images.float() / 255.0, labels)
    assert torch.equal(got, _decode_by_hand(run, mu, labels))
    # the label matters to this model's encoder and decoder, so a wrong one would show
    assert not torch.equal(got, reconstruct(run, images, (labels + 1) % 3))
    with pytest.raises(VaegenError, match="from it and its label"):
        reconstruct(run, images)
    plain = load_run(runs[f"{kind}-plain"])
    with torch.no_grad():
        mu, _ = plain.model.encode(images.float() / 255.0)
    assert torch.equal(reconstruct(plain, images, labels), _decode_by_hand(plain, mu, None))


@pytest.mark.parametrize(
    ("flags", "want"),
    [
        (["--label", "shape <2>", "--label", "0"], [2] * 5 + [0] * 5),  # the flag repeated
        (["--label", "shape <2>", "0"], [2] * 5 + [0] * 5),  # several classes after one flag
        (["--label", "1", "--label", "shape <2>", "0"], [1] * 4 + [2] * 3 + [0] * 3),  # both
    ],
)
def test_cli_draws_every_requested_class(runs, tmp_path, capsys, flags, want):
    run = load_run(runs["mlp-cond"])
    out = tmp_path / "g.npz"
    assert main(["generate", str(run.path), "--n", "10", *flags, "--out", str(out)]) == 0
    counts = ", ".join(f"shape <{k}>: {want.count(k)}" for k in sorted(set(want)))
    assert f"wrote 10 images ({counts})" in capsys.readouterr().out
    with np.load(out, allow_pickle=False) as f:
        x, y = torch.from_numpy(f["x"]), torch.from_numpy(f["y"])
    assert y.tolist() == want  # exactly the requested classes, spread evenly in the order given
    assert torch.equal(x, _decode_by_hand(run, _prior_sample(run, 10, seed=0), y)[:, 0])


def test_npz_layout(runs, tmp_path):
    assert (
        main(["generate", str(runs["mlp-plain"]), "--n", "4", "--out", str(tmp_path / "a.npz")])
        == 0
    )
    with np.load(tmp_path / "a.npz", allow_pickle=False) as f:
        assert f.files == ["x"] and f["x"].shape == (4, 12, 12) and f["x"].dtype == np.uint8
    assert (
        main(["generate", str(runs["mlp-cond"]), "--n", "4", "--out", str(tmp_path / "b.npz")]) == 0
    )
    with np.load(tmp_path / "b.npz", allow_pickle=False) as f:
        assert f["y"].dtype == np.int64 and f["classes"].tolist()[0] == "shape <0>"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--label", "circle"], r"unknown class 'circle'; valid classes are 0='shape <0>', 1="),
        (["--label", "7"], "unknown class '7'"),
        (["--n", "0"], "n = 0 is not valid"),
        (["--temperature", "0"], "temperature = 0.0 is not valid"),
        (["--temperature", "nan"], "temperature = nan is not valid: use a finite number > 0"),
        (["--temperature", "inf"], "temperature = inf is not valid"),
    ],
)
def test_bad_requests_are_clear_errors(runs, tmp_path, capsys, args, message):
    argv = ["generate", str(runs["mlp-cond"]), "--n", "5", "--out", str(tmp_path / "x.npz"), *args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert __import__("re").search(message, err), err
    assert not (tmp_path / "x.npz").exists()


def test_label_on_an_unconditional_model(runs, tmp_path, capsys):
    argv = [
        "generate",
        str(runs["mlp-plain"]),
        "--n",
        "5",
        "--label",
        "0",
        "--out",
        str(tmp_path / "x.npz"),
    ]
    assert main(argv) == 2
    assert "not conditional" in capsys.readouterr().err


def test_unknown_format_and_existing_output(runs, tmp_path, capsys):
    run = str(runs["mlp-plain"])
    assert main(["generate", run, "--n", "3", "--out", str(tmp_path / "x.csv")]) == 2
    assert "unknown output format '.csv'" in capsys.readouterr().err
    assert main(["generate", run, "--n", "3", "--format", "npz", "--out", str(tmp_path / "y")]) == 2
    assert "an .npz output needs a path ending in .npz" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()
    out = tmp_path / "x.npz"
    assert main(["generate", run, "--n", "3", "--out", str(out)]) == 0
    before = out.read_bytes()
    assert main(["generate", run, "--n", "3", "--seed", "9", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == before
    assert main(["generate", run, "--n", "3", "--seed", "9", "--out", str(out), "--overwrite"]) == 0
    assert out.read_bytes() != before


def test_the_conv_model_trains_and_generates_at_any_size(tmp_path, capsys):
    """Colour images of 10 x 14 pixels (no multiple of 4): trained, reloaded from the run
    directory, and generated at 3 x 10 x 14. An image of no pixels is a one-line error."""
    x = np.random.default_rng(0).integers(0, 256, (40, 10, 14, 3), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x=x)
    argv = [
        "-q",
        "train",
        "--data",
        str(tmp_path / "d.npz"),
        "--model",
        "conv",
        "--epochs",
        "1",
        "--hidden",
        "16",
        "--batch-size",
        "16",
        "--out",
        str(tmp_path / "r"),
    ]
    assert main(argv) == 0
    assert load_run(tmp_path / "r").image_shape == (3, 10, 14)
    out = tmp_path / "g.npz"
    assert main(["generate", str(tmp_path / "r"), "--n", "5", "--out", str(out)]) == 0
    with np.load(out, allow_pickle=False) as got:
        assert got["x"].shape == (5, 3, 10, 14)
    np.savez(tmp_path / "empty.npz", x=np.zeros((8, 0, 5), dtype=np.uint8))
    argv[3], argv[-1] = str(tmp_path / "empty.npz"), str(tmp_path / "e")
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'empty.npz'}: images are 1 x 0 x 5 (channels x height" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "e").exists()


@pytest.mark.slow
def test_generated_classes_look_like_their_class(fashion_dir, tmp_path):
    """A classifier trained on real FashionMNIST labels most samples of each class as that class."""
    cfg = RunConfig(
        DataConfig(data_dir=str(fashion_dir)), ModelConfig(conditional=True), TrainConfig(epochs=3)
    )
    run = train(cfg, tmp_path / "cvae", progress=False)
    real = load_dataset("fashion-mnist", "train", fashion_dir)
    torch.manual_seed(0)
    clf = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(784, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10)
    )
    opt = torch.optim.Adam(clf.parameters(), 2e-3)
    x, y = real.images.float() / 255, real.labels
    for i in range(0, len(x), 256):  # one epoch: about 84% test accuracy
        loss = torch.nn.functional.cross_entropy(clf(x[i : i + 256]), y[i : i + 256])
        opt.zero_grad()
        loss.backward()
        opt.step()
    images, labels = generate(run, 1000, seed=0)
    with torch.no_grad():
        pred = clf(images.float() / 255).argmax(1)
    for k, name in enumerate(run.classes):
        agree = (pred[labels == k] == k).float().mean().item()
        assert agree > 0.5, f"{name}: only {agree:.0%} of its samples are classified as {name}"


# ------------------------------------------------------------------ streaming to disk


@pytest.fixture(scope="module")
def fitted(runs, tmp_path_factory):
    """Copies of the tiny MLP runs with a fitted 2-component prior (per class for "cond")."""
    import shutil

    from vaegen.sampling.priors import fit_prior

    base = tmp_path_factory.mktemp("fitted")
    out = {}
    for name in ("cond", "plain"):
        path = shutil.copytree(runs[f"mlp-{name}"], base / name)
        fit_prior(load_run(path), components=2)
        out[name] = path
    return out


def _read_back(out, fmt: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(x, y) of a written .npz (numpy, no pickles) or IDX folder (vaegen's IDX reader)."""
    from vaegen.data.idx import read_idx

    if fmt == "npz":
        with np.load(out, allow_pickle=False) as f:
            return f["x"], (f["y"] if "y" in f.files else None)
    labels = out / "train-labels-idx1-ubyte.gz"
    y = read_idx(labels).astype(np.int64) if labels.exists() else None
    return read_idx(out / "train-images-idx3-ubyte.gz"), y


def _files(out) -> dict[str, bytes]:
    """Every file under `out` (or `out` itself) by relative name -> bytes."""
    if out.is_file():
        return {".": out.read_bytes()}
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def _undated(path) -> bytes:
    """The bytes of a generated file; of a folder's record, without the date in each output's
    manifest (two writes of the same images are seconds apart)."""
    if path.name != ".vaegen-output.json":
        return path.read_bytes()
    record = json.loads(path.read_text())
    for entry in record["outputs"].values():
        entry.pop("date")
    return json.dumps(record).encode()


def test_labels_between_is_a_slice_of_spread_labels():
    from vaegen.sampling.generate import class_counts, labels_between

    for n, classes in ((10, [2, 0, 1]), (2, [0, 1, 2]), (101, [1, 1, 0]), (7, [4])):
        whole = spread_labels(n, classes)
        assert len(whole) == n
        for start, stop in ((0, n), (0, 1), (n // 2, n), (1, max(1, n - 1))):
            assert torch.equal(labels_between(n, classes, start, stop), whole[start:stop])
        assert class_counts(n, classes, 5) == torch.bincount(whole, minlength=5).tolist()


@pytest.mark.parametrize("fmt", ["npz", "idx"])
@pytest.mark.parametrize("prior", ["standard", "fitted"])
@pytest.mark.parametrize("name", ["cond", "plain"])
def test_streamed_files_hold_what_one_generator_seeded_with_the_seed_draws(
    fitted, tmp_path, fmt, prior, name
):
    """Up to BLOCK images, the files hold what generate() returned before it streamed: the prior
    sampled once from torch.Generator().manual_seed(seed), decoded; the npz member and the IDX
    file are the bytes np.save and gzip.compress(idx_bytes) give."""
    import gzip
    import io
    import zipfile

    from vaegen.data.idx import idx_bytes
    from vaegen.sampling.generate import generate_to
    from vaegen.sampling.priors import load_prior

    run = load_run(fitted[name])
    n, seed, temperature = 100, 5, 0.8
    out = tmp_path / ("g.npz" if fmt == "npz" else "g")
    written = generate_to(run, n, out, seed=seed, temperature=temperature, prior=prior)
    x, y = _read_back(out, fmt)

    images, labels = generate(run, n, seed=seed, temperature=temperature, prior=prior)
    assert np.array_equal(x, images[:, 0].numpy())
    want_y = None if labels is None else labels.numpy()
    assert (y is None and want_y is None) or np.array_equal(y, want_y)
    assert written.counts == (None if labels is None else labels.bincount(minlength=3).tolist())
    gen = torch.Generator().manual_seed(seed)
    z = load_prior(run, prior).sample(labels, n, gen, temperature)
    assert torch.equal(images, _decode_by_hand(run, z, labels))
    if fmt == "npz":
        member = io.BytesIO()
        np.lib.format.write_array(member, images[:, 0].numpy(), allow_pickle=False)
        with zipfile.ZipFile(out) as zf:
            assert zf.read("x.npy") == member.getvalue()
    else:
        stored = (out / "train-images-idx3-ubyte.gz").read_bytes()
        assert gzip.decompress(stored) == idx_bytes(images[:, 0].numpy())


@pytest.mark.parametrize("fmt", ["npz", "idx"])
@pytest.mark.parametrize("prior", ["standard", "fitted"])
def test_the_chunk_size_never_changes_the_bytes(fitted, tmp_path, fmt, prior):
    """Codes come in blocks (here 16 images), block b from its own generator: decoding and writing
    7 or 64 images at a time gives the same files, and they hold those blocks decoded."""
    from vaegen.sampling.generate import block_generator, generate_to
    from vaegen.sampling.priors import load_prior

    run = load_run(fitted["cond"])
    n, seed, block = 100, 2, 16
    outs = []
    for batch_size in (7, 64):
        out = tmp_path / (f"{batch_size}.npz" if fmt == "npz" else str(batch_size))
        generate_to(run, n, out, seed=seed, prior=prior, batch_size=batch_size, block=block)
        outs.append(out)
    files = [_files(o) for o in outs]
    assert files[0].keys() == files[1].keys()
    for name in files[0]:  # the record of a folder, read apart from its date
        if name != ".vaegen-output.json":
            assert files[0][name] == files[1][name], name
    if fmt == "idx":
        assert _undated(outs[0] / ".vaegen-output.json") == _undated(
            outs[1] / ".vaegen-output.json"
        )

    x, y = _read_back(outs[0], fmt)
    labels = spread_labels(n, [0, 1, 2])
    assert np.array_equal(y, labels.numpy())
    sampler = load_prior(run, prior)
    by_hand = []
    for b, start in enumerate(range(0, n, block)):
        yb = labels[start : start + block]
        z = sampler.sample(yb, len(yb), block_generator(seed, b), 1.0)
        by_hand.append(_decode_by_hand(run, z, yb))
    assert np.array_equal(x, torch.cat(by_hand)[:, 0].numpy())
    one_block = tmp_path / ("one.npz" if fmt == "npz" else "one")
    generate_to(run, n, one_block, seed=seed, prior=prior, batch_size=7)
    assert not np.array_equal(_read_back(one_block, fmt)[0], x)  # the block size is the seed's


class _Interrupted(Exception):
    pass


@pytest.mark.parametrize("fmt", ["npz", "idx", "png"])
@pytest.mark.parametrize("error", [_Interrupted, KeyboardInterrupt])
def test_an_error_midway_leaves_no_file_and_no_temporary(runs, tmp_path, monkeypatch, fmt, error):
    """The decoder fails on the 3rd block: no file of the new output appears (the old output, when
    overwriting, is untouched, PNGs included) and no temporary or staging folder is left."""
    from vaegen.sampling.generate import generate_to

    run = load_run(runs["mlp-cond"])
    out = tmp_path / ("g.npz" if fmt == "npz" else "g")
    generate_to(run, 12, out, fmt=fmt, seed=1)  # an earlier output, to be overwritten
    before = _files(out)
    decode, calls = run.model.decode, []

    def failing(z, y=None):
        calls.append(len(z))
        if len(calls) == 3:
            raise error("stop")
        return decode(z, y)

    monkeypatch.setattr(run.model, "decode", failing)
    with pytest.raises(error):
        generate_to(run, 100, out, fmt=fmt, overwrite=True, batch_size=10, block=10)
    assert calls == [10, 10, 10]
    staging = (".vaegen-new-", ".vaegen-old-")  # files.replace_folder's
    leftovers = [
        p.name
        for p in tmp_path.rglob("*")
        if p.name.endswith(".tmp") or any(s in p.name for s in staging)
    ]
    assert leftovers == []
    assert _files(out) == before


@pytest.mark.parametrize("fmt", ["npz", "idx", "png"])
def test_existing_files_are_refused_before_any_work(runs, tmp_path, monkeypatch, capsys, fmt):
    import sys

    run = str(runs["mlp-cond"])
    out = tmp_path / ("g.npz" if fmt == "npz" else "g")
    argv = ["generate", run, "--n", "6", "--format", fmt, "--out", str(out)]
    assert main(argv) == 0
    assert "wrote 6 images (shape <0>: 2, shape <1>: 2, shape <2>: 2)" in capsys.readouterr().out
    before = _files(out)
    again = ["generate", run, "--n", "9", "--format", fmt, "--out", str(out)]
    with monkeypatch.context() as m:
        m.setattr(
            sys.modules["vaegen.sampling.generate"], "decoded_chunks", None
        )  # no decoding at all
        assert main(again) == 2
    first, count = {
        "npz": (out, 2),  # the .npz and its manifest
        "idx": (out / "train-images-idx3-ubyte.gz", 3),
        "png": (out / "00_shape_0" / "00000.png", 6),  # 0..1 of the 0..2 wanted, per class
    }[fmt]
    assert f"{first} already exists ({count} of the output files do)" in capsys.readouterr().err
    assert _files(out) == before
    assert main([*again, "--overwrite"]) == 0
    assert len(_files(out)) == (10 if fmt == "png" else len(before))  # PNGs and the record


def test_an_overwritten_output_holds_only_the_new_files(runs, tmp_path, capsys):
    """Files of the earlier output that the new one does not write are removed: the folder never
    reads back as a dataset that mixes the two, or pairs new images with old labels. A user's
    file inside the output is never removed: the write is refused, naming it."""
    cond, plain = str(runs["mlp-cond"]), str(runs["mlp-plain"])
    pngs = tmp_path / "pngs"
    assert main(["generate", cond, "--n", "30", "--format", "png", "--out", str(pngs)]) == 0
    (pngs / "01_shape_1" / "notes.txt").write_text("a user's file, not a numbered PNG")
    again = [
        "generate",
        cond,
        "--n",
        "4",
        "--label",
        "shape <1>",
        "--format",
        "png",
        "--seed",
        "5",
        "--out",
        str(pngs),
        "--overwrite",
    ]
    before = _files(pngs)
    assert main(again) == 2
    assert "01_shape_1/notes.txt" in capsys.readouterr().err and _files(pngs) == before
    (pngs / "01_shape_1" / "notes.txt").unlink()
    assert main(again) == 0
    assert sorted(_files(pngs)) == [".vaegen-output.json"] + [
        f"01_shape_1/{k:05d}.png" for k in range(4)
    ]
    back = load_dataset(pngs, test_fraction=0)
    want, _ = generate(load_run(cond), 4, labels=["shape <1>"], seed=5)
    assert back.classes == ["01_shape_1"] and torch.equal(back.images, want)
    # an unconditional output over the conditional one: samples/ only
    argv = ["generate", plain, "--n", "2", "--format", "png", "--out", str(pngs), "--overwrite"]
    assert main(argv) == 0
    assert sorted(_files(pngs)) == [".vaegen-output.json", "samples/00000.png", "samples/00001.png"]

    idx = tmp_path / "idx"
    assert main(["generate", cond, "--n", "6", "--out", str(idx)]) == 0
    capsys.readouterr()
    # without --overwrite every file it would replace or remove counts
    (idx / "train-images-idx3-ubyte.gz").unlink()
    assert main(["generate", plain, "--n", "6", "--out", str(idx)]) == 2
    assert "train-labels-idx1-ubyte.gz already exists (2 of" in capsys.readouterr().err
    assert main(["generate", plain, "--n", "6", "--out", str(idx), "--overwrite"]) == 0
    assert sorted(_files(idx)) == [".vaegen-output.json", "train-images-idx3-ubyte.gz"]


_MEMORY_PROBE = """
import re, sys
import torch
from vaegen import load_run
from vaegen.sampling.generate import generate_to

torch.set_num_threads(1)
run, fmt, folder = load_run(sys.argv[1]), sys.argv[2], sys.argv[3]


def status(key):
    with open("/proc/self/status") as f:
        return int(re.search(key + r":\\s+(\\d+) kB", f.read()).group(1)) * 1024


def growth(n, name):
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # Linux: the peak (VmHWM) := the resident memory now
    before = status("VmRSS")
    path = f"{folder}/{name}" + (".npz" if fmt == "npz" else "")
    generate_to(run, n, path, fmt=fmt, block=4096)
    return status("VmHWM") - before


try:
    growth(20_000, "warm-up")  # the first run's one-time costs: lazy imports, allocator pools
except OSError:
    print("skip")  # no /proc/self/clear_refs: not Linux
else:
    print(growth(20_000, "small"), growth(200_000, "large"))
"""


@pytest.mark.parametrize("fmt", ["npz", "idx"])
def test_memory_does_not_grow_with_n(runs, tmp_path, fmt):
    """How far resident memory rises above where it was while a process writes 20,000 and then
    200,000 tiny images: about as far for both (holding the second's 26 MiB of pixels would
    raise it by 10 times the first's). Blocks of 4,096 images, so that both runs do the same
    work per block and any difference grows with n."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import vaegen

    # A fixed mmap threshold: glibc's sliding one keeps freed chunk buffers in the heap, a plateau
    # of some 10 MiB reached within the first few blocks that says nothing about n.
    env = os.environ | {"MALLOC_MMAP_THRESHOLD_": "65536"}
    source = str(Path(vaegen.__file__).parents[1])  # this vaegen, not another one installed
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [source, env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE, str(runs["mlp-cond"]), fmt, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
        env=env,
    )
    if done.stdout.strip() == "skip":
        pytest.skip("needs Linux's /proc/self/clear_refs to reset the peak resident memory")
    small, large = (int(v) for v in done.stdout.split())
    assert large < 1.5 * small + 4_000_000, (small, large)  # small may be 0: nothing grew
    assert large - small < 180_000 * 12 * 12 / 4, (small, large)  # a quarter of the extra pixels


def test_streamed_arrays_must_fill_the_shape_their_header_promised():
    """A writer given fewer items than its header announced refuses to finish (a header for N
    images with fewer behind it reads as a corrupt file); once filled, its bytes are np.save's
    and gzip.compress(idx_bytes)'s."""
    import gzip
    import io

    from vaegen.data.idx import IdxGzipWriter, idx_bytes
    from vaegen.sampling.writers import NpyWriter

    want = np.arange(6, dtype=np.uint8).reshape(3, 2)
    saved = io.BytesIO()
    np.save(saved, want)
    for writer, read in ((NpyWriter, bytes), (IdxGzipWriter, gzip.decompress)):
        f = io.BytesIO()
        w = writer(f, np.uint8, (3, 2))
        w.write(np.arange(4))
        with pytest.raises(ValueError, match="promised 2 more items"):
            w.close()
        w.write(np.array([[4, 5]]))
        w.close()
        assert read(f.getvalue()) == (saved.getvalue() if writer is NpyWriter else idx_bytes(want))

"""The data layer: IDX format against its bytes, every rejection path, dataset resolution."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from vaegen.data import load_dataset, named, to_float
from vaegen.data.idx import idx_bytes, parse_idx, read_idx, write_idx
from vaegen.data.named import FileSpec, NamedDataset
from vaegen.errors import DataError

from .conftest import make_images, write_idx_dataset


def test_idx_bytes_match_the_format_by_hand():
    arr = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.uint8)
    expected = bytes([0, 0, 0x08, 2]) + (2).to_bytes(4, "big") + (3).to_bytes(4, "big")
    assert idx_bytes(arr) == expected + bytes([1, 2, 3, 4, 5, 6])
    ints = np.array([1, -2], dtype=np.int32)
    assert (
        idx_bytes(ints) == bytes([0, 0, 0x0C, 1, 0, 0, 0, 2]) + b"\x00\x00\x00\x01\xff\xff\xff\xfe"
    )


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(
        dtype=st.sampled_from([np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]),
        shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=5),
    )
)
def test_idx_round_trip(arr):
    back = parse_idx(idx_bytes(arr))
    assert back.shape == arr.shape and back.dtype == arr.dtype
    np.testing.assert_array_equal(back, arr)


def test_write_and_read_gz(tmp_path):
    x, _ = make_images(5)
    write_idx(tmp_path / "a.gz", x)
    assert gzip.decompress((tmp_path / "a.gz").read_bytes()) == idx_bytes(x)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), x)
    write_idx(tmp_path / "b.gz", x)  # same array, same bytes (no timestamp in the gzip header)
    assert (tmp_path / "a.gz").read_bytes() == (tmp_path / "b.gz").read_bytes()


GOOD = idx_bytes(np.arange(12, dtype=np.uint8).reshape(3, 4))


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\x00\x00", "too short"),
        (b"\x12\x34" + GOOD[2:], "not an IDX file"),
        (GOOD[:2] + b"\x07" + GOOD[3:], "unknown IDX type code 0x07"),
        (GOOD[:3] + b"\x00", "0 dimensions"),
        (GOOD[:6], "truncated IDX header"),
        (GOOD[:-1], "truncated"),
        (GOOD + b"\x00", "trailing bytes"),
        # 65536^4 bytes: a size that wraps around to 0 in 64-bit integers
        (b"\x00\x00\x08\x04" + (1 << 16).to_bytes(4, "big") * 4, "truncated"),
    ],
)
def test_idx_rejections_name_the_file(tmp_path, payload, message):
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(payload)
    with pytest.raises(DataError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_corrupt_gzip_is_a_clear_error(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(GOOD)[:-8])  # cut the gzip trailer
    with pytest.raises(DataError, match=r"x\.gz: not a valid gzip file"):
        read_idx(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_idx(tmp_path / "nope")


def test_idx_folder_dataset(tiny_data):
    train = load_dataset(tiny_data, "train")
    test = load_dataset(tiny_data, "test")
    assert train.images.shape == (256, 1, 12, 12) and train.images.dtype.is_floating_point is False
    assert len(test) == 64
    assert train.classes == ["shape <0>", "shape <1>", "shape <2>"]
    x, y = make_images(256, seed=0)
    np.testing.assert_array_equal(train.images[:, 0].numpy(), x)
    np.testing.assert_array_equal(train.labels.numpy(), y)


def test_labels_out_of_range_are_refused(tmp_path):
    folder = write_idx_dataset(tmp_path / "d")
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.full(256, 7, dtype=np.uint8))
    with pytest.raises(DataError, match=r"labels span 7\.\.7 but there are 3 classes"):
        load_dataset(folder)


def test_labels_that_are_not_integers_and_unreadable_class_names_are_named(tmp_path):
    folder = write_idx_dataset(tmp_path / "d")
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.full(256, 1.7, dtype=np.float32))
    with pytest.raises(DataError, match="labels are float32; they must be class indices"):
        load_dataset(folder)
    folder = write_idx_dataset(tmp_path / "e")
    (folder / "classes.txt").write_bytes("Café\nThé\nEau\n".encode("cp1252"))
    with pytest.raises(DataError, match=r"classes\.txt: cannot read the class names .* UTF-8"):
        load_dataset(folder)


def test_npz_class_names_saved_as_bytes_and_an_unsupported_zip_method(tmp_path):
    x, y = make_images(10)
    np.savez(tmp_path / "b.npz", x=x, y=y, classes=np.array([b"cat", b"dog", "caf\xe9".encode()]))
    assert load_dataset(tmp_path / "b.npz", test_fraction=0).classes == ["cat", "dog", "caf\xe9"]
    data = bytearray((tmp_path / "b.npz").read_bytes())
    for magic, offset in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):  # the method: Deflate64
        start = data.find(magic)
        while start >= 0:
            data[start + offset : start + offset + 2] = (9).to_bytes(2, "little")
            start = data.find(magic, start + 1)
    (tmp_path / "d64.npz").write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"d64\.npz: not a readable \.npz file"):
        load_dataset(tmp_path / "d64.npz")


def test_label_count_mismatch(tmp_path):
    folder = write_idx_dataset(tmp_path / "d")
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.zeros(5, dtype=np.uint8))
    with pytest.raises(DataError, match="256 images but labels of shape"):
        load_dataset(folder)


def test_npz_dataset_and_pickle_refusal(tmp_path):
    x, y = make_images(10)
    np.savez(tmp_path / "d.npz", x=x, y=y.astype(np.int64))
    ds = load_dataset(tmp_path / "d.npz", test_fraction=0)  # every image, no split
    assert ds.images.shape == (10, 1, 12, 12) and ds.labels.tolist() == y.tolist()
    np.savez(tmp_path / "obj.npz", x=np.array([object()], dtype=object))
    with pytest.raises(DataError, match=r"obj\.npz: not a readable \.npz"):
        load_dataset(tmp_path / "obj.npz")
    np.savez(tmp_path / "nox.npz", images=x)
    with pytest.raises(DataError, match="no array named 'x'"):
        load_dataset(tmp_path / "nox.npz")


def test_image_folder_dataset(tmp_path):
    from PIL import Image

    x, _ = make_images(4)
    for cls in ("cat", "dog"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(x[i]).save(tmp_path / "imgs" / cls / f"{i}.png")
    ds = load_dataset(tmp_path / "imgs", test_fraction=0)  # every image, no split
    assert ds.classes == ["cat", "dog"] and ds.labels.tolist() == [0, 0, 1, 1]
    np.testing.assert_array_equal(ds.images[0, 0].numpy(), x[0])


def test_to_float_scales_pixels_to_the_unit_interval():
    images = torch.tensor([0, 51, 255], dtype=torch.uint8).reshape(1, 1, 1, 3)
    x = to_float(images, torch.device("cpu"))
    assert x.dtype == torch.float32 and x.shape == images.shape
    assert x.flatten().tolist() == pytest.approx([0.0, 0.2, 1.0])
    assert images.dtype == torch.uint8 and images.flatten().tolist() == [0, 51, 255]


def test_unknown_source():
    with pytest.raises(DataError, match="not a named dataset"):
        load_dataset("no-such-thing")


# ------------------------------------------------------------------- named datasets


def _fake_named(tmp_path: Path) -> tuple[NamedDataset, Path]:
    """A named dataset whose 'official' files are tiny ones written here, with real checksums."""
    src = write_idx_dataset(tmp_path / "official", n_train=20, n_test=10)
    files = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        specs = []
        for kind, ndim in (("images", 3), ("labels", 1)):
            name = f"{prefix}-{kind}-idx{ndim}-ubyte.gz"
            gz = (src / name).read_bytes()
            raw = gzip.decompress(gz)
            specs.append(FileSpec(name, len(raw), hashlib.sha256(raw).hexdigest(), None))
        files[split] = tuple(specs)
    ds = NamedDataset("fake", ("a", "b", "c"), files, mirrors=(src.as_uri() + "/",))
    return ds, src


@pytest.fixture
def fake_named(tmp_path, monkeypatch):
    ds, src = _fake_named(tmp_path)
    monkeypatch.setitem(named.NAMED_DATASETS, "fake", ds)
    monkeypatch.setattr(named, "DEBIAN_DATA_DIR", tmp_path / "no-debian")
    return ds, src


def test_named_dataset_downloads_into_the_cache_and_verifies(fake_named, tmp_path):
    train = load_dataset("fake", "train")
    assert len(train) == 20 and train.classes == ["a", "b", "c"]
    assert (tmp_path / "cache" / "vaegen" / "fake" / "train-images-idx3-ubyte.gz").is_file()
    assert len(named.verify("fake")) == 4


def test_vaegen_cache_dir_holds_downloads_too(fake_named, tmp_path, monkeypatch):
    monkeypatch.setenv("VAEGEN_CACHE_DIR", str(tmp_path / "mine"))
    assert len(load_dataset("fake", "test")) == 10
    assert (tmp_path / "mine" / "fake" / "t10k-labels-idx1-ubyte.gz").is_file()
    assert not (tmp_path / "cache" / "vaegen").exists()
    assert named.locate("fake") == tmp_path / "mine" / "fake"


def test_a_data_folder_holding_another_datasets_files_is_passed_over(
    fake_named, tmp_path, monkeypatch, caplog
):
    """MNIST's and FashionMNIST's files have the same names: $VAEGEN_DATA pointing at one's
    folder must not make the other's load fail as corrupt."""
    other = write_idx_dataset(tmp_path / "mnist-files", n_train=20, n_test=10, classes=2)
    monkeypatch.setenv("VAEGEN_DATA", str(other))
    # with nothing else to use, reading them says they may be another dataset's
    with pytest.raises(
        DataError, match=r"mnist-files/train-images.*: checksum .* or another dataset's"
    ):
        named.verify("fake")
    with caplog.at_level("WARNING", logger="vaegen"):
        assert named.locate("fake") == tmp_path / "cache" / "vaegen" / "fake"  # downloaded
    assert f"{other} holds files named as fake's that are not its own" in caplog.text
    assert len(named.verify("fake")) == 4
    _, src = fake_named
    monkeypatch.setenv("VAEGEN_DATA", str(src))  # the dataset's own files: used where they are
    assert named.locate("fake") == src


def test_a_download_cut_short_moves_on_to_the_next_mirror(fake_named, tmp_path):
    import http.server
    import threading

    class CutShort(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # promises 100,000 bytes, sends 10, hangs up
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"0123456789")
            self.close_connection = True

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), CutShort)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        ds, src = fake_named
        cut = f"http://127.0.0.1:{server.server_address[1]}/"
        folder = named.download(ds, tmp_path / "dl", mirrors=[cut, src.as_uri() + "/"])
        assert len(named.verify("fake", folder)) == 4
        with pytest.raises(
            DataError, match=r"(?s)could not download train-images.*IncompleteRead\(10 bytes read"
        ):
            named.download(ds, tmp_path / "dl2", mirrors=[cut])
    finally:
        server.shutdown()


def test_missing_named_dataset_says_the_three_ways(fake_named, monkeypatch):
    ds, _ = fake_named
    monkeypatch.setitem(
        named.NAMED_DATASETS,
        "fake",
        NamedDataset("fake", ds.classes, ds.files, ("file:///nonexistent/",), "dataset-fake"),
    )
    with pytest.raises(DataError) as info:
        load_dataset("fake")
    msg = str(info.value)
    assert "vaegen data fetch fake" in msg and "$VAEGEN_DATA" in msg
    assert "apt-get install dataset-fake" in msg and "download failed" in msg


def test_search_order_prefers_data_dir_then_env(fake_named, tmp_path, monkeypatch):
    _, src = fake_named
    env_dir = write_idx_dataset(tmp_path / "env" / "fake", n_train=20, n_test=10)
    monkeypatch.setenv("VAEGEN_DATA", str(tmp_path / "env"))
    assert named.locate("fake", data_dir=src) == src
    assert named.locate("fake") == env_dir


def test_corrupt_named_file_is_named(fake_named, tmp_path):
    _, src = fake_named
    folder = tmp_path / "mine"
    folder.mkdir()
    for f in src.glob("*.gz"):
        (folder / f.name).write_bytes(f.read_bytes())
    x, _ = make_images(20, seed=5)  # same shape, different content
    write_idx(folder / "train-images-idx3-ubyte.gz", x)
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: checksum mismatch"):
        load_dataset("fake", data_dir=folder)
    write_idx(folder / "train-images-idx3-ubyte.gz", x[:3])
    with pytest.raises(DataError, match=r"bytes after decompression, expected"):
        named.verify("fake", data_dir=folder)


def test_official_gz_md5_is_accepted(tmp_path, monkeypatch):
    """A spec with only the official .gz MD5: a file with that MD5 passes, any other fails."""
    ds, src = _fake_named(tmp_path)
    files = {}
    for split, specs in ds.files.items():
        files[split] = tuple(
            FileSpec(s.name, s.raw_size, None, hashlib.md5((src / s.name).read_bytes()).hexdigest())
            for s in specs
        )
    monkeypatch.setitem(named.NAMED_DATASETS, "fake", NamedDataset("fake", ds.classes, files, ()))
    assert len(load_dataset("fake", "test", data_dir=src)) == 10
    (src / "t10k-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(gzip.decompress((src / "t10k-labels-idx1-ubyte.gz").read_bytes()), mtime=1)
    )
    with pytest.raises(DataError, match="MD5 is not the official one"):
        load_dataset("fake", "test", data_dir=src)


def _gunzip_all(src: Path, dest: Path) -> Path:
    """Uncompressed copies of src's .gz files in dest (`x-ubyte.gz` -> `x-ubyte`)."""
    dest.mkdir(parents=True, exist_ok=True)
    for gz in src.glob("*.gz"):
        (dest / gz.stem).write_bytes(gzip.decompress(gz.read_bytes()))
    return dest


def _flip_last_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF  # a pixel or a label: same size, same IDX header, different content
    path.write_bytes(bytes(raw))


def test_every_named_file_has_a_hash_of_its_content():
    """Without one, an uncompressed copy of the file (no .gz MD5 to compare) cannot be verified."""
    for ds in named.NAMED_DATASETS.values():
        for specs in ds.files.values():
            for spec in specs:
                assert spec.raw_sha256 or spec.raw_md5, f"{ds.name}: {spec.name}"


def test_uncompressed_mnist_files_are_verified_by_content(tmp_path, monkeypatch):
    """MNIST's specs with the same kinds of hash as the real ones, computed from tiny files: an
    uncompressed copy passes and loads like the .gz, and one flipped byte is named."""
    src = write_idx_dataset(tmp_path / "official", n_train=20, n_test=10)  # MNIST's file names

    def like_mnist(spec: FileSpec) -> FileSpec:
        gz = (src / spec.name).read_bytes()
        raw = gzip.decompress(gz)
        return dataclasses.replace(  # a hash MNIST's spec lacks stays absent here
            spec,
            raw_size=len(raw),
            raw_sha256=hashlib.sha256(raw).hexdigest() if spec.raw_sha256 else None,
            raw_md5=hashlib.md5(raw).hexdigest() if spec.raw_md5 else None,
            gz_md5=hashlib.md5(gz).hexdigest() if spec.gz_md5 else None,
        )

    files = {split: tuple(map(like_mnist, specs)) for split, specs in named.MNIST.files.items()}
    mnist = dataclasses.replace(named.MNIST, files=files, mirrors=())
    monkeypatch.setitem(named.NAMED_DATASETS, "mnist", mnist)
    monkeypatch.setattr(named, "DEBIAN_DATA_DIR", tmp_path / "no-debian")
    plain = _gunzip_all(src, tmp_path / "plain")

    checked = named.verify("mnist", plain)
    assert sorted(checked) == sorted(
        plain / s.name.removesuffix(".gz") for s in mnist.files["train"] + mnist.files["test"]
    )
    for split in ("train", "test"):
        a = load_dataset("mnist", split, data_dir=plain)
        b = load_dataset("mnist", split, data_dir=src)
        assert a.classes == [str(i) for i in range(10)]
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)

    _flip_last_byte(plain / "t10k-images-idx3-ubyte")
    with pytest.raises(DataError, match="checksum mismatch") as info:
        load_dataset("mnist", "test", data_dir=plain)
    assert f"{plain / 't10k-images-idx3-ubyte'}: checksum mismatch" in str(info.value)


def test_uncompressed_file_with_only_a_gz_md5_cannot_be_verified(tmp_path, monkeypatch):
    """A spec that knows only the .gz's MD5 has nothing to check an uncompressed file against:
    the error says so and what to do, not that the file is corrupt."""
    ds, src = _fake_named(tmp_path)
    files = {
        split: tuple(
            FileSpec(
                s.name, s.raw_size, gz_md5=hashlib.md5((src / s.name).read_bytes()).hexdigest()
            )
            for s in specs
        )
        for split, specs in ds.files.items()
    }
    monkeypatch.setitem(named.NAMED_DATASETS, "fake", NamedDataset("fake", ds.classes, files, ()))
    monkeypatch.setattr(named, "DEBIAN_DATA_DIR", tmp_path / "no-debian")
    plain = _gunzip_all(src, tmp_path / "plain")
    with pytest.raises(DataError, match="cannot be verified") as info:
        load_dataset("fake", "test", data_dir=plain)
    msg = str(info.value)
    assert str(plain / "t10k-images-idx3-ubyte") in msg and "keep the .gz" in msg
    assert "checksum mismatch" not in msg


def test_pickle_is_never_loaded_as_npz(tmp_path):
    (tmp_path / "p.npz").write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(DataError, match="not a readable"):
        load_dataset(tmp_path / "p.npz")


def test_cli_reports_a_corrupt_file_in_one_line(fake_named, tmp_path, capsys):
    from vaegen.cli import main

    _, src = fake_named
    (src / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b garbage")
    assert main(["data", "verify", "fake", "--data-dir", str(src)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vaegen: error: ") and "t10k-labels-idx1-ubyte.gz" in err
    assert "Traceback" not in err and err.count("\n") == 1

"""The manifest beside every generated output: what it records (the run, the weights' and the
prior's SHA-256, the counts per class, the request), read back for .npz, IDX and PNG outputs; the
certificate of a matching eval.json, and the notes when it does not match; a stale .npz manifest
detected; a user's file or a link at `<OUT>.json` refused before any work and left untouched."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from vaegen import DataConfig, ModelConfig, RunConfig, TrainConfig, load_run
from vaegen._version import __version__
from vaegen.cli import main
from vaegen.errors import VaegenError
from vaegen.sampling.generate import generate_to
from vaegen.sampling.manifest import read_manifest
from vaegen.sampling.priors import fit_prior
from vaegen.training.loop import train

from .conftest import write_idx_dataset

CLASSES = ["shape <0>", "shape <1>", "shape <2>"]


@pytest.fixture(scope="module")
def run_paths(tmp_path_factory):
    """A conditional and an unconditional tiny run, each with a fitted 2-component prior and the
    aggregate posterior."""
    base = tmp_path_factory.mktemp("manifest")
    data = write_idx_dataset(base / "data", n_train=96, n_test=32)
    out = {}
    for conditional in (True, False):
        cfg = RunConfig(
            DataConfig(str(data)),
            ModelConfig(hidden=16, conditional=conditional),
            TrainConfig(epochs=1, batch_size=32, prior_components=2),
        )
        name = "cond" if conditional else "plain"
        run = train(cfg, base / name, progress=False)
        fit_prior(run, components=2)  # the mixture and the aggregate posterior
        out[name] = run.path
    return out


@pytest.fixture
def cond(run_paths, tmp_path):
    """A copy of the conditional run, to write an eval.json into."""
    return load_run(shutil.copytree(run_paths["cond"], tmp_path / "run"))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (links not followed, shown as their target) -> bytes, but the
    lock files generate leaves beside its outputs (vaegen.locks.output_lock)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if re.fullmatch(r"\..+\.lock", p.name):
            continue
        if p.is_symlink():
            out[str(p.relative_to(folder))] = b"-> " + str(p.readlink()).encode()
        elif p.is_file():
            out[str(p.relative_to(folder))] = p.read_bytes()
    return out


def _check_request(m: dict, run, fmt: str, seed: float, temperature: float) -> None:
    """The fields every manifest of the conditional run's 10 images of classes 1 and 2 holds."""
    assert m["vaegen_manifest"] == 1 and m["format"] == fmt and m["vaegen"] == __version__
    assert m["n"] == 10
    assert m["n_per_class"] == {"shape <0>": 0, "shape <1>": 5, "shape <2>": 5}
    assert m["classes"] == CLASSES and m["labels"] == [1, 2]
    assert m["image_shape"] == [1, 12, 12]
    assert m["run"] == str(run.path.absolute())
    assert m["weights_sha256"] == run.weights_sha256()
    assert m["prior"] == {"requested": "fitted", "used": "gmm"}
    assert m["prior_sha256"] == _sha(run.path / "prior" / "prior.safetensors")
    assert m["seed"] == seed and m["temperature"] == temperature
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", m["date"])
    assert m["certificate"] is None and "no eval.json in" in m["certificate_note"]


def test_an_npz_manifest_is_read_back(cond, tmp_path):
    out = tmp_path / "samples.npz"
    written = generate_to(cond, 10, out, labels=["shape <1>", 2], seed=3, temperature=0.8)
    assert written.manifest_path == tmp_path / "samples.npz.json"
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix != ".lock") == [
        "run",
        "samples.npz",
        "samples.npz.json",
    ]
    back = read_manifest(out)
    assert list(back) == ["npz"]
    m = back["npz"]
    _check_request(m, cond, "npz", 3, 0.8)
    assert m["file_sha256"] == _sha(out)
    assert written.manifest == m == json.loads((tmp_path / "samples.npz.json").read_text())
    with np.load(out, allow_pickle=False) as f:  # the .npz itself is what it was
        assert f["x"].shape == (10, 12, 12) and f["y"].tolist() == [1] * 5 + [2] * 5


@pytest.mark.parametrize("fmt", ["idx", "png"])
def test_a_folder_manifest_is_read_back(cond, tmp_path, fmt):
    out = tmp_path / "g"
    written = generate_to(cond, 10, out, fmt=fmt, labels=["shape <1>", 2], seed=3, temperature=0.8)
    assert written.manifest_path == out / ".vaegen-output.json"
    if fmt == "idx":  # the test split beside it has its own manifest
        generate_to(cond, 6, out, split="test", seed=4)
    back = read_manifest(out)
    assert sorted(back) == (["test", "train"] if fmt == "idx" else ["png"])
    m = back["train" if fmt == "idx" else "png"]
    _check_request(m, cond, fmt, 3, 0.8)
    assert "file_sha256" not in m and m["files"]
    assert written.manifest == {k: v for k, v in m.items() if k != "files"}
    if fmt == "idx":
        test = back["test"]
        assert test["seed"] == 4 and test["n_per_class"] == dict.fromkeys(CLASSES, 2)


def test_other_priors_and_an_unconditional_run(run_paths, tmp_path):
    plain = load_run(run_paths["plain"])
    out = tmp_path / "s.npz"
    m = generate_to(plain, 4, out, prior="standard").manifest
    assert m["prior"] == {"requested": "standard", "used": "standard"}
    assert m["prior_sha256"] is None
    assert m["n_per_class"] is None and m["classes"] is None and m["labels"] is None
    m = generate_to(plain, 4, out, prior="posterior", overwrite=True).manifest
    assert m["prior"] == {"requested": "posterior", "used": "posterior"}
    assert m["prior_sha256"] == _sha(plain.path / "prior" / "posterior.safetensors")
    assert read_manifest(out)["npz"] == m


def _eval_json(run, **changes) -> dict:
    """An eval.json as `vaegen evaluate` writes it for the run's weights and fitted prior, with a
    certificate; `changes` replace parts of it ("model", "settings", "certificate")."""
    record = {
        "vaegen_version": __version__,
        "run": str(run.path),
        "model": {"loss": "gaussian", "weights_sha256": run.weights_sha256()},
        "settings": {
            "prior": {
                "requested": "fitted",
                "used": "gmm",
                "sha256": _sha(run.path / "prior" / "prior.safetensors"),
            }
        },
        "certificate": {"frechet": 12.5, "checks": {"passed": True, "list": [1, 2.5, None]}},
    }
    record.update(changes)
    (run.path / "eval.json").write_text(json.dumps(record))
    return record


def test_a_matching_eval_json_puts_its_certificate_in_the_manifest(cond, tmp_path, capsys):
    record = _eval_json(cond)
    out = tmp_path / "c.npz"
    m = generate_to(cond, 10, out, labels=[1, 2]).manifest
    assert m["certificate"] == record["certificate"] and m["certificate_note"] is None
    assert read_manifest(out)["npz"]["certificate"] == record["certificate"]
    m = generate_to(cond, 10, tmp_path / "c", fmt="png", labels=[1, 2]).manifest
    assert read_manifest(tmp_path / "c")["png"]["certificate"] == record["certificate"]
    argv = ["generate", str(cond.path), "--n", "3", "--out", str(tmp_path / "d.npz")]
    assert main(argv) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    assert line == (
        f"manifest: {tmp_path / 'd.npz.json'} (with the certificate of {cond.path / 'eval.json'})"
    )


@pytest.mark.parametrize(
    ("changes", "note"),
    [
        ({"model": {"weights_sha256": "0" * 64}}, "measured other weights than"),
        ({"model": {"loss": "gaussian"}}, "records no weights SHA-256"),
        ({"settings": {"prior": {"used": "standard"}}}, "samples of the 'standard' prior"),
        (
            {"settings": {"prior": {"used": "gmm", "sha256": "1" * 64}}},
            "measured another 'gmm' prior",
        ),
        ({"certificate": None}, "holds no certificate"),
        ({"certificate": [1, 2]}, "a certificate that is not a JSON object"),
        ({"settings": []}, "is malformed: it has no model or settings.prior"),
    ],
)
def test_an_eval_json_of_other_weights_or_another_prior_gives_no_certificate(
    cond, tmp_path, changes, note
):
    _eval_json(cond, **changes)
    out = tmp_path / "c.npz"
    m = generate_to(cond, 4, out).manifest
    assert m["certificate"] is None and note in m["certificate_note"], m["certificate_note"]
    assert read_manifest(out)["npz"]["certificate_note"] == m["certificate_note"]


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", "[" * 100_000])
def test_an_unreadable_eval_json_is_a_note_not_a_crash(cond, tmp_path, text, capsys):
    (cond.path / "eval.json").write_text(text)
    argv = ["generate", str(cond.path), "--n", "3", "--out", str(tmp_path / "c.npz")]
    assert main(argv) == 0
    assert "(no certificate: " in capsys.readouterr().out.splitlines()[-1]
    assert read_manifest(tmp_path / "c.npz")["npz"]["certificate"] is None


def test_a_standard_prior_matches_an_eval_json_of_the_standard_prior(cond, tmp_path):
    record = _eval_json(cond, settings={"prior": {"requested": "standard", "used": "standard"}})
    m = generate_to(cond, 4, tmp_path / "c.npz", prior="standard").manifest
    assert m["certificate"] == record["certificate"]
    m = generate_to(cond, 4, tmp_path / "d.npz").manifest  # the fitted prior: not measured
    assert m["certificate"] is None and "'standard' prior" in m["certificate_note"]


def test_a_changed_npz_makes_its_manifest_stale(cond, tmp_path):
    out = tmp_path / "s.npz"
    generate_to(cond, 6, out)
    read_manifest(out)
    with np.load(out, allow_pickle=False) as f:
        x, y, classes = f["x"], f["y"], f["classes"]
    x[0, 0, 0] ^= 1
    np.savez(out, x=x, y=y, classes=classes)
    with pytest.raises(VaegenError, match=rf"{re.escape(str(out))}\.json is stale: it records"):
        read_manifest(out)


def test_reading_a_missing_or_foreign_manifest_names_the_file(cond, tmp_path):
    out = tmp_path / "s.npz"
    np.savez(out, x=np.zeros((2, 3, 3), np.uint8))  # a user's .npz: no manifest
    with pytest.raises(VaegenError, match=rf"has no manifest: {re.escape(str(out))}\.json"):
        read_manifest(out)
    (tmp_path / "s.npz.json").write_text('{"file_sha256": "abc"}')
    with pytest.raises(VaegenError, match=r"s\.npz\.json is a file vaegen did not write"):
        read_manifest(out)
    (tmp_path / "s.npz.json").unlink()
    (tmp_path / "s.npz.json").symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(VaegenError, match=r"s\.npz\.json is a symbolic link"):
        read_manifest(out)
    (tmp_path / "folder").mkdir()
    with pytest.raises(VaegenError, match=r"folder has no \.vaegen-output\.json"):
        read_manifest(tmp_path / "folder")


def test_an_old_folder_record_is_still_read(tmp_path):
    """A record written before manifests existed: its entries, without the new fields."""
    out = tmp_path / "old"
    out.mkdir()
    entry = {"n": 3, "seed": 0, "prior": "fitted", "files": ["train-images-idx3-ubyte.gz"]}
    (out / ".vaegen-output.json").write_text(
        json.dumps({"format": "idx", "outputs": {"train": entry}})
    )
    assert read_manifest(out) == {"train": entry}


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize("earlier", [False, True])
def test_a_users_file_at_the_manifest_name_is_refused_before_any_work(
    cond, tmp_path, monkeypatch, overwrite, earlier
):
    out = tmp_path / "s.npz"
    if earlier:  # an .npz vaegen wrote, whose manifest the user replaced by a file of theirs
        generate_to(cond, 4, out)
    (tmp_path / "s.npz.json").write_text("my notes about s.npz")
    before = _tree(tmp_path)
    monkeypatch.setattr(sys.modules["vaegen.sampling.generate"], "decoded_chunks", None)
    with pytest.raises(VaegenError) as e:
        generate_to(cond, 6, out, overwrite=overwrite)
    assert f"{out}.json is not JSON" in str(e.value) and "not an .npz manifest vaegen" in str(
        e.value
    )
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("target_exists", [False, True])
def test_a_link_at_the_manifest_name_is_refused(cond, tmp_path, target_exists):
    out = tmp_path / "s.npz"
    elsewhere = tmp_path / "elsewhere.json"
    if target_exists:  # even a link to a manifest vaegen wrote: removing it is not vaegen's
        generate_to(cond, 4, tmp_path / "other.npz")
        shutil.copy(tmp_path / "other.npz.json", elsewhere)
    (tmp_path / "s.npz.json").symlink_to(elsewhere)
    before = _tree(tmp_path)
    for overwrite in (False, True):
        with pytest.raises(VaegenError, match=rf"{re.escape(str(out))}\.json is a symbolic link"):
            generate_to(cond, 4, out, overwrite=overwrite)
    assert _tree(tmp_path) == before and not out.exists()


def test_overwrite_replaces_the_npz_and_its_manifest(cond, tmp_path, capsys):
    out = tmp_path / "s.npz"
    argv = ["generate", str(cond.path), "--n", "4", "--out", str(out)]
    assert main([*argv, "--seed", "1"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith(f"manifest: {out}.json (no cert")
    first = _tree(tmp_path)
    assert main([*argv, "--seed", "2"]) == 2
    assert f"{out} already exists (2 of the output files do)" in capsys.readouterr().err
    assert _tree(tmp_path) == first
    assert main([*argv, "--seed", "2", "--overwrite"]) == 0
    m, old = read_manifest(out)["npz"], json.loads(first["s.npz.json"])
    assert (m["seed"], old["seed"]) == (2, 1)
    assert m["file_sha256"] == _sha(out) != old["file_sha256"]
    assert old["file_sha256"] == hashlib.sha256(first["s.npz"]).hexdigest()
    # a manifest left without its .npz is an output file too
    out.unlink()
    assert main([*argv, "--seed", "3"]) == 2
    assert f"{out}.json already exists (1 of the output files do)" in capsys.readouterr().err
    assert main([*argv, "--seed", "3", "--overwrite"]) == 0
    assert read_manifest(out)["npz"]["seed"] == 3


class _Killed(BaseException):
    pass


def test_no_manifest_ever_describes_other_bytes(cond, tmp_path, monkeypatch):
    """An error while decoding keeps the old pair; a kill at the rename of the new .npz leaves the
    old .npz without a manifest (removed first); one before the new manifest is written leaves
    the new .npz without one. Never a manifest of other bytes, and no temporary left."""
    import vaegen.files
    import vaegen.sampling.manifest as mf

    out = tmp_path / "s.npz"
    generate_to(cond, 4, out, seed=1)
    old = _tree(tmp_path)
    run = load_run(cond.path)  # its decoder made to fail
    decode = run.model.decode

    def failing(z, y=None):
        raise _Killed

    monkeypatch.setattr(run.model, "decode", failing)
    with pytest.raises(_Killed):
        generate_to(run, 4, out, seed=2, overwrite=True)
    assert _tree(tmp_path) == old and read_manifest(out)["npz"]["seed"] == 1
    monkeypatch.setattr(run.model, "decode", decode)

    real_replace = vaegen.files.os.replace

    def killed_at_npz(src, dst):
        if Path(dst) == out:
            raise _Killed
        real_replace(src, dst)

    monkeypatch.setattr(vaegen.files.os, "replace", killed_at_npz)
    with pytest.raises(_Killed):
        generate_to(run, 4, out, seed=2, overwrite=True)
    monkeypatch.setattr(vaegen.files.os, "replace", real_replace)
    assert out.read_bytes() == old["s.npz"] and not (tmp_path / "s.npz.json").exists()
    with pytest.raises(VaegenError, match="has no manifest"):
        read_manifest(out)

    def killed(path, text):
        raise _Killed

    monkeypatch.setattr(mf, "atomic_write_text", killed)
    with pytest.raises(_Killed):
        generate_to(run, 4, out, seed=3, overwrite=True)
    assert out.read_bytes() != old["s.npz"] and not (tmp_path / "s.npz.json").exists()
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]

"""Run files: every damaged, foreign or unsafe file is refused with a message naming it."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from vaegen import load_run
from vaegen.errors import RunError, VaegenError
from vaegen.model.vae import VAE
from vaegen.rundir.checkpoint import load_state
from vaegen.tensorfiles import load_weights, save_weights
from vaegen.training.loop import train

from .test_train import tiny_config


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    from .conftest import write_idx_dataset

    base = tmp_path_factory.mktemp("ckpt")
    out = base / "run"
    train(tiny_config(write_idx_dataset(base / "data"), epochs=1), out, progress=False)
    return out


def _copy_run(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_round_trip(tmp_path):
    model = VAE(hidden=8)
    save_weights(model, tmp_path / "m.safetensors")
    other = VAE(hidden=8)
    load_weights(other, tmp_path / "m.safetensors")
    for a, b in zip(model.state_dict().values(), other.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_truncated_file(tmp_path, run_dir):
    run = _copy_run(run_dir, tmp_path / "r")
    path = run / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(RunError, match=r"model\.safetensors: not a valid safetensors file"):
        load_run(run)


def test_flipped_bytes_in_the_header(tmp_path, run_dir):
    run = _copy_run(run_dir, tmp_path / "r")
    path = run / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[10:14] = b"\xff\xfe\xfd\xfc"
    path.write_bytes(bytes(data))
    with pytest.raises(RunError, match=r"model\.safetensors"):
        load_run(run)


def test_flipped_bytes_in_a_checkpoint_are_caught_by_the_manifest(tmp_path, run_dir):
    run = _copy_run(run_dir, tmp_path / "r")
    (folder,) = [p for p in (run / "state").iterdir() if p.is_dir()]
    path = folder / "optimizer.safetensors"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # inside tensor data: still parses, but the hash differs
    path.write_bytes(bytes(data))
    with pytest.raises(
        RunError, match=r"optimizer\.safetensors: missing or does not match its SHA-256"
    ):
        load_state(run / "state")


@pytest.mark.parametrize(
    "manifest",
    [
        {"checkpoint": "epoch-0009-step-00000099"},  # a folder that is not there
        {},
        None,
        [],
        "FILES",  # the right folder, but no file's hash to check
    ],
)
def test_a_bad_manifest_is_named_and_the_checkpoint_it_lost_is_not_deleted(
    tmp_path, run_dir, manifest
):
    run = _copy_run(run_dir, tmp_path / "r")
    state = run / "state"
    (folder,) = [p for p in state.iterdir() if p.is_dir()]
    if manifest == "FILES":
        manifest = {"checkpoint": folder.name, "files": {}}
    elif isinstance(manifest, dict) and "checkpoint" in manifest:
        manifest["files"] = json.loads((state / "manifest.json").read_text())["files"]
    (state / "manifest.json").write_text(json.dumps(manifest))
    before = sorted(p.name for p in folder.iterdir())
    with pytest.raises(RunError, match=r"manifest\.json: not the manifest of a checkpoint in"):
        train(
            tiny_config(json.loads((run / "config.json").read_text())["data"]["source"], epochs=2),
            run,
            resume=True,
            progress=False,
        )
    assert sorted(p.name for p in folder.iterdir()) == before  # the checkpoint is kept


def test_a_progress_record_of_the_wrong_types_is_named(tmp_path, run_dir):
    import hashlib

    run = _copy_run(run_dir, tmp_path / "r")
    state = run / "state"
    (folder,) = [p for p in state.iterdir() if p.is_dir()]
    info = json.loads((folder / "progress.json").read_text())
    info["progress"]["epoch"] = "1"  # edited, and the manifest's hash made to match
    data = json.dumps(info).encode()
    (folder / "progress.json").write_bytes(data)
    manifest = json.loads((state / "manifest.json").read_text())
    manifest["files"]["progress.json"] = hashlib.sha256(data).hexdigest()
    (state / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RunError, match=r"progress\.json: not a vaegen progress record \(a field"):
        load_state(state)


def test_a_run_folder_that_cannot_be_locked_is_a_one_line_error(tmp_path, tiny_data):
    (tmp_path / "afile").write_text("not a folder")
    with pytest.raises(RunError, match=r"afile is a file, not a run directory"):
        train(tiny_config(tiny_data, epochs=1), tmp_path / "afile", progress=False)


def test_wrong_shapes(tmp_path):
    save_file({k: v for k, v in VAE(hidden=8).state_dict().items()}, tmp_path / "m.safetensors")
    with pytest.raises(
        RunError,
        match=r"tensor 'fc1\.weight' is torch\.float32 \(8, 784\), the model needs torch\.float32 \(16, 784\)",
    ):
        load_weights(VAE(hidden=16), tmp_path / "m.safetensors")


def test_missing_and_unexpected_keys(tmp_path):
    sd = VAE(hidden=8).state_dict()
    sd["extra"] = sd.pop("fc4.bias")
    save_file(sd, tmp_path / "m.safetensors")
    with pytest.raises(RunError, match=r"missing: \['fc4\.bias'\]; unexpected: \['extra'\]"):
        load_weights(VAE(hidden=8), tmp_path / "m.safetensors")


def test_nan_weights_are_refused_on_load_and_never_saved(tmp_path):
    model = VAE(hidden=8)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    sd["fc3.weight"][0, 0] = float("nan")
    save_file(sd, tmp_path / "m.safetensors")
    with pytest.raises(RunError, match=r"tensor 'fc3\.weight' holds NaN"):
        load_weights(VAE(hidden=8), tmp_path / "m.safetensors")
    with torch.no_grad():
        model.fc4.bias[0] = float("inf")
    with pytest.raises(VaegenError, match=r"refusing to save tensor 'fc4\.bias'"):
        save_weights(model, tmp_path / "n.safetensors")
    assert not (tmp_path / "n.safetensors").exists()


class _Payload:
    """Unpickling this creates a file: proof that something unpickled it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_pickle_renamed_to_safetensors_is_never_unpickled(tmp_path, run_dir, writer):
    run = _copy_run(run_dir, tmp_path / "r")
    marker = tmp_path / "PWNED"
    path = run / "model.safetensors"
    if writer == "pickle":
        path.write_bytes(pickle.dumps(_Payload(marker)))
    else:
        torch.save({"x": _Payload(marker)}, path)
    with pytest.raises(RunError, match=r"pickle .* vaegen never unpickles"):
        load_run(run)
    assert not marker.exists()
    # sanity: the payload is live, so the test would catch an unpickling loader
    pickle.loads(pickle.dumps(_Payload(marker)))
    assert marker.exists()


def test_bad_config_json(tmp_path, run_dir):
    run = _copy_run(run_dir, tmp_path / "r")
    (run / "config.json").write_text("{not json")
    with pytest.raises(RunError, match=r"config\.json: not valid JSON"):
        load_run(run)
    (run / "config.json").write_text(json.dumps({"model": {"depth": 3}}))
    with pytest.raises(RunError, match=r"unknown fields \['depth'\]"):
        load_run(run)
    (run / "config.json").write_text(json.dumps({"dataset": "xy"}))
    with pytest.raises(RunError, match=r"config\.json: \"dataset\" must be a JSON object"):
        load_run(run)


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (
            b'{"epoch": 1, "train_loss": 1, "train_recon": 1, "train_kl": 0, "test_loss": 1, '
            b'"test_recon": 1, "test_kl": 0}\n[1, 2]\n',
            r"line 2: not an epoch's record",
        ),
        (b'{"epoch": 1}\n\xff\n', "not UTF-8 text"),
    ],
)
def test_a_metrics_file_with_a_line_that_is_no_record_is_named(tmp_path, run_dir, content, says):
    run = _copy_run(run_dir, tmp_path / "r")
    (run / "metrics.jsonl").write_bytes(content)
    with pytest.raises(RunError, match=rf"metrics\.jsonl.*{says}"):
        load_run(run)


def test_no_temporary_files_are_left(run_dir):
    leftovers = [p for p in run_dir.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []
    assert oct(os.stat(run_dir / "model.safetensors").st_mode & 0o777) != "0o600"

"""The run directory under stress: a second writer, a full disk, a hand-edited config.json, and
what `vaegen train` writes to a log file."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import vaegen
from vaegen import evaluate, files, load_run
from vaegen.cli import main
from vaegen.errors import RunError
from vaegen.training.loop import train

from .conftest import in_ci
from .test_train import assert_same_weights, tiny_config

HOLD_LOCK = """
import sys, time
from pathlib import Path
from vaegen.locks import lock
with lock(Path(sys.argv[1]), ".lock", "training"):
    print("held", flush=True)
    time.sleep(120)
"""


def hold_lock(run_dir: Path) -> subprocess.Popen:
    """Another process that holds RUN/.lock until it is killed."""
    env = {**os.environ, "PYTHONPATH": str(Path(vaegen.__file__).parents[1])}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(run_dir)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_run_directory_in_use_is_refused_until_its_holder_dies(tiny_data, tmp_path, capsys):
    out = tmp_path / "r"
    train(tiny_config(tiny_data, epochs=1), out, progress=False)
    holder = hold_lock(out)
    try:
        pattern = rf"{out} is in use by process {holder.pid} on .*\(training"
        with pytest.raises(RunError, match=pattern):
            train(tiny_config(tiny_data, epochs=2), out, resume=True, progress=False)
        with pytest.raises(RunError, match=pattern):
            evaluate(load_run(out), quick=True, progress=False)
        argv = ["-q", "train", "--out", str(out), "--resume", "--epochs", "2", "--no-plots"]
        assert main(argv) == 2
        assert f"in use by process {holder.pid}" in capsys.readouterr().err
        assert len(load_run(out).metrics) == 1  # nothing was written
    finally:
        holder.kill()  # SIGKILL: no clean-up code runs; the kernel drops the lock
        holder.wait()
    run = train(tiny_config(tiny_data, epochs=2), out, resume=True, progress=False)
    assert [m["epoch"] for m in run.metrics] == [1, 2]


def test_a_failed_start_leaves_no_run_directory(tmp_path):
    out = tmp_path / "never"
    with pytest.raises(Exception, match="is not a named dataset"):
        train(tiny_config(tmp_path / "missing-data", epochs=1), out, progress=False)
    assert not out.exists()


def test_a_full_disk_is_a_one_line_error_and_the_run_resumes(
    tiny_data, tmp_path, capsys, monkeypatch
):
    real_write = files._atomic_write

    def disk_full_at_epoch_2(path: Path, data: bytes) -> None:
        if "epoch-0002" in str(path) and path.name == "optimizer.safetensors":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(path, data)

    monkeypatch.setattr(files, "_atomic_write", disk_full_at_epoch_2)
    out = tmp_path / "r"
    argv = [
        "-q",
        "train",
        "--data",
        str(tiny_data),
        "--hidden",
        "32",
        "--batch-size",
        "32",
        "--epochs",
        "3",
        "--out",
        str(out),
        "--no-plots",
        "--loss",
        "gaussian",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert "No space left on device" in err and "optimizer.safetensors" in err
    assert "epoch-0002-step-00000016" in err and "--resume" in err
    monkeypatch.setattr(files, "_atomic_write", real_write)  # space freed

    assert main([*argv, "--resume"]) == 0
    assert [m["epoch"] for m in load_run(out).metrics] == [1, 2, 3]
    train(tiny_config(tiny_data, epochs=3), tmp_path / "whole", progress=False)
    assert_same_weights(out, tmp_path / "whole")


def test_a_figure_that_cannot_be_written_is_a_one_line_error_and_keeps_the_old_one(
    tiny_data, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "r"
    train(tiny_config(tiny_data, epochs=1), out, progress=False)
    assert main(["-q", "plot", str(out)]) == 0
    before = (out / "figures" / "samples.png").read_bytes()
    real_write = files._atomic_write

    def disk_full(path: Path, data: bytes) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files, "_atomic_write", disk_full)
    assert main(["-q", "plot", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vaegen: error: cannot write") and "figures" in err and "\n" not in err
    monkeypatch.setattr(files, "_atomic_write", real_write)
    assert (out / "figures" / "samples.png").read_bytes() == before
    assert not [p for p in (out / "figures").iterdir() if p.name.startswith(".")]


def test_a_config_field_of_the_wrong_type_is_named(tiny_data, tmp_path, capsys):
    out = tmp_path / "r"
    train(tiny_config(tiny_data, epochs=1), out, progress=False)
    path = out / "config.json"
    good = json.loads(path.read_text())
    for section, key, value, needed in (
        ("model", "latent_dim", "two", "an integer, not str"),
        ("model", "hidden", True, "an integer, not bool"),
        ("train", "lr", "0.001", "a number, not str"),
        ("model", "conditional", 1, "true or false, not int"),
        ("data", "source", None, "a string, not NoneType"),
    ):
        bad = json.loads(json.dumps(good))
        bad[section][key] = value
        path.write_text(json.dumps(bad))
        message = f"{section}.{key} = {value!r} is not valid: it must be {needed}"
        with pytest.raises(RunError, match=f"config.json: {message}".replace("(", r"\(")):
            load_run(out)
        assert main(["generate", str(out), "--n", "4", "--out", str(tmp_path / "g.npz")]) == 2
        assert message in capsys.readouterr().err
    good["train"]["lr"] = 1  # an integer is a number
    path.write_text(json.dumps(good))
    assert load_run(out).config.train.lr == 1


def test_a_log_file_gets_one_line_per_epoch(tiny_data, tmp_path, capsys):
    """Sent to a file (here: captured, not a terminal), training writes its epoch lines and no
    progress-bar refreshes."""
    argv = [
        "train",
        "--data",
        str(tiny_data),
        "--hidden",
        "32",
        "--batch-size",
        "32",
        "--epochs",
        "3",
        "--out",
        str(tmp_path / "r"),
        "--no-plots",
    ]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    assert [line.split()[1] for line in err.splitlines() if line.startswith("epoch ")] == [
        "1/3",
        "2/3",
        "3/3",
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("1", True), ("TRUE", True), ("yes", True), ("", False), ("0", False)],
)
def test_ci_is_recognised_however_it_is_spelled(value, expected):
    assert in_ci({"CI": value}) is expected
    assert in_ci({}) is False


def test_a_preset_sets_its_fields_flags_override_them_and_resume_continues(tiny_data, tmp_path):
    """--preset synth writes the preset's config (conditional, its likelihood, latent size) with
    the flags given beside it on top; the same command plus --resume continues that run; the
    default stays the article's model."""
    from vaegen.rundir.config import PRESETS, RunConfig, TrainConfig

    assert PRESETS["article"] == RunConfig(train=TrainConfig(loss="gaussian"))  # pinned
    synth = PRESETS["synth"]
    out = tmp_path / "synth"
    argv = [
        "-q",
        "train",
        "--preset",
        "synth",
        "--data",
        str(tiny_data),
        "--hidden",
        "8",
        "--epochs",
        "1",
        "--no-plots",
        "--prior-components",
        "0",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == {**vars(synth.model), "hidden": 8}
    assert config["train"] == {**vars(synth.train), "epochs": 1, "prior_components": 0}
    assert config["model"]["conditional"] and config["train"]["loss"] == synth.train.loss
    assert main([*argv[:-4], "--epochs", "2", "--resume", "--out", str(out)]) == 0
    assert [m["epoch"] for m in load_run(out).metrics] == [1, 2]
    with pytest.raises(SystemExit) as e:
        main(["train", "--preset", "nope"])
    assert e.value.code == 2


@pytest.mark.parametrize(("preset", "expected"), [(None, "1000"), ("250", "250")])
def test_importing_vaegen_shortens_openmp_spinning_before_torch_loads(preset, expected):
    """GNU OpenMP reads GOMP_SPINCOUNT once, when torch loads it: vaegen sets it (unless the user
    did) before its first import of torch, so that two processes side by side do not stall."""
    code = (
        "import os, sys; import vaegen; "
        "assert 'torch' in sys.modules; print(os.environ['GOMP_SPINCOUNT'])"
    )
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    if preset is not None:
        env["GOMP_SPINCOUNT"] = preset
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == expected
    source = Path(vaegen.__file__).read_text()
    assert source.index("GOMP_SPINCOUNT") < source.index("\nfrom .")  # before any submodule

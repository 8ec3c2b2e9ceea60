"""vaegen never deletes, truncates or mixes what it did not write: run folders and generated
outputs under careless and hostile use (foreign folders, planted links, kills, two writers)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vaegen import DataConfig, ModelConfig, RunConfig, TrainConfig, load_run
from vaegen.cli import main
from vaegen.data import load_dataset
from vaegen.errors import RunError, VaegenError, WriteError
from vaegen.files import replace_folder, sweep_folder_temporaries, write_group
from vaegen.locks import lock, output_lock
from vaegen.sampling.generate import generate, generate_to
from vaegen.training.loop import train

from .conftest import write_idx_dataset
from .test_train import tiny_config


def _tree(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (links not followed) by relative name -> bytes."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_symlink():
            out[str(p.relative_to(folder))] = b"-> " + os.readlink(p).encode()
        elif p.is_file():
            out[str(p.relative_to(folder))] = p.read_bytes()
    return out


@pytest.fixture(scope="module")
def run_paths(tmp_path_factory):
    """A finished conditional and unconditional tiny run (train, then nothing else)."""
    base = tmp_path_factory.mktemp("safety")
    data = write_idx_dataset(base / "data", n_train=96, n_test=32)
    out = {}
    for conditional in (True, False):
        cfg = RunConfig(
            DataConfig(str(data)),
            ModelConfig(hidden=16, conditional=conditional),
            TrainConfig(epochs=1, batch_size=32, prior_components=2),
        )
        name = "cond" if conditional else "plain"
        out[name] = train(cfg, base / name, progress=False).path
    return out


# ------------------------------------------------------------------------ run directories


def test_train_refuses_a_folder_that_is_not_a_run(tiny_data, tmp_path):
    mine = tmp_path / "mine"
    (mine / "state" / "photos").mkdir(parents=True)
    (mine / "state" / "photos" / "a.jpg").write_bytes(b"jpeg")
    (mine / "metrics.jsonl").write_text("my own numbers\n")
    before = _tree(mine)
    for resume in (False, True):
        with pytest.raises(RunError, match=r"mine is not a vaegen run and not empty \(it holds"):
            train(tiny_config(tiny_data, epochs=1), mine, resume=resume, progress=False)
    assert _tree(mine) == before and not (mine / ".lock").exists()


def test_train_refuses_the_data_folder_as_its_out(tiny_data):
    before = _tree(tiny_data)
    assert main(["-q", "train", "--data", str(tiny_data), "--out", str(tiny_data)]) == 2
    assert _tree(tiny_data) == before  # no state/ or prior/ beside the classes


def test_a_new_run_is_marked_and_an_empty_folder_is_taken(tiny_data, tmp_path):
    (tmp_path / "empty").mkdir()
    run = train(tiny_config(tiny_data, epochs=1), tmp_path / "empty", progress=False)
    assert json.loads((run.path / ".vaegen-run").read_text())["vaegen"]
    # a run without the marker (made before it) is still a run
    (run.path / ".vaegen-run").unlink()
    train(tiny_config(tiny_data, epochs=2), run.path, resume=True, progress=False)
    assert len(load_run(run.path).metrics) == 2 and (run.path / ".vaegen-run").exists()


def test_resume_never_follows_a_linked_state_folder(tiny_data, tmp_path):
    out = tmp_path / "r"
    train(tiny_config(tiny_data, epochs=1), out, progress=False)
    elsewhere = tmp_path / "other-disk"
    (elsewhere / "keep-me").mkdir(parents=True)
    (elsewhere / "keep-me" / "f").write_text("data")
    (elsewhere / ".x.abcdefgh.tmp").write_text("not vaegen's")
    (out / "state").rename(tmp_path / "moved-state")
    (out / "state").symlink_to(elsewhere)
    before = _tree(elsewhere)
    with pytest.raises(RunError, match=r"state is a symbolic link; vaegen never writes"):
        train(tiny_config(tiny_data, epochs=2), out, resume=True, progress=False)
    assert _tree(elsewhere) == before


@pytest.mark.parametrize("command", ["train", "fit-prior", "evaluate"])
def test_a_planted_lock_link_is_refused_and_its_target_untouched(
    run_paths, tmp_path, command, tiny_data
):
    import shutil

    out = Path(shutil.copytree(run_paths["plain"], tmp_path / "r"))
    victim = tmp_path / "precious.txt"
    victim.write_text("someone's file")
    (out / ".lock").unlink(missing_ok=True)
    (out / ".lock").symlink_to(victim)
    argv = {
        "train": ["train", "--out", str(out), "--resume", "--no-plots"],
        "fit-prior": ["fit-prior", str(out)],
        "evaluate": ["evaluate", str(out), "--quick"],
    }[command]
    assert main(["-q", *argv]) == 2
    assert victim.read_text() == "someone's file"


@pytest.mark.parametrize(
    ("plant", "says"), [(Path.symlink_to, "is a symbolic link"), (Path.hardlink_to, "cannot lock")]
)
def test_the_lock_never_opens_a_link(tmp_path, plant, says):
    """Taken on folders that are not runs too (a --feature-net folder): a lock file that is a link
    (symbolic, or another name of someone's file) is refused, and its target keeps its bytes."""
    folder = tmp_path / "features"
    folder.mkdir()
    victim = tmp_path / "precious.txt"
    victim.write_text("someone's file")
    plant(folder / ".lock", victim)
    with pytest.raises(RunError, match=says), lock(folder, ".lock", "training"):
        pass
    assert victim.read_text() == "someone's file"


def test_resume_removes_only_vaegen_temporaries(tiny_data, tmp_path):
    out = tmp_path / "r"
    train(tiny_config(tiny_data, epochs=1), out, progress=False)
    ours = [out / ".model.safetensors.k2j4h5g6.tmp", out / "state" / ".manifest.json.a1b2c3d4.tmp"]
    theirs = [
        out / "notes" / ".draft.a1b2c3d4.tmp",  # a user's folder inside the run
        out / ".my-editor.tmp",  # not a name vaegen gives a temporary
        out / ".notes.txt.a1b2c3d4.tmp",  # mkstemp's shape, but of no file of the run
        out / "state" / "my-notes" / "x",  # a folder not named as a checkpoint
    ]
    for p in ours + theirs:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x")
    train(tiny_config(tiny_data, epochs=2), out, resume=True, progress=False)
    assert not any(p.exists() for p in ours) and all(p.exists() for p in theirs)


def test_a_relative_data_path_is_stored_absolute(tmp_path, monkeypatch):
    write_idx_dataset(tmp_path / "a" / "data", n_train=64, n_test=16, classes=2)
    write_idx_dataset(tmp_path / "b" / "data", n_train=64, n_test=16, classes=3)
    monkeypatch.chdir(tmp_path / "a")
    run = train(tiny_config(Path("data"), epochs=1), tmp_path / "r", progress=False)
    saved = json.loads((run.path / "config.json").read_text())["data"]["source"]
    assert saved == str(tmp_path / "a" / "data")
    # --data-dir too (where a named dataset is looked for first)
    named = RunConfig(DataConfig("fashion-mnist", data_dir="fm"), ModelConfig(hidden=8))
    from vaegen.rundir import resolve_config

    assert resolve_config(named).data.data_dir == str(tmp_path / "a" / "fm")
    monkeypatch.chdir(tmp_path / "b")  # another folder of the same name here
    again = load_run(tmp_path / "r")
    assert Path(again.config.data.source) == tmp_path / "a" / "data"
    # an old run that stored it relative still resumes from where it ran
    cfg = json.loads((run.path / "config.json").read_text())
    cfg["data"]["source"] = "data"
    (run.path / "config.json").write_text(json.dumps(cfg))
    monkeypatch.chdir(tmp_path / "a")
    train(tiny_config(Path("data"), epochs=2), run.path, resume=True, progress=False)


# ------------------------------------------------------------------- generated outputs


def test_generate_refuses_a_folder_it_did_not_write(run_paths, tmp_path):
    run = load_run(run_paths["cond"])
    mine = write_idx_dataset(tmp_path / "mine", n_train=8, n_test=4)
    for name in list(os.listdir(mine)):  # uncompressed IDX: names the old check did not know
        if name.endswith(".gz"):
            import gzip

            (mine / name.removesuffix(".gz")).write_bytes(
                gzip.decompress((mine / name).read_bytes())
            )
            (mine / name).unlink()
    (mine / "classes.txt").unlink()
    before = _tree(mine)
    for fmt in ("idx", "png"):
        for overwrite in (False, True):
            with pytest.raises(VaegenError, match="holds files vaegen did not write"):
                generate_to(run, 6, mine, fmt=fmt, overwrite=overwrite)
    assert _tree(mine) == before
    assert load_dataset(mine).classes == ["0", "1", "2"]  # still the user's: no classes.txt


def test_png_overwrite_never_touches_a_linked_or_user_folder(run_paths, tmp_path):
    run = load_run(run_paths["cond"])
    out = tmp_path / "g"
    generate_to(run, 9, out, fmt="png")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "00000.png").write_bytes(b"someone's png")
    (out / "linked").symlink_to(outside)
    (out / "mine").mkdir()
    (out / "mine" / "00001.png").write_bytes(b"my png")
    before, before_outside = _tree(out), _tree(outside)
    with pytest.raises(VaegenError, match=r"does not name \(linked, mine\)"):
        generate_to(run, 3, out, fmt="png", overwrite=True)
    assert _tree(out) == before and _tree(outside) == before_outside
    # inside a class folder vaegen wrote: a user's file, and a link in place of a numbered PNG
    (out / "linked").unlink()
    (out / "mine" / "00001.png").unlink()
    (out / "mine").rmdir()
    (out / "00_shape_0" / "notes.txt").write_text("mine")
    (out / "01_shape_1" / "00000.png").unlink()
    (out / "01_shape_1" / "00000.png").symlink_to(outside / "00000.png")
    before = _tree(out)
    with pytest.raises(VaegenError, match=r"00_shape_0/notes.txt, 01_shape_1/00000.png"):
        generate_to(run, 3, out, fmt="png", overwrite=True)
    assert _tree(out) == before and _tree(outside) == before_outside


def test_train_and_test_splits_share_an_idx_folder(run_paths, tmp_path):
    cond = load_run(run_paths["cond"])
    out = tmp_path / "synthetic"
    generate_to(cond, 30, out, seed=1)
    generate_to(cond, 12, out, seed=2, split="test")  # the README's recipe: no --overwrite
    train_split, test_split = load_dataset(out, "train"), load_dataset(out, "test")
    assert len(train_split) == 30 and len(test_split) == 12
    assert train_split.classes == test_split.classes == cond.classes
    want, _ = generate(cond, 12, seed=2)
    assert np.array_equal(test_split.images.numpy(), want.numpy())
    # replacing one split keeps the other, byte for byte
    train_bytes = (out / "train-images-idx3-ubyte.gz").read_bytes()
    generate_to(cond, 5, out, seed=3, split="test", overwrite=True)
    assert (out / "train-images-idx3-ubyte.gz").read_bytes() == train_bytes
    assert len(load_dataset(out, "test")) == 5
    record = json.loads((out / ".vaegen-output.json").read_text())
    assert sorted(record["outputs"]) == ["test", "train"]
    assert record["outputs"]["test"]["seed"] == 3 and record["outputs"]["train"]["n"] == 30
    # a user's file with a temporary's shape is the user's too
    (out / ".notes.abcdefgh.tmp").write_text("mine")
    with pytest.raises(VaegenError, match=r"does not name \(\.notes\.abcdefgh\.tmp\)"):
        generate_to(cond, 5, out, seed=3, split="test", overwrite=True)
    (out / ".notes.abcdefgh.tmp").unlink()
    # a split whose files the user deleted is dropped from the record, not an error
    (out / "t10k-images-idx3-ubyte.gz").unlink()
    (out / "t10k-labels-idx1-ubyte.gz").unlink()
    generate_to(cond, 7, out, seed=4, overwrite=True)
    record = json.loads((out / ".vaegen-output.json").read_text())
    assert sorted(record["outputs"]) == ["train"] and len(load_dataset(out, "train")) == 7
    generate_to(cond, 12, out, seed=2, split="test")
    # a split of another dataset (other classes) would break the folder's classes.txt
    plain = load_run(run_paths["plain"])
    before = _tree(out)
    with pytest.raises(VaegenError, match="holds the train split of images with other classes"):
        generate_to(plain, 5, out, split="test", overwrite=True)
    assert _tree(out) == before


def test_two_writers_of_one_output(run_paths, tmp_path):
    run = load_run(run_paths["plain"])
    out = tmp_path / "g"
    with output_lock(out.resolve(), "--out"):  # another writer holds it
        with pytest.raises(VaegenError, match=r"is being written by another process \(\{\"pid"):
            generate_to(run, 4, out)
        with pytest.raises(VaegenError, match=r"another process \(\{\"pid"):  # its note stays
            generate_to(run, 4, out)
    assert not out.exists()
    generate_to(run, 4, out)  # free again


def test_stale_staging_of_a_killed_generate_is_swept(run_paths, tmp_path):
    run = load_run(run_paths["plain"])
    out = tmp_path / "g"
    generate_to(run, 4, out, seed=1)
    stale = tmp_path / ".g.vaegen-new-999999"
    stale.mkdir()
    (stale / "train-images-idx3-ubyte.gz").write_bytes(b"x" * 1000)
    planted = tmp_path / ".g.vaegen-new-link"  # not a name vaegen gives: left alone
    planted.mkdir()
    generate_to(run, 4, out, seed=2, overwrite=True)
    assert not stale.exists() and planted.exists()


def test_a_kill_between_the_two_renames_is_repaired(tmp_path, monkeypatch):
    """Where the folders cannot be exchanged in one step, the old one is renamed aside first; a
    kill then leaves it beside the missing folder, and the next writer puts it back."""
    target = tmp_path / "prior"
    write_group(target, {"a.json": b"old a", "b.safetensors": b"old b"})
    monkeypatch.setattr("vaegen.files._exchange", lambda a, b: False)
    real_rename, calls = os.rename, []

    def killed_on_second(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:
            raise KeyboardInterrupt  # the process dies here
        real_rename(src, dst)

    monkeypatch.setattr("vaegen.files.os.rename", killed_on_second)
    with pytest.raises(KeyboardInterrupt):
        write_group(target, {"a.json": b"new a", "b.safetensors": b"new b"})
    monkeypatch.setattr("vaegen.files.os.rename", real_rename)
    # the interrupt was handled: the old folder is back in place
    assert _tree(target) == {"a.json": b"old a", "b.safetensors": b"old b"}
    # a real kill leaves it aside; the sweep puts it back
    os.rename(target, tmp_path / ".prior.vaegen-old-424242")
    sweep_folder_temporaries(target)
    assert _tree(target) == {"a.json": b"old a", "b.safetensors": b"old b"}


def test_a_group_is_replaced_whole_or_not_at_all(tmp_path):
    target = tmp_path / "prior"
    write_group(target, {"prior.json": b"1", "prior.safetensors": b"1"})
    (target / "user.txt").write_text("kept")

    def failing(folder):
        (folder / "prior.json").write_bytes(b"2")
        raise WriteError("disk full")

    with pytest.raises(WriteError, match=r"^disk full$"):  # named once, not wrapped again
        replace_folder(target, failing, keep=["user.txt"])
    assert _tree(target) == {"prior.json": b"1", "prior.safetensors": b"1", "user.txt": b"kept"}
    assert sorted(os.listdir(tmp_path)) == ["prior"]
    write_group(target, {"prior.json": b"2", "prior.safetensors": b"2"})
    assert _tree(target) == {"prior.json": b"2", "prior.safetensors": b"2", "user.txt": b"kept"}


_SLOW_GENERATE = """
import sys, time
from vaegen.cli import main
from vaegen.sampling import generate as g
real = g.write_idx
def slow(folder, *args):
    names = real(folder, *args)
    print("STAGED", flush=True)
    time.sleep(60)
    return names
g.write_idx = slow
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_stopped_generate_leaves_the_old_output(run_paths, tmp_path, sig):
    out = tmp_path / "g"
    assert main(["-q", "generate", str(run_paths["cond"]), "--n", "6", "--out", str(out)]) == 0
    before = _tree(out)
    script = tmp_path / "slow.py"
    script.write_text(_SLOW_GENERATE)
    argv = ["-q", "generate", str(run_paths["cond"]), "--n", "9", "--out", str(out), "--overwrite"]
    proc = subprocess.Popen(
        [sys.executable, str(script), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout.readline().strip() == b"STAGED"  # the new files are complete, not in place
    proc.send_signal(sig)
    proc.wait(timeout=60)
    assert proc.returncode == (143 if sig == signal.SIGTERM else -signal.SIGKILL)
    if sig == signal.SIGTERM:
        assert b"interrupted; the previous files are kept" in proc.stderr.read()
    assert _tree(out) == before
    staging = [p for p in os.listdir(tmp_path) if ".vaegen-new-" in p]
    assert staging == ([] if sig == signal.SIGTERM else staging) and len(staging) <= 1
    # the next write sweeps what a SIGKILL left, and succeeds
    assert main(["-q", *argv[1:]]) == 0
    assert not [p for p in os.listdir(tmp_path) if ".vaegen-new-" in p]
    assert len(load_dataset(out)) == 9


@pytest.mark.parametrize("command", ["plot", "report"])
def test_plot_and_report_never_write_through_a_linked_figures_folder(run_paths, tmp_path, command):
    import shutil

    out = Path(shutil.copytree(run_paths["plain"], tmp_path / "r"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "samples.png").write_bytes(b"someone's figure")
    shutil.rmtree(out / "figures", ignore_errors=True)
    (out / "figures").symlink_to(elsewhere)
    assert main(["-q", command, str(out)]) == 2
    assert _tree(elsewhere) == {"samples.png": b"someone's figure"}


def test_a_link_in_place_of_a_recorded_name_is_refused(run_paths, tmp_path):
    """A class folder or a file of the record that a user replaced by a link is the user's now:
    replacing the output would remove the link."""
    run = load_run(run_paths["cond"])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    pngs, idx = tmp_path / "pngs", tmp_path / "idx"
    generate_to(run, 9, pngs, fmt="png")
    (pngs / "00_shape_0").rename(elsewhere / "00_shape_0")
    (pngs / "00_shape_0").symlink_to(elsewhere / "00_shape_0")
    generate_to(run, 9, idx)
    (idx / "classes.txt").rename(elsewhere / "classes.txt")
    (idx / "classes.txt").symlink_to(elsewhere / "classes.txt")
    for out, fmt, name in ((pngs, "png", "00_shape_0"), (idx, "idx", "classes.txt")):
        before = _tree(out)
        with pytest.raises(VaegenError, match=rf"does not name \({name}\)"):
            generate_to(run, 9, out, fmt=fmt, seed=5, overwrite=True)
        assert _tree(out) == before and (out / name).is_symlink()


def test_fit_prior_sweeps_what_a_killed_fit_left(run_paths, tmp_path):
    import shutil

    from vaegen.sampling.priors import fit_prior

    out = Path(shutil.copytree(run_paths["plain"], tmp_path / "r"))
    stale = out / ".prior.vaegen-new-999999"
    stale.mkdir()
    (stale / ".prior.safetensors.abcdefgh.tmp").write_bytes(b"x" * 100)
    fit_prior(load_run(out), components=2)
    assert not stale.exists()


def test_a_feature_net_folder_holding_other_files_is_refused_before_training(run_paths, tmp_path):
    from vaegen import evaluate

    mine = tmp_path / "mine"
    (mine / "photos").mkdir(parents=True)
    (mine / "photos" / "a.jpg").write_bytes(b"jpeg")
    before = _tree(mine)
    with pytest.raises(VaegenError, match=r"mine holds files that are not a feature network's"):
        evaluate(load_run(run_paths["cond"]), quick=True, feature_net=mine)
    assert _tree(mine) == before


@pytest.mark.parametrize("world_size", ["1", "2"])
def test_sigterm_unwinds_except_in_a_torchrun_worker(monkeypatch, world_size):
    """A torchrun worker waiting in a collective runs no Python handler; torchrun stops workers
    with SIGTERM, so there it keeps its default (die at once) instead of a 30 s wait."""
    import vaegen.cli

    monkeypatch.setenv("WORLD_SIZE", world_size)
    monkeypatch.setenv("RANK", "0")
    seen = []
    monkeypatch.setitem(
        vaegen.cli._COMMANDS, "report", lambda args: seen.append(signal.getsignal(signal.SIGTERM))
    )
    main(["-q", "report", "RUN"])
    assert (seen[0] is signal.SIG_DFL) == (world_size == "2")

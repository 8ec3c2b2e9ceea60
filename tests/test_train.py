"""Training end to end: the CLI on a tiny dataset, repeatability, exact resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from vaegen import RunConfig, load_run
from vaegen.cli import main
from vaegen.errors import RunError, VaegenError
from vaegen.rundir import read_metrics
from vaegen.rundir.checkpoint import load_state
from vaegen.rundir.config import DataConfig, ModelConfig, TrainConfig
from vaegen.tensorfiles import read_tensors
from vaegen.training.loop import train


def tiny_config(data: Path, epochs: int = 4, **train_kw) -> RunConfig:
    return RunConfig(
        DataConfig(str(data)),
        ModelConfig(hidden=32),
        TrainConfig(epochs=epochs, **{"batch_size": 32, "loss": "gaussian", **train_kw}),
    )


def assert_same_weights(a: Path, b: Path) -> None:
    ta, tb = read_tensors(a / "model.safetensors"), read_tensors(b / "model.safetensors")
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k


def timeless_metrics(run_dir: Path) -> list[dict]:
    """metrics.jsonl without the wall-clock fields."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    clock = ("seconds", "images_per_second")
    return [{k: v for k, v in json.loads(x).items() if k not in clock} for x in lines]


def test_cli_train_writes_the_run_directory(tiny_data, tmp_path, capsys):
    out = tmp_path / "runs" / "t"
    argv = [
        "-q",
        "train",
        "--data",
        str(tiny_data),
        "--epochs",
        "3",
        "--hidden",
        "32",
        "--batch-size",
        "32",
        "--lr",
        "3e-3",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    assert "3 epochs, test gaussian-optimal-sigma loss" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["hidden"] == 32 and config["train"]["epochs"] == 3
    assert config["dataset"]["image_shape"] == [1, 12, 12]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert records[-1]["test_loss"] < records[0]["test_loss"]
    for r in records:
        assert r["test_loss"] == pytest.approx(r["test_recon"] + r["test_kl"])
        assert r["seconds"] > 0
    for name in ("reconstructions", "latent_scatter", "manifold", "loss_curve"):
        with Image.open(out / "figures" / f"{name}.png") as im:
            assert im.size[0] > 300
    # redraw from the saved run alone
    (out / "figures" / "manifold.png").unlink()
    assert main(["plot", str(out)]) == 0
    assert (out / "figures" / "manifold.png").is_file()


def test_existing_run_is_not_overwritten(tiny_data, tmp_path, capsys):
    out = tmp_path / "r"
    train(tiny_config(tiny_data, epochs=1), out, progress=False)
    before = (out / "model.safetensors").read_bytes()
    argv = ["train", "--data", str(tiny_data), "--epochs", "1", "--out", str(out), "--no-plots"]
    assert main(argv) == 2
    assert "already holds a run; pass --resume" in capsys.readouterr().err
    assert (out / "model.safetensors").read_bytes() == before


def test_same_seed_gives_bitwise_identical_weights(tiny_data, tmp_path):
    train(tiny_config(tiny_data, epochs=2), tmp_path / "a", progress=False)
    train(tiny_config(tiny_data, epochs=2), tmp_path / "b", progress=False)
    assert_same_weights(tmp_path / "a", tmp_path / "b")
    train(tiny_config(tiny_data, epochs=2, seed=1), tmp_path / "c", progress=False)
    assert not torch.equal(
        read_tensors(tmp_path / "a" / "model.safetensors")["fc1.weight"],
        read_tensors(tmp_path / "c" / "model.safetensors")["fc1.weight"],
    )


@pytest.mark.parametrize("loss", ["gaussian", "gaussian-optimal-sigma"])  # the sigma a buffer
def test_resume_2_plus_2_equals_4_bitwise(tiny_data, tmp_path, loss):
    train(tiny_config(tiny_data, epochs=4, loss=loss), tmp_path / "full", progress=False)
    train(tiny_config(tiny_data, epochs=2, loss=loss), tmp_path / "split", progress=False)
    run = train(
        tiny_config(tiny_data, epochs=4, loss=loss), tmp_path / "split", resume=True, progress=False
    )
    assert [r["epoch"] for r in run.metrics] == [1, 2, 3, 4]
    assert_same_weights(tmp_path / "full", tmp_path / "split")
    assert timeless_metrics(tmp_path / "full") == timeless_metrics(tmp_path / "split")


def test_resume_from_a_mid_epoch_checkpoint_is_exact(tiny_data, tmp_path):
    train(tiny_config(tiny_data, epochs=2), tmp_path / "full", progress=False)
    cfg = tiny_config(tiny_data, epochs=2)
    # stop after 11 steps (epoch 2, step 3 of 8) with a checkpoint every 3 steps: resumes at step 9
    train(cfg, tmp_path / "cut", progress=False, checkpoint_every=3, max_steps=11)
    train(cfg, tmp_path / "cut", resume=True, progress=False, checkpoint_every=3)
    assert_same_weights(tmp_path / "full", tmp_path / "cut")
    # the epoch's running loss sums come back with the checkpoint: the same train_loss
    assert timeless_metrics(tmp_path / "full") == timeless_metrics(tmp_path / "cut")
    # and so does the global step: the last checkpoint is named after step 16 in both
    for run in ("full", "cut"):
        assert load_state(tmp_path / run / "state").progress.global_step == 16
    manifest = json.loads((tmp_path / "cut" / "state" / "manifest.json").read_text())
    assert manifest["checkpoint"] == "epoch-0002-step-00000016"


def test_resume_edge_cases(tiny_data, tmp_path, caplog):
    cfg = tiny_config(tiny_data, epochs=1)
    # --resume with nothing saved yet starts from the beginning
    train(cfg, tmp_path / "r", resume=True, progress=False)
    assert len(load_run(tmp_path / "r").metrics) == 1
    # a finished run says so and changes nothing
    before = (tmp_path / "r" / "model.safetensors").read_bytes()
    with caplog.at_level("INFO"):
        train(cfg, tmp_path / "r", resume=True, progress=False)
    assert "is finished" in caplog.text
    assert (tmp_path / "r" / "model.safetensors").read_bytes() == before
    # fewer epochs than it has trained: finished, and config.json keeps the epochs trained
    train(tiny_config(tiny_data, epochs=2), tmp_path / "r", resume=True, progress=False)
    again = train(cfg, tmp_path / "r", resume=True, progress=False)
    assert again.config.train.epochs == load_run(tmp_path / "r").config.train.epochs == 2
    # a contradicting config lists the differing fields
    other = tiny_config(tiny_data, epochs=1, lr=0.5, batch_size=16)
    with pytest.raises(
        RunError, match=r"(?s)train\.batch_size: 32 -> 16.*train\.lr: 0\.001 -> 0\.5"
    ):
        train(other, tmp_path / "r", resume=True, progress=False)


class Killed(BaseException):
    """A kill at one write: nothing in vaegen handles it, and what was written stays."""


@pytest.mark.parametrize(
    "dies_at", ["tensorfiles.save_weights", "rundir.write_metrics", "rundir.checkpoint.save_state"]
)
def test_a_run_killed_at_any_write_of_its_last_epoch_resumes_to_whole_files(
    tiny_data, tmp_path, monkeypatch, dies_at
):
    import importlib

    cfg = tiny_config(tiny_data, epochs=2)
    train(cfg, tmp_path / "full", progress=False)
    module, name = dies_at.rsplit(".", 1)
    target = importlib.import_module(f"vaegen.{module}")
    real, calls = getattr(target, name), []

    def dies_the_second_time(*args):
        calls.append(1)
        if len(calls) == 2:  # the second epoch's (the last one's)
            raise Killed
        real(*args)

    monkeypatch.setattr(target, name, dies_the_second_time)
    with pytest.raises(Killed):
        train(cfg, tmp_path / "cut", progress=False)
    monkeypatch.setattr(target, name, real)
    resumed = train(cfg, tmp_path / "cut", resume=True, progress=False)
    assert_same_weights(tmp_path / "full", tmp_path / "cut")
    assert timeless_metrics(tmp_path / "full") == timeless_metrics(tmp_path / "cut")
    want = read_tensors(tmp_path / "full" / "model.safetensors")
    assert all(torch.equal(t, want[k]) for k, t in resumed.model.state_dict().items())


def test_a_finished_run_whose_newest_checkpoint_is_inside_a_later_epoch_ends_at_its_epoch(
    tiny_data, tmp_path
):
    one = train(tiny_config(tiny_data, epochs=1), tmp_path / "one", progress=False)
    # 8 steps an epoch: stopped at step 11 of a 3-epoch run, checkpointed at step 9 (epoch 2)
    train(
        tiny_config(tiny_data, epochs=3),
        tmp_path / "r",
        progress=False,
        checkpoint_every=3,
        max_steps=11,
    )
    assert load_state(tmp_path / "r" / "state").progress.step == 1
    again = train(tiny_config(tiny_data, epochs=1), tmp_path / "r", resume=True, progress=False)
    assert len(again.metrics) == 1
    for k, t in again.model.state_dict().items():  # the first epoch's end, not step 9's
        assert torch.equal(t, one.model.state_dict()[k]), k


def test_max_steps_ending_an_epoch_records_it_and_a_negative_checkpoint_every_is_refused(
    tiny_data, tmp_path
):
    one = train(tiny_config(tiny_data, epochs=1), tmp_path / "one", progress=False)
    cut = train(tiny_config(tiny_data, epochs=2), tmp_path / "r", progress=False, max_steps=8)
    assert [m["epoch"] for m in cut.metrics] == [1]  # 8 steps: all of the first epoch
    assert timeless_metrics(tmp_path / "r") == timeless_metrics(tmp_path / "one")
    assert_same_weights(tmp_path / "r", one.path)
    assert load_state(tmp_path / "r" / "state").progress.epoch == 1
    with pytest.raises(VaegenError, match="checkpoint_every = -2 is not valid"):
        train(tiny_config(tiny_data, epochs=1), tmp_path / "n", checkpoint_every=-2)


def test_resume_removes_what_a_run_killed_in_its_first_write_left(tiny_data, tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / ".lock").touch()
    (out / ".config.json.x1y2z3w4.tmp").write_text(
        "{half"
    )  # mkstemp's name  # killed writing config.json
    train(tiny_config(tiny_data, epochs=1), out, resume=True, progress=False)
    assert not list(out.rglob("*.tmp")) and len(load_run(out).metrics) == 1


def test_cli_resume_keeps_the_saved_config(tiny_data, tmp_path):
    out = tmp_path / "r"
    base = [
        "-q",
        "train",
        "--data",
        str(tiny_data),
        "--hidden",
        "32",
        "--batch-size",
        "32",
        "--out",
        str(out),
        "--no-plots",
    ]
    assert main([*base, "--epochs", "1"]) == 0
    # only --epochs given: the other fields come from config.json, not the defaults
    assert main(["-q", "train", "--out", str(out), "--resume", "--epochs", "2", "--no-plots"]) == 0
    assert len(load_run(out).metrics) == 2


def test_non_finite_loss_stops_with_a_hint(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, epochs=1, lr=1e30)
    with pytest.raises(
        Exception, match=r"the loss became .* at epoch 1, step \d+: try a smaller learning rate"
    ):
        train(cfg, tmp_path / "nan", progress=False)


def test_a_non_finite_test_loss_stops_before_the_epoch_is_recorded(
    tiny_data, tmp_path, monkeypatch
):
    from vaegen.training import loop as module

    real, calls = module.evaluate_loss, []

    def nan_the_second_time(*args, **kwargs):
        calls.append(1)
        out = real(*args, **kwargs)
        return {**out, "kl": float("inf")} if len(calls) == 2 else out

    monkeypatch.setattr(module, "evaluate_loss", nan_the_second_time)
    says = r"the test loss became inf after epoch 2 \(its training loss stayed finite\): .*--lr"
    with pytest.raises(Exception, match=says):
        train(tiny_config(tiny_data, epochs=3), tmp_path / "r", progress=False)
    assert [m["epoch"] for m in read_metrics(tmp_path / "r")] == [1]  # valid JSON, epoch 1 only
    assert load_state(tmp_path / "r" / "state").progress.epoch == 1


@pytest.mark.parametrize(
    ("at_step", "where", "epochs_saved"),
    [(5, "the end of epoch 1", None), (10, "epoch 2, step 3", 1)],
)
def test_an_optimizer_state_that_overflows_while_the_loss_stays_finite_is_named(
    tiny_data, tmp_path, monkeypatch, at_step, where, epochs_saved
):
    """8 steps an epoch, a checkpoint every 11: the state overflowed at `at_step` is refused at
    the next save (the end of epoch 1, or global step 11), with the epoch and step and a hint."""
    from vaegen.training.step import Step

    real = Step.train_step

    def overflowing(self, xb, yb, generator, global_step):
        sums = real(self, xb, yb, generator, global_step)
        if global_step == at_step:  # as Adam's second moments overflow at a huge learning rate
            for state in self.optimizer.state.values():
                state["exp_avg_sq"].view(-1)[0] = float("inf")
        return sums

    monkeypatch.setattr(Step, "train_step", overflowing)
    cfg = tiny_config(tiny_data, epochs=2, step="autograd")
    says = rf"'0\.exp_avg_sq': it holds NaN or infinite values at {where}: try a smaller"
    with pytest.raises(Exception, match=says):
        train(cfg, tmp_path / "r", progress=False, checkpoint_every=11)
    state = load_state(tmp_path / "r" / "state")
    assert (state and state.progress.epoch) == epochs_saved  # the last good checkpoint


def test_conditional_needs_labels(tmp_path):
    import numpy as np

    from .conftest import make_images

    x, _ = make_images(40)
    np.savez(tmp_path / "u.npz", x=x)
    cfg = RunConfig(
        DataConfig(str(tmp_path / "u.npz")), ModelConfig(conditional=True), TrainConfig(epochs=1)
    )
    with pytest.raises(Exception, match="--conditional needs labels"):
        train(cfg, tmp_path / "c", progress=False)


@pytest.mark.parametrize(("n_train", "n_test", "split"), [(64, 0, "test"), (0, 16, "training")])
def test_a_split_without_images_is_named_before_training(tmp_path, n_train, n_test, split):
    from .conftest import write_idx_dataset

    data = write_idx_dataset(tmp_path / "d", n_train=n_train, n_test=n_test)
    with pytest.raises(VaegenError, match=f"d: its {split} split has no images"):
        train(tiny_config(data, epochs=1), tmp_path / "r", progress=False)
    assert not (tmp_path / "r" / "metrics.jsonl").exists()


def test_tensorboard_scalars_match_the_metrics(tiny_data, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    train(tiny_config(tiny_data, epochs=1), out, progress=False, tensorboard=True)
    run = train(
        tiny_config(tiny_data, epochs=2), out, resume=True, progress=False, tensorboard=True
    )
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    logged = events.Scalars("test_loss")
    assert [e.step for e in logged] == [1, 2]  # the resumed run adds epoch 2 once
    for event, record in zip(logged, run.metrics, strict=True):
        assert event.value == pytest.approx(record["test_loss"], rel=1e-6)
    assert {"train_loss", "test_recon", "test_kl", "images_per_second"} <= set(
        events.Tags()["scalars"]
    )


def test_resume_on_another_device_type_is_refused(tiny_data, tmp_path):
    import hashlib

    out = tmp_path / "r"
    train(tiny_config(tiny_data, epochs=1), out, progress=False)
    manifest_path = out / "state" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    progress = out / "state" / manifest["checkpoint"] / "progress.json"
    info = json.loads(progress.read_text())
    info["progress"]["device_type"] = "cuda"  # as if it had been trained on a GPU
    progress.write_bytes(json.dumps(info).encode())
    manifest["files"]["progress.json"] = hashlib.sha256(progress.read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(RunError, match=r"was trained on cuda.*resume it with --device cuda"):
        train(tiny_config(tiny_data, epochs=2), out, resume=True, progress=False)


@pytest.mark.parametrize(
    ("nan_at", "where", "saved"),
    [(4, "step 4-5", 3), (6, "step 6", 3), (7, "step 7-8", 6)],
)
def test_a_nan_checked_every_few_steps_is_caught_before_any_checkpoint(
    tiny_data, tmp_path, monkeypatch, nan_at, where, saved
):
    """On a GPU the loss is checked every few steps, not every step (a check waits for the
    device). Checked every 5 steps here, with a checkpoint every 3 and 8 steps an epoch: a NaN
    from global step `nan_at` on is caught at the next check, the next checkpoint or the epoch's
    end, whichever comes first; the checkpoints on disk hold the last finite weights."""
    from vaegen.training import loop as trainer
    from vaegen.training.step import Step

    monkeypatch.setattr(trainer, "check_every", lambda device: 5)
    real = Step.train_step

    def poisoned(self, xb, yb, generator, global_step):
        sums = real(self, xb, yb, generator, global_step)
        if global_step >= nan_at:  # as a diverging step would leave them
            with torch.no_grad():
                for p in self.optimizer.param_groups[0]["params"]:
                    p.fill_(float("nan"))
            return sums * float("nan")
        return sums

    monkeypatch.setattr(Step, "train_step", poisoned)
    cfg = tiny_config(tiny_data, epochs=2, step="autograd")
    with pytest.raises(Exception, match=rf"the loss became nan at epoch 1, {where}: try"):
        train(cfg, tmp_path / "r", progress=False, checkpoint_every=3)
    state = load_state(tmp_path / "r" / "state")
    assert state is not None and state.progress.global_step == saved
    assert all(bool(torch.isfinite(t).all()) for t in state.model.values())
    assert not (tmp_path / "r" / "model.safetensors").exists()  # no epoch was finished

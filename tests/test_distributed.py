"""Training in two processes with torchrun (DDP, gloo on the CPU) against training in one."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import vaegen
from vaegen import DataConfig, ModelConfig, RunConfig, TrainConfig, train
from vaegen.checkpoint import read_metrics, read_tensors
from vaegen.cli import main
from vaegen.distributed import Processes, from_env
from vaegen.errors import VaegenError

# batch 30 over 256 images: a last batch of 16, and shards of 15 and 15, then 8 and 8
FLAGS = ["--epochs", "2", "--hidden", "32", "--batch-size", "30", "--lr", "3e-3", "--conditional"]


def config(data: Path, epochs: int = 2) -> RunConfig:
    return RunConfig(
        DataConfig(str(data)),
        ModelConfig(hidden=32, conditional=True),
        TrainConfig(epochs=epochs, batch_size=30, lr=3e-3),
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args: list[str], processes: int = 2, ok: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(vaegen.__file__).parents[1])}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(name, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={processes}",
           "--master-addr=127.0.0.1", f"--master-port={free_port()}", "-m", "vaegen", *args]  # fmt: skip
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert (result.returncode == 0) == ok, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def assert_close_runs(a: Path, b: Path) -> None:
    ma, mb = read_metrics(a), read_metrics(b)
    assert [m["epoch"] for m in ma] == [m["epoch"] for m in mb]
    for x, y in zip(ma, mb, strict=True):
        for key in ("train_loss", "train_kl", "test_loss", "test_kl"):
            assert x[key] == pytest.approx(y[key], rel=1e-5), key
    wa, wb = read_tensors(a / "model.safetensors"), read_tensors(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-6)


def test_two_processes_train_like_one(tiny_data, tmp_path):
    """Each process takes half of every batch and the matching half of its noise: the same
    losses and weights as one process, up to the order of float sums. Only process 0 writes."""
    out = tmp_path / "two"
    result = torchrun(["train", "--data", str(tiny_data), *FLAGS, "--out", str(out)])
    assert result.stdout.count("2 epochs, test seed loss") == 1  # one summary, from process 0
    assert result.stdout.count("report:") == 1
    assert (out / "report.html").exists() and len(
        list((out / "figures").glob("manifold_*.png"))
    ) == 3
    one = train(config(tiny_data), tmp_path / "one", progress=False, _fast_step=False)
    assert_close_runs(out, one.path)


def test_resume_with_another_number_of_processes(tiny_data, tmp_path):
    """The math does not depend on the number of processes, so a run started in two may go on in
    one (and ends where a run in one ends, up to float rounding)."""
    out = tmp_path / "run"
    torchrun(["-q", "train", "--data", str(tiny_data), *FLAGS, "--epochs", "1", "--out", str(out),
              "--no-plots"])  # fmt: skip
    assert [m["epoch"] for m in read_metrics(out)] == [1]
    resumed = train(config(tiny_data), out, resume=True, progress=False, _fast_step=False)
    assert [m["epoch"] for m in resumed.metrics] == [1, 2]
    one = train(config(tiny_data), tmp_path / "one", progress=False, _fast_step=False)
    assert_close_runs(out, one.path)


def test_a_non_finite_loss_stops_every_process(tiny_data, tmp_path):
    """The finiteness check reads the loss summed over the processes, so all of them stop at the
    same step (none is left waiting for the others)."""
    out = tmp_path / "nan"
    result = torchrun(
        ["-q", "train", "--data", str(tiny_data), *FLAGS, "--lr", "1e30", "--out", str(out)],
        ok=False,
    )
    assert result.stderr.count("the loss became") == 2
    assert not (out / "model.safetensors").exists()


def test_shards_cover_each_image_once():
    for n in (1, 2, 7, 30, 128):
        for world in (1, 2, 3, 8):
            parts = [Processes(r, world).shard(n) for r in range(world)]
            covered = [i for part in parts for i in range(n)[part]]
            assert covered == list(range(n))
            sizes = [len(range(n)[part]) for part in parts]
            assert max(sizes) - min(sizes) <= 1


def test_process_layout_from_the_environment(monkeypatch):
    assert from_env() == Processes(0, 1, 0)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert from_env() == Processes(3, 4, 1) and not from_env().is_main
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(VaegenError, match="RANK=4 and WORLD_SIZE=4"):
        from_env()
    monkeypatch.setenv("RANK", "one")
    with pytest.raises(VaegenError, match="must be integers"):
        from_env()


def test_several_processes_need_out(tiny_data, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert main(["train", "--data", str(tiny_data), "--epochs", "1"]) == 2
    assert "needs --out" in capsys.readouterr().err

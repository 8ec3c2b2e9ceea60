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
from vaegen import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaegen.cli import main
from vaegen.errors import VaegenError
from vaegen.rundir import read_metrics
from vaegen.tensorfiles import read_tensors
from vaegen.training.distributed import Processes, from_env
from vaegen.training.loop import train

pytestmark = pytest.mark.slow  # each test starts torchrun: 10-25 s

# Runs `vaegen` with every file-system change outside process 0 refused: the test that only
# process 0 writes, deletes or renames anything in the run directory.
GUARD = """
import os, sys
out = os.path.abspath(sys.argv[sys.argv.index("--out") + 1])
if os.environ["RANK"] != "0":
    def refuse(name, real):
        def guarded(path, *args, **kwargs):
            if os.path.abspath(os.fsdecode(path)).startswith(out) and (
                name != "open" or args[0] & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
            ):
                raise AssertionError(f"process {os.environ['RANK']} called os.{name} on {path}")
            return real(path, *args, **kwargs)
        return guarded
    for name in ("open", "replace", "rename", "mkdir", "unlink", "remove", "rmdir"):
        setattr(os, name, refuse(name, getattr(os, name)))
import runpy
runpy.run_module("vaegen", run_name="__main__")  # as `python -m vaegen` (sys.argv[1:] its args)
"""

# Trains through the API, where a caller may read the run directory as soon as train() returns,
# on a machine with no copy of FashionMNIST: both processes need it, one downloads it (here from
# a file:// mirror of Debian's copy) and the other finds it.
AFTER_DOWNLOAD = """
import dataclasses, os, sys
from pathlib import Path
from vaegen.data import named
named.DEBIAN_DATA_DIR = Path("/nonexistent")
named.NAMED_DATASETS["fashion-mnist"] = dataclasses.replace(
    named.NAMED_DATASETS["fashion-mnist"], mirrors=(Path(sys.argv[1]).as_uri() + "/",))
from vaegen import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaegen.training.loop import train  # the training loop alone
from vaegen.rundir import read_metrics
config = RunConfig(DataConfig("fashion-mnist"), ModelConfig(hidden=8), TrainConfig(epochs=1))
run = train(config, sys.argv[2], progress=False)
assert len(read_metrics(sys.argv[2])) == len(run.metrics) == 1, os.environ["RANK"]
sys.stdout.flush()
os._exit(0)  # without the interpreter's teardown, as vaegen/__main__.py leaves a torchrun worker
"""

# One autograd step in each of several processes: the gradients DDP leaves in every process are
# those of the whole batch's summed objective in one process (Adam would hide a wrong scale from
# a comparison of trained weights, since its update does not depend on the gradients' scale).
GRADIENTS = """
import os, torch, torch.distributed as dist
from vaegen.training import distributed
from vaegen.model.likelihoods import likelihood
from vaegen.model.vae import VAE
from vaegen.training.step import make_step, objective
procs = distributed.from_env()
dist.init_process_group("gloo")
torch.manual_seed(0)
model = VAE(image_shape=(1, 6, 6), latent_dim=2, hidden=8, num_classes=3)
alone = VAE(image_shape=(1, 6, 6), latent_dim=2, hidden=8, num_classes=3)
alone.load_state_dict(model.state_dict())
x, y = torch.rand(11, 1, 6, 6, generator=torch.Generator().manual_seed(1)), torch.arange(11) % 3
lk = likelihood("bernoulli")
step = make_step(
    model, lk=lk, beta=0.5, lr=1e-3, wanted="auto", device=torch.device("cpu"), procs=procs,
    batch_size=11, check_batch=(x, y), seed=0,
)
assert step.name == "autograd"
sums = step.forward_backward(x, y, torch.Generator().manual_seed(2))
eps = torch.randn((11, 2), generator=torch.Generator().manual_seed(2))  # the whole batch's noise
want = objective(alone, lk, 0.5, x, y, eps=eps)
want[0].backward()
torch.testing.assert_close(sums, want.detach(), rtol=1e-5, atol=1e-5)
for (name, p), q in zip(model.named_parameters(), alone.parameters()):
    torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-6, msg=name)
# the step's DDP wrapper (and its hold on the process group) freed before the group is destroyed;
# a rare abort at exit ("terminate called without an active exception", seen here and in `vaegen
# train`) comes in the interpreter's teardown (faulthandler crashed listing the threads)
dist.barrier()
del step
dist.destroy_process_group()
os._exit(0)  # without the interpreter's teardown, as vaegen/__main__.py leaves a torchrun worker
"""

# batch 30 over 256 images: a last batch of 16, and shards of 15 and 15, then 8 and 8
FLAGS = [
    "--epochs",
    "2",
    "--hidden",
    "32",
    "--batch-size",
    "30",
    "--lr",
    "3e-3",
    "--conditional",
    "--loss",
    "gaussian",
]


def config(data: Path, epochs: int = 2) -> RunConfig:
    return RunConfig(
        DataConfig(str(data)),
        ModelConfig(hidden=32, conditional=True),
        TrainConfig(epochs=epochs, batch_size=30, lr=3e-3, step="autograd", loss="gaussian"),
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args: list[str], processes: int = 2, ok: bool = True) -> subprocess.CompletedProcess:
    # PYTHONFAULTHANDLER: a process that aborts prints every thread's Python stack
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(vaegen.__file__).parents[1]),
        "PYTHONFAULTHANDLER": "1",
    }
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(name, None)
    launch = args if args[0].endswith(".py") else ["-m", "vaegen", *args]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc-per-node={processes}",
        "--master-addr=127.0.0.1",
        f"--master-port={free_port()}",
        *launch,
    ]
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
    losses and weights as one process, up to the order of float sums. Only process 0 writes
    (the other one fails if it creates, renames or deletes anything in the run directory)."""
    out = tmp_path / "two"
    guard = tmp_path / "guard.py"
    guard.write_text(GUARD)
    result = torchrun(
        [
            str(guard),
            "train",
            "--data",
            str(tiny_data),
            *FLAGS,
            "--out",
            str(out),
            "--checkpoint-every",
            "5",
            "--tensorboard",
        ]
    )
    assert result.stdout.count("2 epochs, test gaussian loss") == 1  # one summary, from process 0
    assert result.stdout.count("report:") == 1
    assert (out / "report.html").exists() and len(
        list((out / "figures").glob("manifold_*.png"))
    ) == 3
    one = train(config(tiny_data), tmp_path / "one", progress=False)
    assert_close_runs(out, one.path)


def test_gradients_in_several_processes_are_the_whole_batchs(tmp_path):
    script = tmp_path / "gradients.py"
    script.write_text(GRADIENTS)
    torchrun([str(script)], processes=2)
    torchrun([str(script)], processes=3)


def test_resume_with_another_number_of_processes(tiny_data, tmp_path):
    """The math does not depend on the number of processes, so a run started in two may go on in
    one (and ends where a run in one ends, up to float rounding)."""
    out = tmp_path / "run"
    torchrun(
        [
            "-q",
            "train",
            "--data",
            str(tiny_data),
            *FLAGS,
            "--epochs",
            "1",
            "--out",
            str(out),
            "--no-plots",
        ]
    )
    assert [m["epoch"] for m in read_metrics(out)] == [1]
    resumed = train(config(tiny_data), out, resume=True, progress=False)
    assert [m["epoch"] for m in resumed.metrics] == [1, 2]
    one = train(config(tiny_data), tmp_path / "one", progress=False)
    assert_close_runs(out, one.path)


def test_one_download_and_every_file_written_when_train_returns(fashion_dir, tmp_path):
    script = tmp_path / "after_download.py"
    script.write_text(AFTER_DOWNLOAD)
    torchrun([str(script), str(fashion_dir), str(tmp_path / "run")])
    cache = tmp_path / "cache" / "vaegen" / "fashion-mnist"  # conftest's XDG_CACHE_HOME
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        p.name for p in fashion_dir.glob("*-ubyte.gz")
    )


def test_a_batch_smaller_than_the_processes(tiny_data, tmp_path):
    """Batches of one image: process 1 gets none, and the math is still one process's, the
    closed-form sigma of own images' default loss included (the whole batch's, from both)."""
    out = tmp_path / "ones"
    flags = ["--epochs", "1", "--hidden", "8", "--batch-size", "1", "--lr", "1e-3"]
    torchrun(["-q", "train", "--data", str(tiny_data), *flags, "--out", str(out), "--no-plots"])
    config = RunConfig(
        DataConfig(str(tiny_data)),
        ModelConfig(hidden=8),
        TrainConfig(epochs=1, batch_size=1, step="autograd", loss="gaussian-optimal-sigma"),
    )
    one = train(config, tmp_path / "one", progress=False)
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


def test_a_failure_of_process_0_alone_is_one_line_in_every_process(tiny_data, tmp_path):
    """Process 0 alone writes the run: when a write fails there, it prints why and leaves, and
    the others, cut off mid-collective, say so in one line instead of a gloo traceback."""
    out = tmp_path / "r"
    (out / "model.safetensors" / "x").mkdir(parents=True)  # the weights cannot be written
    (out / ".vaegen-run").write_text("{}")  # in a run (vaegen writes into no other folder)
    result = torchrun(
        ["-q", "train", "--data", str(tiny_data), *FLAGS, "--out", str(out), "--no-plots"], ok=False
    )
    assert "vaegen: error: cannot write" in result.stderr
    assert "[rank1]: Traceback" not in result.stderr  # (torchrun's own traceback follows)
    if "process 1" in result.stderr:  # unless torchrun stopped it first
        assert "vaegen: error: process 1 stopped: another process left the group" in result.stderr


def test_shards_cover_each_image_once():
    for n in (1, 2, 7, 30, 128):
        for world in (1, 2, 3, 8):
            parts = [Processes(r, world).shard(n) for r in range(world)]
            covered = [i for part in parts for i in range(n)[part]]
            assert covered == list(range(n))
            sizes = [len(range(n)[part]) for part in parts]
            assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize(
    ("argv", "status", "says"),
    [
        (["data", "info", "SOURCE"], 0, "image shape: 1 x 12 x 12"),
        (["data", "info", "/nonexistent.npz"], 2, "vaegen: error: "),
    ],
)
def test_a_torchrun_worker_leaves_with_its_status_and_its_output(tiny_data, argv, status, says):
    """python -m vaegen in a torchrun worker (WORLD_SIZE > 1) skips the interpreter's teardown:
    its exit status and everything it printed still come out."""
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(vaegen.__file__).parents[1]),
        "WORLD_SIZE": "2",
        "RANK": "1",
        "LOCAL_RANK": "1",
    }
    env.pop("PYTHONUNBUFFERED", None)  # output to a pipe stays in Python's buffers until flushed
    argv = [str(tiny_data) if a == "SOURCE" else a for a in argv]
    done = subprocess.run(
        [sys.executable, "-m", "vaegen", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == status and says in done.stdout + done.stderr


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

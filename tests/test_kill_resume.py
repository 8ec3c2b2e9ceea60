"""Training killed with SIGKILL at random moments, resumed each time, ends bitwise where an
uninterrupted run ends, with no damaged or temporary file left."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vaegen import load_run
from vaegen.rundir.checkpoint import load_state

from .test_train import assert_same_weights

# Runs `vaegen` with every run-file write counted; at write number KILL_AT it leaves half the file
# under a temporary name and kills itself with SIGKILL: a kill in the middle of a checkpoint write.
KILLER = """
import os, signal, sys
from pathlib import Path
import vaegen.rundir.checkpoint as ckpt
import vaegen.tensorfiles as tensorfiles
from vaegen.files import atomic_write_bytes
from vaegen.cli import main

kill_at, calls = int(sys.argv[1]), 0

def write_then_die(path, data):
    global calls
    calls += 1
    if calls == kill_at:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / f".{path.name}.killed.tmp").write_bytes(data[: len(data) // 2])
        os.kill(os.getpid(), signal.SIGKILL)
    atomic_write_bytes(path, data)

ckpt.atomic_write_bytes = write_then_die  # the checkpoints
tensorfiles.atomic_write_bytes = write_then_die  # model.safetensors
sys.exit(main(sys.argv[2:]))
"""


def _args(data: Path, out: Path) -> list[str]:
    return [
        "-q",
        "train",
        "--data",
        str(data),
        "--hidden",
        "32",
        "--batch-size",
        "8",
        "--epochs",
        "4",
        "--checkpoint-every",
        "1",
        "--no-plots",
        "--out",
        str(out),
        "--resume",
    ]


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_is_exact(tiny_data, tmp_path):
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    vaegen = [sys.executable, "-m", "vaegen"]
    subprocess.run([*vaegen, *_args(tiny_data, tmp_path / "ref")], check=True, env=env)

    out = tmp_path / "killed"
    killer = tmp_path / "killer.py"
    killer.write_text(KILLER)
    rng = random.Random(1234)
    kills = []
    for attempt in range(12):
        if attempt < 6 and attempt % 2 == 0:  # at a random moment
            proc = subprocess.Popen([*vaegen, *_args(tiny_data, out)], env=env)
            # once this process has checkpointed (startup time varies by machine), a random moment
            manifest = out / "state" / "manifest.json"
            before = manifest.stat().st_mtime_ns if manifest.exists() else None
            deadline = time.monotonic() + 60
            while proc.poll() is None and time.monotonic() < deadline:
                if manifest.exists() and manifest.stat().st_mtime_ns != before:
                    break
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.3))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            code = proc.wait()
        elif attempt < 6:  # in the middle of the k-th file write
            k = rng.randint(2, 40)
            code = subprocess.run(
                [sys.executable, str(killer), str(k), *_args(tiny_data, out)], env=env
            ).returncode
        else:
            code = subprocess.run([*vaegen, *_args(tiny_data, out)], env=env).returncode
        if code == 0:
            break
        assert code == -signal.SIGKILL, f"training failed with exit status {code}"
        kills.append(attempt)
    else:
        pytest.fail("training never finished")
    assert len(kills) >= 5, f"only {len(kills)} kills happened: the run finished too fast to test"
    assert_same_weights(tmp_path / "ref", out)
    assert [r["epoch"] for r in load_run(out).metrics] == [1, 2, 3, 4]
    assert load_state(out / "state").progress.epoch == 4
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert len([p for p in (out / "state").iterdir() if p.is_dir()]) == 1

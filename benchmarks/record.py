"""Measurements as data: every benchmark appends what it measured to benchmarks/results/NAME.jsonl.

One JSON object a line, with the provenance a reader needs to weigh the numbers: the command, the
git commit (and whether the working tree had changes), vaegen's and torch's versions, the CPU (and
GPU) model, torch's thread count and the machine's core count, the date, and the results.
`scripts/render_results.py` renders the tables of docs/results/ (and README.md's) from these files.

VAEGEN_RESULTS_DIR, when set, is the folder written instead of benchmarks/results (the tests set
it, so that they never append to the committed files).

A benchmark imports this file as a sibling module (benchmarks/ holds scripts, not a package):

    sys.path.insert(0, str(Path(__file__).parent))
    from record import append_result
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
RESULTS_ENV = "VAEGEN_RESULTS_DIR"
# The fields every record carries (transcribed ones add "source": where they were copied from).
PROVENANCE = (
    "benchmark",
    "command",
    "commit",
    "dirty",
    "vaegen",
    "torch",
    "machine",
    "threads",
    "cores",
    "date",
)


def results_dir() -> Path:
    """Where records go: $VAEGEN_RESULTS_DIR when set, else benchmarks/results."""
    return Path(os.environ[RESULTS_ENV]) if os.environ.get(RESULTS_ENV) else RESULTS


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def commit() -> tuple[str | None, bool | None]:
    """HEAD's hash and whether the working tree differs from it (the results folder aside: a
    record appended there does not make the next measurement's code dirty). (None, None) outside
    a git checkout."""
    head = _git("rev-parse", "HEAD")
    if head is None:
        return None, None
    status = _git("status", "--porcelain", "--", ".", f":(exclude){RESULTS.relative_to(REPO)}")
    return head.strip(), None if status is None else bool(status.strip())


def cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    for line in out.splitlines():
        if line.strip().startswith("Model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or None


def machine() -> dict[str, str | None]:
    import torch

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {"cpu": cpu_model(), "gpu": gpu}


def vaegen_version() -> str | None:
    try:
        import vaegen
    except ImportError:
        return None
    return getattr(vaegen, "__version__", None)


def default_command() -> list[str]:
    """sys.argv, the script named relative to the repository when it lies inside it."""
    argv = list(sys.argv)
    if argv and argv[0]:
        script = Path(argv[0]).resolve()
        if script.is_relative_to(REPO):
            argv[0] = script.relative_to(REPO).as_posix()
    return argv


def _plain(value: Any) -> Any:
    """JSON for numpy and torch scalars (their .item()); anything else unknown is an error."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"a result of type {type(value).__name__} is not JSON: {value!r}")


def make_record(benchmark: str, results: dict, *, command: list[str] | None = None) -> dict:
    import torch

    head, dirty = commit()
    return {
        "benchmark": benchmark,
        "command": default_command() if command is None else list(command),
        "commit": head,
        "dirty": dirty,
        "vaegen": vaegen_version(),
        "torch": torch.__version__,
        "machine": machine(),
        "threads": torch.get_num_threads(),
        "cores": os.cpu_count(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "results": results,
    }


def append_result(benchmark: str, results: dict, *, command: list[str] | None = None) -> Path:
    """Append one record (provenance and `results`) to RESULTS/<benchmark>.jsonl; its path."""
    if not benchmark or Path(benchmark).name != benchmark or benchmark.startswith("."):
        raise ValueError(f"a benchmark name is a plain file stem, not {benchmark!r}")
    record = make_record(benchmark, results, command=command)
    line = json.dumps(record, ensure_ascii=False, allow_nan=False, default=_plain)
    folder = results_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{benchmark}.jsonl"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")
    print(f"recorded in {path}", file=sys.stderr)
    return path

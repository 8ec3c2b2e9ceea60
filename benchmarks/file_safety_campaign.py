"""A campaign against vaegen's file-safety promises, driving the real command line.

It writes a tiny IDX dataset (numpy, 128 train / 32 test 12 x 12 images, 3 classes), trains a
tiny conditional run with `vaegen train`, and then attacks what vaegen writes, each command a
`python -m vaegen` subprocess:

  a. kill -9 `generate --overwrite` (IDX and PNG) over an earlier output at a random moment
     (a delay from the seeded RNG, from the start to after completion, or counted from the moment
     the staging folder appears): the output is byte-identical to the old one or to the complete
     new one (an uninterrupted generate with the same seed into another folder), never a mix; the
     next generate to it succeeds and leaves no `.OUT.vaegen-new-*` beside it.
  b. kill -9 `fit-prior RUN --components K` (K alternating between 2 and 3) at random moments:
     RUN/prior/ is the old four files byte for byte or a complete new set (prior.json's component
     count matches prior.safetensors' shapes, both JSONs name the same weights, the bytes equal a
     completed fit of that K); `generate` from the run still works; then an uninterrupted
     fit-prior is whole, and `train --resume` removes what the kills left and keeps the prior.
  c. SIGTERM `generate --overwrite` while its staging folder is being written: exit 143, the old
     output intact, no staging left.
  d. planted files: a foreign non-empty folder as `train --out` and as `generate --out` (with and
     without --overwrite); a run whose `state` is a link to a folder with contents; `.lock` a
     symbolic or hard link to a victim file; a PNG output with a user file in a class folder, a
     linked sub-folder pointing outside, a class folder that is itself a link; an IDX output whose
     classes.txt is a link: each command exits 2 with one `vaegen: error:` line (no traceback)
     and every planted file, link and link target stays byte-identical.
  e. race: two `generate --overwrite` (different seeds) to one output at once: at most one fails,
     saying the output is being written by another process; the output is exactly one writer's.
  f. full disk (root, and `mount -t tmpfs` works; else reported as skipped): a run copy and an
     output on a small tmpfs filled nearly full; `generate --overwrite` and `fit-prior` fail with a
     one-line error, the old files intact, no temporaries (`*.tmp`, `*.vaegen-new-*`) left. The
     tmpfs is always unmounted.

Each case (and round) is one JSON line on stdout: {"case", "round", "outcome", "details"}, outcome
passed, failed, skipped or error (the campaign itself broke). The exit status is 1 when any case
failed or broke. A summary goes to stderr.

    python benchmarks/file_safety_campaign.py [--quick] [--seed S] [--rounds R] [--workdir DIR]
                                              [--jobs J]

--quick runs one or two rounds per case (about a minute on 2 cores); the default runs --rounds
(4) of each, a few minutes. --workdir keeps everything there (default: a temporary folder,
removed unless something failed). --jobs runs that many cases at once (default 2).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from record import append_result

VAEGEN = [sys.executable, "-m", "vaegen", "-q"]
CLASSES = ("a", "b", "c")
TIMEOUT = 300  # seconds any one command may take before the campaign calls it hung
STAGING_RE = re.compile(r"\.vaegen-(new|old)-\d+$")
TMP_RE = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


class Failed(Exception):
    """A promise vaegen broke: the case fails with this message."""


class Skipped(Exception):
    """The case cannot run here (no root, no tmpfs): reported as skipped."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise Failed(message)


# ----------------------------------------------------------------------------- data and files


def write_idx(path: Path, array: np.ndarray) -> None:
    """An MNIST-style IDX file of uint8 `array`, gzip-compressed."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + np.ascontiguousarray(array).tobytes(), mtime=0))


def write_dataset(folder: Path, n_train: int = 128, n_test: int = 32, size: int = 12) -> Path:
    """Bars and a diagonal with noise, one shape per class, as train-/t10k- IDX files."""
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        rng = np.random.default_rng(seed)
        y = np.arange(n) % len(CLASSES)
        x = rng.integers(0, 40, size=(n, size, size)).astype(np.float64)
        for c in range(len(CLASSES)):
            canvas = np.zeros((size, size))
            if c == 0:
                canvas[size // 2 - 1 : size // 2 + 1, :] = 1
            elif c == 1:
                canvas[:, size // 2 - 1 : size // 2 + 1] = 1
            else:
                np.fill_diagonal(canvas, 1)
            x[y == c] += 200 * canvas
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", np.clip(x, 0, 255).astype(np.uint8))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", y.astype(np.uint8))
    (folder / "classes.txt").write_text("".join(f"{c}\n" for c in CLASSES))
    return folder


def tree(folder: Path) -> dict[str, Any]:
    """Everything under `folder`, links not followed: relative name -> bytes, "<dir>", or
    "-> TARGET" for a symbolic link. A generated folder's record (.vaegen-output.json) is read
    without the date of each output's manifest: two writes of the same output differ only there."""
    out: dict[str, Any] = {}

    def walk(d: Path, rel: str) -> None:
        for entry in sorted(os.scandir(d), key=lambda e: e.name):
            name = f"{rel}{entry.name}"
            if entry.is_symlink():
                out[name] = "-> " + os.readlink(entry.path)
            elif entry.is_dir():
                out[name] = "<dir>"
                walk(Path(entry.path), name + "/")
            else:
                out[name] = _undated(Path(entry.path))

    if folder.is_dir() and not folder.is_symlink():
        walk(folder, "")
    return out


def _undated(path: Path) -> bytes:
    """The bytes of `path`; of a generated folder's record, without its manifests' dates (a
    record that is not valid JSON, as a kill could never leave it, is compared byte for byte)."""
    data = path.read_bytes()
    if path.name != ".vaegen-output.json":
        return data
    try:
        record = json.loads(data)
        for entry in record["outputs"].values():
            entry.pop("date", None)
    except (ValueError, KeyError, TypeError, AttributeError):
        return data
    return json.dumps(record, sort_keys=True).encode()


def tree_diff(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What changed between two trees, as a short list of names."""
    changed = [f"changed {k}" for k in before if k in after and before[k] != after[k]]
    return (
        [f"removed {k}" for k in before if k not in after]
        + [f"added {k}" for k in after if k not in before]
        + changed
    )[:8]


def leftovers(root: Path) -> list[str]:
    """vaegen's temporaries anywhere under `root` (links not followed): staging or old folders
    (.NAME.vaegen-new-PID, .NAME.vaegen-old-PID) and atomic-write temporaries
    (.NAME.xxxxxxxx.tmp)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            if STAGING_RE.search(name) or TMP_RE.match(name):
                found.append(os.path.relpath(os.path.join(dirpath, name), root))
    return sorted(found)


def staging_beside(out: Path) -> list[str]:
    prefix = f".{out.name}.vaegen-"
    return sorted(n for n in os.listdir(out.parent) if n.startswith(prefix))


def safetensors_header(path: Path) -> dict[str, Any]:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n])


# ----------------------------------------------------------------------------- commands


@dataclass
class Result:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    staging_at: float | None = None  # seconds from the start until a staging folder appeared
    staging_gone: float | None = None  # ... until it was gone again (exchanged and removed)

    def short(self) -> dict[str, Any]:
        err = self.stderr.strip().splitlines()
        return {"argv": " ".join(self.argv), "rc": self.returncode, "stderr": err[-3:]}


class Env:
    def __init__(self, workdir: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VAEGEN_")}
        env.update(XDG_CACHE_HOME=str(workdir / "cache"), OMP_NUM_THREADS="1")
        env.pop("CI", None)
        self.env = env

    def popen(self, args: list[str]) -> subprocess.Popen:
        return subprocess.Popen(
            [*VAEGEN, *map(str, args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env,
            text=True,
        )

    def run(self, args: list[str], watch: Path | None = None, prefix: str = "") -> Result:
        """Run vaegen to the end; with `watch`, note when a folder named `prefix`... (a staging
        folder) appears in it and when it is gone again."""
        t0 = time.monotonic()
        proc = self.popen(args)
        seen = gone = None
        if watch is not None:
            while proc.poll() is None:
                there = _has(watch, prefix)
                if seen is None and there:
                    seen = time.monotonic() - t0
                elif seen is not None and gone is None and not there:
                    gone = time.monotonic() - t0
                time.sleep(0.001)
        try:
            out, err = proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise Failed(f"vaegen {' '.join(map(str, args))} hung for {TIMEOUT} s") from None
        end = time.monotonic() - t0
        return Result(list(map(str, args)), proc.returncode, out, err, end, seen, gone)

    def ok(self, args: list[str], **kw: Any) -> Result:
        r = self.run(args, **kw)
        check(r.returncode == 0, f"vaegen {' '.join(r.argv)} failed: {r.stderr.strip()[-600:]}")
        return r

    def refused(self, args: list[str]) -> Result:
        """Run a command that must be refused: exit 2, one `vaegen: error:` line."""
        r = self.run(args)
        check(
            r.returncode == 2,
            f"exit {r.returncode}, not 2: vaegen {' '.join(r.argv)}: {r.stderr.strip()[-600:]}",
        )
        check_one_line_error(r)
        return r

    def stopped(
        self,
        args: list[str],
        sig: int,
        watch: Path,
        prefix: str,
        after_staging: bool,
        delay: Callable[[], float],
    ) -> tuple[Result, str]:
        """Start vaegen and send `sig` after delay() seconds, counted from the start or, with
        `after_staging`, from the moment a folder named `prefix`... (its staging folder) appears
        in `watch`. Returns the result and when the signal landed: 'before staging', 'while
        staging' (the staging folder was there), 'after staging' (it had come and gone; the
        process was finishing) or 'after exit'."""
        stale = _names(watch, prefix)  # a killed process's staging: not this one's
        t0 = time.monotonic()
        proc = self.popen(args)
        seen = None
        if after_staging:
            while proc.poll() is None and not _has(watch, prefix, stale):
                time.sleep(0.001)
            seen = time.monotonic() - t0
        end = time.monotonic() + delay()
        while proc.poll() is None and time.monotonic() < end:
            if seen is None and _has(watch, prefix, stale):
                seen = time.monotonic() - t0
            time.sleep(0.001)
        if proc.poll() is None:
            staged = _has(watch, prefix, stale)
            proc.send_signal(sig)
            if staged:
                when = "while staging"
            else:
                when = "before staging" if seen is None else "after staging"
        else:
            when = "after exit"
        try:
            out, err = proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise Failed(f"vaegen {' '.join(map(str, args))} did not stop after {sig}") from None
        r = Result(list(map(str, args)), proc.returncode, out, err, time.monotonic() - t0, seen)
        return r, when


def _has(folder: Path, prefix: str, ignore: frozenset[str] = frozenset()) -> bool:
    """Whether `folder` holds a name starting with `prefix` (other than those in `ignore`)."""
    try:
        return any(n.startswith(prefix) and n not in ignore for n in os.listdir(folder))
    except OSError:
        return False


def _names(folder: Path, prefix: str) -> frozenset[str]:
    try:
        return frozenset(n for n in os.listdir(folder) if n.startswith(prefix))
    except OSError:
        return frozenset()


def check_one_line_error(r: Result) -> None:
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    check("Traceback" not in r.stderr, f"a traceback from vaegen {' '.join(r.argv)}: {r.stderr}")
    check(
        len(lines) == 1 and lines[0].startswith("vaegen: error: "),
        f"not one 'vaegen: error:' line from vaegen {' '.join(r.argv)}: {r.stderr.strip()!r}",
    )


# ----------------------------------------------------------------------------- the campaign


@dataclass(frozen=True)
class Timing:
    """An uninterrupted command: seconds to its end, and from its start until its staging folder
    appeared and was gone again."""

    total: float
    staged: float
    window: float

    @classmethod
    def of(cls, r: Result) -> Timing:
        staged = r.staging_at if r.staging_at is not None else r.seconds
        gone = r.staging_gone if r.staging_gone is not None else r.seconds
        return cls(r.seconds, staged, max(gone - staged, 0.005))


@dataclass
class Fixture:
    """What every case starts from: the trained run and reference outputs (seed 1 and 2) of each
    folder format, with how long an uninterrupted generate took and when its staging appeared."""

    root: Path
    env: Env
    data: Path
    run: Path
    n: dict[str, int]
    refs: dict[tuple[str, int], Path] = field(default_factory=dict)
    timing: dict[str, Timing] = field(default_factory=dict)

    def generate_args(self, fmt: str, seed: int, out: Path, overwrite: bool = True) -> list[str]:
        args = ["generate", self.run, "--n", self.n[fmt], "--seed", seed, "--out", out]
        return [*args, "--format", fmt] + (["--overwrite"] if overwrite else [])

    def old_output(self, fmt: str, out: Path) -> dict[str, Any]:
        """`out` made a copy of the seed-1 reference (a complete vaegen output); its tree."""
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(self.refs[fmt, 1], out, symlinks=True)
        return tree(out)

    def run_copy(self, dest: Path) -> Path:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(self.run, dest, symlinks=True)
        return dest


def setup(root: Path, env: Env, quick: bool) -> Fixture:
    data = write_dataset(root / "data")
    run = root / "run"
    env.ok(
        [
            "train",
            "--data",
            data,
            "--hidden",
            16,
            "--epochs",
            2,
            "--batch-size",
            32,
            "--conditional",
            "--prior-components",
            2,
            "--no-plots",
            "--out",
            run,
        ]
    )
    fx = Fixture(root, env, data, run, {"idx": 3000, "png": 300 if quick else 1500})
    for fmt in ("idx", "png"):
        for seed in (1, 2):
            out = root / "refs" / f"{fmt}-seed{seed}"
            r = env.ok(
                fx.generate_args(fmt, seed, out, overwrite=False),
                watch=out.parent,
                prefix=f".{out.name}.vaegen-",
            )
            fx.refs[fmt, seed] = out
            if seed == 2:
                fx.timing[fmt] = Timing.of(r)
        check(tree(fx.refs[fmt, 1]) != tree(fx.refs[fmt, 2]), "seeds 1 and 2 gave one output")
    return fx  # same seed, same bytes: case a's next generate checks it against refs[fmt, 1]


Report = Callable[[str, int, str, dict[str, Any]], None]


def kill_delay(rng: random.Random, t: Timing) -> tuple[str, Callable[[], float]]:
    """Half the kills land at a uniform moment from the start to after completion; the other
    half after the staging folder appears, spread over its life and a little after it."""
    if rng.random() < 0.5:
        d = rng.uniform(0.0, 1.2 * t.total)
        return f"blind {d:.3f}s", lambda: d
    d = rng.uniform(0.0, 1.5 * t.window)
    return f"after staging +{d:.3f}s", lambda: d


def case_a(fx: Fixture, fmt: str, rounds: int, rng: random.Random, report: Report) -> None:
    """kill -9 generate --overwrite: old or new output, never a mix; the next generate works."""
    base = fx.root / f"a-{fmt}"
    out = base / "out"
    old = fx.old_output(fmt, out)
    new = tree(fx.refs[fmt, 2])
    for r in range(rounds):
        name = f"a:kill-generate-{fmt}"
        details: dict[str, Any] = {}
        try:
            how, delay = kill_delay(rng, fx.timing[fmt])
            res, when = fx.env.stopped(
                fx.generate_args(fmt, 2, out),
                signal.SIGKILL,
                base,
                f".{out.name}.vaegen-",
                "staging" in how,
                delay,
            )
            now = tree(out)
            got = "old" if now == old else "new" if now == new else "MIX"
            details = {
                "kill": how,
                "landed": when,
                "rc": res.returncode,
                "output": got,
                "staging_left": staging_beside(out),
            }
            check(
                got != "MIX",
                f"after kill -9 the output is neither old nor new: "
                f"{tree_diff(old, now)} (vs old) / {tree_diff(new, now)} (vs new)",
            )
            if res.returncode == 0:
                check(got == "new", "generate finished but the output is not the new one")
            nxt = fx.env.ok(fx.generate_args(fmt, 1, out))
            details["next_rc"] = nxt.returncode
            check(
                tree(out) == old,
                f"the next generate did not write the old output again: "
                f"{tree_diff(old, tree(out))}",
            )
            left = staging_beside(out)
            check(not left, f"the next generate left {left} beside the output")
            report(name, r, "passed", details)
        except Failed as e:
            report(name, r, "failed", {**details, "error": str(e)})
            old = tree(out) if out.exists() else old  # go on from whatever is there


PRIOR_FILES = ("posterior.json", "posterior.safetensors", "prior.json", "prior.safetensors")


def prior_set(run: Path) -> dict[str, Any]:
    return tree(run / "prior")


def check_complete_prior(files: dict[str, Any], k: int) -> None:
    """Four files from one fit of `k` components."""
    check(sorted(files) == sorted(PRIOR_FILES), f"prior/ holds {sorted(files)}")
    info = json.loads(files["prior.json"])
    post = json.loads(files["posterior.json"])
    check(info["components"] == k, f"prior.json has {info['components']} components, not {k}")
    with tempfile.NamedTemporaryFile() as f:
        f.write(files["prior.safetensors"])
        f.flush()
        header = safetensors_header(Path(f.name))
    weights = header["weights"]["shape"]
    check(
        weights[-1] == k and header["means"]["shape"][-2] == k,
        f"prior.safetensors' shapes {weights} do not hold {k} components",
    )
    check(
        all(c["components"] <= weights[-1] for c in info["per_class"]),
        "prior.json's per-class components exceed the tensors'",
    )
    check(
        info.get("model_sha256") == post.get("model_sha256"),
        "prior.json and posterior.json name other weights",
    )


def case_b(fx: Fixture, rounds: int, rng: random.Random, report: Report) -> None:
    """kill -9 fit-prior: RUN/prior/ is the old group or a complete new one."""
    base = fx.root / "b"
    run = fx.run_copy(base / "run")
    env = fx.env
    known: dict[int, dict[str, Any]] = {}  # K -> the files of a completed fit-prior of K
    first = env.ok(["fit-prior", run, "--components", 3], watch=run, prefix=".prior.vaegen-")
    known[3] = prior_set(run)
    check_complete_prior(known[3], 3)
    timing = Timing.of(first)
    for r in range(rounds):
        name = "b:kill-fit-prior"
        details: dict[str, Any] = {}
        try:
            old = prior_set(run)
            k_old = json.loads(old["prior.json"])["components"]
            k = 2 if k_old == 3 else 3
            how, delay = kill_delay(rng, timing)
            res, when = env.stopped(
                ["fit-prior", run, "--components", k],
                signal.SIGKILL,
                run,
                ".prior.vaegen-",
                "staging" in how,
                delay,
            )
            now = prior_set(run)
            config_k = json.loads((run / "config.json").read_text())["train"]["prior_components"]
            details = {
                "kill": how,
                "landed": when,
                "rc": res.returncode,
                "K": [k_old, k],
                "config_components": config_k,
                "leftovers": leftovers(run),
            }
            if now == old:
                details["prior"] = "old"
            else:
                details["prior"] = "new"
                check_complete_prior(now, k)
                if k in known:
                    check(
                        now == known[k],
                        f"a {k}-component prior other than fit-prior's: {tree_diff(known[k], now)}",
                    )
                elif res.returncode == 0:
                    known[k] = now
            if res.returncode == 0:
                check(details["prior"] == "new", "fit-prior finished but prior/ is the old one")
            gen = env.run(["generate", run, "--n", 8, "--out", base / f"gen-{r}.npz"])
            details["generate_rc"] = gen.returncode
            check(gen.returncode == 0, f"generate from the run failed: {gen.stderr.strip()}")
            report(name, r, "passed", details)
        except Failed as e:
            report(name, r, "failed", {**details, "error": str(e)})
    # a fit after the kills is whole; `train --resume` (where a run is cleaned up) removes what
    # the kills left, and keeps the prior
    name = "b:after-kills"
    details = {}
    try:
        k = 2 if json.loads(prior_set(run)["prior.json"])["components"] == 3 else 3
        details["leftovers_after_kills"] = leftovers(run)
        env.ok(["fit-prior", run, "--components", k])
        fitted = prior_set(run)
        check_complete_prior(fitted, k)
        if k in known:
            check(fitted == known[k], "a fit of the same K gave other bytes")
        details["leftovers_after_fit_prior"] = leftovers(run)  # fit-prior does not sweep
        env.ok(["train", "--out", run, "--resume", "--no-plots"])
        left = leftovers(run)
        check(not left, f"train --resume left temporaries in the run: {left}")
        check(prior_set(run) == fitted, "train --resume changed the fitted prior")
        report(name, 0, "passed", details)
    except Failed as e:
        report(name, 0, "failed", {**details, "error": str(e)})


def case_c(fx: Fixture, rounds: int, rng: random.Random, report: Report) -> None:
    """SIGTERM while the staging folder is written: exit 143, the old output, no staging. A signal
    that came too late (the write was over) is tried again, up to 3 times."""
    for r in range(rounds):
        fmt = ("idx", "png")[r % 2]
        name = f"c:sigterm-generate-{fmt}"
        base = fx.root / f"c-{r}"
        out = base / "out"
        new = tree(fx.refs[fmt, 2])
        details: dict[str, Any] = {"tries": []}
        try:
            for _ in range(3):
                old = fx.old_output(fmt, out)
                d = rng.uniform(0.0, 0.5 * fx.timing[fmt].window)
                res, when = fx.env.stopped(
                    fx.generate_args(fmt, 2, out),
                    signal.SIGTERM,
                    base,
                    f".{out.name}.vaegen-",
                    True,
                    lambda d=d: d,
                )
                now = tree(out)
                got = "old" if now == old else "new" if now == new else "MIX"
                details["tries"].append(
                    {
                        "delay_after_staging": round(d, 4),
                        "landed": when,
                        "rc": res.returncode,
                        "output": got,
                    }
                )
                check("Traceback" not in res.stderr, f"a traceback: {res.stderr.strip()[-600:]}")
                check(
                    got != "MIX",
                    f"after SIGTERM the output is neither old nor new: {tree_diff(old, now)}",
                )
                left = staging_beside(out)
                check(not left, f"staging left after SIGTERM: {left}")
                if when == "while staging":
                    check(res.returncode == 143, f"exit {res.returncode} after SIGTERM, not 143")
                    # "new" only when the signal came after the exchange, as the old folder
                    # (under the staging name) was being removed
                    break
                check(got == "new", f"the signal came {when}, yet the output is not the new one")
            report(name, r, "passed", details)
        except Failed as e:
            report(name, r, "failed", {**details, "error": str(e)})


def case_d(fx: Fixture, rng: random.Random, report: Report) -> None:
    """Planted files: every command refused with one line, every planted thing untouched."""
    base = fx.root / "d"
    base.mkdir()
    env = fx.env

    def plant_case(name: str, body: Callable[[], tuple[list[list[Any]], list[Path]]]) -> None:
        """body() plants and returns the commands and the folders that must stay unchanged."""
        details: dict[str, Any] = {}
        try:
            commands, watched = body()
            before = {str(p): tree(p) for p in watched}
            details["commands"] = []
            for args in commands:
                r = env.run(args)
                details["commands"].append(r.short())
                check(
                    r.returncode == 2,
                    f"exit {r.returncode}, not 2: vaegen "
                    f"{' '.join(r.argv)}: {r.stderr.strip()[-400:]}",
                )
                check_one_line_error(r)
                for p in watched:
                    diff = tree_diff(before[str(p)], tree(p))
                    check(not diff, f"vaegen {' '.join(r.argv)} changed {p}: {diff}")
            report(name, 0, "passed", details)
        except Failed as e:
            report(name, 0, "failed", {**details, "error": str(e)})

    def foreign(folder: Path) -> Path:
        (folder / "photos").mkdir(parents=True)
        (folder / "photos" / "a.jpg").write_bytes(b"\xff\xd8 a user's photo")
        (folder / "notes.txt").write_text("my notes\n")
        (folder / "metrics.jsonl").write_text('{"mine": 1}\n')  # one of a run's names
        (folder / "train-images-idx3-ubyte.gz").write_bytes(b"my own idx")  # one of generate's
        return folder

    def foreign_train_out():
        mine = foreign(base / "train-out")
        train = ["train", "--data", fx.data, "--hidden", 16, "--epochs", 1, "--out", mine]
        return [train, [*train, "--resume"]], [base / "train-out"]

    def foreign_generate_out():
        mine = foreign(base / "generate-out")
        g = ["generate", fx.run, "--n", 6, "--out", mine]
        cmds = [g, [*g, "--overwrite"], [*g, "--format", "png", "--overwrite"]]
        return cmds, [base / "generate-out"]

    def state_link():
        run = fx.run_copy(base / "state-run")
        elsewhere = base / "state-elsewhere"
        shutil.move(run / "state", elsewhere)  # the run's own checkpoints, now "elsewhere"
        (elsewhere / "epoch-0009-step-00000099").mkdir()  # named as a checkpoint
        (elsewhere / "epoch-0009-step-00000099" / "keep").write_text("user data")
        (elsewhere / ".manifest.json.abcd1234.tmp").write_text("named as a temporary")
        (elsewhere / "mine").mkdir()
        (elsewhere / "mine" / "f").write_text("user data")
        (run / "state").symlink_to(elsewhere)
        cmds = [
            ["train", "--out", run, "--resume", "--epochs", 3, "--no-plots"],
            ["fit-prior", run, "--components", 3],
        ]
        return cmds, [run, elsewhere]

    def lock_planted(kind: str):
        """RUN/.lock a symbolic link or another hard link to a victim's file."""
        run = fx.run_copy(base / f"lock-{kind}-run")
        victim = base / f"lock-{kind}-victim"
        victim.mkdir()
        (victim / "precious.txt").write_text("someone's file\n")
        (run / ".lock").unlink(missing_ok=True)
        if kind == "symlink":
            (run / ".lock").symlink_to(victim / "precious.txt")
        else:
            os.link(victim / "precious.txt", run / ".lock")
        cmds = [
            ["train", "--out", run, "--resume", "--epochs", 3, "--no-plots"],
            ["fit-prior", run, "--components", 3],
        ]
        return cmds, [run, victim]

    def png_user_file():
        out = base / "png-user-file"
        fx.old_output("png", out)
        (out / "00_a" / "notes.txt").write_text("my notes about class a\n")
        return [fx.generate_args("png", 2, out)], [out]

    def png_linked_folder():
        out = base / "png-linked"
        fx.old_output("png", out)
        outside = base / "png-linked-outside"
        outside.mkdir()
        (outside / "00000.png").write_bytes(b"someone's png")
        (out / "linked").symlink_to(outside)
        return [fx.generate_args("png", 2, out)], [out, outside]

    def png_class_folder_is_link():
        out = base / "png-class-link"
        fx.old_output("png", out)
        outside = base / "png-class-link-outside"
        shutil.move(out / "00_a", outside)  # the user moved it to another disk...
        (outside / "mine.txt").write_text("a user's file among the PNGs\n")
        (out / "00_a").symlink_to(outside)  # ...and linked it back
        return [fx.generate_args("png", 2, out)], [out, outside]

    def idx_file_is_link():
        out = base / "idx-link"
        fx.old_output("idx", out)
        victim = base / "idx-link-victim"
        victim.mkdir()
        (victim / "classes.txt").write_text("my own class list\n")
        (out / "classes.txt").unlink()
        (out / "classes.txt").symlink_to(victim / "classes.txt")
        return [fx.generate_args("idx", 2, out)], [out, victim]

    for name, body in [
        ("d:foreign-train-out", foreign_train_out),
        ("d:foreign-generate-out", foreign_generate_out),
        ("d:run-state-is-link", state_link),
        ("d:run-lock-is-symlink", lambda: lock_planted("symlink")),
        ("d:run-lock-is-hardlink", lambda: lock_planted("hardlink")),
        ("d:png-user-file-in-class-folder", png_user_file),
        ("d:png-linked-sub-folder", png_linked_folder),
        ("d:png-class-folder-is-link", png_class_folder_is_link),
        ("d:idx-file-is-link", idx_file_is_link),
    ]:
        plant_case(name, body)


def case_e(fx: Fixture, rounds: int, rng: random.Random, report: Report) -> None:
    """Two writers of one output at once: at most one refused, the output one writer's."""
    base = fx.root / "e"
    base.mkdir()
    for r in range(rounds):
        fmt = ("png", "idx")[r % 2]  # PNGs take longest to write: the writers overlap more
        name = f"e:race-generate-{fmt}"
        out = base / f"out-{fmt}"
        refs = {1: tree(fx.refs[fmt, 1]), 2: tree(fx.refs[fmt, 2])}
        details: dict[str, Any] = {}
        try:
            seeds = [1, 2] if rng.random() < 0.5 else [2, 1]
            procs = []
            for seed in seeds:
                procs.append((seed, fx.env.popen(fx.generate_args(fmt, seed, out))))
                time.sleep(rng.uniform(0.0, 0.05))
            results = {}
            for seed, p in procs:
                _, err = p.communicate(timeout=TIMEOUT)
                results[seed] = (p.returncode, err)
            details = {"start_order": seeds, "rc": {s: rc for s, (rc, _) in results.items()}}
            failed = [s for s, (rc, _) in results.items() if rc != 0]
            check(len(failed) <= 1, f"both writers failed: {results}")
            for s in failed:
                rc, err = results[s]
                check(
                    rc == 2 and "is being written by another process" in err,
                    f"the writer of seed {s} failed otherwise: exit {rc}: {err.strip()}",
                )
                check(
                    "Traceback" not in err and len(err.strip().splitlines()) == 1,
                    f"not one error line: {err!r}",
                )
            now = tree(out)
            whose = [s for s in (1, 2) if now == refs[s]]
            details["output_of_seed"] = whose
            check(len(whose) == 1, f"the output is no one writer's: {tree_diff(refs[1], now)}")
            if failed:
                check(whose[0] != failed[0], "the output is the refused writer's")
            left = staging_beside(out)
            check(not left, f"left beside the output: {left}")
            report(name, r, "passed", details)
        except Failed as e:
            report(name, r, "failed", {**details, "error": str(e)})


def case_f(fx: Fixture, rng: random.Random, report: Report) -> None:
    """A full disk: generate --overwrite and fit-prior fail with one line and change nothing."""
    names = ("f:full-disk-generate", "f:full-disk-fit-prior")
    if os.geteuid() != 0:
        for name in names:
            report(name, 0, "skipped", {"reason": "not running as root: cannot mount a tmpfs"})
        return
    mnt = fx.root / "f-mnt"
    mnt.mkdir()
    m = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if m.returncode != 0:
        for name in names:
            report(name, 0, "skipped", {"reason": f"mount -t tmpfs failed: {m.stderr.strip()}"})
        return
    try:
        run = mnt / "run"
        shutil.copytree(fx.run, run, symlinks=True)
        out = mnt / "out"
        old_out = fx.old_output("idx", out)
        filler = mnt / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)  # fill it, then free one page
        try:
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * 65536):
                    pass
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * 4096):
                    pass
        finally:
            os.close(fd)
        size = filler.stat().st_size
        os.truncate(filler, max(size - 4096, 0))
        free = shutil.disk_usage(mnt).free
        for name, args, watched in [
            (names[0], fx.generate_args("idx", 2, out), out),
            (names[1], ["fit-prior", run, "--components", 3], run),
        ]:
            details: dict[str, Any] = {"free_bytes": free}
            try:
                before = tree(watched) if watched == run else old_out
                r = fx.env.run(args)
                details["command"] = r.short()
                check(
                    r.returncode == 2,
                    f"exit {r.returncode} on a full disk, not 2: {r.stderr.strip()[-600:]}",
                )
                check_one_line_error(r)
                diff = tree_diff(before, tree(watched))
                check(not diff, f"{watched.name} changed on a full disk: {diff}")
                left = leftovers(mnt)
                check(not left, f"temporaries left on the full disk: {left}")
                report(name, 0, "passed", details)
            except Failed as e:
                report(name, 0, "failed", {**details, "error": str(e)})
    finally:
        u = subprocess.run(["umount", str(mnt)], capture_output=True, text=True)
        if u.returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="one or two rounds per case")
    p.add_argument("--seed", type=int, default=0, help="seed of the kill moments (default 0)")
    p.add_argument("--rounds", type=int, help="rounds of each repeated case (default 4; 1-2 quick)")
    p.add_argument("--workdir", type=Path, help="keep everything here (default: a temporary dir)")
    p.add_argument("--jobs", type=int, default=2, help="cases run at once (default 2)")
    args = p.parse_args(argv)
    t0 = time.monotonic()
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix="file-safety-", dir=args.workdir)).resolve()
    else:
        root = Path(tempfile.mkdtemp(prefix="vaegen-file-safety-")).resolve()
    rounds = args.rounds or (None if args.quick else 4)
    r_a = rounds or 1
    r_many = rounds or 2
    env = Env(root)
    results: list[dict[str, Any]] = []
    lock = threading.Lock()

    def report(case: str, rnd: int, outcome: str, details: dict[str, Any]) -> None:
        line = {"case": case, "round": rnd, "outcome": outcome, "details": details}
        with lock:
            results.append(line)
            print(json.dumps(line, default=str), flush=True)

    def rng(case: str) -> random.Random:
        return random.Random(f"{args.seed}:{case}")

    try:
        fx = setup(root, env, args.quick)
    except Exception as e:  # the campaign cannot start: one line, status 1
        report("setup", 0, "error", {"error": f"{type(e).__name__}: {e}"})
        print(f"file_safety_campaign: setup failed; files in {root}", file=sys.stderr)
        return 1
    tasks: list[tuple[str, Callable[[], None]]] = [
        ("a:kill-generate-idx", lambda: case_a(fx, "idx", r_a, rng("a-idx"), report)),
        ("b:kill-fit-prior", lambda: case_b(fx, r_many, rng("b"), report)),
        ("a:kill-generate-png", lambda: case_a(fx, "png", r_a, rng("a-png"), report)),
        ("d:plant", lambda: case_d(fx, rng("d"), report)),
        ("c:sigterm-generate", lambda: case_c(fx, r_many, rng("c"), report)),
        ("e:race-generate", lambda: case_e(fx, r_many, rng("e"), report)),
        ("f:full-disk", lambda: case_f(fx, rng("f"), report)),
    ]

    def guarded(name: str, task: Callable[[], None]) -> None:
        try:
            task()
        except Exception as e:  # the campaign broke, not (necessarily) vaegen
            report(
                name,
                -1,
                "error",
                {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-1500:]},
            )

    with ThreadPoolExecutor(max_workers=max(args.jobs, 1)) as pool:
        for f in [pool.submit(guarded, name, task) for name, task in tasks]:
            f.result()
    counts = {o: sum(r["outcome"] == o for r in results) for o in ("passed", "failed", "skipped")}
    errors = sum(r["outcome"] == "error" for r in results)
    bad = counts["failed"] + errors
    print(
        f"file_safety_campaign: {counts['passed']} passed, {counts['failed']} failed, "
        f"{counts['skipped']} skipped, {errors} errors in {time.monotonic() - t0:.1f} s "
        f"(seed {args.seed}); files in {root}" + ("" if bad or args.workdir else " (removed)"),
        file=sys.stderr,
    )
    if not bad and args.workdir is None:
        shutil.rmtree(root, ignore_errors=True)
    cases: dict[str, dict[str, int]] = {}
    for r in results:
        outcomes = cases.setdefault(r["case"], {})
        outcomes[r["outcome"]] = outcomes.get(r["outcome"], 0) + 1
    append_result(
        "file_safety_campaign",
        {
            "quick": args.quick,
            "seed": args.seed,
            "rounds": rounds,
            "jobs": args.jobs,
            **counts,
            "errors": errors,
            "seconds": round(time.monotonic() - t0, 1),
            "cases": cases,
        },
        command=None if argv is None else ["benchmarks/file_safety_campaign.py", *argv],
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

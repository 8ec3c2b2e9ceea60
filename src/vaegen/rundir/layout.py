"""The run directory as a folder on disk: every file name in it, which folders may become runs,
the lock its writers hold, and what a killed writer left that may be removed.

    runs/NAME/config.json          RunConfig + vaegen version + facts about the dataset
    runs/NAME/model.safetensors    the latest weights
    runs/NAME/metrics.jsonl        one JSON object per finished epoch
    runs/NAME/state/               checkpoints for --resume (vaegen.rundir.checkpoint)
    runs/NAME/figures/             the figures (vaegen.report.figures)
    runs/NAME/prior/               priors fitted after training (sampling.priors): the Gaussian
                                   mixture, and the training images' aggregate posterior
    runs/NAME/eval.json            what `vaegen evaluate` measured
    runs/NAME/feature_net/         the feature network evaluate trained on the run's data (data
                                   other than FashionMNIST; safetensors + JSON)
    runs/NAME/report.html          the self-contained report
    runs/NAME/tensorboard/         TensorBoard events (--tensorboard)
    runs/NAME/.lock                held by the process that writes the run (vaegen.locks.lock)
    runs/NAME/.vaegen-run          marks the folder as a run vaegen made (older runs: config.json)

vaegen writes a run only into a folder that is absent, empty or a run (MARKER, or config.json for
runs made before the marker), and never through a link at one of the run's own names
(`lock_for_writing` checks both before the first write); cleanup removes only the temporaries and
checkpoint folders vaegen names itself.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from .._version import __version__
from ..errors import RunError, some_names
from ..files import (
    atomic_write_text,
    is_link,
    is_temporary_of,
    remove_temporaries_in,
    sweep_folder_temporaries,
)
from ..locks import lock
from . import checkpoint as ckpt

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
METRICS = "metrics.jsonl"
STATE = "state"
FIGURES = "figures"
PRIOR = "prior"
EVAL = "eval.json"
FEATURE_NET = "feature_net"
REPORT = "report.html"
TENSORBOARD = "tensorboard"
LOCK = ".lock"
MARKER = ".vaegen-run"
OWN_NAMES = (
    CONFIG,
    WEIGHTS,
    METRICS,
    STATE,
    FIGURES,
    PRIOR,
    EVAL,
    FEATURE_NET,
    REPORT,
    TENSORBOARD,
    LOCK,
    MARKER,
)


@contextlib.contextmanager
def lock_for_writing(run_dir: Path, purpose: str) -> Iterator[None]:
    """Hold RUN/.lock while `purpose` ("training", "evaluation") writes the run (see
    locks.lock), after `check_run_folder`; marks the folder as a run (MARKER). A run
    directory this call created and that holds nothing but the lock and the marker when the block
    ends (it failed before its first write) is removed again."""
    created = not run_dir.exists()
    check_run_folder(run_dir)
    try:
        with lock(run_dir, LOCK, purpose):
            if not (run_dir / MARKER).exists():
                atomic_write_text(run_dir / MARKER, json.dumps({"vaegen": __version__}) + "\n")
            yield
    finally:
        if created and run_dir.is_dir() and sorted(os.listdir(run_dir)) == sorted([LOCK, MARKER]):
            for name in (MARKER, LOCK):
                (run_dir / name).unlink(missing_ok=True)
            run_dir.rmdir()


def check_run_folder(run_dir: Path) -> None:
    """A RunError unless vaegen may write a run into `run_dir`: it is absent, empty, or a run
    (its MARKER, or config.json for runs older than the marker), and none of the run's own names
    (OWN_NAMES) in it is a symbolic link, which every write and cleanup would follow out of the
    run. A link to the run directory itself is fine (a run kept on another disk)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"{run_dir} is a file, not a run directory; choose another --out")
    if not run_dir.is_dir():
        return
    entries = sorted(os.listdir(run_dir))
    # what a run killed before its first file leaves (the lock, a temporary of config.json)
    # does not make a folder foreign
    leftovers = [e for e in entries if e != LOCK and not _is_own_temporary(e)]
    if leftovers and not is_run_dir(run_dir):
        raise RunError(
            f"{run_dir} is not a vaegen run and not empty (it holds {some_names(entries)}); "
            "vaegen writes a "
            "run only into a new or empty folder: choose another --out"
        )
    links = [name for name in OWN_NAMES if is_link(run_dir / name)]
    if links:
        raise RunError(
            f"{run_dir}: {', '.join(links)} {'is a symbolic link' if len(links) == 1 else 'are symbolic links'}; "
            "vaegen never writes or cleans up through a link inside a run: replace it with a "
            "folder or file (to keep a run on another disk, link the whole run directory)"
        )


def _is_own_temporary(name: str) -> bool:
    return any(is_temporary_of(name, own) for own in OWN_NAMES)


def is_run_dir(run_dir: Path) -> bool:
    """Whether `run_dir` is a run vaegen made: it holds MARKER, or config.json (runs made before
    the marker existed)."""
    return any(
        (run_dir / name).is_file() and not is_link(run_dir / name) for name in (MARKER, CONFIG)
    )


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete what a killed process left in the run: the temporaries of its atomic writes in the
    run directory and its own folders (never below a link), a half-assembled prior, and the
    unfinished checkpoints (checkpoint.remove_stale_temporaries). Only while holding the run's
    lock. Returns what was removed."""
    removed = remove_temporaries_in(run_dir, of=OWN_NAMES)
    for name in (FIGURES, PRIOR, FEATURE_NET):  # folders of vaegen's files only
        if not is_link(run_dir / name):
            removed += remove_temporaries_in(run_dir / name)
    for name in (PRIOR, FEATURE_NET):  # groups replaced whole (files.replace_folder)
        removed += sweep_folder_temporaries(run_dir / name)
    return removed + ckpt.remove_stale_temporaries(run_dir / STATE)

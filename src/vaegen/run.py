"""A run directory and the trained model in it: every file name of the run, `Run`, `load_run`.

    runs/NAME/config.json          RunConfig + vaegen version + facts about the dataset
    runs/NAME/model.safetensors    the latest weights
    runs/NAME/metrics.jsonl        one JSON object per finished epoch
    runs/NAME/state/               checkpoints for --resume (vaegen.checkpoint)
    runs/NAME/figures/             the figures (vaegen.plots)
    runs/NAME/prior/               priors fitted after training (vaegen.priors): the Gaussian
                                   mixture, and the training images' aggregate posterior
    runs/NAME/eval.json            what `vaegen evaluate` measured
    runs/NAME/feature_net/         the feature network evaluate trained on the run's data (data
                                   other than FashionMNIST; safetensors + JSON)
    runs/NAME/report.html          the self-contained report
    runs/NAME/tensorboard/         TensorBoard events (--tensorboard)
    runs/NAME/.lock                held by the process that writes the run (vaegen.locks.lock)
    runs/NAME/.vaegen-run          marks the folder as a run vaegen made (older runs: config.json)

vaegen writes into a folder only when it is absent, empty or a run, and never through a link at
one of the names above (`lock_for_writing` checks both before the first write).

Everything that reads or writes a run asks this module for the names. The trainer writes runs;
generate, plots, metrics, evaluate and the report read them through `load_run` and never import
the trainer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import checkpoint as ckpt
from ._version import __version__
from .config import RunConfig, differences
from .data import (
    OWN_SPLIT,
    ImageDataset,
    check_labelled,
    effective_test_fraction,
    load_dataset,
    load_splits,
    source_kind,
)
from .errors import RunError, VaegenError
from .files import atomic_write_text, is_link, is_temporary_of, sweep_folder_temporaries
from .locks import lock
from .losses import Likelihood, likelihood
from .models import MODELS

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
OWN_NAMES = (CONFIG, WEIGHTS, METRICS, STATE, FIGURES, PRIOR, EVAL, FEATURE_NET, REPORT,
             TENSORBOARD, LOCK, MARKER)  # fmt: skip

# Fields that may change when a run is resumed: where and how fast it runs, and how long.
RESUMABLE_CHANGES = (
    "train.device",
    "train.threads",
    "train.epochs",
    "train.deterministic",
    "train.step",
    "train.prior_components",  # the prior is fitted after the last epoch
    "train.prior_draws",
    "train.prior_reg_covar",
)


@dataclass
class Run:
    """A trained (or training) model with its run directory.

    image_shape: C x H x W of the images it models; classes: the dataset's class names;
    metrics: the records of metrics.jsonl, one per finished epoch."""

    path: Path
    config: RunConfig
    model: nn.Module
    classes: list[str]
    image_shape: tuple[int, int, int]
    metrics: list[dict[str, Any]] = field(default_factory=list)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def likelihood(self) -> Likelihood:
        """The decoder's likelihood (vaegen.losses registry entry) this run was trained with."""
        return likelihood(self.config.train.loss)

    def weights_sha256(self) -> str:
        """SHA-256 (hex) of the model's weights: every state_dict tensor's name, dtype, shape and
        bytes, in order. What a prior fitted to this model records, so that one fitted to an
        earlier state of the weights is recognised."""
        h = hashlib.sha256()
        for name, t in self.model.state_dict().items():
            h.update(f"{name} {t.dtype} {tuple(t.shape)}\n".encode())
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()


def load_split(run: Run, split: str) -> ImageDataset:
    """The `split` ("train" or "test") of the dataset the run was trained on, checked to hold
    images of the run's shape (a changed dataset is an error, not a crash inside the model)."""
    data = run.config.data
    return _checked(run, load_dataset(data.source, split, **data.load_options()))


def load_both_splits(run: Run) -> tuple[ImageDataset, ImageDataset]:
    """(train, test) as load_split gives them, reading the data source once."""
    train, test = load_splits(run.config.data.source, **run.config.data.load_options())
    return _checked(run, train), _checked(run, test)


def _checked(run: Run, ds: ImageDataset) -> ImageDataset:
    if ds.image_shape != tuple(run.image_shape):
        raise VaegenError(
            f"the run was trained on {tuple(run.image_shape)} images but "
            f"{run.config.data.source!r} now holds {ds.image_shape} images"
        )
    return ds


def resolve_data(config: RunConfig) -> RunConfig:
    """`config` with the test fraction it trains with written out (the default for an .npz or
    image folder, None for a source with its own split: an error if one is asked for), so that
    config.json records the split and every later reader of the run repeats it. A conditional
    model on a source known to have no labels is a DataError here, before anything is read."""
    if config.model.conditional:
        check_labelled(config.data.source)
    fraction = effective_test_fraction(config.data.source, config.data.test_fraction)
    return dataclasses.replace(
        config,
        data=dataclasses.replace(
            config.data, source=absolute_source(config.data.source), test_fraction=fraction
        ),
    )


def absolute_source(source: str) -> str:
    """A data source as config.json records it: a named dataset as its name, a path made absolute
    (a relative one would name another folder for a command run from elsewhere)."""
    if source_kind(source) == "named":
        return source
    return os.path.abspath(source)


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; anything else is passed to torch.device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise VaegenError(
            f"device = {name!r} is not valid: use auto, cpu, cuda or cuda:N"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise VaegenError(f"device = {name!r} but this PyTorch build sees no CUDA GPU; use cpu")
    return device


def build_model(
    config: RunConfig, image_shape: tuple[int, int, int], num_classes: int
) -> nn.Module:
    """The model `config` describes, for images of `image_shape` (C x H x W) and `num_classes`
    classes (used only when the config is conditional), freshly initialised."""
    m = config.model
    if m.conditional and num_classes < 2:
        raise VaegenError(
            "--conditional needs a labelled dataset with at least 2 classes; "
            f"this one has {num_classes}"
        )
    try:
        return MODELS[m.model](
            image_shape=image_shape,
            latent_dim=m.latent_dim,
            hidden=m.hidden,
            num_classes=num_classes if m.conditional else 0,
            scale=likelihood(config.train.loss).scale,
        )
    except ValueError as e:  # a shape the architecture cannot take
        raise VaegenError(str(e)) from None


# ------------------------------------------------------------------------- config, metrics


def save_config(run_dir: Path, config: RunConfig, dataset: dict[str, Any]) -> None:
    atomic_write_text(run_dir / CONFIG, config.to_json(dataset))


def load_config(run_dir: str | Path) -> tuple[RunConfig, dict[str, Any]]:
    """(config, dataset facts) from RUN/config.json."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: no such run directory")
    if not (run_dir / CONFIG).exists():
        raise RunError(
            f"{run_dir} is not a vaegen run: it has no {CONFIG} (`vaegen train --out "
            f"{run_dir}` makes one)"
        )
    d = ckpt.read_json(run_dir / CONFIG)
    if not isinstance(d, dict):
        raise RunError(f"{run_dir / CONFIG}: expected a JSON object")
    data = d.get("data")
    if isinstance(data, dict) and "test_fraction" not in data:
        # written before held-out splits: an .npz or image folder served as both splits
        if source_kind(str(data.get("source", "fashion-mnist"))) not in (*OWN_SPLIT, None):
            d = {**d, "data": {**data, "test_fraction": 0.0}}
    facts = d.get("dataset") or {}
    if not isinstance(facts, dict):
        raise RunError(f'{run_dir / CONFIG}: "dataset" must be a JSON object')
    try:
        return RunConfig.from_dict(d), dict(facts)
    except (VaegenError, TypeError) as e:
        raise RunError(f"{run_dir / CONFIG}: {e}") from None


def write_metrics(run_dir: Path, records: list[dict[str, Any]]) -> None:
    """Rewrite metrics.jsonl whole (it is small), so it always matches the weights file."""
    atomic_write_text(run_dir / METRICS, "".join(json.dumps(r) + "\n" for r in records))


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    records = []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise RunError(f"{path}: not UTF-8 text ({e})") from None
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise RunError(f"{path}, line {n}: not valid JSON ({e})") from None
            if not isinstance(record, dict):
                raise RunError(f"{path}, line {n}: not an epoch's record (a JSON object)")
            records.append(record)
    return records


def load_run(path: str | Path, device: str = "cpu") -> Run:
    """Rebuild a trained model from its run directory (config.json + model.safetensors)."""
    run_dir = Path(path)
    config, facts = load_config(run_dir)
    try:
        image_shape = tuple(int(v) for v in facts["image_shape"])
        classes = [str(c) for c in facts["classes"]]
    except (KeyError, TypeError, ValueError):
        raise RunError(f"{run_dir / CONFIG}: missing the dataset's image_shape/classes") from None
    model = build_model(config, image_shape, len(classes))  # type: ignore[arg-type]
    ckpt.load_weights(model, run_dir / WEIGHTS)
    model.to(resolve_device(device)).eval()
    return Run(run_dir, config, model, classes, image_shape, read_metrics(run_dir))  # type: ignore[arg-type]


# -------------------------------------------------------------------------------- writing


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
        shown = ", ".join(entries[:5]) + (
            f" and {len(entries) - 5} more" if len(entries) > 5 else ""
        )
        raise RunError(
            f"{run_dir} is not a vaegen run and not empty (it holds {shown}); vaegen writes a "
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
    removed = ckpt.remove_temporaries_in(run_dir)
    for name in (FIGURES, PRIOR, FEATURE_NET):
        if not is_link(run_dir / name):
            removed += ckpt.remove_temporaries_in(run_dir / name)
    removed += sweep_folder_temporaries(run_dir / PRIOR)
    return removed + ckpt.remove_stale_temporaries(run_dir / STATE)


def check_resumable(run_dir: Path, config: RunConfig, resume: bool) -> bool:
    """Whether `run_dir` already holds a run, which may be continued only with `resume` and a
    config that differs from the saved one in RESUMABLE_CHANGES at most (else a RunError)."""
    if not (run_dir / CONFIG).exists():
        return False
    if not resume:
        raise RunError(
            f"{run_dir} already holds a run; pass --resume to continue it, or choose another --out"
        )
    saved, _ = load_config(run_dir)
    # a run recorded before sources were stored absolute named its source relative to where it ran
    saved = dataclasses.replace(
        saved, data=dataclasses.replace(saved.data, source=absolute_source(saved.data.source))
    )
    diff = differences(saved, config, ignore=RESUMABLE_CHANGES)
    if diff:
        raise RunError(
            f"{run_dir}: cannot resume with a different configuration; these fields differ "
            "(saved -> requested):\n  " + "\n  ".join(diff)
        )
    return True


def tensorboard_writer(run_dir: Path, first_epoch: int) -> Any:
    """A SummaryWriter for RUN/tensorboard. purge_step drops events a killed run wrote after its
    last checkpoint, so that a resumed run's curves have no duplicate epochs."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise VaegenError(
            "--tensorboard needs the tensorboard package: pip install 'vaegen[tensorboard]'"
        ) from None
    return SummaryWriter(str(run_dir / TENSORBOARD), purge_step=first_epoch)

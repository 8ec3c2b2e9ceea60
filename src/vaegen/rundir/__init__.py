"""A trained model and its run directory: `Run`, `load_run`, the config and metrics files, and
resuming. The directory's file names and the rules for writing it are in `layout`, the run
configuration in `config`, training checkpoints in `checkpoint`.

The trainer writes runs; sampling, evaluation and the report read them through `load_run` and
never import the trainer.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from .. import tensorfiles
from ..data import (
    OWN_SPLIT,
    ImageDataset,
    check_labelled,
    effective_test_fraction,
    load_dataset,
    load_splits,
    source_kind,
)
from ..errors import RunError, VaegenError
from ..files import atomic_write_text
from ..model.likelihoods import Likelihood, likelihood
from ..model.vae import MODELS
from .config import RunConfig, default_loss, differences, resumable_fields
from .layout import (
    CONFIG,
    METRICS,
    TENSORBOARD,
    WEIGHTS,
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
        """The decoder's likelihood (model.likelihoods registry entry) this run was trained with."""
        return likelihood(with_default_loss(self.config).train.loss)

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


def resolve_config(config: RunConfig) -> RunConfig:
    """`config` as training applies it and config.json records it, so that every later reader
    of the run repeats it: the loss for the data source when it names none (config.default_loss),
    the test fraction written out (the default for an .npz or image folder, None for a source
    with its own split: an error if one is asked for), and paths made absolute. A conditional
    model on a source known to have no labels is a DataError here, before anything is read."""
    if config.model.conditional:
        check_labelled(config.data.source)
    fraction = effective_test_fraction(config.data.source, config.data.test_fraction)
    config = with_default_loss(with_absolute_paths(config))
    return dataclasses.replace(
        config, data=dataclasses.replace(config.data, test_fraction=fraction)
    )


def with_default_loss(config: RunConfig) -> RunConfig:
    """`config` with the loss for its data source (config.default_loss) when it names none."""
    if config.train.loss is not None:
        return config
    loss = default_loss(config.data.source)
    return dataclasses.replace(config, train=dataclasses.replace(config.train, loss=loss))


def with_absolute_paths(config: RunConfig) -> RunConfig:
    """`config` with its data paths as config.json records them: the source (a named dataset
    stays a name) and data_dir made absolute, since a relative one would name another folder for
    a command run from elsewhere."""
    data = config.data
    source = data.source if source_kind(data.source) == "named" else os.path.abspath(data.source)
    data_dir = None if data.data_dir is None else os.path.abspath(data.data_dir)
    return dataclasses.replace(
        config, data=dataclasses.replace(data, source=source, data_dir=data_dir)
    )


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
            scale=likelihood(with_default_loss(config).train.loss).scale,
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
    d = tensorfiles.read_json(run_dir / CONFIG)
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
        # a config.json without a loss (written by hand) means the source's default, as in training
        return with_default_loss(RunConfig.from_dict(d)), dict(facts)
    except (VaegenError, TypeError) as e:
        raise RunError(f"{run_dir / CONFIG}: {e}") from None


def write_metrics(run_dir: Path, records: list[dict[str, Any]]) -> None:
    """Rewrite metrics.jsonl whole (it is small), so it always matches the weights file."""
    atomic_write_text(run_dir / METRICS, "".join(json.dumps(r) + "\n" for r in records))


# The fields of an epoch's record (training.loop._end_epoch writes them) that the figures, the
# report and the summary read as numbers: a record without one, or with a string, null or list
# there, is an error naming the line here, not a traceback inside matplotlib or a format string.
METRIC_NUMBERS = (
    "train_loss",
    "train_recon",
    "train_kl",
    "test_loss",
    "test_recon",
    "test_kl",
)
METRIC_OPTIONAL_NUMBERS = ("seconds", "images_per_second", "active_dims")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_record(record: dict[str, Any], where: str) -> None:
    """A RunError naming `where` (file and line) unless `record` is an epoch's record: epoch a
    positive integer, the losses numbers (bool is not one), the timings numbers when present."""
    epoch = record.get("epoch")
    if not (isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= 1):
        raise RunError(f'{where}: "epoch" is {epoch!r}; it must be an integer >= 1')
    for key in METRIC_NUMBERS:
        if key not in record:
            raise RunError(f"{where}: the epoch's record has no {key!r}")
    for key in (*METRIC_NUMBERS, *METRIC_OPTIONAL_NUMBERS):
        if key in record and not _is_number(record[key]):
            raise RunError(f"{where}: {key!r} is {record[key]!r}; it must be a number")


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records of RUN/metrics.jsonl, one per finished epoch, each checked (see
    _check_record); [] when there is no such file."""
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
            except RecursionError:  # json's decoder recurses once per level of nesting
                raise RunError(
                    f"{path}, line {n}: not an epoch's record (JSON nested too deeply to read)"
                ) from None
            if not isinstance(record, dict):
                raise RunError(f"{path}, line {n}: not an epoch's record (a JSON object)")
            _check_record(record, f"{path}, line {n}")
            records.append(record)
    return records


# safetensors' names of the dtypes in a file's header (safe_open(...).get_slice(k).get_dtype())
_HEADER_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def _check_header(path: Path, expected: dict[str, torch.Tensor], blame: str) -> None:
    """A RunError naming `path` (and ending in `blame`) unless the safetensors file holds the
    names, shapes and dtypes of `expected` (meta tensors will do), read from its header alone:
    no tensor is read. A pickle is refused first, unopened."""
    tensorfiles.refuse_pickle(path)
    try:
        with safe_open(str(path), "pt") as f:
            found = {
                k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()
            }
    except (SafetensorError, ValueError, RuntimeError, OSError) as e:
        raise RunError(
            f"{path}: not a valid safetensors file ({e}); it is truncated or corrupt"
        ) from None
    missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if missing or extra:
        raise RunError(
            f"{path}: tensors do not match the model (missing: {missing or 'none'}; "
            f"unexpected: {extra or 'none'}){blame}"
        )
    for name, ref in expected.items():
        want = (tuple(ref.shape), _HEADER_DTYPES.get(ref.dtype, str(ref.dtype)))
        if found[name] != want:
            raise RunError(
                f"{path}: tensor {name!r} is {found[name][1]} {found[name][0]}, the "
                f"model needs {want[1]} {want[0]}{blame}"
            )


def load_run(path: str | Path, device: str = "cpu") -> Run:
    """Rebuild a trained model from its run directory (config.json + model.safetensors)."""
    run_dir = Path(path)
    config, facts = load_config(run_dir)
    try:
        image_shape = tuple(int(v) for v in facts["image_shape"])
        classes = [str(c) for c in facts["classes"]]
    except (KeyError, TypeError, ValueError):
        raise RunError(f"{run_dir / CONFIG}: missing the dataset's image_shape/classes") from None
    # The model is built on the meta device first (shapes, no memory) and compared with the
    # weights file's header: a config.json with a wrong or absurd size (hidden 10**9 asks for
    # terabytes) is a one-line error naming both files before anything is allocated.
    with torch.device("meta"):
        skeleton = build_model(config, image_shape, len(classes))  # type: ignore[arg-type]
    m = config.model
    blame = (
        f"; {run_dir / CONFIG} describes another model (model {m.model!r}, latent_dim "
        f"{m.latent_dim}, hidden {m.hidden}, conditional {str(m.conditional).lower()}, "
        f"{len(classes)} classes, image_shape {list(image_shape)}): fix the field that differs"
    )
    _check_header(run_dir / WEIGHTS, skeleton.state_dict(), blame)
    model = build_model(config, image_shape, len(classes))  # type: ignore[arg-type]
    tensorfiles.load_weights(model, run_dir / WEIGHTS)
    model.to(resolve_device(device)).eval()
    return Run(run_dir, config, model, classes, image_shape, read_metrics(run_dir))  # type: ignore[arg-type]


# -------------------------------------------------------------------------------- writing


def check_resumable(run_dir: Path, config: RunConfig, resume: bool) -> bool:
    """Whether `run_dir` already holds a run, which may be continued only with `resume` and a
    config that differs from the saved one at most in the fields a resume may change
    (config.resumable_fields; else a RunError)."""
    if not (run_dir / CONFIG).exists():
        return False
    if not resume:
        raise RunError(
            f"{run_dir} already holds a run; pass --resume to continue it, or choose another --out"
        )
    saved, _ = load_config(run_dir)
    # a run recorded before paths were stored absolute named them relative to where it ran
    saved = with_absolute_paths(saved)
    diff = differences(saved, config, ignore=resumable_fields())
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

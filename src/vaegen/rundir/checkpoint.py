"""Training checkpoints in the run directory: safetensors for tensors, JSON for everything else,
every write atomic.

    RUN/state/manifest.json  names the newest complete checkpoint and its files' SHA-256
    RUN/state/<checkpoint>/  model, optimizer and RNG tensors + progress.json (a `Progress`)

A checkpoint's files are written into a fresh folder; the manifest is replaced (atomically) only
after all of them are on disk, so a kill at any moment leaves the previous good checkpoint in force.
Nothing is ever unpickled (vaegen.tensorfiles reads every file).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import RunError, VaegenError
from ..files import (
    atomic_write_bytes,
    atomic_write_text,
    fsync_dir,
    is_link,
    remove_temporaries_in,
    remove_tree,
)
from ..tensorfiles import read_json, read_tensors, tensors_to_bytes

MANIFEST = "manifest.json"
CHECKPOINT_FILES = (
    "model.safetensors",
    "optimizer.safetensors",
    "rng.safetensors",
    "progress.json",
)

# torch.save writes a zip archive (PK..) or, in old versions, a raw pickle (protocol byte 0x80).


# ---------------------------------------------------------------------------------- tensors


# -------------------------------------------------------------------------------- JSON


# ------------------------------------------------------------------------- training state


@dataclass
class Progress:
    """Where training stands: what a checkpoint records besides tensors (progress.json).

    epoch: epochs finished; step: optimizer steps done within epoch + 1 (0 at an epoch's end);
    global_step: optimizer steps since the run began; running: the sums (loss, recon, kl) over
    the current epoch's steps so far; elapsed_in_epoch: seconds spent in them; metrics: the
    records of the finished epochs; device_type: where it trained (its RNG streams are
    device-specific)."""

    epoch: int = 0
    step: int = 0
    global_step: int = 0
    device_type: str = "cpu"
    running: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    elapsed_in_epoch: float = 0.0
    metrics: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Any, source: str | Path) -> Progress:
        """Read a progress record, with an error naming `source` when it is not one."""
        names = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(d, dict) or not {"epoch", "step", "global_step"} <= set(d):
            raise RunError(f"{source}: not a vaegen progress record")
        p = cls(**{k: v for k, v in d.items() if k in names})
        counts = (p.epoch, p.step, p.global_step)
        numbers = [*p.running, p.elapsed_in_epoch]
        if not (
            all(type(v) is int and v >= 0 for v in counts)
            and isinstance(p.running, list)
            and len(p.running) == 3
            and all(isinstance(v, (int, float)) for v in numbers)
            and isinstance(p.metrics, list)
            and all(isinstance(m, dict) for m in p.metrics)
            and isinstance(p.device_type, str)
        ):
            raise RunError(f"{source}: not a vaegen progress record (a field of the wrong type)")
        return p


@dataclass
class TrainingState:
    """Everything needed to continue training exactly where it stopped."""

    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]  # torch optimizer state_dict
    rng: dict[str, torch.Tensor]  # generator states (uint8 tensors)
    progress: Progress


def _optimizer_to_flat(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], Any]:
    tensors, meta = {}, {"param_groups": state_dict["param_groups"], "state": {}}
    for index, per_param in state_dict["state"].items():
        meta["state"][str(index)] = []
        for key, value in per_param.items():
            if not isinstance(value, torch.Tensor):
                raise VaegenError(f"optimizer state {index}.{key} is not a tensor: {value!r}")
            tensors[f"{index}.{key}"] = value
            meta["state"][str(index)].append(key)
    return tensors, meta


def _optimizer_from_flat(tensors: dict[str, torch.Tensor], meta: Any) -> dict[str, Any]:
    state = {
        int(index): {key: tensors[f"{index}.{key}"] for key in keys}
        for index, keys in meta["state"].items()
    }
    return {"state": state, "param_groups": meta["param_groups"]}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_state(state_dir: Path, state: TrainingState) -> None:
    """Write a checkpoint folder in `state_dir`, then point the manifest at it, then drop older
    checkpoints."""
    name = f"epoch-{state.progress.epoch:04d}-step-{state.progress.global_step:08d}"
    folder = state_dir / name
    remove_tree(folder)
    opt_tensors, opt_meta = _optimizer_to_flat(state.optimizer)
    files = {  # CHECKPOINT_FILES
        "model.safetensors": tensors_to_bytes(state.model),
        "optimizer.safetensors": tensors_to_bytes(opt_tensors),
        "rng.safetensors": tensors_to_bytes(state.rng, check_finite=False),
        "progress.json": json.dumps(
            {"progress": state.progress.to_dict(), "optimizer": opt_meta}, indent=1
        ).encode(),
    }
    for filename, data in files.items():
        atomic_write_bytes(folder / filename, data)
    manifest = {"checkpoint": name, "files": {f: _sha256(d) for f, d in files.items()}}
    atomic_write_text(state_dir / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    _drop_checkpoints_except(state_dir, name)
    fsync_dir(state_dir)


def _is_checkpoint_name(name: str) -> bool:
    """Whether `name` is one save_state gives a checkpoint folder."""
    return re.fullmatch(r"epoch-\d{4,}-step-\d{8,}", name) is not None


def _drop_checkpoints_except(state_dir: Path, keep: str | None) -> list[Path]:
    """Delete every checkpoint folder but `keep` (the one the manifest names); return them. Only
    names save_state gives its folders are touched, and a link is removed, never followed."""
    dropped = [
        state_dir / name
        for name in sorted(os.listdir(state_dir))
        if name != keep and _is_checkpoint_name(name)
    ]
    for folder in dropped:
        remove_tree(folder)
    return dropped


def remove_stale_temporaries(state_dir: Path) -> list[Path]:
    """Delete what a killed process left in `state_dir`: the temporaries of its atomic writes
    (there and in its checkpoint folders) and the unfinished checkpoint folders; with a manifest
    that does not name a checkpoint folder, no folder (load_state then says what is wrong, and
    nothing is lost). `state_dir` must be the run's own folder, not a link (the run's lock
    checks that).

    Safe only while no other process writes this run (hold `lock`). Returns what was removed."""
    if is_link(state_dir) or not state_dir.is_dir():
        return []
    removed = remove_temporaries_in(state_dir)
    for name in sorted(os.listdir(state_dir)):
        if _is_checkpoint_name(name) and not is_link(state_dir / name):
            removed += remove_temporaries_in(state_dir / name)
    try:
        current = _manifest(state_dir)[0] if (state_dir / MANIFEST).exists() else None
    except RunError:
        return removed
    removed += _drop_checkpoints_except(state_dir, current)
    return removed


def _manifest(state_dir: Path) -> tuple[str, dict[str, str]]:
    """(the checkpoint folder's name, its files' SHA-256) from the manifest, checked to name a
    folder of `state_dir` and every file of a checkpoint; a RunError otherwise."""
    path = state_dir / MANIFEST
    m = read_json(path)
    name = m.get("checkpoint") if isinstance(m, dict) else None
    files = m.get("files") if isinstance(m, dict) else None
    if (
        not isinstance(name, str)
        or Path(name).name != name
        or not (state_dir / name).is_dir()
        or not isinstance(files, dict)
        or set(files) != set(CHECKPOINT_FILES)
        or not all(isinstance(v, str) for v in files.values())
    ):
        raise RunError(
            f"{path}: not the manifest of a checkpoint in {state_dir}; move {state_dir} away "
            "to train the run from the start"
        )
    return name, files


def load_state(state_dir: Path) -> TrainingState | None:
    """The newest complete checkpoint in `state_dir`, or None when the run has none yet.

    A checkpoint whose files do not match the manifest's hashes is a RunError (the manifest is only
    replaced after its files are complete, so this means the files were damaged afterwards).
    """
    manifest_path = state_dir / MANIFEST
    if not manifest_path.exists():
        return None
    name, hashes = _manifest(state_dir)
    folder = state_dir / name
    for filename, digest in hashes.items():
        path = folder / filename
        if not path.is_file() or _sha256(path.read_bytes()) != digest:
            raise RunError(
                f"{path}: missing or does not match its SHA-256 in {manifest_path}; "
                "the checkpoint was damaged after it was written"
            )
    info = read_json(folder / "progress.json")
    if not isinstance(info, dict) or not isinstance(info.get("optimizer"), dict):
        raise RunError(f"{folder / 'progress.json'}: not a vaegen progress record")
    opt_tensors = read_tensors(folder / "optimizer.safetensors")
    try:
        optimizer = _optimizer_from_flat(opt_tensors, info["optimizer"])
    except (KeyError, TypeError, ValueError, AttributeError):
        raise RunError(
            f"{folder}: its optimizer state and progress.json do not fit together"
        ) from None
    return TrainingState(
        model=read_tensors(folder / "model.safetensors"),
        optimizer=optimizer,
        rng=read_tensors(folder / "rng.safetensors"),
        progress=Progress.from_dict(info.get("progress"), folder / "progress.json"),
    )

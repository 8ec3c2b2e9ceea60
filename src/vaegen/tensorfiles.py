"""Tensors and JSON on disk without pickle: safetensors for tensors, checked against the model
before anything is loaded; JSON read with errors that name the file. A file in torch's pickle
format is refused before it is parsed, because unpickling can run arbitrary code."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load, save as st_save

from .errors import NonFiniteError, RunError
from .files import atomic_write_bytes

_PICKLE_SIGNATURES = (b"PK\x03\x04", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


def tensors_to_bytes(tensors: Mapping[str, torch.Tensor], check_finite: bool = True) -> bytes:
    """Serialise tensors with safetensors, refusing non-finite floating-point values."""
    out = {}
    for name, t in tensors.items():
        t = t.detach().to("cpu").contiguous()
        if check_finite and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise NonFiniteError(
                f"refusing to save tensor {name!r}: it holds NaN or infinite values"
            )
        out[name] = t.clone() if t.untyped_storage().size() != t.numel() * t.element_size() else t
    return st_save(out)


def refuse_pickle(path: Path) -> None:
    """A RunError naming `path` when the file is missing or a pickle (its first bytes tell)."""
    try:
        with path.open("rb") as f:
            start = f.read(8)
    except FileNotFoundError:
        raise RunError(f"{path}: file not found") from None
    if start.startswith(_PICKLE_SIGNATURES):
        raise RunError(
            f"{path}: this is a pickle (torch.save) file, not safetensors; vaegen never unpickles "
            "files because unpickling can run arbitrary code"
        )


def read_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file; a pickle, truncated or corrupt file is a RunError naming it."""
    path = Path(path)
    refuse_pickle(path)
    data = path.read_bytes()
    try:
        return st_load(data)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise RunError(
            f"{path}: not a valid safetensors file ({e}); it is truncated or corrupt"
        ) from None


def check_state_dict(
    loaded: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], path: str | Path
) -> None:
    """Check keys, shapes, dtypes and finiteness of `loaded` against `expected` before any load."""
    missing = sorted(set(expected) - set(loaded))
    extra = sorted(set(loaded) - set(expected))
    if missing or extra:
        raise RunError(
            f"{path}: tensors do not match the model (missing: {missing or 'none'}; "
            f"unexpected: {extra or 'none'})"
        )
    for name, ref in expected.items():
        t = loaded[name]
        if t.shape != ref.shape or t.dtype != ref.dtype:
            raise RunError(
                f"{path}: tensor {name!r} is {t.dtype} {tuple(t.shape)}, "
                f"the model needs {ref.dtype} {tuple(ref.shape)}"
            )
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise RunError(f"{path}: tensor {name!r} holds NaN or infinite values")


def load_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Load a model's weights from safetensors after checking every tensor."""
    tensors = read_tensors(path)
    check_state_dict(tensors, model.state_dict(), path)
    model.load_state_dict(tensors)


def save_weights(model: torch.nn.Module, path: str | Path) -> None:
    atomic_write_bytes(path, tensors_to_bytes(model.state_dict()))


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunError(f"{path}: not valid JSON ({e})") from None
    except RecursionError:  # json's decoder recurses once per level of nesting
        raise RunError(f"{path}: not a vaegen file (JSON nested too deeply to read)") from None

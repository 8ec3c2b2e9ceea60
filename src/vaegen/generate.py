"""Simulated data: decode samples of the latent prior, optionally of chosen classes.

The prior is the run's fitted one when it has one (vaegen.priors), else N(0, I).

generate(run, n, labels, seed) -> (images, labels) is the whole API; `write` stores them as .npz,
as a folder of IDX .gz files (readable as a dataset by vaegen and other MNIST readers), or as PNGs.
reconstruct(run, images, labels) decodes real images' latent means the same way, for comparison.
"""

from __future__ import annotations

import gzip
import io
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ._io import atomic_write_bytes
from .data import safe_name, to_float
from .errors import VaegenError
from .idx import idx_bytes
from .priors import load_prior
from .run import Run


def resolve_labels(run: Run, labels: Sequence[int | str]) -> list[int]:
    """Class names or indices -> indices, with an error listing the valid classes."""
    out = []
    for label in labels:
        if isinstance(label, str) and label in run.classes:
            out.append(run.classes.index(label))
            continue
        try:
            index = int(label)
        except (TypeError, ValueError):
            index = -1
        if not 0 <= index < len(run.classes):
            valid = ", ".join(f"{i}={name!r}" for i, name in enumerate(run.classes))
            raise VaegenError(f"unknown class {label!r}; valid classes are {valid}")
        out.append(index)
    return out


def spread_labels(n: int, classes: Sequence[int]) -> torch.Tensor:
    """n labels spread as evenly as possible over `classes`, in class order (counts differ by <= 1)."""
    k = len(classes)
    counts = [n // k + (1 if i < n % k else 0) for i in range(k)]
    return torch.cat(
        [torch.full((c,), cls, dtype=torch.int64) for cls, c in zip(classes, counts, strict=True)]
    )


@torch.no_grad()
def generate(
    run: Run,
    n: int,
    labels: Sequence[int | str] | None = None,
    seed: int = 0,
    temperature: float = 1.0,
    batch_size: int = 4096,
    prior: str = "fitted",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Decode n samples z of the prior at `temperature`: N(0, T^2 I) for prior="standard", the
    run's fitted prior (vaegen.priors, each component's spread scaled by T) for "fitted" when the
    run has one, N(0, T^2 I) when it has none.

    labels: classes to draw (names or indices), spread evenly over n; None means every class for a
    conditional model and the unconditional prior otherwise.
    Returns (images: uint8 n x C x H x W on the CPU, labels: int64 n or None). The same seed gives
    the same bytes.
    """
    if n <= 0:
        raise VaegenError(f"n = {n} is not valid: ask for at least one image")
    if temperature <= 0:
        raise VaegenError(f"temperature = {temperature} is not valid: use a number > 0")
    conditional = run.config.model.conditional
    if labels and not conditional:
        raise VaegenError(
            "this model is not conditional, so it cannot draw chosen classes; "
            "train one with --conditional, or leave out --label"
        )
    y = None
    if conditional:
        chosen = resolve_labels(run, labels) if labels else list(range(len(run.classes)))
        y = spread_labels(n, chosen)
    run.model.eval()
    gen = torch.Generator().manual_seed(seed)  # on the CPU: the same bytes on every device
    z = load_prior(run, prior).sample(y, n, gen, temperature)
    parts = []
    for i in range(0, n, batch_size):
        yb = None if y is None else y[i : i + batch_size].to(run.device)
        parts.append(_decode_uint8(run, z[i : i + batch_size].to(run.device), yb))
    return torch.cat(parts), y


def _decode_uint8(run: Run, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    """The likelihood's mean at z (N x latent_dim), as uint8 pixels N x C x H x W on the CPU."""
    pixels = run.likelihood.mean(run.model.decode(z, y))
    return (pixels * 255.0).round_().to(torch.uint8).cpu()


@torch.no_grad()
def reconstruct(
    run: Run, images: torch.Tensor, labels: torch.Tensor | None = None, batch_size: int = 4096
) -> torch.Tensor:
    """Each image decoded from its encoder mean: no sampling anywhere, so what is lost is what the
    decoder (and the encoder's mean) cannot represent. images: uint8 N x C x H x W; labels: N
    (needed by a conditional model, ignored otherwise). Returns uint8 N x C x H x W on the CPU,
    quantised as generated images are."""
    conditional = run.config.model.conditional
    if conditional and labels is None:
        raise VaegenError("a conditional model reconstructs an image from it and its label")
    run.model.eval()
    parts = []
    for i in range(0, len(images), batch_size):
        yb = labels[i : i + batch_size].to(run.device) if conditional else None  # type: ignore[index]
        mu = run.model.encode(to_float(images[i : i + batch_size], run.device), yb)[0]
        parts.append(_decode_uint8(run, mu, yb))
    return torch.cat(parts)


# ------------------------------------------------------------------------------- writing

FORMATS = ("npz", "idx", "png")


def output_format(out: Path, fmt: str | None) -> str:
    """npz for a path ending in .npz; otherwise a folder: IDX .gz files, or PNGs with fmt='png'."""
    if fmt is not None and fmt not in FORMATS:
        raise VaegenError(f"format {fmt!r} is not known; use one of {', '.join(FORMATS)}")
    if out.suffix == ".npz":
        if fmt not in (None, "npz"):
            raise VaegenError(f"{out}: a .npz path cannot be written as {fmt}; drop --format")
        return "npz"
    if out.suffix:
        raise VaegenError(
            f"{out}: unknown output format {out.suffix!r}; give a path ending in .npz, "
            "or a folder (IDX .gz files, or PNGs with --format png)"
        )
    return fmt or "idx"


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An .npz archive with fixed timestamps, so that the same arrays give the same bytes
    (np.savez stamps the current time into the zip)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arr), allow_pickle=False)
            zf.writestr(info, member.getvalue())
    return buf.getvalue()


def write(
    images: torch.Tensor,
    labels: torch.Tensor | None,
    classes: Sequence[str],
    out: str | Path,
    fmt: str | None = None,
    split: str = "train",
    overwrite: bool = False,
) -> list[Path]:
    """Store generated images: .npz (x: uint8 N x H x W, or N x C x H x W for C > 1; y: int64;
    classes), a folder of MNIST-style IDX .gz files (train- or t10k- prefix by `split`, plus
    classes.txt), or a folder of PNGs with one sub-folder per class. Returns the files written.
    Existing files are refused unless overwrite=True; every file is written atomically."""
    out = Path(out)
    fmt = output_format(out, fmt)
    x = images.numpy()
    if x.shape[1] == 1:
        x = x[:, 0]
    y = None if labels is None else labels.numpy().astype(np.int64)

    files: dict[Path, bytes] = {}
    if fmt == "npz":
        arrays = {"x": x}
        if y is not None:
            arrays |= {"y": y, "classes": np.array(list(classes), dtype=np.str_)}
        files[out] = _npz_bytes(arrays)
    elif fmt == "idx":
        prefix = {"train": "train", "test": "t10k"}[split]
        ndim = x.ndim
        files[out / f"{prefix}-images-idx{ndim}-ubyte.gz"] = gzip.compress(idx_bytes(x), mtime=0)
        if y is not None:
            labels_u8 = y.astype(np.uint8) if len(classes) <= 256 else y.astype(np.int32)
            files[out / f"{prefix}-labels-idx1-ubyte.gz"] = gzip.compress(
                idx_bytes(labels_u8), mtime=0
            )
            files[out / "classes.txt"] = "".join(f"{c}\n" for c in classes).encode()
    else:
        from PIL import Image

        folders = (
            [out / f"{i:02d}_{safe_name(c)}" for i, c in enumerate(classes)]
            if y is not None
            else [out / "samples"]
        )
        counters: dict[int, int] = {}
        for i in range(len(x)):  # one PNG per image: the file I/O is the cost here
            cls = 0 if y is None else int(y[i])
            k = counters[cls] = counters.get(cls, -1) + 1
            buf = io.BytesIO()
            img = x[i] if x.ndim == 3 else x[i].transpose(1, 2, 0)
            Image.fromarray(img).save(buf, format="PNG")
            files[folders[cls] / f"{k:05d}.png"] = buf.getvalue()

    existing = [p for p in files if p.exists()]
    if existing and not overwrite:
        raise VaegenError(
            f"{existing[0]} already exists ({len(existing)} of the output files do); "
            "pass --overwrite to replace them, or choose another --out"
        )
    for path, data in files.items():
        atomic_write_bytes(path, data)
    return list(files)

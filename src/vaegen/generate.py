"""Simulated data: decode samples of the prior N(0, I), optionally of chosen classes.

generate(run, n, labels, seed) -> (images, labels) is the whole API; `write` stores them as .npz,
as a folder of IDX .gz files (readable as a dataset by vaegen and other MNIST readers), or as PNGs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .errors import VaegenError
from .losses import decoder_mean
from .train import Run


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
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Decode n samples z ~ N(0, temperature^2 I).

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
    z = torch.randn(n, run.config.model.latent_dim, generator=gen) * temperature
    parts = []
    for i in range(0, n, batch_size):
        yb = None if y is None else y[i : i + batch_size].to(run.device)
        out = run.model.decode(z[i : i + batch_size].to(run.device), yb)
        pixels = decoder_mean(out, run.config.train.loss)
        parts.append((pixels * 255.0).round_().to(torch.uint8).cpu())
    return torch.cat(parts), y

"""Simulated data: decode samples of the latent prior, optionally of chosen classes.

The prior is the run's fitted one when it has one (vaegen.sampling.priors), else N(0, I).

generate(run, n, labels, seed) -> (images, labels) returns them in memory; `generate_to` streams
them into a file or folder block by block, in memory that does not grow with n: an .npz, a folder
of IDX .gz files (readable as a dataset by vaegen and other MNIST readers), or PNGs.
reconstruct(run, images, labels) decodes real images' latent means the same way, for comparison.

The latent codes are drawn in blocks of BLOCK images, block b from its own CPU generator
(`block_generator`), so that a seed means the same images whatever the decoding chunk size, in
memory or streamed. Block 0 is a generator seeded with the seed itself: up to BLOCK images are
what one such generator draws.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..console import show_progress
from ..data import to_float
from ..errors import VaegenError
from ..files import remove_temporaries_in, sweep_folder_temporaries
from ..locks import output_lock
from ..rundir import Run
from ..rundir.config import check_seed
from . import manifest as mf
from .priors import Prior, load_prior, prior_sha256
from .writers import (
    OUTPUT_MARKER,
    Chunk,
    output_format,
    plan_folder,
    write_folder,
    write_idx,
    write_npz,
    write_png,
)

BLOCK = 65_536  # images per latent block; changing it changes what a seed draws beyond block 0
# IDX files count images in 32 bits, and an .npz's arrays are built whole: more is a typo
MAX_IMAGES = 2**31 - 1


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


def labels_between(n: int, classes: Sequence[int], start: int, stop: int) -> torch.Tensor:
    """spread_labels(n, classes)[start:stop] (int64, stop - start), without building all n."""
    k = len(classes)
    # ends[i]: where class i's run ends; its count is n // k, plus 1 for the first n % k classes
    ends = torch.tensor([(i + 1) * (n // k) + min(i + 1, n % k) for i in range(k)])
    which = torch.searchsorted(ends, torch.arange(start, stop), right=True)
    return torch.tensor(list(classes), dtype=torch.int64)[which]


def spread_labels(n: int, classes: Sequence[int]) -> torch.Tensor:
    """n labels spread as evenly as possible over `classes`, in class order (counts differ by <= 1)."""
    return labels_between(n, classes, 0, n)


def block_generator(seed: int, index: int) -> torch.Generator:
    """The CPU generator (the same bytes on every device) of latent block `index`: seeded with
    `seed` itself for block 0, and for block b > 0 with a 64-bit seed that numpy's SeedSequence
    derives from (seed, b), so that blocks are independent streams."""
    if index == 0:
        return torch.Generator().manual_seed(seed)
    derived = np.random.SeedSequence([seed % 2**64, index]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(derived))


@dataclass(frozen=True)
class Request:
    """A checked request for n images: `chosen` is the class indices they are spread over
    (conditional runs) or None; `prior` draws their latent codes."""

    run: Run
    n: int
    chosen: list[int] | None
    seed: int
    temperature: float
    prior: Prior

    def labels(self, start: int, stop: int) -> torch.Tensor | None:
        """Labels of images start..stop-1 (int64), or None for an unconditional run."""
        return None if self.chosen is None else labels_between(self.n, self.chosen, start, stop)


def request(
    run: Run,
    n: int,
    labels: Sequence[int | str] | None = None,
    seed: int = 0,
    temperature: float = 1.0,
    prior: str | Prior = "fitted",
) -> Request:
    """Check a request (see `generate`) and load its prior if named; errors name what to change."""
    if not 0 < n <= MAX_IMAGES:
        raise VaegenError(f"n = {n} is not valid: ask for 1 to {MAX_IMAGES} images")
    check_seed("seed", seed)
    if not 0 < temperature < math.inf:  # NaN fails this too
        raise VaegenError(f"temperature = {temperature} is not valid: use a finite number > 0")
    conditional = run.config.model.conditional
    if labels and not conditional:
        raise VaegenError(
            "this model is not conditional, so it cannot draw chosen classes; "
            "train one with --conditional, or leave out --label"
        )
    chosen = None
    if conditional:
        chosen = resolve_labels(run, labels) if labels else list(range(len(run.classes)))
    prior = load_prior(run, prior) if isinstance(prior, str) else prior
    return Request(run, n, chosen, seed, temperature, prior)


@torch.no_grad()
def decoded_chunks(req: Request, batch_size: int = 4096, block: int = BLOCK) -> Iterator[Chunk]:
    """The requested images in order, as (uint8 m x C x H x W on the CPU, int64 m labels or None)
    with m <= batch_size. Codes are drawn `block` images at a time (block b from
    block_generator(seed, b)), so batch_size never changes the images; block does."""
    if batch_size < 1 or block < 1:
        raise ValueError(f"batch_size and block must be >= 1, got {batch_size} and {block}")
    run = req.run
    run.model.eval()
    for b, start in enumerate(range(0, req.n, block)):
        stop = min(start + block, req.n)
        y = req.labels(start, stop)
        z = req.prior.sample(y, stop - start, block_generator(req.seed, b), req.temperature)
        for i in range(0, stop - start, batch_size):
            yb = None if y is None else y[i : i + batch_size]
            zb = z[i : i + batch_size].to(run.device)
            yield _decode_uint8(run, zb, None if yb is None else yb.to(run.device)), yb


def generate(
    run: Run,
    n: int,
    *,
    labels: Sequence[int | str] | None = None,
    seed: int = 0,
    temperature: float = 1.0,
    batch_size: int = 4096,
    prior: str | Prior = "fitted",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Decode n samples z of the prior at `temperature`: N(0, T^2 I) for prior="standard", the
    run's fitted prior (sampling.priors, each component's spread scaled by T) for "fitted" when the
    run has one, N(0, T^2 I) when it has none; for "posterior", codes of random training images
    drawn from their posteriors (spread scaled by T); or a prior from `sampling.priors.load_prior`.

    labels: classes to draw (names or indices), spread evenly over n; None means every class for a
    conditional model and the unconditional prior otherwise.
    Returns (images: uint8 n x C x H x W on the CPU, labels: int64 n or None), all in memory
    (`generate_to` streams them to disk instead). The same seed gives the same bytes.
    """
    req = request(run, n, labels, seed, temperature, prior)
    images = torch.cat([x for x, _ in decoded_chunks(req, batch_size)])
    return images, req.labels(0, n)


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


@dataclass(frozen=True)
class Written:
    """What `generate_to` wrote: n images, `files` files, counts[k] images of class k (None for
    an unconditional run); manifest_path: the file holding its manifest (`<OUT>.json` for an
    .npz, OUT/.vaegen-output.json for a folder); manifest: the manifest (sampling.manifest), with
    file_sha256 for an .npz."""

    n: int
    files: int
    counts: list[int] | None
    manifest_path: Path | None = None
    manifest: dict[str, Any] | None = None


def generate_to(
    run: Run,
    n: int,
    out: str | Path,
    *,
    labels: Sequence[int | str] | None = None,
    seed: int = 0,
    temperature: float = 1.0,
    prior: str = "fitted",
    fmt: str | None = None,
    split: str = "train",
    overwrite: bool = False,
    batch_size: int = 4096,
    block: int = BLOCK,
    progress: bool = False,
) -> Written:
    """Generate as `generate` does and store the images as they are decoded, batch_size at a time:
    .npz (x: uint8 N x H x W, or N x C x H x W for C > 1; y: int64 N; classes), a folder of
    MNIST-style IDX .gz files (train- or t10k- prefix by `split`, plus classes.txt), or a folder
    of PNGs with one sub-folder per class. Memory does not grow with n.

    Existing files are refused, before any work, unless overwrite=True. The output is written as
    a whole or not at all (sampling.writers): an error, an interrupt or a kill leaves the previous
    output, if any, as it was. A folder holding files vaegen did not write is refused (its
    contents are never replaced or removed); the IDX train and test splits share a folder. One
    process writes a path at a time (a second is refused). block: images per latent block (see the
    module's doc; the default is what a seed means).

    Each output carries its manifest (sampling.manifest): an .npz in `<OUT>.json` beside it, which
    counts as one of its files (refused without overwrite; a file there that vaegen did not write
    is refused even with it), written after the .npz (the old one is removed just before the new
    .npz replaces the old); a folder in its record, OUTPUT_MARKER."""
    out = Path(out).resolve()  # absolute; a link to a folder: the output goes where it points
    fmt = output_format(out, fmt)
    req = request(run, n, labels, seed, temperature, prior)
    classes = None if req.chosen is None else run.classes
    counts = None if req.chosen is None else class_counts(n, req.chosen, len(run.classes))
    c = run.image_shape[0]
    shape = (n, *run.image_shape) if c > 1 else (n, *run.image_shape[1:])  # as stored
    record = mf.build_manifest(
        run=run,
        fmt=fmt,
        n=n,
        counts=counts,
        labels=req.chosen,
        seed=seed,
        temperature=temperature,
        prior=prior,
        prior_used=req.prior.kind,
        weights_sha256=run.weights_sha256(),
        prior_sha256=prior_sha256(run, req.prior.kind),
    )
    sidecar = mf.npz_manifest_path(out)
    with output_lock(out, "--out"):
        if fmt == "npz":  # what a killed writer of this path left
            remove_temporaries_in(out.parent, of=(out.name, sidecar.name))
        else:
            sweep_folder_temporaries(out)
        plan = None if fmt == "npz" else plan_folder(out, fmt, split, record)
        if plan is None and out.is_dir():
            raise VaegenError(f"--out {out} is a folder; an .npz output is a file")
        if plan is None:  # a user's file at <OUT>.json: refused, with or without overwrite
            old_manifest = mf.check_npz_manifest(out)
            found = ([out] if out.exists() else []) + ([sidecar] if old_manifest else [])
        else:
            found = plan.replaces
        if found and not overwrite:
            raise VaegenError(
                f"{found[0]} already exists ({len(found)} of the output files do); "
                "pass --overwrite to replace them, or choose another --out"
            )
        bar = tqdm(
            total=n,
            desc="generate",
            unit="img",
            unit_scale=True,
            delay=1.0,
            disable=not show_progress(progress),
        )
        with bar:
            chunks = _counted(decoded_chunks(req, batch_size, block), bar)
            if plan is None:
                digest: list[str] = []

                def before_replace(finished: Path) -> None:
                    digest.append(mf.file_sha256(finished))  # the bytes about to be `out`
                    mf.remove_npz_manifest(out)  # before the .npz it describes is replaced

                files = write_npz(
                    out, shape, chunks, req.labels, classes, before_replace=before_replace
                )
                record = {**record, "file_sha256": digest[0]}
                manifest_path = mf.write_npz_manifest(out, manifest=record)
            elif fmt == "idx":
                names = write_folder(
                    plan,
                    record,
                    fmt,
                    lambda folder: write_idx(folder, split, shape, chunks, req.labels, classes),
                )
                files, manifest_path = len(names), out / OUTPUT_MARKER
            else:
                write_folder(plan, record, fmt, lambda folder: write_png(folder, chunks, classes))
                files, manifest_path = n, out / OUTPUT_MARKER
    return Written(n, files, counts, manifest_path, record)


def class_counts(n: int, chosen: Sequence[int], num_classes: int) -> list[int]:
    """Images per class (num_classes long) when n are spread over `chosen` as spread_labels does."""
    counts = [0] * num_classes
    for i, cls in enumerate(chosen):
        counts[cls] += n // len(chosen) + (1 if i < n % len(chosen) else 0)
    return counts


def _counted(chunks: Iterable[Chunk], bar: tqdm) -> Iterator[Chunk]:
    for x, y in chunks:
        yield x, y
        bar.update(len(x))  # after the yield: counts images written, not just decoded

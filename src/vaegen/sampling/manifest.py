"""What a generated output records about where it came from: its manifest.

Every output of `generate_to` carries one: an .npz in the sibling file `<OUT>.json`
(`samples.npz.json`), an IDX or PNG folder in its record (writers.OUTPUT_MARKER), one entry per
output of the folder. A manifest is a JSON object (`build_manifest` lists its fields) naming the
run, the SHA-256 of its weights and of the prior file the latent codes came from, the request
(count per class, seed, temperature, prior), the vaegen version and the date; and, when the run's
eval.json measured exactly this model with exactly this prior, the certificate evaluate wrote
there (`certificate_for`), copied verbatim.

An .npz's manifest also holds `file_sha256`, the SHA-256 of the .npz it describes: `read_manifest`
refuses a manifest whose .npz was changed since (stale). Order of writing, so that a kill at any
point leaves no manifest or a correct one: the old manifest is removed just before the new .npz
is renamed into place, and the new manifest written (atomically) after it. vaegen removes or
replaces only a manifest it wrote (the key MANIFEST_KEY): a user's file, or a link, at
`<OUT>.json` is refused before any work (`check_npz_manifest`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .._version import __version__
from ..errors import VaegenError
from ..files import atomic_write_text, fsync_dir, is_link
from ..rundir import Run, layout
from .writers import OUTPUT_MARKER, read_marker

MANIFEST_KEY = "vaegen_manifest"  # its value: the manifest's format version
MANIFEST_VERSION = 1
NPZ_OUTPUT = "npz"  # the key of an .npz's manifest in what read_manifest returns
EVAL_MAX_BYTES = 64 * 2**20  # an eval.json larger than this is not evaluate's
_READ_CHUNK = 2**20


def npz_manifest_path(out: Path) -> Path:
    """Where the manifest of the .npz `out` lives: `<OUT>.json` beside it."""
    return out.with_name(out.name + ".json")


def file_sha256(path: Path) -> str:
    """SHA-256 (hex) of the bytes of the file `path`, read a MiB at a time."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_READ_CHUNK):
            h.update(block)
    return h.hexdigest()


def certificate_for(
    run: Run, *, weights_sha256: str, prior_kind: str, prior_sha256: str | None
) -> tuple[dict[str, Any] | None, str | None]:
    """(certificate, note): eval.json's "certificate" (a dict, copied verbatim) when RUN/eval.json
    measured these weights (model.weights_sha256) with this prior (settings.prior.used equals
    `prior_kind`, settings.prior.sha256 equals `prior_sha256`, both None for N(0, I)); else None
    and a one-line note saying why not. The file is never trusted: a missing, linked, unreadable
    or malformed eval.json gives a note, not an error."""
    path = run.path / layout.EVAL
    if is_link(path):
        return None, f"{path} is a symbolic link; vaegen does not follow it"
    if not path.exists():
        return None, f"no {layout.EVAL} in {run.path}: `vaegen evaluate` has not measured this run"
    try:
        if not path.is_file() or path.stat().st_size > EVAL_MAX_BYTES:
            raise ValueError("not a file of evaluate's size")
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError) as e:
        return None, f"{path} is not readable: {e}"
    model = data.get("model") if isinstance(data, dict) else None
    settings = data.get("settings") if isinstance(data, dict) else None
    prior = settings.get("prior") if isinstance(settings, dict) else None
    if not isinstance(model, dict) or not isinstance(prior, dict):
        return None, f"{path} is malformed: it has no model or settings.prior record"
    measured = model.get("weights_sha256")
    if not isinstance(measured, str):
        return None, f"{path} records no weights SHA-256 (an older vaegen): evaluate the run again"
    if measured != weights_sha256:
        return None, (
            f"{path} measured other weights than {run.path / layout.WEIGHTS} holds now: "
            "evaluate the run again"
        )
    if prior.get("used") != prior_kind:
        return None, (
            f"{path} measured samples of the {prior.get('used')!r} prior; these come from the "
            f"{prior_kind!r} prior"
        )
    if prior.get("sha256") != prior_sha256:
        return None, (
            f"{path} measured another {prior_kind!r} prior than {run.path / layout.PRIOR} holds "
            "now (refitted since): evaluate the run again"
        )
    cert = data.get("certificate")
    if not isinstance(cert, dict):
        what = "no certificate" if cert is None else "a certificate that is not a JSON object"
        return None, f"{path} holds {what}"
    return cert, None


def build_manifest(
    *,
    run: Run,
    fmt: str,
    n: int,
    counts: Sequence[int] | None,
    labels: Sequence[int] | None,
    seed: int,
    temperature: float,
    prior: str,
    prior_used: str,
    weights_sha256: str,
    prior_sha256: str | None,
) -> dict[str, Any]:
    """The manifest of `n` images generated from `run` (the run's weights hash `weights_sha256`;
    counts: images per class index, as generate.class_counts gives them, None for an
    unconditional model; labels: the class indices asked for, None for an unconditional model;
    prior: the prior name asked for; prior_used: the Prior.kind that drew the codes). Fields:

    vaegen_manifest: MANIFEST_VERSION (marks the object as vaegen's manifest);
    format: "npz", "idx" or "png"; n: images; n_per_class: class name -> images (every class of
    the run, 0 for those not drawn), or None for an unconditional model; image_shape: [C, H, W];
    classes: the run's class names, or None for an unconditional model; labels: the class
    indices asked for (in the order images are spread over them), or None;
    run: the run directory (absolute); weights_sha256: Run.weights_sha256();
    prior: {"requested": name asked for, "used": kind that drew the codes};
    prior_sha256: SHA-256 of the prior's file in the run (priors.prior_sha256: the mixture's or
    the aggregate posterior's safetensors), None for N(0, I);
    seed, temperature: as asked; vaegen: the version; date: UTC, ISO 8601 to the second;
    certificate: RUN/eval.json's certificate when it measured these weights with this prior,
    else None; certificate_note: why there is none (None when there is one).
    An .npz's manifest adds file_sha256 when written (`generate_to`); a folder's entry adds files.
    """
    classes = None if labels is None else list(run.classes)
    per_class = None
    if counts is not None:
        per_class = {name: int(count) for name, count in zip(run.classes, counts, strict=True)}
    cert, note = certificate_for(
        run, weights_sha256=weights_sha256, prior_kind=prior_used, prior_sha256=prior_sha256
    )
    return {
        MANIFEST_KEY: MANIFEST_VERSION,
        "format": fmt,
        "n": n,
        "n_per_class": per_class,
        "image_shape": list(run.image_shape),
        "classes": classes,
        "labels": None if labels is None else list(labels),
        "run": str(Path(run.path).absolute()),
        "weights_sha256": weights_sha256,
        "prior": {"requested": prior, "used": prior_used},
        "prior_sha256": prior_sha256,
        "seed": seed,
        "temperature": temperature,
        "vaegen": __version__,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "certificate": cert,
        "certificate_note": note,
    }


# --------------------------------------------------------------------- an .npz's manifest


def _load_npz_manifest(path: Path) -> dict[str, Any] | None:
    """The manifest at `path` (an .npz's `<OUT>.json`), None when there is no file there; a
    VaegenError naming it when it is a link, not a regular file, or not vaegen's manifest."""
    if is_link(path):
        why = "a symbolic link"
    elif not path.exists():
        return None
    elif not path.is_file():
        why = "not a regular file"
    else:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError, RecursionError) as e:
            data, why = None, f"not JSON ({e})"
        else:
            why = f"a file vaegen did not write (no {MANIFEST_KEY!r} key)"
        if isinstance(data, dict) and type(data.get(MANIFEST_KEY)) is int:  # not a bool
            return data
    raise VaegenError(
        f"{path} is {why}, not an .npz manifest vaegen wrote; vaegen keeps an .npz's manifest "
        "under that name and never replaces or removes a file it did not write: move it away, "
        "or choose another --out"
    )


def check_npz_manifest(out: Path) -> Path | None:
    """The manifest of the .npz `out` when one vaegen wrote is there (it is an output file, to be
    replaced), None when the name is free; a VaegenError naming it when anything else is there
    (a user's file, a link, a folder), with or without overwrite."""
    path = npz_manifest_path(out)
    return None if _load_npz_manifest(path) is None else path


def remove_npz_manifest(out: Path) -> None:
    """Remove the manifest of the .npz `out`, checked again to be vaegen's (a VaegenError, and
    nothing removed, otherwise), before `out` is replaced: a kill between the two then leaves
    the old .npz without a manifest, never with one describing other bytes."""
    path = check_npz_manifest(out)
    if path is not None:
        path.unlink()
        fsync_dir(path.parent)


def read_manifest(path: str | Path) -> dict[str, dict[str, Any]]:
    """The manifests of a generated output, by output: for an .npz, {"npz": its manifest} read
    from `<OUT>.json`; for an IDX or PNG folder, the entries of its OUTPUT_MARKER ("train" and
    "test" for IDX splits, "png"), each holding its files and the fields of `build_manifest`
    (records written before manifests existed have fewer). A link to the output is followed, as
    generate follows it. A VaegenError naming the file when the output or its manifest is missing, the
    manifest is a link or not vaegen's, or (an .npz) the .npz's SHA-256 is not the one its
    manifest records: the .npz was changed after vaegen wrote it (a stale manifest)."""
    out = Path(path).resolve()
    if out.is_dir():
        marker = read_marker(out)
        if marker is None:
            raise VaegenError(
                f"{out} has no {OUTPUT_MARKER}: not an output of vaegen generate (or of one "
                "older than 0.2)"
            )
        return dict(marker["outputs"])
    if out.suffix != ".npz":
        raise VaegenError(f"{out}: give an .npz file or an output folder of vaegen generate")
    sidecar = npz_manifest_path(out)
    manifest = _load_npz_manifest(sidecar)
    if manifest is None:
        raise VaegenError(f"{out} has no manifest: {sidecar} is missing")
    if not out.is_file():
        raise VaegenError(f"{sidecar} describes {out}, which is missing or not a file")
    recorded = manifest.get("file_sha256")
    if not isinstance(recorded, str):
        raise VaegenError(f"{sidecar} records no file_sha256 of {out.name}; it is not complete")
    now = file_sha256(out)
    if now != recorded:
        raise VaegenError(
            f"{sidecar} is stale: it records SHA-256 {recorded[:16]}... of {out.name}, which now "
            f"has {now[:16]}...; the .npz was changed after vaegen wrote it"
        )
    return {NPZ_OUTPUT: manifest}


def write_npz_manifest(out: Path, *, manifest: dict[str, Any]) -> Path:
    """Write `manifest` (holding file_sha256, the SHA-256 of the finished .npz) as the manifest of
    the .npz `out`, atomically, after `out` is in place. Returns its path."""
    if not isinstance(manifest.get("file_sha256"), str):
        raise ValueError("an .npz's manifest needs the file_sha256 of the .npz")
    path = npz_manifest_path(out)
    atomic_write_text(path, json.dumps(manifest, indent=1) + "\n")
    return path

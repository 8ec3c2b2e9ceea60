"""The report's data, gathered from a run: the half of the report that needs torch and the model.

It encodes test images (the explorer's points), copies the MLP decoder's weights for the decoder
the page runs in JavaScript or decodes a lookup grid of images for any other model, reads the
metrics, eval.json and config.json, and collects RUN/figures as data: URIs, drawing first only
the figures that are missing. The result, a `ReportData`, is plain JSON values; render.py turns
it into the page.

The `VAE` MLP decoder is small (latent_dim + K -> hidden -> pixels, about 200k numbers for the
seed model) and the page runs it with float64 accumulation, matching PyTorch within 1e-4. Any
other model class is not run in the browser: the page embeds a grid of images decoded in advance
and shows the nearest one.
"""

from __future__ import annotations

import base64
import io
import logging
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .. import tensorfiles
from .._version import __version__
from ..data import ImageDataset, load_dataset
from ..errors import VaegenError
from ..model.encode import latent_means
from ..model.likelihoods import Likelihood
from ..model.vae import VAE
from ..rundir import Run, layout, with_default_loss
from . import figures
from .render import ReportData, RunFacts, RunFile

log = logging.getLogger(__name__)

MAX_POINTS = 10_000  # test images drawn in the explorer; more only slows the page down
LOOKUP_GRID = 21  # images per side of the precomputed grid for models not run in JavaScript


def report_data(run: Run, test: ImageDataset | None = None) -> ReportData:
    """Everything the report shows about `run`.

    test: the test split; None loads it from the run's data source, and where that fails the
    explorer has no points and the page says why. Figures missing from RUN/figures are drawn
    first (figures.draw_missing), when the test split is at hand.
    """
    run.model.eval()
    data_problem = ""
    if test is None:
        try:
            test = load_dataset(run.config.data.source, "test", **run.config.data.load_options())
        except (VaegenError, OSError) as e:
            data_problem = f"The test set could not be loaded, so the explorer shows no points: {e}"
            log.warning("report: %s", data_problem)
    figures = collect_figures(run, test)
    explorer = explorer_data(run, test)
    facts = RunFacts(
        config=with_default_loss(run.config).to_dict(),
        classes=list(run.classes),
        image_shape=list(run.image_shape),
        model_class=type(run.model).__name__,
        activation=run.likelihood.activation,
        recon_definition=run.likelihood.recon_definition,
    )
    return ReportData(
        name=run.path.resolve().name or str(run.path),
        version=__version__,
        run=facts,
        metrics=run.metrics,
        explorer=explorer,
        data_problem=data_problem,
        figures=figures,
        evaluation=_read_run_file(run, layout.EVAL),
        config=_config(run),
    )


def _read_run_file(run: Run, name: str) -> RunFile:
    path = run.path / name
    if not path.is_file():
        return RunFile(file=name, found=False, value=None, error="")
    try:
        return RunFile(file=name, found=True, value=tensorfiles.read_json(path), error="")
    except VaegenError as e:
        return RunFile(file=name, found=False, value=None, error=str(e))


def _config(run: Run) -> RunFile:
    """config.json as written (with the version and dataset facts); when it cannot be read or is
    not an object, the run's own configuration."""
    got = _read_run_file(run, layout.CONFIG)
    if not isinstance(got["value"], dict):
        got["value"] = with_default_loss(run.config).to_dict()
    return got


# ----------------------------------------------------------------------------------- figures


def collect_figures(run: Run, test: ImageDataset | None) -> dict[str, str]:
    """{figure name: data: URI} of RUN/figures/*.png in page order, drawing first the figures
    that are missing (only those, and only when the test split is at hand)."""
    folder = run.path / layout.FIGURES
    if test is not None:
        figures.draw_missing(run, test)
    out = {}
    for png in sorted(folder.glob("*.png"), key=_figure_order):
        data = png.read_bytes()
        if not data.startswith(b"\x89PNG\r\n\x1a\n"):
            log.warning("report: %s is not a PNG file; left out", png)
            continue
        out[png.stem] = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return out


def _figure_order(path: Path) -> tuple[int, list[Any]]:
    """figures.FIGURES order first, then the rest by name, numbers compared as numbers."""
    stem = path.stem
    rank = next(
        (i for i, n in enumerate(figures.FIGURES) if stem == n or stem.startswith(n + "_")),
        len(figures.FIGURES),
    )
    return rank, [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", stem)]


# ---------------------------------------------------------------------------------- explorer


def _b64(array: np.ndarray, dtype: str) -> str:
    """Base64 of the array's values in a little-endian dtype ('<f4', '<u2')."""
    return base64.b64encode(np.ascontiguousarray(array, dtype=dtype).tobytes()).decode("ascii")


@torch.no_grad()
def explorer_data(run: Run, test: ImageDataset | None) -> dict[str, Any]:
    """Everything the explorer's script needs, as JSON-ready values.

    points.xy: base64 of little-endian float32, n x 2 (the latent means' first two dims);
    points.labels: base64 of little-endian uint16, n (or None); extent: half the side of the
    plane in latent units; mode "mlp" with `decoder` (the weights) or "lookup" with `lookup`
    (PNG atlases)."""
    d = run.config.model.latent_dim
    classes = list(run.classes)
    xy = np.zeros((0, 2), dtype=np.float32)
    point_labels = None
    if test is not None and len(test):
        keep = torch.arange(len(test))
        if len(test) > MAX_POINTS:  # a fixed random subset, so the page is the same every time
            gen = torch.Generator().manual_seed(0)
            keep = torch.randperm(len(test), generator=gen)[:MAX_POINTS].sort().values
        y = None if test.labels is None else test.labels[keep]
        conditional = run.config.model.conditional
        mu = latent_means(run.model, test.images[keep], y if conditional else None).numpy()
        xy = np.zeros((len(mu), 2), dtype=np.float32)
        xy[:, 0] = mu[:, 0]
        if d > 1:
            xy[:, 1] = mu[:, 1]
        else:  # a 1-D latent: spread the points vertically only so that they can be seen
            xy[:, 1] = np.random.default_rng(0).uniform(-1.0, 1.0, len(mu))
        point_labels = None if y is None else y.numpy()
    extent = _extent(xy)
    if d == 1:
        xy[:, 1] *= 0.8 * extent
    k = max(len(classes), 1)
    palette = figures.class_colours(k)  # latent_scatter.png's
    out: dict[str, Any] = {
        "image_shape": list(run.image_shape),
        "latent_dim": d,
        "num_classes": len(classes) if run.config.model.conditional else 0,
        "extent": extent,
        "axis_labels": ["z[0]", "z[1]" if d > 1 else "(spread for visibility)"],
        "colors": palette[:k] if point_labels is not None else ["#3b6fb6"],
        "points": {
            "n": len(xy),
            "xy": _b64(xy, "<f4"),
            "labels": None if point_labels is None else _b64(point_labels, "<u2"),
        },
    }
    if type(run.model) is VAE:  # exactly the MLP whose decode the script re-implements
        out["mode"] = "mlp"
        out["decoder"] = _mlp_decoder(run.model, run.likelihood)
    else:
        out["mode"] = "lookup"
        out["lookup"] = _lookup_grid(run, extent)
    return out


def _extent(xy: np.ndarray) -> float:
    """Half the side of the square plane shown: at least 3 (the prior's +-3 sigma), else enough
    for 99.9% of the points, rounded up to a half."""
    reach = 3.0
    if len(xy):
        finite = np.abs(xy[np.isfinite(xy).all(1)])
        if len(finite):
            reach = max(reach, 1.05 * float(np.quantile(finite.max(1), 0.999)))
    return math.ceil(reach * 2) / 2


def _mlp_decoder(model: VAE, lk: Likelihood) -> dict[str, Any]:
    """fc3 and fc4 of the decoder, row-major (out x in) float32, and the output activation of
    the likelihood's mean (its `activation`)."""

    def t(p: torch.Tensor) -> str:
        return _b64(p.detach().float().cpu().numpy(), "<f4")

    return {
        "fc3_weight": t(model.fc3.weight),
        "fc3_bias": t(model.fc3.bias),
        "fc4_weight": t(model.fc4.weight),
        "fc4_bias": t(model.fc4.bias),
        "output": lk.activation,
    }


@torch.no_grad()
def _lookup_grid(run: Run, extent: float, n: int = LOOKUP_GRID) -> dict[str, Any]:
    """Decoded images on an n x n grid over [-extent, extent]^2 (other dims 0), one PNG mosaic
    per class for a conditional model: row 0 is the top (largest z[1]), column 0 the left."""
    c, h, w = run.image_shape
    values = torch.linspace(-extent, extent, n)
    labels = range(len(run.classes)) if run.config.model.conditional else [None]
    atlases = []
    for label in labels:
        images = figures.decode_grid(run, label, values)
        mosaic = images.permute(2, 0, 3, 1, 4).reshape(c, n * h, n * w)
        pixels = (mosaic * 255).round().to(torch.uint8).numpy()
        image = Image.fromarray(pixels.transpose(1, 2, 0) if c == 3 else pixels[0])
        buf = io.BytesIO()
        image.save(buf, format="PNG", optimize=True)
        atlases.append("data:image/png;base64," + base64.b64encode(buf.getvalue()).decode())
    return {"size": n, "atlases": atlases}

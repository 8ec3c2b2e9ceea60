"""One self-contained report.html for a run: configuration, metrics, figures, evaluation, and a
latent explorer that decodes points of the latent plane in the browser.

The page loads nothing: figures are inlined as data: URIs, the explorer's data (decoder weights as
base64 little-endian float32, the test set's latent means) sits in a <script type=
"application/json"> block, and a Content-Security-Policy meta tag allows no network access at all
and runs only the page's own script and stylesheet (by their SHA-256 hashes). Every string that
comes from data or configuration is HTML-escaped; the explorer's script sets text only through
textContent.

The `VAE` MLP decoder is small (latent_dim + K -> hidden -> pixels, about 200k numbers for the seed
model) and runs in plain JavaScript with float64 accumulation, matching PyTorch within 1e-4. Any
other model class is not run in the browser: the page embeds a grid of images decoded in advance
and shows the nearest one.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import logging
import math
import re
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from . import checkpoint as ckpt
from . import plots
from . import run as rundir
from ._io import atomic_write_text
from ._version import __version__
from .data import ImageDataset, load_dataset
from .errors import VaegenError
from .losses import Likelihood
from .metrics import latent_means
from .models import VAE
from .run import Run

log = logging.getLogger(__name__)

REPORT = rundir.REPORT
EVAL = "eval.json"
MAX_POINTS = 10_000  # test images drawn in the explorer; more only slows the page down
LOOKUP_GRID = 21  # images per side of the precomputed grid for models not run in JavaScript
SLIDER_RANGE = 3.0  # sliders for latent dims >= 2 span +-3 prior standard deviations
# matplotlib's tab10 / tab20, so the explorer's colours match latent_scatter.png
TAB10 = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
         "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]  # fmt: skip
TAB20 = ["#1f77b4", "#aec7e8", "#ff7f0e", "#ffbb78", "#2ca02c", "#98df8a", "#d62728", "#ff9896",
         "#9467bd", "#c5b0d5", "#8c564b", "#c49c94", "#e377c2", "#f7b6d2", "#7f7f7f", "#c7c7c7",
         "#bcbd22", "#dbdb8d", "#17becf", "#9edae5"]  # fmt: skip
METRIC_COLUMNS = ("epoch", "train_loss", "test_loss", "test_recon", "test_kl", "seconds")


def write_report(run: Run, path: Path | None = None, *, test: ImageDataset | None = None) -> Path:
    """Write the run's report (default RUN/report.html, atomically) and return its path.

    test: the test split, when the caller has it loaded already; otherwise it is loaded from the
    run's data source. Without it the page still works, with no points in the explorer. Figures
    missing from RUN/figures are drawn first (plots.draw_all), which needs the test split too.
    """
    path = run.path / REPORT if path is None else Path(path)
    atomic_write_text(path, build_report(run, test))
    log.debug("wrote %s", path)
    return path


# ------------------------------------------------------------------------------- page assembly


def build_report(run: Run, test: ImageDataset | None = None) -> str:
    """The whole HTML page as one string."""
    run.model.eval()
    data_problem = ""
    if test is None:
        try:
            test = load_dataset(run.config.data.source, "test", run.config.data.data_dir)
        except (VaegenError, OSError) as e:
            data_problem = f"The test set could not be loaded, so the explorer shows no points: {e}"
            log.warning("report: %s", data_problem)
    figures = _figures(run, test)
    explorer_data = _explorer_data(run, test)
    css = _asset("report.css")
    script = _asset("explorer.js")
    csp = (
        "default-src 'none'; img-src data:; "
        f"style-src '{_sha256(css)}'; script-src '{_sha256(script)}'; "
        "base-uri 'none'; form-action 'none'"
    )  # built from constants and base64 hashes only: nothing in it needs escaping
    loss_fig = figures.pop("loss_curve", None)
    name = run.path.resolve().name or str(run.path)
    body = "\n".join(
        [
            _header(run, name),
            "<main class=wrap>",
            _explorer_section(run, explorer_data, data_problem),
            _training_section(run, loss_fig),
            _eval_section(run),
            _figures_section(figures),
            _config_section(run),
            "</main>",
            f"<footer class=wrap>Written by vaegen {_e(__version__)}. This page is one file: it "
            "loads nothing from the network and needs no server.</footer>",
        ]
    )
    return (
        "<!DOCTYPE html>\n<html lang=en>\n<head>\n<meta charset=utf-8>\n"
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">\n'
        '<meta name=viewport content="width=device-width, initial-scale=1">\n'
        "<meta name=referrer content=no-referrer>\n"
        '<link rel=icon href="data:,">\n'
        f"<title>{_e(name)} · vaegen report</title>\n<style>{css}</style>\n</head>\n<body>\n"
        f"{body}\n"
        f'<script type="application/json" id="vaegen-data">{script_json(explorer_data)}</script>\n'
        f"<script>{script}</script>\n</body>\n</html>\n"
    )


def _asset(name: str) -> str:
    return (resources.files("vaegen") / "report_assets" / name).read_text(encoding="utf-8")


def _sha256(text: str) -> str:
    """A CSP hash source for an inline <script> or <style> whose content is exactly `text`."""
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode()


def _e(value: object) -> str:
    """HTML-escape any value for text or a quoted attribute."""
    return html.escape(str(value), quote=True)


def script_json(value: Any) -> str:
    """JSON that is safe inside a <script> element: <, >, & and U+2028/2029 become \\u escapes,
    so no string in it can close the element or open a comment ("</script>", "<!--")."""
    text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    for ch in "<>&\u2028\u2029":
        text = text.replace(ch, f"\\u{ord(ch):04x}")
    return text


def _b64(array: np.ndarray, dtype: str) -> str:
    """Base64 of the array's values in a little-endian dtype ('<f4', '<u2')."""
    return base64.b64encode(np.ascontiguousarray(array, dtype=dtype).tobytes()).decode("ascii")


def _fmt(v: object) -> str:
    """Scalars for tables: floats to 6 significant digits, None as a dash; escaped."""
    if isinstance(v, bool) or v is None:
        return {True: "true", False: "false", None: "—"}[v]
    if isinstance(v, float):
        return _e(f"{v:.6g}")
    return _e(v)


# ---------------------------------------------------------------------------------- header


def _header(run: Run, name: str) -> str:
    m, t = run.config.model, run.config.train
    facts = [
        ("data", run.config.data.source),
        ("model", f"{m.model}{' conditional' if m.conditional else ''}"),
        ("latent", f"{m.latent_dim}-D"),
        ("loss", t.loss + (f", β = {t.beta:g}" if t.beta != 1 else "")),
        ("epochs", str(len(run.metrics) or "—")),
    ]
    if run.metrics:
        facts.append(("final test loss", f"{run.metrics[-1].get('test_loss', math.nan):.3f}"))
    chips = "".join(f"<li>{_e(k)} <b>{_e(v)}</b></li>" for k, v in facts)
    return (
        "<header><div class=wrap>"
        f"<h1>{_e(name)}<span class=kind>vaegen run report</span></h1>"
        f"<ul class=chips>{chips}</ul>"
        "<nav><a href='#explorer'>Latent explorer</a><a href='#training'>Training</a>"
        "<a href='#evaluation'>Evaluation</a><a href='#figures'>Figures</a>"
        "<a href='#config'>Configuration</a></nav>"
        "</div></header>"
    )


# -------------------------------------------------------------------------------- explorer


@torch.no_grad()
def _explorer_data(run: Run, test: ImageDataset | None) -> dict[str, Any]:
    """Everything the explorer's script needs, as JSON-ready values (arrays as base64)."""
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
    palette = TAB10 if k <= 10 else TAB20 if k <= 20 else _hues(k)
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


def _hues(k: int) -> list[str]:
    """k distinct colours for more classes than tab20 has: evenly spaced hues."""
    return [f"hsl({round(360 * i / k)}, 65%, 45%)" for i in range(k)]


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
        images = plots.decode_grid(run, label, values)
        mosaic = images.permute(2, 0, 3, 1, 4).reshape(c, n * h, n * w)
        pixels = (mosaic * 255).round().to(torch.uint8).numpy()
        image = Image.fromarray(pixels.transpose(1, 2, 0) if c == 3 else pixels[0])
        buf = io.BytesIO()
        image.save(buf, format="PNG", optimize=True)
        atlases.append("data:image/png;base64," + base64.b64encode(buf.getvalue()).decode())
    return {"size": n, "atlases": atlases}


def _explorer_section(run: Run, data: dict[str, Any], data_problem: str) -> str:
    m = run.config.model
    d = m.latent_dim
    controls = []
    if data["num_classes"]:
        options = "".join(
            f"<option value={k}>{_e(name)}</option>" for k, name in enumerate(run.classes)
        )
        controls.append(
            f"<label for=label-select>class</label><select id=label-select>{options}</select>"
        )
    if data["mode"] == "mlp":
        for i in range(2, d):
            controls.append(
                f"<label for=zdim-{i}>z[{i}]</label>"
                f"<input type=range class=zdim id=zdim-{i} data-dim={i} min={-SLIDER_RANGE} "
                f"max={SLIDER_RANGE} step=0.01 value=0>"
                f"<output id=zdim-value-{i} for=zdim-{i}>0.00</output>"
            )
    notes = []
    if d > 2:
        slice_note = (
            f"The plane is a 2-D slice through the origin of the {d}-D latent space along z[0] "
            "and z[1]; the points are the latent means projected onto those two dimensions. "
        )
        if data["mode"] == "mlp":
            slice_note += "The sliders set the other dimensions."
        else:
            slice_note += "The other dimensions are 0."
        notes.append(slice_note)
    elif d == 1:
        notes.append("The latent space is 1-D: only the horizontal position is decoded.")
    if data["mode"] == "lookup":
        g = data["lookup"]["size"]
        notes.append(
            f"This model ({type(run.model).__name__}) is not run in the browser: the image shown "
            f"is a lookup, the nearest of a {g} × {g} grid of images decoded in advance by "
            "PyTorch, quantised to 8 bits."
        )
    else:
        notes.append(
            "The decoder runs in this page, in JavaScript, from the model's weights: "
            f"{_decoder_formula(run)}."
        )
    if m.conditional:
        notes.append(
            "The model is conditional: the class selector chooses the label given to the decoder. "
            "Points are encoded with their own labels, so classes overlap by design."
        )
    legend = ""
    if data["points"]["labels"] is not None:
        items = "".join(
            f"<li><button type=button data-class={k} aria-pressed=true>"
            f"<span class=swatch></span>{_e(name)}</button></li>"
            for k, name in enumerate(run.classes)
        )
        legend = f"<ul class=legend aria-label='classes (click to hide)'>{items}</ul>"
    problem = f"<p class=warn>{_e(data_problem)}</p>" if data_problem else ""
    n = data["points"]["n"]
    _, h, w = run.image_shape
    return (
        "<section class=card id=explorer><h2>Latent explorer</h2>"
        f"<p class=lede>Each dot is the latent mean of one of {n:,} test images, coloured by its "
        "class. Hover over the plane, or drag, and the decoder turns that point into an image; "
        "the arrow keys move the point too.</p>"
        f"{problem}<div class=explorer><div class=plane-wrap>"
        "<canvas id=plane aria-hidden=true></canvas>"
        "<canvas id=overlay tabindex=0 role=img aria-label='latent plane: move the pointer to "
        "decode a point'></canvas></div>"
        "<div class=side><div class=decoded-box><canvas id=decoded></canvas></div>"
        "<div class=readout id=readout></div>"
        f"<p class=note>The decoded image: {h} × {w} pixels, enlarged without smoothing.</p>"
        f"<div class=controls>{''.join(controls)}</div>{legend}"
        + "".join(f"<p class=note>{_e(t)}</p>" for t in notes)
        + "</div></div></section>"
    )


def _decoder_formula(run: Run) -> str:
    inp = "[z, one_hot(class)]" if run.config.model.conditional else "z"
    out = {"sigmoid": "sigmoid", "clamp": "clamp to [0, 1]"}[run.likelihood.activation]
    return f"image = {out}(fc4(relu(fc3({inp}))))"


# -------------------------------------------------------------------------------- training


def _metric_definitions(run: Run) -> list[tuple[str, str, str]]:
    """(column, unit, definition) for the metrics table."""
    t = run.config.train
    recon = run.likelihood.recon_definition
    loss = f"{t.loss} loss per image"
    beta = "" if t.beta == 1 else f" (β = {t.beta:g})"
    return [
        ("epoch", "", "training epochs completed"),
        (
            "train_loss",
            loss,
            f"reconstruction + β·KL{beta}, averaged over the epoch's training images while the "
            "weights were changing",
        ),
        (
            "test_loss",
            loss,
            f"test_recon + β·test_kl{beta} on the test set with the weights at the end of the "
            "epoch, one sampled z per image (fixed seed)",
        ),
        ("test_recon", "per image", f"reconstruction term: {recon}"),
        ("test_kl", "nats per image", "KL(q(z|x) ‖ N(0, I)) of the encoder's posterior"),
        ("seconds", "s", "wall-clock time of the epoch's training steps (not the test pass)"),
    ]


def _training_section(run: Run, loss_fig: str | None) -> str:
    parts = ["<section class=card id=training><h2>Training</h2>"]
    metrics = run.metrics
    if not metrics:
        parts.append("<p class=lede>No finished epoch: metrics.jsonl is empty or missing.</p>")
        return "".join(parts) + "</section>"
    loss_name = run.config.train.loss
    tests = [r.get("test_loss") for r in metrics]
    finite = [(v, i) for i, v in enumerate(tests) if isinstance(v, (int, float)) and v == v]
    best = min(finite)[1] if finite else -1
    last = metrics[-1]
    total = sum(float(r.get("seconds", 0) or 0) for r in metrics)
    summary = (
        f"{len(metrics)} epochs in {total:,.1f} s of training. Final test {loss_name} loss "
        f"{_num(last.get('test_loss'), 3)} per image (reconstruction "
        f"{_num(last.get('test_recon'), 3)} + KL {_num(last.get('test_kl'), 3)} nats)"
    )
    if best >= 0:
        summary += f"; lowest {_num(tests[best], 3)} at epoch {_e(metrics[best].get('epoch'))}"
    parts.append(f"<p class=lede>{summary}.</p>")
    if loss_fig:
        parts.append(_figure("loss_curve", loss_fig))
    defs = _metric_definitions(run)
    head = "".join(
        f"<th class=num>{_e(col)}<small>{_e(unit)}</small></th>" for col, unit, _ in defs
    )
    digits = {"epoch": 0, "seconds": 1}  # losses: 3
    rows = []
    for i, r in enumerate(metrics):
        cells = "".join(
            f"<td class=num>{_num(r.get(col), digits.get(col, 3))}</td>" for col in METRIC_COLUMNS
        )
        rows.append(f"<tr{' class=best' if i == best else ''}>{cells}</tr>")
    parts.append(
        f"<div class=table-scroll><table><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )
    dl = "".join(
        f"<dt>{_e(col)}</dt><dd>{_e(definition)}{_e(f' [{unit}]') if unit else ''}</dd>"
        for col, unit, definition in defs
    )
    parts.append(
        f"<dl class=defs>{dl}</dl><p class=note>Losses are per image: summed over pixels and "
        "latent dimensions, averaged over images. The highlighted row has the lowest test loss."
        "</p></section>"
    )
    return "".join(parts)


def _num(v: object, digits: int) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return "—" if v is None else _e(v)
    return _e(f"{v:,.{digits}f}")


# ------------------------------------------------------------------------- eval and config


def _eval_section(run: Run) -> str:
    path = run.path / EVAL
    head = "<section class=card id=evaluation><h2>Evaluation</h2>"
    if not path.is_file():
        return (
            f"{head}<p class=lede>No {EVAL} in this run yet: <code>vaegen evaluate RUN</code> "
            "measures the model and the report shows the scorecard here.</p></section>"
        )
    try:
        scorecard = ckpt.read_json(path)
    except VaegenError as e:
        return f"{head}<p class=warn>{_e(e)}</p></section>"
    lede = f"<p class=lede>What <code>vaegen evaluate</code> measured ({EVAL}).</p>"
    return f"{head}{lede}{_sections(scorecard)}</section>"


def _sections(value: Any) -> str:
    """A top-level JSON object: scalars in one table, each nested object under its own heading."""
    if not isinstance(value, dict):
        return render_value(value)
    flat = {k: v for k, v in value.items() if not isinstance(v, dict)}
    nested = "".join(
        f"<div><h3>{_e(k)}</h3>{render_value(v)}</div>"
        for k, v in value.items()
        if isinstance(v, dict)
    )
    return (render_value(flat) if flat else "") + f"<div class=kv-grid>{nested}</div>"


def render_value(value: Any, depth: int = 0) -> str:
    """Any JSON value as HTML: an object as a key/value table (nested objects as nested tables),
    a list of objects as a table with one column per key, other lists comma-separated."""
    if depth > 8:  # deeper than any scorecard needs: show the rest as JSON text
        return f"<code>{_e(json.dumps(value))}</code>"
    if isinstance(value, dict) and set(value) == {"value", "units"}:  # a quantity: "16.1 nats"
        return f"{render_value(value['value'], depth + 1)} <small>{_e(value['units'])}</small>"
    if isinstance(value, dict):
        rows = "".join(
            f"<tr><th>{_e(k)}</th><td>{render_value(v, depth + 1)}</td></tr>"
            for k, v in value.items()
        )
        return f"<table class=kv>{rows}</table>"
    if isinstance(value, list):
        if value and all(isinstance(v, dict) for v in value):
            keys = list(dict.fromkeys(k for v in value for k in v))
            head = "".join(f"<th>{_e(k)}</th>" for k in keys)
            body = "".join(
                "<tr>"
                + "".join(f"<td>{render_value(v.get(k), depth + 1)}</td>" for k in keys)
                + "</tr>"
                for v in value
            )
            return f"<table class=kv><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        if any(isinstance(v, (str, list, dict)) and len(v) > 40 for v in value):  # notes
            return (
                "<ul>" + "".join(f"<li>{render_value(v, depth + 1)}</li>" for v in value) + "</ul>"
            )
        return ", ".join(render_value(v, depth + 1) for v in value) or "[]"
    return _fmt(value)


def _config_section(run: Run) -> str:
    try:
        raw = ckpt.read_json(run.path / rundir.CONFIG)
    except VaegenError:
        raw = None
    if not isinstance(raw, dict):
        raw = run.config.to_dict()
    version = raw.get("vaegen_version")
    tables = "".join(
        f"<div><h3>{_e(key)}</h3>{render_value(v)}</div>"
        for key, v in raw.items()
        if isinstance(v, dict)
    )
    others = {k: v for k, v in raw.items() if not isinstance(v, dict) and k != "vaegen_version"}
    extra = render_value(others) if others else ""
    trained = f" Trained with vaegen {_e(version)}." if version else ""
    return (
        "<section class=card id=config><h2>Configuration</h2>"
        f"<p class=lede>From {_e(rundir.CONFIG)}: everything needed to rebuild the model and repeat "
        f"the run.{trained}</p><div class=kv-grid>{tables}</div>{extra}</section>"
    )


# --------------------------------------------------------------------------------- figures


def _figures(run: Run, test: ImageDataset | None) -> dict[str, str]:
    """{figure name: data: URI} of RUN/figures/*.png, drawing them first when some are missing."""
    folder = run.path / rundir.FIGURES
    if test is not None and _missing_figures(run, folder):
        plots.draw_all(run, test)
    out = {}
    for png in sorted(folder.glob("*.png"), key=_figure_order):
        data = png.read_bytes()
        if not data.startswith(b"\x89PNG\r\n\x1a\n"):
            log.warning("report: %s is not a PNG file; left out", png)
            continue
        out[png.stem] = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return out


def _missing_figures(run: Run, folder: Path) -> bool:
    """True when a figure of plots.FIGURES is absent (manifold may be one file per class)."""
    have = {p.stem for p in folder.glob("*.png")}
    for name in plots.FIGURES:
        if name == "loss_curve" and not run.metrics:
            continue
        if not any(h == name or h.startswith(name + "_") for h in have):
            return True
    return False


def _figure_order(path: Path) -> tuple[int, list[Any]]:
    """plots.FIGURES order first, then the rest by name, numbers compared as numbers."""
    stem = path.stem
    rank = next(
        (i for i, n in enumerate(plots.FIGURES) if stem == n or stem.startswith(n + "_")),
        len(plots.FIGURES),
    )
    return rank, [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", stem)]


def _figure(name: str, uri: str) -> str:
    """A <figure>; a wide one (reconstructions, interpolation) spans the whole figure grid."""
    png = base64.b64decode(uri.split(",", 1)[1][:32])  # the IHDR chunk: width, height at 16..24
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    wide = " class=wide" if width > 2.2 * max(height, 1) else ""
    caption = f"<figcaption>{_e(name)}.png</figcaption>"
    return f"<figure{wide}><img src='{_e(uri)}' alt='{_e(name)}'>{caption}</figure>"


def _figures_section(figures: dict[str, str]) -> str:
    if not figures:
        body = "<p class=lede>No figures in RUN/figures (and none could be drawn).</p>"
    else:
        body = "<div class=figures>" + "".join(_figure(k, v) for k, v in figures.items()) + "</div>"
    return f"<section class=card id=figures><h2>Figures</h2>{body}</section>"

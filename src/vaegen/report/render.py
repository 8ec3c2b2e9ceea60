"""report.html from the report's data: a pure function of a `ReportData`, no torch, no numpy.

The page loads nothing: figures are inlined as data: URIs, the explorer's data sits in a <script
type="application/json"> block, and a Content-Security-Policy meta tag allows no network access
at all and runs only the page's own script and stylesheet (by their SHA-256 hashes). Every string
that comes from data or configuration is HTML-escaped; the explorer's script sets text only
through textContent.

This module and tables.py import only the standard library and each other, nothing else of
vaegen, so that they can be loaded (and tested) without torch or the rest of the package; the only
files they read are the assets/.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from pathlib import Path
from typing import Any, TypedDict

from .tables import esc, interval, render_value, sections

ASSETS = Path(__file__).with_name("assets")
SLIDER_RANGE = 3.0  # sliders for latent dims >= 2 span +-3 prior standard deviations
METRIC_COLUMNS = ("epoch", "train_loss", "test_loss", "test_recon", "test_kl", "seconds")


class RunFacts(TypedDict):
    """What the page says about the run and its model."""

    config: dict[str, Any]  # the run's RunConfig as a dict: {"data": ..., "model": ..., "train"}
    classes: list[str]  # the dataset's class names
    image_shape: list[int]  # C, H, W
    model_class: str  # the model's class name, e.g. "ConvVAE"
    activation: str  # the likelihood mean's output map: "sigmoid" or "clamp"
    recon_definition: str  # the reconstruction term in words


class RunFile(TypedDict):
    """A JSON file of the run directory as read."""

    file: str  # its name in the run directory
    found: bool  # it exists and could be read
    value: Any  # its content (None when not found)
    error: str  # why it could not be read, or ""


class ReportData(TypedDict):
    """Everything the page shows, as JSON values (vaegen.report.payload builds it from a run)."""

    name: str  # the run folder's name: the page title
    version: str  # the vaegen version that writes the page
    run: RunFacts
    metrics: list[dict[str, Any]]  # metrics.jsonl: one record per finished epoch
    explorer: dict[str, Any]  # the explorer script's data (payload.explorer_data)
    data_problem: str  # why the explorer has no points, or ""
    figures: dict[str, str]  # figure name (file stem) -> data:image/png URI, in page order
    evaluation: RunFile  # eval.json
    config: RunFile  # config.json; when unreadable, value is run.config instead


def asset(name: str) -> str:
    """The text of a packaged asset (explorer.js, report.css)."""
    return (ASSETS / name).read_text(encoding="utf-8")


# ------------------------------------------------------------------------------- page assembly


def render_page(data: ReportData, css: str | None = None, script: str | None = None) -> str:
    """The whole HTML page as one string. css, script: the stylesheet and explorer script
    (default: the packaged assets)."""
    css = asset("report.css") if css is None else css
    script = asset("explorer.js") if script is None else script
    csp = (
        "default-src 'none'; img-src data:; "
        f"style-src '{_sha256(css)}'; script-src '{_sha256(script)}'; "
        "base-uri 'none'; form-action 'none'"
    )  # built from constants and base64 hashes only: nothing in it needs escaping
    figures = dict(data["figures"])
    loss_fig = figures.pop("loss_curve", None)
    name = data["name"]
    body = "\n".join(
        [
            _header(data),
            "<main class=wrap>",
            _explorer_section(data),
            _training_section(data, loss_fig),
            _eval_section(data["evaluation"]),
            _figures_section(figures),
            _config_section(data["config"]),
            "</main>",
            f"<footer class=wrap>Written by vaegen {esc(data['version'])}. This page is one file: "
            "it loads nothing from the network and needs no server.</footer>",
        ]
    )
    return (
        "<!DOCTYPE html>\n<html lang=en>\n<head>\n<meta charset=utf-8>\n"
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">\n'
        '<meta name=viewport content="width=device-width, initial-scale=1">\n'
        "<meta name=referrer content=no-referrer>\n"
        '<link rel=icon href="data:,">\n'
        f"<title>{esc(name)} · vaegen report</title>\n<style>{css}</style>\n</head>\n<body>\n"
        f"{body}\n"
        '<script type="application/json" id="vaegen-data">'
        f"{script_json(data['explorer'])}</script>\n"
        f"<script>{script}</script>\n</body>\n</html>\n"
    )


def _sha256(text: str) -> str:
    """A CSP hash source for an inline <script> or <style> whose content is exactly `text`."""
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode()


def script_json(value: Any) -> str:
    """JSON that is safe inside a <script> element: <, >, & and U+2028/2029 become \\u escapes,
    so no string in it can close the element or open a comment ("</script>", "<!--")."""
    text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    for ch in "<>&\u2028\u2029":
        text = text.replace(ch, f"\\u{ord(ch):04x}")
    return text


def _num(v: object, digits: int) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return "—" if v is None else esc(v)
    return esc(f"{v:,.{digits}f}")


# ---------------------------------------------------------------------------------- header


def _header(data: ReportData) -> str:
    config, metrics = data["run"]["config"], data["metrics"]
    m, t = config["model"], config["train"]
    facts = [
        ("data", config["data"]["source"]),
        ("model", f"{m['model']}{' conditional' if m['conditional'] else ''}"),
        ("latent", f"{m['latent_dim']}-D"),
        ("loss", t["loss"] + (f", β = {t['beta']:g}" if t["beta"] != 1 else "")),
        ("epochs", str(len(metrics) or "—")),
    ]
    if metrics:
        facts.append(("final test loss", f"{metrics[-1].get('test_loss', math.nan):.3f}"))
    chips = "".join(f"<li>{esc(k)} <b>{esc(v)}</b></li>" for k, v in facts)
    return (
        "<header><div class=wrap>"
        f"<h1>{esc(data['name'])}<span class=kind>vaegen run report</span></h1>"
        f"<ul class=chips>{chips}</ul>"
        "<nav><a href='#explorer'>Latent explorer</a><a href='#training'>Training</a>"
        "<a href='#evaluation'>Evaluation</a><a href='#figures'>Figures</a>"
        "<a href='#config'>Configuration</a></nav>"
        "</div></header>"
    )


# -------------------------------------------------------------------------------- explorer


def _explorer_section(data: ReportData) -> str:
    facts, explorer = data["run"], data["explorer"]
    m = facts["config"]["model"]
    d = m["latent_dim"]
    classes = facts["classes"]
    controls = []
    if explorer["num_classes"]:
        options = "".join(
            f"<option value={k}>{esc(name)}</option>" for k, name in enumerate(classes)
        )
        controls.append(
            f"<label for=label-select>class</label><select id=label-select>{options}</select>"
        )
    if explorer["mode"] == "mlp":
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
        if explorer["mode"] == "mlp":
            slice_note += "The sliders set the other dimensions."
        else:
            slice_note += "The other dimensions are 0."
        notes.append(slice_note)
    elif d == 1:
        notes.append("The latent space is 1-D: only the horizontal position is decoded.")
    if explorer["mode"] == "lookup":
        g = explorer["lookup"]["size"]
        notes.append(
            f"This model ({facts['model_class']}) is not run in the browser: the image shown "
            f"is a lookup, the nearest of a {g} × {g} grid of images decoded in advance by "
            "PyTorch, quantised to 8 bits."
        )
    else:
        notes.append(
            "The decoder runs in this page, in JavaScript, from the model's weights: "
            f"{_decoder_formula(facts)}."
        )
    if m["conditional"]:
        notes.append(
            "The model is conditional: the class selector chooses the label given to the decoder. "
            "Points are encoded with their own labels, so classes overlap by design."
        )
    legend = ""
    if explorer["points"]["labels"] is not None:
        items = "".join(
            f"<li><button type=button data-class={k} aria-pressed=true>"
            f"<span class=swatch></span>{esc(name)}</button></li>"
            for k, name in enumerate(classes)
        )
        legend = f"<ul class=legend aria-label='classes (click to hide)'>{items}</ul>"
    problem = data["data_problem"]
    warning = f"<p class=warn>{esc(problem)}</p>" if problem else ""
    n = explorer["points"]["n"]
    _, h, w = facts["image_shape"]
    return (
        "<section class=card id=explorer><h2>Latent explorer</h2>"
        f"<p class=lede>Each dot is the latent mean of one of {n:,} test images, coloured by its "
        "class. Hover over the plane, or drag, and the decoder turns that point into an image; "
        "the arrow keys move the point too.</p>"
        f"{warning}<div class=explorer><div class=plane-wrap>"
        "<canvas id=plane aria-hidden=true></canvas>"
        "<canvas id=overlay tabindex=0 role=img aria-label='latent plane: move the pointer to "
        "decode a point'></canvas></div>"
        "<div class=side><div class=decoded-box><canvas id=decoded></canvas></div>"
        "<div class=readout id=readout></div>"
        f"<p class=note>The decoded image: {h} × {w} pixels, enlarged without smoothing.</p>"
        f"<div class=controls>{''.join(controls)}</div>{legend}"
        + "".join(f"<p class=note>{esc(t)}</p>" for t in notes)
        + "</div></div></section>"
    )


def _decoder_formula(facts: RunFacts) -> str:
    inp = "[z, one_hot(class)]" if facts["config"]["model"]["conditional"] else "z"
    out = {"sigmoid": "sigmoid", "clamp": "clamp to [0, 1]"}[facts["activation"]]
    return f"image = {out}(fc4(relu(fc3({inp}))))"


# -------------------------------------------------------------------------------- training


def _metric_definitions(data: ReportData) -> list[tuple[str, str, str]]:
    """(column, unit, definition) for the metrics table."""
    t = data["run"]["config"]["train"]
    recon = data["run"]["recon_definition"]
    loss = f"{t['loss']} loss per image"
    beta = "" if t["beta"] == 1 else f" (β = {t['beta']:g})"
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


def _training_section(data: ReportData, loss_fig: str | None) -> str:
    parts = ["<section class=card id=training><h2>Training</h2>"]
    metrics = data["metrics"]
    if not metrics:
        parts.append("<p class=lede>No finished epoch: metrics.jsonl is empty or missing.</p>")
        return "".join(parts) + "</section>"
    loss_name = data["run"]["config"]["train"]["loss"]
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
        summary += f"; lowest {_num(tests[best], 3)} at epoch {esc(metrics[best].get('epoch'))}"
    parts.append(f"<p class=lede>{summary}.</p>")
    if loss_fig:
        parts.append(_figure("loss_curve", loss_fig))
    defs = _metric_definitions(data)
    head = "".join(
        f"<th class=num>{esc(col)}<small>{esc(unit)}</small></th>" for col, unit, _ in defs
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
        f"<dt>{esc(col)}</dt><dd>{esc(definition)}{esc(f' [{unit}]') if unit else ''}</dd>"
        for col, unit, definition in defs
    )
    parts.append(
        f"<dl class=defs>{dl}</dl><p class=note>Losses are per image: summed over pixels and "
        "latent dimensions, averaged over images. The highlighted row has the lowest test loss."
        "</p></section>"
    )
    return "".join(parts)


# ------------------------------------------------------------------------- eval and config


def _eval_section(evaluation: RunFile) -> str:
    name = evaluation["file"]
    head = "<section class=card id=evaluation><h2>Evaluation</h2>"
    if evaluation["error"]:
        return f"{head}<p class=warn>{esc(evaluation['error'])}</p></section>"
    if not evaluation["found"]:
        return (
            f"{head}<p class=lede>No {name} in this run yet: <code>vaegen evaluate RUN</code> "
            "measures the model and the report shows the scorecard here.</p></section>"
        )
    lede = f"<p class=lede>What <code>vaegen evaluate</code> measured ({name}).</p>"
    value = dict(evaluation["value"])
    cert = value.pop("certificate", None)
    return f"{head}{lede}{_certificate(cert)}{sections(value)}</section>"


def _certificate(cert: Any) -> str:
    """The certificate's table: each headline number beside real data's and its reading."""
    if not isinstance(cert, dict) or not isinstance(cert.get("measures"), list):
        return ""  # eval.json of vaegen 0.2 and earlier
    rows = "".join(
        f"<tr><th>{esc(m.get('name'))}</th><td>{interval(m)}</td>"
        f"<td>{interval(m['floor']) if m.get('floor') else esc(m.get('ideal'))}</td>"
        f"<td>{esc(m.get('reading', '').split(': ', 1)[-1])}</td></tr>"
        for m in cert["measures"]
        if isinstance(m, dict)
    )
    notes = "".join(f"<li>{esc(n)}</li>" for n in cert.get("notes", []))
    return (
        "<h3 id=certificate>Certificate</h3><table class=kv><thead><tr><th>measure</th>"
        "<th>generated [95 % interval]</th><th>real data</th><th>reading</th></tr></thead>"
        f"<tbody>{rows}</tbody></table><ul>{notes}</ul>"
    )


def _config_section(config: RunFile) -> str:
    raw = config["value"]
    version = raw.get("vaegen_version")
    tables = "".join(
        f"<div><h3>{esc(key)}</h3>{render_value(v)}</div>"
        for key, v in raw.items()
        if isinstance(v, dict)
    )
    others = {k: v for k, v in raw.items() if not isinstance(v, dict) and k != "vaegen_version"}
    extra = render_value(others) if others else ""
    trained = f" Trained with vaegen {esc(version)}." if version else ""
    return (
        "<section class=card id=config><h2>Configuration</h2>"
        f"<p class=lede>From {esc(config['file'])}: everything needed to rebuild the model and "
        f"repeat the run.{trained}</p><div class=kv-grid>{tables}</div>{extra}</section>"
    )


# --------------------------------------------------------------------------------- figures


def _figure(name: str, uri: str) -> str:
    """A <figure>; a wide one (reconstructions, interpolation) spans the whole figure grid."""
    png = base64.b64decode(uri.split(",", 1)[1][:32])  # the IHDR chunk: width, height at 16..24
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    wide = " class=wide" if width > 2.2 * max(height, 1) else ""
    caption = f"<figcaption>{esc(name)}.png</figcaption>"
    return f"<figure{wide}><img src='{esc(uri)}' alt='{esc(name)}'>{caption}</figure>"


def _figures_section(figures: dict[str, str]) -> str:
    if not figures:
        body = "<p class=lede>No figures in RUN/figures (and none could be drawn).</p>"
    else:
        body = "<div class=figures>" + "".join(_figure(k, v) for k, v in figures.items()) + "</div>"
    return f"<section class=card id=figures><h2>Figures</h2>{body}</section>"

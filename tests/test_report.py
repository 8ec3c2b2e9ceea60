"""report.html: self-contained, escaped, and its in-browser decoder matches PyTorch; the page is
a function of a JSON payload, rendered without torch; only missing figures are drawn.

Browser tests drive Debian's chromium through playwright; without either they skip, except in CI
(CI=true), where they fail.
"""

from __future__ import annotations

import ast
import base64
import io
import json
import math
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import vaegen
from vaegen import RunConfig
from vaegen.data.idx import write_idx
from vaegen.model.vae import MODELS
from vaegen.report import (
    build_report,
    figures as plots,
    render_value,
    report_data,
    script_json,
    write_report,
)
from vaegen.rundir import Run
from vaegen.rundir.config import DataConfig, ModelConfig, TrainConfig
from vaegen.training.loop import train

from .conftest import IN_CI, make_images, write_idx_dataset

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
PAYLOADS = ["<img src=x onerror=alert(1)>", "</script><script>alert(2)</script>", "a & \"b\" 'c'"]
EVAL = {
    "elbo": {"test": -21.5, "train": -20.25},
    "knn_accuracy": 0.71,
    "per_class": [{"class": "<b>bold</b>", "accuracy": 0.5}, {"class": "x", "recall": 1}],
    "note": "<script>alert(3)</script>",
}


# ------------------------------------------------------------------------------------ runs

RED = (1.0, 0.45, 0.15)  # the colour datasets' tint: red, with three distinct channels
OWN_FIGURES = ("plain", "colour")  # the runs whose reports draw their own figures


def write_colour_dataset(folder: Path, shape: tuple[int, int, int]) -> Path:
    """conftest's shapes cropped to H x W and tinted RED, as 4-D IDX files (N x 3 x H x W)."""
    folder.mkdir(parents=True)
    _, h, w = shape
    for prefix, n, seed in (("train", 192, 0), ("t10k", 64, 1)):
        grey, y = make_images(n, size=max(h, w), seed=seed)
        tint = np.array(RED).reshape(1, 3, 1, 1)
        x = (grey[:, None, :h, :w] * tint).round().astype(np.uint8)
        write_idx(folder / f"{prefix}-images-idx4-ubyte.gz", x)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", y)
    return folder


@torch.no_grad()
def tint_decoder(run: Run) -> None:
    """Make every image the decoder draws red, in three distinct channels, whatever z: its last
    layer's weights shrunk, its bias 0.7 RED per channel. (Three epochs on tiny data leave a
    decoder whose images are coloured noise, no known colour to test the page against.)"""
    last = run.model.fc4 if run.config.model.model == "mlp" else run.model.deconv2
    last.weight.mul_(0.2)
    last.bias.view(3, -1).copy_(0.7 * torch.tensor(RED).view(3, 1))


@pytest.fixture(scope="module")
def make_run(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Run]:
    """Train (once per module) a tiny run with a written report, by name. shape: colour images
    of that size (3 x H x W) instead of grey 12 x 12 ones, and a decoder tinted red."""
    cache: dict[str, Run] = {}
    root = tmp_path_factory.mktemp("report")

    def make(
        name: str,
        classes: list[str] | None = None,
        shape: tuple[int, int, int] | None = None,
        **model_kw: Any,
    ) -> Run:
        if name not in cache:
            if shape is None:
                data = write_idx_dataset(root / f"{name}-data", n_train=192, n_test=64)
            else:
                data = write_colour_dataset(root / f"{name}-data", shape)
            if classes:
                (data / "classes.txt").write_text("\n".join(classes) + "\n")
            loss = model_kw.pop("loss", "gaussian")
            config = RunConfig(
                DataConfig(str(data)),
                ModelConfig(hidden=32, **model_kw),
                TrainConfig(epochs=3, batch_size=32, lr=3e-3, loss=loss),
            )
            run = train(config, root / name, progress=False)
            if shape is not None:
                tint_decoder(run)
            if name == "plain":
                (run.path / "eval.json").write_text(json.dumps(EVAL))
            # drawing figures takes matplotlib seconds per run: the others borrow plain's, as
            # their tests are about the explorer
            if name not in OWN_FIGURES:
                figures = shutil.copytree(make("plain").path / "figures", run.path / "figures")
                for missing in plots.missing_figures(run):  # a manifold per class: conditional
                    shutil.copy(figures / "manifold.png", figures / missing)
            write_report(run)
            cache[name] = run
        return cache[name]

    return make


@pytest.fixture
def plain(make_run: Callable[..., Run]) -> Run:
    return make_run("plain")


@pytest.fixture
def cond3(make_run: Callable[..., Run]) -> Run:
    """Conditional, 3-D latent, Bernoulli decoder (sigmoid output)."""
    return make_run("cond3", conditional=True, latent_dim=3, loss="bernoulli")


@pytest.fixture
def colour(make_run: Callable[..., Run]) -> Run:
    """3 x 12 x 12 red images: the page's decoder writes three channels."""
    return make_run("colour", shape=(3, 12, 12))


@pytest.fixture
def colour_conv(make_run: Callable[..., Run]) -> Run:
    """Conditional conv, 3 x 10 x 14 red images (neither a multiple of 4): a lookup explorer."""
    return make_run("colour_conv", shape=(3, 10, 14), model="conv", conditional=True)


@pytest.fixture
def sigma(make_run: Callable[..., Run]) -> Run:
    """A learned per-pixel sigma: the decoder's output is [mean, log sigma]; the page shows the
    mean."""
    return make_run("sigma", loss="gaussian-pixel-sigma")


# --------------------------------------------------------------------------- page, no browser


def test_report_is_one_offline_file(plain: Run, tmp_path: Path) -> None:
    page = (plain.path / "report.html").read_text()
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', page)
    assert csp and csp.group(1).startswith("default-src 'none'; img-src data:;")
    assert "'unsafe-inline'" not in page and "'unsafe-eval'" not in page
    # every src/href attribute is a data: URI or an in-page anchor
    for ref in re.findall(r"""[\s<](?:src|href)\s*=\s*["']?([^"'\s>]*)""", page):
        assert ref.startswith(("data:", "#")), ref
    assert not re.search(r"https?://", page)
    # figures inlined, metrics one row per epoch, config and eval.json rendered and escaped
    assert page.count("<img ") == len(list((plain.path / "figures").glob("*.png")))
    assert len(re.findall(r"<tr[^>]*><td class=num>", page)) == 3
    assert "gaussian loss per image" in page and "nats per image" in page
    assert "batch_size" in page and "<th>lr</th><td>0.003</td>" in page
    assert "<h3>elbo</h3>" in page and "-21.5" in page and "&lt;b&gt;bold&lt;/b&gt;" in page
    assert "<script>alert(3)" not in page and "&lt;script&gt;alert(3)" in page
    assert not list(plain.path.glob(".report.html.*"))  # the atomic write left no temporary
    other = write_report(plain, tmp_path / "elsewhere" / "r.html")
    assert other.is_file() and other.read_text().startswith("<!DOCTYPE html>")


def test_report_without_the_test_data(plain: Run, tmp_path: Path) -> None:
    moved = tmp_path / "run"
    shutil.copytree(plain.path, moved)
    gone = Run(
        moved,
        RunConfig(DataConfig(str(tmp_path / "no-such-data"))),
        plain.model,
        plain.classes,
        plain.image_shape,
        plain.metrics,
    )
    page = write_report(gone).read_text()
    assert "The test set could not be loaded" in page and "no-such-data" in page
    assert '"n":0' in page


IMAGE_FIGURES = ("reconstructions", "manifold", "samples", "interpolation")


def _page_images(page: str) -> dict[str, np.ndarray]:
    """{alt text: the RGB pixels, H x W x 3 uint8} of every <img> of the page."""
    out = {}
    for uri, alt in re.findall(r"<img src='data:image/png;base64,([^']*)' alt='([^']*)'>", page):
        with Image.open(io.BytesIO(base64.b64decode(uri))) as im:
            out[alt] = np.asarray(im.convert("RGB"))
    return out


def test_a_colour_runs_figures_are_in_colour_and_a_grey_runs_grey(plain: Run, colour: Run) -> None:
    """The page's image figures of a run of red images show red (the red channel well above
    green, green above blue, as in the data); those of a grey run are grey in every pixel."""
    grey = _page_images((plain.path / "report.html").read_text())
    red = _page_images((colour.path / "report.html").read_text())
    assert set(IMAGE_FIGURES) <= set(grey) and set(IMAGE_FIGURES) <= set(red)
    for name in IMAGE_FIGURES:
        g = grey[name].astype(int)
        assert (g[..., 0] == g[..., 1]).all() and (g[..., 1] == g[..., 2]).all(), name
        r, gr, b = red[name].astype(int).transpose(2, 0, 1)
        reddish = (r > gr + 60) & (gr > b + 20)
        assert reddish.sum() > 200, name  # the bars of the shapes, at the least
        assert not ((gr > r + 20) | (b > r + 20)).any(), name  # nothing green or blue


def test_script_json_cannot_close_the_script() -> None:
    value = {"names": ["</script><!--", "a & b > c", "line\u2028sep\u2029"]}
    text = script_json(value)
    assert not set("<>&\u2028\u2029") & set(text)
    assert json.loads(text) == value


def test_render_value_nests_tables_and_escapes() -> None:
    out = render_value({"a": {"b": 1.23456789, "c": [1, 2]}, "<k>": None, "rows": [{"x": True}]})
    assert out.count("<table") == 3 and "1.23457" in out and "1, 2" in out
    assert "&lt;k&gt;" in out and "—" in out and "true" in out


# ------------------------------------------------------------------- payload and renderer

SRC = Path(vaegen.__file__).parent
# Renders the ReportData read from stdin with vaegen.report.render alone: torch, numpy, PIL and
# matplotlib cannot be imported, and vaegen and vaegen.report are bare packages whose __init__
# files (which import torch) never run. Prints the page, then the vaegen modules it loaded.
RENDER_ALONE = """
import importlib.machinery, importlib.util, json, sys
for blocked in ("torch", "numpy", "PIL", "matplotlib"):
    sys.modules[blocked] = None
for name, folder in json.loads(sys.argv[1]):
    spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
    spec.submodule_search_locations = [folder]
    sys.modules[name] = importlib.util.module_from_spec(spec)
from vaegen.report.render import render_page
sys.stdout.write(render_page(json.load(sys.stdin)))
sys.stdout.write(json.dumps(sorted(m for m in sys.modules if m.startswith("vaegen"))))
"""


def _render_alone(data: Any) -> str:
    packages = [("vaegen", str(SRC)), ("vaegen.report", str(SRC / "report"))]
    done = subprocess.run(
        [sys.executable, "-I", "-c", RENDER_ALONE, json.dumps(packages)],
        input=json.dumps(data, allow_nan=False),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    page, _, loaded = done.stdout.rpartition("</html>\n")
    assert json.loads(loaded) == [
        "vaegen",
        "vaegen.report",
        "vaegen.report.render",
        "vaegen.report.tables",
    ]
    return page + "</html>\n"


def _png_uri(width: int, height: int) -> str:
    buf = io.BytesIO()
    Image.new("L", (width, height), 128).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def test_the_renderer_needs_no_torch() -> None:
    """A hand-made ReportData: a lookup model, no points, an unreadable eval.json."""
    data = {
        "name": "hand <made>",
        "version": "9.9",
        "run": {
            "config": {
                "data": {"source": "somewhere", "data_dir": None},
                "model": {"model": "conv", "latent_dim": 3, "hidden": 8, "conditional": True},
                "train": {"loss": "bernoulli", "beta": 2.0},
            },
            "classes": ["cat", "<dog>"],
            "image_shape": [1, 8, 8],
            "model_class": "ConvVAE",
            "activation": "sigmoid",
            "recon_definition": "binary cross-entropy",
        },
        "metrics": [
            {
                "epoch": 1,
                "train_loss": 9.0,
                "test_loss": 8.5,
                "test_recon": 8.0,
                "test_kl": 0.5,
                "seconds": 1.25,
            }
        ],
        "explorer": {
            "mode": "lookup",
            "num_classes": 2,
            "points": {"n": 0, "labels": None},
            "lookup": {"size": 5, "atlases": ["data:,"]},
        },
        "data_problem": "no test set",
        "figures": {"samples": _png_uri(40, 30), "loss_curve": _png_uri(110, 40)},
        "evaluation": {"file": "eval.json", "found": False, "value": None, "error": "bad JSON"},
        "config": {
            "file": "config.json",
            "found": True,
            "value": {"vaegen_version": "9.8", "model": {"latent_dim": 3}},
        },
    }
    page = _render_alone(data)
    assert page.startswith("<!DOCTYPE html>") and "<title>hand &lt;made&gt; · vaegen report" in page
    assert "bernoulli, β = 2" in page and "3-D" in page and "final test loss <b>8.500</b>" in page
    assert "nearest of a 5 × 5 grid" in page and "The other dimensions are 0." in page
    assert "<option value=1>&lt;dog&gt;</option>" in page and "class=legend" not in page
    assert "<p class=warn>no test set</p>" in page and "<p class=warn>bad JSON</p>" in page
    assert "binary cross-entropy" in page and "Trained with vaegen 9.8." in page
    assert "<figcaption>samples.png" in page and "Written by vaegen 9.9." in page
    # the loss curve is shown with the metrics, not among the figures
    assert page.index("loss_curve.png") < page.index("id=figures") < page.index("samples.png")


@pytest.mark.parametrize("name", ["plain", "cond3"])
def test_the_payload_is_json_and_the_page_a_function_of_it(name: str, request) -> None:
    run = request.getfixturevalue(name)
    data = report_data(run)
    assert json.loads(json.dumps(data, allow_nan=False)) == data
    assert _render_alone(data) == build_report(run) == (run.path / "report.html").read_text()


def test_the_report_modules_do_not_import_the_trainer() -> None:
    for path in sorted((SRC / "report").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = ["vaegen", "report"][: 2 - node.level + 1] if node.level else []
                module = ".".join([*base, *([node.module] if node.module else [])])
                modules = [module, *(f"{module}.{a.name}" for a in node.names)]
            else:
                continue
            assert "vaegen.training.loop" not in modules, f"{path.name} imports the trainer"


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.glob("*.png")}


# plots' figure functions, each drawing one figure file
DRAWERS = {
    name: getattr(plots, name)
    for name in (
        "reconstructions",
        "latent_scatter",
        "manifold",
        "samples",
        "interpolation",
        "loss_curve",
    )
}


def _forbid_drawing(monkeypatch: pytest.MonkeyPatch, allow: str = "") -> list[tuple[str, Any]]:
    """Make every figure function of plots fail, except `allow`, whose calls are recorded."""
    calls: list[tuple[str, Any]] = []
    for fig, real in DRAWERS.items():

        def draw(*args: Any, _fig: str = fig, _real: Any = real, **kw: Any) -> Path:
            if _fig != allow:
                pytest.fail(f"the report drew {_fig} again")
            path = next(a for a in args if isinstance(a, Path))
            calls.append((path.name, kw.get("label")))
            return _real(*args, **kw)

        monkeypatch.setattr(plots, fig, draw)
    return calls


@pytest.mark.parametrize(
    ("name", "gone", "fig", "label"),
    [
        ("plain", "samples.png", "samples", None),
        ("cond3", "manifold_1_shape_1.png", "manifold", 1),
    ],
)
def test_the_report_draws_only_the_missing_figures(
    name: str, gone: str, fig: str, label: int | None, request, tmp_path: Path, monkeypatch
) -> None:
    run = request.getfixturevalue(name)
    moved = replace(run, path=tmp_path / name)
    shutil.copytree(run.path, moved.path)
    folder = moved.path / "figures"
    before = _snapshot(folder)
    assert gone in before and not plots.missing_figures(moved)
    _forbid_drawing(monkeypatch)
    write_report(moved)
    assert _snapshot(folder) == before
    (folder / gone).unlink()
    calls = _forbid_drawing(monkeypatch, allow=fig)
    page = write_report(moved).read_text()
    assert calls == [(gone, label)]
    after = _snapshot(folder)
    assert after.pop(gone)[0].startswith(b"\x89PNG") and before.pop(gone)
    assert after == before  # the others: the same bytes, not even rewritten
    assert f"<figcaption>{gone}</figcaption>" in page


# ------------------------------------------------------------------------------ browser


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(reason + "; .ci/run must install it")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install playwright)")
    if not CHROMIUM.is_file():
        _unavailable(f"{CHROMIUM} not found (apt-get install chromium)")
    with sync_playwright() as pw:
        try:
            b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        except Error as e:
            _unavailable(f"chromium did not start: {e}")
        yield b
        b.close()


@dataclass
class Opened:
    page: Any
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def decoded(self) -> str:
        return self.page.evaluate("document.getElementById('decoded').toDataURL()")

    def move(self, fx: float, fy: float) -> None:
        """Move the mouse to a fraction (fx, fy) of the plane's width and height."""
        box = self.page.locator("#overlay").bounding_box()
        self.page.mouse.move(box["x"] + fx * box["width"], box["y"] + fy * box["height"])


@pytest.fixture
def open_report(browser: Any) -> Iterator[Callable[[Run], Opened]]:
    pages = []

    def open_(run: Run) -> Opened:
        o = Opened(browser.new_page(viewport={"width": 1200, "height": 900}))
        pages.append(o.page)
        o.page.on("request", lambda r: o.requests.append(r.url))
        o.page.on("console", lambda m: o.errors.append(m.text) if m.type == "error" else None)
        o.page.on("pageerror", lambda e: o.errors.append(str(e)))
        o.page.on("dialog", lambda d: (o.dialogs.append(d.message), d.dismiss()))
        o.page.goto((run.path / "report.html").as_uri())
        o.page.wait_for_function("window.vaegenReady === true", timeout=10_000)
        return o

    yield open_
    for p in pages:
        p.close()


def test_page_loads_offline_and_the_mouse_decodes(plain: Run, open_report) -> None:
    o = open_report(plain)
    url = (plain.path / "report.html").as_uri()
    assert all(r == url or r.startswith("data:") for r in o.requests), o.requests
    widths = o.page.eval_on_selector_all("img", "els => els.map(e => e.naturalWidth)")
    assert len(widths) >= 4 and min(widths) > 0
    before = o.decoded()
    o.move(0.2, 0.2)
    first = o.decoded()
    o.move(0.85, 0.8)
    assert len({before, first, o.decoded()}) == 3
    # the canvas shows the decoder's image of the point under the mouse
    state = o.page.evaluate("window.vaegenState()")
    assert state["z"][0] > 0 > state["z"][1]
    shown = o.page.evaluate(
        "(() => { const c = document.getElementById('decoded');"
        " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        " return Array.from(d).filter((_, i) => i % 4 === 0); })()"
    )
    want = _torch_decode(plain, state["z"], 0)
    assert torch.allclose(torch.tensor(shown, dtype=torch.float64), (want * 255).round(), atol=1)
    assert not o.errors and not o.dialogs


def _torch_decode(run: Run, z: list[float], label: int) -> torch.Tensor:
    """The likelihood's mean of decode(z, y), flattened, float64."""
    y = torch.tensor([label]) if run.config.model.conditional else None
    with torch.no_grad():
        out = run.model.decode(torch.tensor([z], dtype=torch.float32), y)
    return run.likelihood.mean(out).flatten().double()


POINTS = [([0.0, 0.0, 0.0], 0), ([1.3, -0.7, 0.5], 1), ([-2.2, 1.9, -1.0], 2)]


@pytest.mark.parametrize("name", ["plain", "cond3", "sigma", "colour"])
def test_browser_decoder_matches_pytorch(name: str, request, open_report) -> None:
    run = request.getfixturevalue(name)
    o = open_report(run)
    d = run.config.model.latent_dim
    for z, label in POINTS:
        got = torch.tensor(o.page.evaluate("([z, y]) => window.vaegenDecode(z, y)", [z[:d], label]))
        want = _torch_decode(run, z[:d], label)
        assert got.shape == want.shape
        assert (got - want).abs().max().item() < 1e-4
    assert not o.errors


def _lookup_point(info: dict[str, Any], z: list[float]) -> list[float]:
    """The grid point of a lookup explorer nearest to z (z[0], z[1]): the one it shows."""
    grid = torch.linspace(-info["extent"], info["extent"], info["lookup"]["size"])
    return [grid[(grid - v).abs().argmin()].item() for v in z[:2]]


@pytest.mark.parametrize(
    ("kind", "shape"),
    [
        *(pytest.param(kind, None, id=kind) for kind in sorted(set(MODELS) - {"mlp"})),
        # colour, and no multiple of 4: the padded model's crop, a mosaic of H != W tiles
        pytest.param("conv", (3, 10, 14), id="conv-3x10x14"),
    ],
)
def test_other_models_show_the_nearest_precomputed_image(
    kind: str, shape: tuple[int, int, int] | None, make_run, open_report
) -> None:
    name = kind if shape is None else f"colour_{kind}"
    run = make_run(name, shape=shape, model=kind, conditional=True)
    o = open_report(run)
    assert "is a lookup" in o.page.inner_text("#explorer")
    info = o.page.evaluate("JSON.parse(document.getElementById('vaegen-data').textContent)")
    assert info["mode"] == "lookup"
    grid = torch.linspace(-info["extent"], info["extent"], info["lookup"]["size"])
    step = (grid[1] - grid[0]).item()
    for i, j, label in [(10, 10, 0), (3, 17, 1), (20, 0, 2)]:
        z = [grid[i].item() + 0.3 * step, grid[j].item() - 0.3 * step]
        got = torch.tensor(o.page.evaluate("([z, y]) => window.vaegenDecode(z, y)", [z, label]))
        want = _torch_decode(run, [grid[i].item(), grid[j].item()], label)
        assert _lookup_point(info, z) == [grid[i].item(), grid[j].item()]
        assert got.shape == want.shape == (math.prod(run.image_shape),)
        assert (got - want).abs().max().item() <= 0.5 / 255 + 1e-6  # 8-bit PNG mosaic
    assert not o.errors


@pytest.mark.parametrize("name", ["plain", "colour", "colour_conv"])
def test_the_decoded_image_is_drawn_in_its_colours(name: str, request, open_report) -> None:
    """The explorer's canvas shows the PyTorch decoder's image of the point under the mouse:
    each channel of a colour image in its own colour, a grey image in grey. A lookup explorer
    shows the image of the nearest grid point."""
    run = request.getfixturevalue(name)
    o = open_report(run)
    info = o.page.evaluate("JSON.parse(document.getElementById('vaegen-data').textContent)")
    c, h, w = run.image_shape
    for fx, fy in [(0.3, 0.25), (0.7, 0.6)]:
        o.move(fx, fy)
        state = o.page.evaluate("window.vaegenState()")
        z = state["z"] if info["mode"] == "mlp" else _lookup_point(info, state["z"])
        want = _torch_decode(run, z, state["label"]).view(c, h, w).expand(3, h, w)
        canvas = o.page.evaluate(
            "(() => { const c = document.getElementById('decoded');"
            " return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data);"
            " })()"
        )
        rgba = torch.tensor(canvas, dtype=torch.float64).view(h, w, 4)
        assert (rgba[..., 3] == 255).all()
        err = (rgba[..., :3].permute(2, 0, 1) - 255 * want).abs().max().item()
        assert err <= 0.5 + 0.05, err  # rounding to 8 bits
        if c == 3:  # the premise: a red image whose three channels differ
            r, g, b = want.mean((1, 2)).tolist()
            assert r > g + 0.05 and g > b + 0.05, (r, g, b)
    assert not o.errors


def test_class_selector_and_sliders_change_the_image(cond3: Run, open_report) -> None:
    o = open_report(cond3)
    o.move(0.6, 0.4)
    before = o.decoded()
    o.page.select_option("#label-select", "2")
    assert o.page.evaluate("window.vaegenState().label") == 2
    after_label = o.decoded()
    sliders = o.page.locator("input.zdim")
    assert sliders.count() == 1  # latent_dim 3: z[2] only, z[0] and z[1] are the plane
    sliders.first.fill("1.5")
    assert o.page.evaluate("window.vaegenState().z[2]") == 1.5
    assert o.page.inner_text("#zdim-value-2") == "1.50"
    assert len({before, after_label, o.decoded()}) == 3
    assert "2-D slice through the origin" in o.page.inner_text("#explorer")
    assert not o.errors


def test_class_names_are_text_not_markup(make_run, open_report) -> None:
    run = make_run("xss", classes=PAYLOADS, conditional=True)
    o = open_report(run)
    o.move(0.3, 0.3)
    o.page.select_option("#label-select", "1")
    srcs = o.page.eval_on_selector_all("img", "els => els.map(e => e.getAttribute('src'))")
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert o.page.locator("script").count() == 2  # the data block and the page's own script
    legend = o.page.inner_text(".legend")
    options = o.page.eval_on_selector_all("#label-select option", "els => els.map(e => e.text)")
    config = o.page.inner_text("#config")
    for name in PAYLOADS:
        assert name in legend and name in options and name in config
    assert not o.dialogs and not o.errors


def test_the_evaluation_section_leads_with_the_certificate():
    """Each headline number with its interval beside real data's, read in words, escaped."""
    from vaegen.report.render import _eval_section

    number = {"value": 17.31, "low": 16.9, "high": 17.8, "n": [60000, 10000], "method": "b"}
    cert = {
        "measures": [
            {
                **number,
                "name": "Frechet <distance>",
                "units": "u",
                "floor": {"value": 1.5, "low": 1.4, "high": 1.6, "n": None},
                "reading": "Frechet <distance>: worse than real data's",
            },
            {**number, "name": "near copies", "floor": None, "ideal": 0.05, "reading": "x: ok"},
        ],
        "notes": ["floors <b>measured</b> the same way"],
    }
    qi = {**number, "level": 0.95, "units": "squared units"}
    value = {"certificate": cert, "frechet": {"generated_vs_test": qi}}
    page = _eval_section({"file": "eval.json", "found": True, "value": value, "error": None})
    assert page.index("id=certificate") < page.index("<h3>frechet</h3>")
    assert "<th>Frechet &lt;distance&gt;</th><td>17.31 [16.9, 17.8]</td>" in page
    assert "<td>1.5 [1.4, 1.6]</td><td>worse than real data&#x27;s</td>" in page
    assert "<td>0.05</td><td>ok</td>" in page and "floors &lt;b&gt;measured" in page
    assert "17.31 [16.9, 17.8] <small>squared units; 95 % interval, b, n = " in page

"""Figures show the images they claim to show, on the fixed 0..1 scale.

Each test draws a figure of a known run, reads the PNG back, samples the centre of every image
pixel inside the box where matplotlib drew the image, and compares with images computed here from
the model. The run's decoder gives dim images (about 0.1..0.8), so a figure that autoscales its
images (no vmin/vmax) turns them darker and brighter, one drawn on a 0..255 scale turns white, and
one built from other images (another seed, label, grid order or test image) differs somewhere.
Every image test runs on a grey run, whose whole figure must stay grey (R = G = B in every PNG
pixel), and on a colour run (3 x H x W) whose decoder and test images are red, whose figure must
show each channel as computed (a figure that draws one channel in grey, or mixes the channels
up, is off by 0.2 or more).
"""

from __future__ import annotations

from pathlib import Path
from statistics import NormalDist

import numpy as np
import pytest
import torch
from matplotlib.transforms import Bbox
from PIL import Image

from vaegen.data import ImageDataset
from vaegen.report import figures
from vaegen.rundir import Run, build_model
from vaegen.rundir.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaegen.sampling.generate import generate

GREY = (1, 12, 12)
COLOUR = (3, 12, 12)
CLASSES = ["a", "b", "c"]
# the grey colormap's 256 levels, 8 bits in the PNG and matplotlib's resampling: under 2/255 seen;
# the wrong scales and wrong images this file guards against are off by 9/255 or more
TOL = 3 / 255


def dim_run(path: Path, conditional: bool, shape: tuple[int, int, int] = GREY) -> Run:
    """An untrained MLP VAE whose decoder's means lie well inside (0, 1) and change with z: a
    steep first decoder layer, a flat last one around 0.4 (colour: around red, 0.7, 0.25, 0.15,
    and flatter); and a steep mean head, so that test images of different brightness are encoded
    far apart."""
    config = RunConfig(
        DataConfig("unused"), ModelConfig(hidden=32, conditional=conditional), TrainConfig()
    )
    torch.manual_seed(0)
    model = build_model(config, shape, len(CLASSES))
    with torch.no_grad():
        model.fc3.weight.mul_(6.0)
        if shape[0] == 1:
            model.fc4.weight.mul_(0.04)
            model.fc4.bias.fill_(0.4)
        else:
            model.fc4.weight.mul_(0.015)
            model.fc4.bias.view(3, -1).copy_(torch.tensor([[0.7], [0.25], [0.15]]))
        model.fc_mu.weight.mul_(8.0)
    return Run(path, config, model.eval(), CLASSES, shape)


def dim_test_split(shape: tuple[int, int, int] = GREY) -> ImageDataset:
    """12 noisy flat images, each at its own level of 40..150 (pixel values 40..170, that is
    0.16..0.67; colour: red at that level, green and blue at 0.45 and 0.35 of it), labels 0, 1,
    2, 0, 1, 2, ..."""
    gen = torch.Generator().manual_seed(1)
    level = torch.tensor([40, 150, 90, 140, 60, 110, 70, 130, 50, 120, 100, 80])
    noise = torch.randint(0, 21, (12, *shape), generator=gen)
    tint = torch.tensor([1.0, 0.45, 0.35])[: shape[0]].view(1, -1, 1, 1)
    images = ((level.view(12, 1, 1, 1) + noise) * tint).round().to(torch.uint8)
    return ImageDataset(images, torch.arange(12) % 3, CLASSES)


@pytest.fixture(params=[GREY, COLOUR], ids=["grey", "colour"])
def shape(request: pytest.FixtureRequest) -> tuple[int, int, int]:
    return request.param


def _dim(expected: np.ndarray, shape: tuple[int, int, int]) -> None:
    """The test's premise: the images the figure should show are clear of 0 and 1, so that an
    autoscaled figure (which stretches them to 0..1) or a 0..255 one differs from them; and, in
    colour, red: red above 1.4 times green and blue in every pixel, so that a figure that shows
    one channel, or the channels in another order, differs from them."""
    assert 0.05 < expected.min() and expected.max() < 0.9
    if shape[0] == 3:
        assert (expected[..., 0] > 1.4 * expected[..., 1:].max(-1)).all()


def _images(mosaic: np.ndarray) -> np.ndarray:
    """The pixels of a mosaic that are not its white gaps, n x 3."""
    return mosaic[(mosaic < 1).any(-1)]


# ------------------------------------------------------------------------- reading a figure


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> dict[str, tuple[Bbox, list[Bbox]]]:
    """{file name: (the figure's box, [box of each image drawn in it])} for every figure saved
    while the test runs, in matplotlib's display units (origin bottom left)."""
    record: dict[str, tuple[Bbox, list[Bbox]]] = {}
    save = figures._save

    def recording_save(fig, path: Path) -> Path:
        out = save(fig, path)  # lays the figure out and writes it: the boxes are those of the PNG
        images = [im.get_window_extent() for ax in fig.axes for im in ax.images]
        record[path.name] = (fig.bbox.frozen(), images)
        return out

    monkeypatch.setattr(figures, "_save", recording_save)
    return record


def shown(
    path: Path, boxes: tuple[Bbox, list[Bbox]], shape: tuple[int, ...], grey: bool
) -> list[np.ndarray]:
    """The RGB values in [0, 1] the PNG shows at the centre of each pixel of every image drawn
    in it, each an array of `shape` (rows, cols, 3), ordered top to bottom, then left to right.
    grey: the figure of a grey run, which must be grey all over (R = G = B in every PNG pixel)."""
    png = np.asarray(Image.open(path).convert("RGB")).astype(np.float64) / 255
    if grey:
        assert (png[..., 0] == png[..., 1]).all() and (png[..., 0] == png[..., 2]).all()
    height, width = png.shape[:2]
    figure, images = boxes
    sx, sy = width / figure.width, height / figure.height  # display units -> PNG pixels
    rows, cols = shape[:2]
    out = []
    for b in sorted(images, key=lambda b: (-round(b.y1), b.x0)):
        left, right, top, bottom = b.x0 * sx, b.x1 * sx, height - b.y1 * sy, height - b.y0 * sy
        # an image pixel covers several PNG pixels: its centre is clear of the resampling's edges
        assert (right - left) / cols > 3 and (bottom - top) / rows > 3
        ys = np.floor(top + (np.arange(rows) + 0.5) * (bottom - top) / rows).astype(int)
        xs = np.floor(left + (np.arange(cols) + 0.5) * (right - left) / cols).astype(int)
        out.append(png[ys[:, None], xs[None, :]])
    return out


def rgb(image: torch.Tensor) -> np.ndarray:
    """A C x H x W image in [0, 1] as the H x W x 3 RGB values it should be shown with: grey
    (C = 1) as R = G = B."""
    return image.expand(3, -1, -1).permute(1, 2, 0).double().numpy()


def mosaic(tiles: torch.Tensor, gap: int) -> np.ndarray:
    """rows x cols x C x H x W in [0, 1] -> one H x W x 3 RGB image, tiles `gap` white pixels
    apart."""
    rows, cols, _, h, w = tiles.shape
    out = np.ones((rows * (h + gap) - gap, cols * (w + gap) - gap, 3))
    for r in range(rows):
        for c in range(cols):
            out[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = rgb(
                tiles[r, c]
            )
    return out


def assert_shows(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    err = np.abs(got - want)
    assert err.max() <= TOL, f"{(err > TOL).sum()} of {err.size} pixels off, worst by {err.max()}"


# ------------------------------------------------------------------------------------ tests


@pytest.mark.parametrize("conditional", [False, True], ids=["unconditional", "conditional"])
def test_samples_figure_shows_the_samples(
    conditional: bool, shape, tmp_path: Path, drawn: dict[str, tuple[Bbox, list[Bbox]]]
) -> None:
    run = dim_run(tmp_path, conditional, shape)
    path = figures.samples(run, tmp_path / "samples.png", per_class=10, seed=3)
    rows = len(CLASSES) if conditional else 10
    images, _ = generate(run, rows * 10, seed=3)  # one row per class when conditional
    want = mosaic(images.double().div(255).view(rows, 10, *shape), gap=1)
    _dim(_images(want), shape)
    (got,) = shown(path, drawn[path.name], want.shape, grey=shape[0] == 1)
    assert_shows(got, want)


@pytest.mark.parametrize("label", [None, 2], ids=["unconditional", "class-2"])
def test_manifold_figure_shows_the_decoded_grid(
    label: int | None, shape, tmp_path: Path, drawn: dict[str, tuple[Bbox, list[Bbox]]]
) -> None:
    run = dim_run(tmp_path, conditional=label is not None, shape=shape)
    n = 7
    path = figures.manifold(run, tmp_path / "manifold.png", label=label, n=n)
    g = torch.tensor([NormalDist().inv_cdf(p) for p in np.linspace(0.05, 0.95, n)])
    # row 0 is the top: the largest z[1]; column 0 the smallest z[0]
    z = torch.stack([g.repeat(n), g.flip(0).repeat_interleave(n)], 1)
    y = None if label is None else torch.full((n * n,), label)
    with torch.no_grad():
        tiles = run.likelihood.mean(run.model.decode(z, y)).double().view(n, n, *shape)
    want = mosaic(tiles, gap=0)
    _dim(want, shape)
    (got,) = shown(path, drawn[path.name], want.shape, grey=shape[0] == 1)
    assert_shows(got, want)


def test_the_manifold_of_a_1d_latent_is_one_line(
    tmp_path: Path, drawn: dict[str, tuple[Bbox, list[Bbox]]]
) -> None:
    config = RunConfig(DataConfig("unused"), ModelConfig(latent_dim=1, hidden=32), TrainConfig())
    torch.manual_seed(0)
    model = build_model(config, GREY, len(CLASSES))
    with torch.no_grad():
        model.fc3.weight.mul_(6.0)
        model.fc4.weight.mul_(0.04)
        model.fc4.bias.fill_(0.4)
    run = Run(tmp_path, config, model.eval(), CLASSES, GREY)
    n = 7
    path = figures.manifold(run, tmp_path / "manifold.png", n=n)
    g = torch.tensor([NormalDist().inv_cdf(p) for p in np.linspace(0.05, 0.95, n)])
    with torch.no_grad():
        tiles = run.likelihood.mean(run.model.decode(g[:, None])).double().view(1, n, *GREY)
    want = mosaic(tiles, gap=0)
    (got,) = shown(path, drawn[path.name], want.shape, grey=True)
    assert_shows(got, want)


def test_reconstructions_figure_shows_the_images_and_their_reconstructions(
    shape, tmp_path: Path, drawn: dict[str, tuple[Bbox, list[Bbox]]]
) -> None:
    run, test = dim_run(tmp_path, conditional=True, shape=shape), dim_test_split(shape)
    path = figures.reconstructions(run, test, tmp_path / "r.png", n=6)
    # the first image of each class, then the next ones: with labels 0, 1, 2, 0, ... the first 6
    x = test.images[:6].double().div(255)
    y = test.labels[:6]
    with torch.no_grad():
        mu, _ = run.model.encode(x.float(), y)
        recon = run.likelihood.mean(run.model.decode(mu, y)).double()
    want = [rgb(image) for image in [*x, *recon]]  # the top row, then the bottom row
    _dim(np.stack(want), shape)
    got = shown(path, drawn[path.name], shape[1:], grey=shape[0] == 1)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert_shows(g, w)


def test_interpolation_figure_shows_the_decoded_line(
    shape, tmp_path: Path, drawn: dict[str, tuple[Bbox, list[Bbox]]]
) -> None:
    run, test = dim_run(tmp_path, conditional=True, shape=shape), dim_test_split(shape)
    steps = 6
    path = figures.interpolation(run, test, tmp_path / "i.png", steps=steps)
    # conditional: from test image 0 to the next one of its class (image 3), label 0 throughout
    x = test.images[[0, 3]].double().div(255)
    y = torch.zeros(2, dtype=torch.long)
    with torch.no_grad():
        mu, _ = run.model.encode(x.float(), y)
        t = torch.linspace(0, 1, steps)[:, None]
        line = run.model.decode((1 - t) * mu[0] + t * mu[1], y[:1].expand(steps))
        line = run.likelihood.mean(line).double()
    want = mosaic(torch.cat([x[:1], line, x[1:]])[None], gap=1)
    _dim(_images(want), shape)
    (got,) = shown(path, drawn[path.name], want.shape, grey=shape[0] == 1)
    assert_shows(got, want)


# ----------------------------------------------------------------- choosing what to draw


def _calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace every figure function of report.figures by one that records its file name and draws
    nothing (writes a placeholder file)."""
    calls: list[str] = []

    def fake(*args: object, **kw: object) -> Path:
        path = next(a for a in args if isinstance(a, Path))
        calls.append(path.name if "label" not in kw else f"{path.name} label={kw['label']}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
        return path

    names = ["reconstructions", "latent_scatter", "manifold", "samples", "interpolation"]
    for name in [*names, "loss_curve"]:
        monkeypatch.setattr(figures, name, fake)
    return calls


def test_draw_all_draws_the_chosen_figures_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _calls(monkeypatch)
    run, test = dim_run(tmp_path, conditional=True), dim_test_split()
    files = figures.figure_files(run)
    manifolds = ["manifold_0_a.png", "manifold_1_b.png", "manifold_2_c.png"]
    assert files == [
        "reconstructions.png",
        "latent_scatter.png",
        *manifolds,
        "samples.png",
        "interpolation.png",
    ]
    assert figures.missing_figures(run) == files
    only = ["samples.png", "manifold_1_b.png"]
    paths = figures.draw_all(run, test, only=only)
    assert calls == ["manifold_1_b.png label=1", "samples.png"]  # in the figures' order
    assert paths == [tmp_path / "figures" / f for f in ("manifold_1_b.png", "samples.png")]
    assert figures.missing_figures(run) == [f for f in files if f not in only]
    calls.clear()
    figures.draw_missing(run, test)
    assert sorted(calls) == sorted(
        ["reconstructions.png", "latent_scatter.png", "interpolation.png"]
        + [f"{f} label={k}" for k, f in enumerate(manifolds) if f != "manifold_1_b.png"]
    )
    assert figures.missing_figures(run) == [] and figures.draw_missing(run, test) == []
    with pytest.raises(ValueError, match=r"\[.manifold\.png.\]"):  # an unconditional name
        figures.draw_all(run, test, only=["manifold.png"])


def test_figures_without_test_images_do_not_load_the_test_split(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _calls(monkeypatch)

    def load(*args: object, **kw: object) -> ImageDataset:
        pytest.fail("loaded the test split")

    monkeypatch.setattr(figures, "load_dataset", load)
    run = dim_run(tmp_path, conditional=False)
    run.metrics = [{"epoch": 1, "train_loss": 1.0, "test_loss": 1.0, "test_recon": 1, "test_kl": 0}]
    figures.draw_all(run, only=["manifold.png", "samples.png", "loss_curve.png"])
    assert calls == ["manifold.png", "samples.png", "loss_curve.png"]


@pytest.mark.parametrize("k", [3, 10, 13, 25])
def test_the_scatter_and_the_explorer_give_each_class_one_colour(tmp_path, monkeypatch, k):
    """latent_scatter.png colours class i as the report's explorer does (matplotlib's
    get_cmap(name, k) would spread k colours over the whole map instead)."""
    import matplotlib.axes
    from matplotlib.colors import to_hex

    from vaegen.report.payload import explorer_data

    classes = [f"c{i}" for i in range(k)]
    run = dim_run(tmp_path / "r", conditional=False)
    run = Run(run.path, run.config, run.model, classes, GREY)
    test = dim_test_split()
    test = ImageDataset(test.images, torch.arange(12) % k, classes)
    drawn = []
    real = matplotlib.axes.Axes.scatter

    def spy(self, *args, **kwargs):
        drawn.append(real(self, *args, **kwargs))
        return drawn[-1]

    monkeypatch.setattr(matplotlib.axes.Axes, "scatter", spy)
    figures.latent_scatter(run, test, tmp_path / "s.png")
    (points,) = drawn
    shown = [to_hex(points.to_rgba(i), keep_alpha=False) for i in range(k)]
    assert shown == explorer_data(run, test)["colors"]
    assert len(set(shown)) == k
    if k <= 10:  # tab10's first colours, in its order
        assert shown[:3] == ["#1f77b4", "#ff7f0e", "#2ca02c"]

"""Figures of a run (PNG, matplotlib's Agg backend: no screen needed).

reconstructions.png  10 test images, one per class where possible, over their reconstructions
latent_scatter.png   the latent means of every test image, coloured by class
manifold.png         decoded images on a 15 x 15 grid of the latent plane at Gaussian quantiles
                     (conditional runs: manifold_<k>_<class>.png, one per class)
samples.png          simulated images: 10 prior samples per class (conditional) or 10 x 10
interpolation.png    a straight line through latent space between two test images, decoded
loss_curve.png       train and test loss per epoch, and the test loss's two terms

Images of one channel are drawn in grey, images of three in colour (RGB).
"""

from __future__ import annotations

import colorsys
import io
import logging
from collections.abc import Callable, Collection
from functools import partial
from pathlib import Path
from statistics import NormalDist

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.colors import ListedColormap

from ..data import ImageDataset, load_dataset, to_float
from ..data.class_names import safe_name
from ..files import atomic_write_bytes
from ..model.encode import latent_means
from ..rundir import Run, layout
from ..sampling.generate import generate
from ..sampling.priors import load_prior

log = logging.getLogger(__name__)

FIGURES = (
    "reconstructions",
    "latent_scatter",
    "manifold",
    "samples",
    "interpolation",
    "loss_curve",
)


def _show(ax: plt.Axes, image: np.ndarray) -> None:
    """Show a C x H x W image in [0, 1] with a fixed 0..1 scale (no auto-contrast): one channel
    in grey, three as RGB (matplotlib ignores the colour map and the scale of RGB arrays and
    shows their values as they are)."""
    img = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
    ax.imshow(img, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _labels_arg(run: Run, y: torch.Tensor | None) -> torch.Tensor | None:
    return y if run.config.model.conditional else None


def pick_examples(labels: torch.Tensor | None, n: int = 10) -> torch.Tensor:
    """Indices of n test images: the first of each class in class order, then the next ones."""
    if labels is None:
        return torch.arange(n)
    chosen: list[int] = []
    for c in torch.unique(labels).tolist():
        chosen.append(int((labels == c).nonzero()[0]))
    taken = set(chosen)
    rest = [i for i in range(min(len(labels), 2 * n)) if i not in taken]
    return torch.tensor((chosen + rest)[:n])


@torch.no_grad()
def reconstructions(run: Run, test: ImageDataset, path: Path, n: int = 10) -> Path:
    idx = pick_examples(test.labels, min(n, len(test)))
    x = to_float(test.images[idx], run.device)
    y = None if test.labels is None else test.labels[idx].to(run.device)
    mu, _ = run.model.encode(x, _labels_arg(run, y))
    recon = run.likelihood.mean(run.model.decode(mu, _labels_arg(run, y))).cpu()
    fig, axes = plt.subplots(2, len(idx), figsize=(1.3 * len(idx), 3.2), squeeze=False)
    for j in range(len(idx)):
        _show(axes[0, j], x[j].cpu().numpy())
        _show(axes[1, j], recon[j].numpy())
        if y is not None:
            axes[0, j].set_title(run.classes[int(y[j])], fontsize=8)
    axes[0, 0].set_ylabel("original")
    axes[1, 0].set_ylabel("reconstruction")
    fig.suptitle("Test images (top) and their reconstructions from the latent mean (bottom)")
    return _save(fig, path)


def _project_2d(z: torch.Tensor) -> tuple[np.ndarray, str]:
    """Latent points -> 2-D, and the axis description: identity for 2-D, PCA above."""
    if z.shape[1] == 1:
        return np.stack([z[:, 0].numpy(), np.zeros(len(z))], 1), "z (1-D latent)"
    if z.shape[1] == 2:
        return z.numpy(), "z"
    centred = z - z.mean(0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    return (centred @ v[:2].T).numpy(), f"first 2 principal components of the {z.shape[1]}-D latent"


TAB10 = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
]
TAB20 = [
    "#1f77b4",
    "#aec7e8",
    "#ff7f0e",
    "#ffbb78",
    "#2ca02c",
    "#98df8a",
    "#d62728",
    "#ff9896",
    "#9467bd",
    "#c5b0d5",
    "#8c564b",
    "#c49c94",
    "#e377c2",
    "#f7b6d2",
    "#7f7f7f",
    "#c7c7c7",
    "#bcbd22",
    "#dbdb8d",
    "#17becf",
    "#9edae5",
]


def class_colours(k: int) -> list[str]:
    """One colour ("#rrggbb") per class, the same in latent_scatter.png and the report's explorer:
    the first k of matplotlib's tab10 (k <= 10) or tab20 (k <= 20), else k evenly spaced hues."""
    if k <= 20:
        return (TAB10 if k <= 10 else TAB20)[:k]
    rgb = (colorsys.hls_to_rgb(i / k, 0.45, 0.65) for i in range(k))
    return ["#" + "".join(f"{round(255 * c):02x}" for c in colour) for colour in rgb]


def latent_scatter(run: Run, test: ImageDataset, path: Path) -> Path:
    labels = test.labels if run.config.model.conditional else None
    points, what = _project_2d(latent_means(run.model, test.images, labels))
    fig, ax = plt.subplots(figsize=(8, 6.5))
    if test.labels is None:
        ax.scatter(points[:, 0], points[:, 1], s=2, alpha=0.5)
    else:
        k = len(run.classes)
        cmap = ListedColormap(class_colours(k))  # not get_cmap(name, k): that resamples it
        sc = ax.scatter(
            points[:, 0],
            points[:, 1],
            c=test.labels.numpy(),
            cmap=cmap,
            s=2,
            alpha=0.6,
            vmin=-0.5,
            vmax=k - 0.5,
        )
        bar = fig.colorbar(sc, ax=ax, ticks=range(k))
        bar.ax.set_yticklabels(run.classes)
    title = f"Latent means of the {len(points):,} test images"
    if run.config.model.conditional:
        title += "\n(conditional model: classes overlap by design)"  # one line is too wide
    ax.set_title(title)
    ax.set_xlabel(f"{what} [0]" if "principal" not in what else "PC 1")
    ax.set_ylabel(f"{what} [1]" if "principal" not in what else "PC 2")
    if "principal" in what:
        ax.text(0.01, 0.01, f"projection: {what}", transform=ax.transAxes, fontsize=8)
    return _save(fig, path)


def manifold_grid(n: int = 15, lo: float = 0.05, hi: float = 0.95) -> torch.Tensor:
    """Grid values norm.ppf(linspace(lo, hi, n)): equal steps of probability under N(0, 1)."""
    return torch.tensor([NormalDist().inv_cdf(p) for p in np.linspace(lo, hi, n)])


@torch.no_grad()
def decode_grid(
    run: Run, label: int | None = None, values: torch.Tensor | None = None
) -> torch.Tensor:
    """Decoded images at z = (values[j], values[i]) for every pair, other latent dims 0.

    values: the grid along each axis, increasing (default: manifold_grid(15)). Returns
    n x n x C x H x W in [0, 1]; row 0 is the top (largest z[1]), column 0 the left."""
    g = manifold_grid() if values is None else values
    n = len(g)
    zy, zx = torch.meshgrid(g.flip(0), g, indexing="ij")
    z = torch.zeros(n * n, run.config.model.latent_dim)
    z[:, 0] = zx.reshape(-1)
    if z.shape[1] > 1:
        z[:, 1] = zy.reshape(-1)
    y = None
    if run.config.model.conditional:
        y = torch.full((n * n,), 0 if label is None else label, dtype=torch.long, device=run.device)
    out = run.model.decode(z.to(run.device), y)
    return run.likelihood.mean(out).cpu().view(n, n, *run.image_shape)


def manifold(run: Run, path: Path, label: int | None = None, n: int = 15) -> Path:
    c, h, w = run.image_shape
    line = run.config.model.latent_dim == 1  # a 1-D latent: every row would be the same
    rows = 1 if line else n
    imgs = decode_grid(run, label, manifold_grid(n))[n - rows :]
    mosaic = imgs.permute(2, 0, 3, 1, 4).reshape(c, rows * h, n * w).numpy()
    g = manifold_grid(n).numpy()
    fig, ax = plt.subplots(figsize=(9, 2.5 if line else 9))
    img = mosaic[0] if c == 1 else mosaic.transpose(1, 2, 0)
    ax.imshow(img, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ticks = np.arange(n) * w + w / 2
    labels = [f"{v:.2f}".replace("-0.00", "0.00") for v in g]
    ax.set_xticks(ticks, labels, rotation=90, fontsize=7)
    ax.set_yticks([] if line else ticks, [] if line else labels[::-1], fontsize=7)
    ax.set_xlabel("z[0]")
    ax.set_ylabel("" if line else "z[1]")
    what = f"line, {n} points" if line else f"plane, {n} x {n} grid"
    title = f"Decoded latent {what} at N(0, 1) quantiles 0.05..0.95"
    if run.config.model.latent_dim > 2:
        title += f"\n(slice z[2:] = 0 of the {run.config.model.latent_dim}-D latent)"
    if label is not None:
        title += f"\nclass: {run.classes[label]}"
    ax.set_title(title)
    return _save(fig, path)


def _mosaic(images: torch.Tensor) -> np.ndarray:
    """rows x cols x C x H x W in [0, 1] -> one H*rows x W*cols (x C) image with 1-pixel gaps."""
    rows, cols, c, h, w = images.shape
    padded = torch.ones(rows, cols, c, h + 1, w + 1)
    padded[:, :, :, :h, :w] = images
    m = padded.permute(2, 0, 3, 1, 4).reshape(c, rows * (h + 1), cols * (w + 1))[:, :-1, :-1]
    return m[0].numpy() if c == 1 else m.permute(1, 2, 0).numpy()


def samples(run: Run, path: Path, per_class: int = 10, seed: int = 0) -> Path:
    """Simulated images from the run's prior (the fitted one when it has one, as generate does):
    one row per class for a conditional model."""
    k = len(run.classes) if run.config.model.conditional else per_class
    images, labels = generate(run, k * per_class, seed=seed)
    source = "N(0, I)" if load_prior(run).kind == "standard" else "the fitted Gaussian mixture"
    grid = (images.float() / 255.0).view(k, per_class, *run.image_shape)
    fig, ax = plt.subplots(figsize=(1.0 * per_class + 1.5, 1.0 * k + 0.8))
    ax.imshow(_mosaic(grid), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    h = run.image_shape[1] + 1
    ax.set_xticks([])
    if labels is not None:
        ax.set_yticks(np.arange(k) * h + h / 2, run.classes)
        ax.set_title(f"Simulated images: z from {source}, decoded with each class label")
    else:
        ax.set_yticks([])
        ax.set_title(f"Simulated images: z from {source}, decoded")
    return _save(fig, path)


@torch.no_grad()
def interpolation(run: Run, test: ImageDataset, path: Path, steps: int = 10) -> Path:
    """Decode z = (1 - t) mu_a + t mu_b for t in [0, 1] between two test images' latent means.

    Unconditional: two images of different classes. Conditional: two of the same class (the label
    is fixed along the line, so the row shows the change of style within a class)."""
    labels = test.labels
    a, b = 0, 1
    if labels is not None:
        same = (labels == labels[0]).nonzero().flatten()
        other = (labels != labels[0]).nonzero().flatten()
        pool = same[1:] if run.config.model.conditional else other
        b = int(pool[0]) if len(pool) else 1
    x = to_float(test.images[[a, b]], run.device)
    y = None if labels is None else labels[[a, a]].to(run.device)
    mu, _ = run.model.encode(x, _labels_arg(run, y))
    t = torch.linspace(0, 1, steps, device=run.device)[:, None]
    z = (1 - t) * mu[0] + t * mu[1]
    yz = None if y is None else y[:1].expand(steps)
    line = run.likelihood.mean(run.model.decode(z, _labels_arg(run, yz))).cpu()
    row = torch.cat([x[:1].cpu(), line, x[1:].cpu()])[None]
    fig, ax = plt.subplots(figsize=(1.1 * (steps + 2), 1.9))
    ax.imshow(_mosaic(row), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    names = ""
    if labels is not None:
        names = f": {run.classes[int(labels[a])]} -> {run.classes[int(labels[b])]}"
    ax.set_title(
        f"Interpolation between two test images (first and last) through the latent means{names}",
        fontsize=10,
    )
    return _save(fig, path)


def loss_curve(run: Run, path: Path) -> Path:
    m = run.metrics
    epochs = [r["epoch"] for r in m]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.plot(epochs, [r["train_loss"] for r in m], "o-", label="train", ms=3)
    a.plot(epochs, [r["test_loss"] for r in m], "o-", label="test", ms=3)
    a.set_xlabel("epoch")
    a.set_ylabel(f"{run.config.train.loss} loss per image")
    a.set_title("Loss per image (reconstruction + KL)")
    a.legend()
    b.plot(epochs, [r["test_recon"] for r in m], "o-", label="reconstruction", ms=3)
    b.plot(epochs, [r["test_kl"] for r in m], "o-", label="KL (nats)", ms=3)
    b.set_xlabel("epoch")
    b.set_ylabel("per image")
    b.set_title("Test loss terms")
    b.legend()
    for ax in (a, b):
        ax.grid(alpha=0.3)
    return _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> Path:
    """The figure as a PNG at `path`, written atomically (a full disk or a read-only run is a
    one-line WriteError, and the previous figure stays)."""
    try:
        fig.tight_layout()
        png = io.BytesIO()
        fig.savefig(png, dpi=100, format="png")
    finally:
        plt.close(fig)
    atomic_write_bytes(path, png.getvalue())
    return path


def figure_files(run: Run) -> list[str]:
    """The PNG file names of every figure of `run` in RUN/figures, in FIGURES order: one manifold
    file per class for a conditional run, no loss curve before the first finished epoch."""
    names = ["reconstructions.png", "latent_scatter.png"]
    if run.config.model.conditional:
        names += [_manifold_file(k, name) for k, name in enumerate(run.classes)]
    else:
        names.append("manifold.png")
    names += ["samples.png", "interpolation.png"]
    if run.metrics:
        names.append("loss_curve.png")
    return names


def _manifold_file(label: int, name: str) -> str:
    return f"manifold_{label}_{safe_name(name)}.png"


def missing_figures(run: Run) -> list[str]:
    """The names of figure_files(run) that RUN/figures does not have."""
    folder = run.path / layout.FIGURES
    return [name for name in figure_files(run) if not (folder / name).is_file()]


# the figures drawn from test images; the others need only the model (and the metrics)
_NEEDS_TEST = frozenset({"reconstructions.png", "latent_scatter.png", "interpolation.png"})


def draw_all(
    run: Run, test: ImageDataset | None = None, only: Collection[str] | None = None
) -> list[Path]:
    """Draw the run's figures into RUN/figures/ and return their paths, in FIGURES order.

    only: file names from figure_files(run) to draw ("samples.png", "manifold_2_Bag.png");
    None draws them all. The test split is loaded from the run's data source when `test` is None
    and a chosen figure needs it.
    """
    files = figure_files(run)
    if only is not None:
        unknown = sorted(set(only) - set(files))
        if unknown:
            raise ValueError(f"not figures of this run: {unknown}; its figures are {files}")
        files = [name for name in files if name in set(only)]
    if test is None and _NEEDS_TEST.intersection(files):
        test = load_dataset(run.config.data.source, "test", **run.config.data.load_options())
    draw: dict[str, Callable[[Path], Path]] = {
        "reconstructions.png": lambda p: reconstructions(run, test, p),
        "latent_scatter.png": lambda p: latent_scatter(run, test, p),
        "manifold.png": lambda p: manifold(run, p),
        "samples.png": lambda p: samples(run, p),
        "interpolation.png": lambda p: interpolation(run, test, p),
        "loss_curve.png": lambda p: loss_curve(run, p),
    }
    if run.config.model.conditional:
        for k, name in enumerate(run.classes):
            draw[_manifold_file(k, name)] = partial(manifold, run, label=k)
    folder = run.path / layout.FIGURES
    run.model.eval()
    with layout.lock_for_writing(run.path, "drawing figures"):  # not through a planted link
        return [draw[name](folder / name) for name in files]


def draw_missing(run: Run, test: ImageDataset | None = None) -> list[Path]:
    """Draw only the figures RUN/figures lacks (missing_figures) and return their paths."""
    missing = missing_figures(run)
    return draw_all(run, test, only=missing) if missing else []

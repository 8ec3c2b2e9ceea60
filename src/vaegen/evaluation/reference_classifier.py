"""A small CNN image classifier: the reference FashionMNIST feature network of `vaegen evaluate`,
and the architecture that "train on synthetic, test on real" trains from scratch.

Architecture (sizes follow the input shape, so it fits any C x H x W):
    conv3x3(C -> 32) + ReLU + maxpool2 -> conv3x3(32 -> 64) + ReLU + maxpool2
    -> flatten -> Linear(64 * ceil(H/4) * ceil(W/4) -> 128) + ReLU   (the 128-d "features")
    -> dropout -> Linear(128 -> classes)

The shipped weights (assets/fashion_classifier.safetensors, written by
scripts/train_reference_classifier.py, with a JSON sidecar stating how they were made) are this
network trained on the FashionMNIST training set. Frechet distances computed in its feature space
are comparable between runs only because the network is fixed: never retrain it silently.

train_classifier also trains TSTR's second architecture, an MLP on the pixels
(vaegen.evaluation.tstr_classifiers), by the same loop.
"""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path
from typing import Any, Literal, overload

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..console import show_progress
from ..errors import VaegenError
from ..seeds import CLASSIFIER
from ..tensorfiles import check_state_dict, read_tensors
from .tstr_classifiers import build_mlp, check_architecture

FEATURES = 128  # width of the penultimate layer
REFERENCE_SHAPE = (1, 28, 28)
REFERENCE_CLASSES = 10
REFERENCE_WEIGHTS = "fashion_classifier.safetensors"
REFERENCE_SIDECAR = "fashion_classifier.json"

# Adam's peak learning rate wherever vaegen trains this network (TSTR, the feature network of a
# dataset that is not FashionMNIST). Measured on the 60,000 FashionMNIST training images (seed 5,
# 2 shared CPU cores of an AMD EPYC): 5 epochs at 2e-3 reach 91.4 % test accuracy in 923 s;
# 3 epochs 90.2 %; 5 epochs at 1e-3 on 10,000 images 84.5 %. No left-right flips: they do not
# keep the label of every dataset (digits), and at this budget they cost accuracy on clothes too
# (scripts/train_reference_classifier.py).
CLASSIFIER_LR = 2e-3


class Classifier(nn.Module):
    """conv32-conv64-fc128 CNN. forward: float images N x C x H x W in [0, 1] -> logits N x classes."""

    def __init__(
        self, image_shape: tuple[int, int, int] = REFERENCE_SHAPE, num_classes: int = 10
    ) -> None:
        super().__init__()
        c, h, w = image_shape
        if num_classes < 2:
            raise VaegenError(f"a classifier needs at least 2 classes, got {num_classes}")
        self.image_shape = (c, h, w)
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(c, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        # ceil_mode pooling keeps every input size >= 1 valid (a 1-pixel side stays 1 pixel)
        side_h, side_w = math.ceil(math.ceil(h / 2) / 2), math.ceil(math.ceil(w / 2) / 2)
        self.fc1 = nn.Linear(64 * side_h * side_w, FEATURES)
        self.dropout = nn.Dropout(0.3)
        self.fc2 = nn.Linear(FEATURES, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x: N x C x H x W in [0, 1] -> N x 128 penultimate-layer activations (after ReLU)."""
        x = (x - 0.5) * 2.0  # centre the pixels; a fixed map, so it needs no dataset statistics
        x = F.max_pool2d(F.relu(self.conv1(x)), 2, ceil_mode=True)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2, ceil_mode=True)
        return F.relu(self.fc1(x.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(self.features(x)))


def build_classifier(image_shape: tuple[int, int, int], num_classes: int) -> Classifier:
    """A freshly initialised classifier (uses torch's global RNG for the initial weights)."""
    return Classifier(tuple(image_shape), num_classes)  # type: ignore[arg-type]


def asset_path(name: str) -> Path:
    """Path of a file shipped in vaegen/evaluation/assets/."""
    return Path(str(resources.files("vaegen.evaluation").joinpath("assets", name)))


def reference_info() -> dict[str, Any]:
    """The sidecar JSON of the shipped weights: test accuracy, epochs, seed, date, ..."""
    path = asset_path(REFERENCE_SIDECAR)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}


def load_reference_classifier(device: str | torch.device = "cpu") -> Classifier:
    """The shipped FashionMNIST classifier (1 x 28 x 28 images, 10 classes), in eval mode."""
    path = asset_path(REFERENCE_WEIGHTS)
    if not path.is_file():
        raise VaegenError(
            f"the reference classifier's weights are missing ({path}); reinstall vaegen, or "
            "recreate them with scripts/train_reference_classifier.py"
        )
    return load_classifier(path, REFERENCE_SHAPE, REFERENCE_CLASSES, device)


def load_classifier(
    path: Path,
    image_shape: tuple[int, int, int],
    num_classes: int,
    device: str | torch.device = "cpu",
) -> Classifier:
    """A classifier for C x H x W `image_shape` images and `num_classes` classes with the weights
    of the safetensors file `path` (every tensor checked first), in eval mode on `device`."""
    model = Classifier(image_shape, num_classes)
    tensors = read_tensors(path)
    check_state_dict(tensors, model.state_dict(), path)
    model.load_state_dict(tensors)
    return model.to(device).eval()


def _batches(n: int, batch_size: int, desc: str, progress: bool) -> tqdm:
    starts = range(0, n, batch_size)
    return tqdm(starts, desc=desc, unit="batch", disable=not show_progress(progress), leave=False)


@torch.no_grad()
def extract_features(
    model: Classifier, images: torch.Tensor, batch_size: int = 1000, progress: bool = False
) -> torch.Tensor:
    """uint8 images N x C x H x W -> float32 features N x 128 on the CPU, in batches."""
    model.eval()
    device = next(model.parameters()).device
    out = torch.empty(len(images), FEATURES)
    for i in _batches(len(images), batch_size, "features", progress):
        xb = images[i : i + batch_size].to(device).float().div_(255.0)
        out[i : i + len(xb)] = model.features(xb).cpu()
    return out


@torch.no_grad()
def predict(
    model: nn.Module, images: torch.Tensor, batch_size: int = 1000, progress: bool = False
) -> torch.Tensor:
    """uint8 images N x C x H x W -> predicted class indices N (int64, CPU)."""
    model.eval()
    device = next(model.parameters()).device
    out = torch.empty(len(images), dtype=torch.int64)
    for i in _batches(len(images), batch_size, "classify", progress):
        xb = images[i : i + batch_size].to(device).float().div_(255.0)
        out[i : i + len(xb)] = model(xb).argmax(1).cpu()
    return out


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of uint8 images N x C x H x W whose predicted class equals `labels` (N)."""
    if len(images) == 0:
        raise VaegenError("cannot measure accuracy on an empty set of images")
    return float((predict(model, images) == labels.cpu()).double().mean())


@overload
def train_classifier(
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    epochs: int,
    seed: int = ...,
    num_classes: int | None = ...,
    batch_size: int = ...,
    lr: float = ...,
    flip: bool = ...,
    device: str | torch.device = ...,
    progress: bool = ...,
    architecture: Literal["cnn"] = ...,
) -> Classifier: ...


@overload
def train_classifier(
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    epochs: int,
    seed: int = ...,
    num_classes: int | None = ...,
    batch_size: int = ...,
    lr: float = ...,
    flip: bool = ...,
    device: str | torch.device = ...,
    progress: bool = ...,
    architecture: str,
) -> nn.Module: ...


def train_classifier(
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    epochs: int,
    seed: int = 0,
    num_classes: int | None = None,
    batch_size: int = 128,
    lr: float = 1e-3,
    flip: bool = False,
    device: str | torch.device = "cpu",
    progress: bool = True,
    architecture: str = "cnn",
) -> nn.Module:
    """Train an architecture from scratch on uint8 images N x C x H x W with int labels N.

    architecture: "cnn" (Classifier, this module's) or "mlp" (tstr_classifiers.PixelMLP); any
    other name is refused. Adam (lr) with a cosine decay to 0 over all steps, cross-entropy,
    shuffled batches.
    flip: also show each image mirrored left-right with probability 1/2 (label-preserving for
    clothes, not for digits). Every random draw comes from `seed` inside a forked RNG, so the same
    seed gives the same weights on the same device and thread count, and the caller's global
    RNG state is untouched. Returns the model in eval mode.
    """
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise VaegenError(
            f"train_classifier needs uint8 images N x C x H x W, got {images.dtype} "
            f"{tuple(images.shape)}"
        )
    if labels is None or labels.shape != (len(images),):
        raise VaegenError("train_classifier needs one label per image")
    if epochs < 1:
        raise VaegenError(f"epochs = {epochs} is not valid: use an integer >= 1")
    check_architecture(architecture)
    build = build_classifier if architecture == "cnn" else build_mlp
    labels = labels.to(torch.int64)
    if num_classes is None:
        num_classes = int(labels.max()) + 1
    device = torch.device(device)
    n = len(images)
    steps = epochs * math.ceil(n / batch_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + CLASSIFIER.init)
        model = build(tuple(images.shape[1:]), num_classes).to(device)  # type: ignore[arg-type]
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
        )
        gen = torch.Generator().manual_seed(seed + CLASSIFIER.batches)  # on the CPU
        x_all, y_all = images.to(device), labels.to(device)
        model.train()
        bar = tqdm(
            total=steps,
            desc="classifier",
            unit="batch",
            disable=not show_progress(progress),
            leave=False,
        )
        for epoch in range(epochs):
            perm = torch.randperm(n, generator=gen).to(device)
            total, seen = 0.0, 0
            for i in range(0, n, batch_size):
                idx = perm[i : i + batch_size]
                xb = x_all[idx].float().div_(255.0)
                if flip:
                    mirror = (torch.rand(len(idx), generator=gen) < 0.5).to(device)
                    xb = torch.where(mirror[:, None, None, None], xb.flip(3), xb)
                loss = F.cross_entropy(model(xb), y_all[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += loss.item() * len(idx)
                seen += len(idx)
                bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{total / seen:.3f}", refresh=False)
        bar.close()
    return model.eval()

"""The feature network through which `vaegen evaluate` compares images: the Frechet distances,
precision and recall, and class agreement are all measured in its 128-d penultimate layer.

FashionMNIST runs (the named data source "fashion-mnist", 1 x 28 x 28 images): vaegen's shipped
reference classifier, one fixed network, so every FashionMNIST run's numbers compare.

Any other labelled dataset (an IDX folder, an .npz, an image folder, MNIST, FashionMNIST
converted to another shape): the reference classifier's architecture (reference_classifier)
trained with its recipe on the run's own training split, saved in a folder (by default RUN/feature_net/) as weights
(classifier.safetensors) beside a JSON sidecar saying what they were trained on, and reused by
every later evaluation whose data and settings match the sidecar. The decision is taken on the
run's data source, not on the image shape: MNIST is 1 x 28 x 28 too, and a clothes classifier's
features say little about digits.

A trained network's numbers are specific to the dataset and to that network: two runs compare
only when both were evaluated with the same network, which the sidecar's weights_sha256 (the `id`
in eval.json) identifies. Runs on the same data share one by pointing --feature-net at a single
folder: another run's RUN/feature_net, or a folder of the user's (trained there on first use).
Such a folder is never retrained behind its other users' backs: a mismatch there is an error, and
a run's own folder that another run has used so is marked `shared` in its sidecar, after which
its own run cannot replace it either.

An unlabelled dataset cannot train a classifier: the parts that need features are skipped.

Images from elsewhere (`vaegen evaluate --samples FILE --data SOURCE`: no run) are measured the
same way: the reference for FashionMNIST, else a network trained on SOURCE's training split and
kept in vaegen's cache (cache_root()/feature_nets/, one folder per dataset's content), or in the
folder --feature-net names.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import tensorfiles
from .._version import __version__
from ..data import ImageDataset
from ..data.cache import cache_root
from ..data.named import FASHION_MNIST
from ..errors import VaegenError, some_names
from ..files import atomic_write_text, is_temporary, write_group
from ..locks import lock
from ..rundir import Run, layout
from ..rundir.config import DataConfig
from .reference_classifier import (
    CLASSIFIER_LR,
    REFERENCE_SHAPE,
    REFERENCE_WEIGHTS,
    Classifier,
    accuracy,
    asset_path,
    load_classifier,
    load_reference_classifier,
    reference_info,
    train_classifier,
)

log = logging.getLogger(__name__)

WEIGHTS = "classifier.safetensors"
SIDECAR = "classifier.json"
FORMAT = 1  # of the sidecar; a network written in another format is retrained
FEATURE_SEED = 0  # fixed, not evaluate's --seed: the measuring instrument must not move with it
BATCH = 128  # train_classifier's default, recorded in the sidecar
# The default training budget: the reference classifier's, 8 epochs of the 60,000 FashionMNIST
# training images (480,000 images shown; 92.4 % test accuracy), in 8 to 50 epochs. Measured on
# 1,000 FashionMNIST training images (seed 0, 2,000 test images): 8 epochs 77.6 %, 25 epochs
# 83.5 %, 50 epochs 84.5 %, 100 epochs 84.4 %: past 50, a small dataset gains nothing.
PRESENTATIONS = 480_000
MIN_EPOCHS, MAX_EPOCHS = 8, 50


@dataclass
class FeatureNet:
    """The network a run's images are compared through, or why there is none.

    model: a Classifier in eval mode on the run's device (None when skipped). label: what eval.json
    says of it, beside every number measured through it. what: its name in units and notes.
    test_accuracy: the fraction of its test images it classes right. skip: why no network can
    read this run's images (None when there is one)."""

    model: Classifier | None
    label: dict[str, Any]
    what: str = ""
    test_accuracy: float | None = None
    skip: str | None = None
    weights_sha256: str | None = (
        None  # of its weights' file: what numbers measured through it share
    )


@dataclass(frozen=True)
class Subject:
    """What a feature network is chosen for: the data as config.json records it (source and
    options), the images' C x H x W shape and class names, the device, and the run directory
    whose feature_net folder is the default (None for images from elsewhere: the cache's)."""

    data: DataConfig
    image_shape: tuple[int, int, int]
    classes: tuple[str, ...]
    device: torch.device
    run_path: Path | None = None


def subject_of(run: Run) -> Subject:
    """A run's data, shape, classes, device and directory."""
    shape = tuple(run.image_shape)
    assert len(shape) == 3
    return Subject(run.config.data, shape, tuple(run.classes), run.device, run.path)  # type: ignore[arg-type]


def is_fashion_mnist(subject: Subject) -> bool:
    """Whether the reference classifier measures these images: the data source is the named
    FashionMNIST (checksum-verified when loaded) and the images are still 1 x 28 x 28."""
    return subject.data.source == FASHION_MNIST.name and subject.image_shape == REFERENCE_SHAPE


def default_epochs(n_train: int) -> int:
    """Epochs of the feature network for `n_train` training images: PRESENTATIONS images shown
    in all, within MIN_EPOCHS..MAX_EPOCHS."""
    return min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(PRESENTATIONS / max(n_train, 1))))


def data_fingerprint(train: ImageDataset, test: ImageDataset) -> str:
    """SHA-256 (hex) of both splits' pixels, shapes and labels and of the class names: equal only
    for the same images in the same split, wherever the files now lie."""
    h = hashlib.sha256(json.dumps(list(train.classes)).encode())
    for ds in (train, test):
        images = np.ascontiguousarray(ds.images.numpy())
        h.update(repr(images.shape).encode())
        h.update(memoryview(images).cast("B"))
        if ds.labels is not None:
            h.update(np.ascontiguousarray(ds.labels.numpy().astype(np.int64)).tobytes())
    return h.hexdigest()


def feature_network(
    subject: Subject,
    train: ImageDataset,
    test: ImageDataset,
    *,
    folder: Path | None = None,
    epochs: int | None = None,
    progress: bool = True,
) -> FeatureNet:
    """The network of these images (see the module docstring): the reference for FashionMNIST,
    else the one in `folder` (default RUN/feature_net, or for images without a run a folder of
    vaegen's cache named by the data's content) when its sidecar matches the data and `epochs`
    (None: whatever it was trained with), else one trained now and saved there.

    A mismatch in the default folder retrains and replaces the network; in a folder the user
    named, it is a VaegenError (other runs may be measured with that network)."""
    if is_fashion_mnist(subject):
        if folder is not None or epochs is not None:
            flag = f"--feature-net {folder}" if folder is not None else "--feature-epochs"
            raise VaegenError(
                f"{flag}: FashionMNIST runs are measured with vaegen's reference classifier, so "
                "that all of them compare; evaluate this run without it"
            )
        return _reference(subject.device)
    if train.labels is None or test.labels is None or len(subject.classes) < 2:
        return FeatureNet(None, {}, skip=_unlabelled_reason(train, test))
    if epochs is not None and epochs < 1:
        raise VaegenError(f"--feature-epochs {epochs} is not valid: use an integer >= 1")
    fingerprint = data_fingerprint(train, test)
    shared = folder is not None
    if folder is None:
        folder = (
            subject.run_path / layout.FEATURE_NET
            if subject.run_path is not None
            else cache_root() / "feature_nets" / fingerprint[:16]
        )
    if (folder / layout.CONFIG).exists():
        raise VaegenError(
            f"--feature-net {folder} is a run directory; its feature network is in "
            f"{folder / layout.FEATURE_NET}"
        )
    if folder.exists() and not folder.is_dir():
        raise VaegenError(f"--feature-net {folder} is a file; name a folder")
    _check_feature_folder(folder)
    wanted = {
        "format": FORMAT,
        "image_shape": list(subject.image_shape),
        "classes": list(subject.classes),
        "data_sha256": fingerprint,
        "seed": FEATURE_SEED,
    }
    if epochs is not None:
        wanted["epochs"] = epochs
    with lock(folder, layout.LOCK, "feature network"):
        sidecar, why = _saved(folder, wanted)
        # a run's own folder that another run has measured through (--feature-net) is shared too
        if sidecar is None and why is not None and (shared or _marked_shared(folder)):
            raise VaegenError(
                f"{'--feature-net ' if shared else ''}{folder}: {why}; it measures other runs' "
                "numbers, so it is not replaced: name another folder with --feature-net for this "
                "evaluation (or delete this one to retrain it)"
            )
        if sidecar is None:
            if why is not None:
                log.info("%s: %s; training it again", folder, why)
            sidecar = _train_and_save(subject, train, test, folder, wanted, epochs, progress)
        if shared and not sidecar.get("shared"):  # from now on its owner run cannot replace it
            sidecar = {**sidecar, "shared": True}
            atomic_write_text(folder / SIDECAR, json.dumps(sidecar, indent=2) + "\n")
        # read while the folder is held: another evaluation cannot replace the weights meanwhile
        model = load_classifier(
            folder / WEIGHTS, subject.image_shape, len(subject.classes), subject.device
        )
    label = _label(folder, sidecar)
    return FeatureNet(
        model,
        label,
        "the feature network",
        sidecar["test_accuracy"],
        weights_sha256=sidecar["weights_sha256"],
    )


def _reference(device: torch.device) -> FeatureNet:
    label = {
        "kind": "reference",
        "name": "vaegen reference FashionMNIST classifier, penultimate layer",
        "test_accuracy": reference_info().get("test_accuracy"),
        "comparable": "with any FashionMNIST run's numbers of equal N: one fixed network, "
        "shipped with vaegen",
    }
    model = load_reference_classifier(device)
    digest = hashlib.sha256(asset_path(REFERENCE_WEIGHTS).read_bytes()).hexdigest()
    return FeatureNet(
        model, label, "the reference classifier", label["test_accuracy"], weights_sha256=digest
    )


def _unlabelled_reason(train: ImageDataset, test: ImageDataset) -> str:
    if train.labels is None or test.labels is None:
        which = "dataset has" if train.labels is None else "test split has"
        return (
            f"the {which} no labels, and a feature network is a classifier trained and checked "
            "on this dataset's classes (the reference classifier reads FashionMNIST only); label "
            "the images (one sub-folder per class, or an .npz with y) to get these numbers"
        )
    return (
        f"the dataset has {len(train.classes)} class, and a feature network is a classifier "
        "trained to tell this dataset's classes apart; it needs at least 2"
    )


def _marked_shared(folder: Path) -> bool:
    """Whether the network in `folder` has measured runs through --feature-net (its sidecar says
    so, readable or not otherwise)."""
    try:
        return json.loads((folder / SIDECAR).read_text(encoding="utf-8")).get("shared") is True
    except (OSError, ValueError, AttributeError, RecursionError):
        return False


def _check_feature_folder(folder: Path) -> None:
    """A VaegenError, before any training, unless `folder` is absent, empty or a feature network's
    (it holds SIDECAR): the network is written there as a group that keeps nothing but files."""
    if not folder.is_dir() or (folder / SIDECAR).is_file():
        return
    ours = {layout.LOCK, WEIGHTS, SIDECAR}
    other = sorted(n for n in os.listdir(folder) if n not in ours and not is_temporary(n))
    if other:
        raise VaegenError(
            f"--feature-net {folder} holds files that are not a feature network's "
            f"({some_names(other)}); name a new or empty "
            "folder"
        )


def _saved(folder: Path, wanted: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """(the sidecar, None) when `folder` holds a network that fits `wanted`; (None, why not)
    when it holds another one; (None, None) when it holds none."""
    path = folder / SIDECAR
    if not path.exists():
        return None, None
    try:
        sidecar = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:  # RecursionError: nested too deep
        return None, f"{path} is unreadable ({e})"
    if not isinstance(sidecar, dict):
        return None, f"{path} is not a JSON object"
    for key, kind in _SIDECAR_FIELDS.items():  # what the label and FeatureNet read
        if not isinstance(sidecar.get(key), kind):
            return None, f"{path} has no valid {key!r}"
    for key, value in wanted.items():
        if sidecar.get(key) != value:
            if key == "data_sha256":
                return None, "its network was trained on other data or another train/test split"
            return None, (
                f"its network has {key} = {sidecar.get(key)!r} ({SIDECAR}) and this evaluation "
                f"needs {value!r}"
            )
    try:
        digest = hashlib.sha256((folder / WEIGHTS).read_bytes()).hexdigest()
    except OSError as e:
        return None, f"{folder / WEIGHTS} is unreadable ({e.strerror or e})"
    if digest != sidecar.get("weights_sha256"):
        # the weights are written before the sidecar: a write interrupted between the two, or
        # files copied from two networks
        return None, f"{WEIGHTS} is not the network its sidecar describes (SHA-256 differs)"
    return sidecar, None


_SIDECAR_FIELDS: dict[str, type | tuple[type, ...]] = {
    "weights_sha256": str,
    "test_accuracy": (int, float),
    "n_test": int,
    "epochs": int,
    "seed": int,
    "data": dict,
}


def _train_and_save(
    subject: Subject,
    train: ImageDataset,
    test: ImageDataset,
    folder: Path,
    wanted: dict[str, Any],
    epochs: int | None,
    progress: bool,
) -> dict[str, Any]:
    """Train the network on the training split, measure it on the test split, and write the
    weights, then the sidecar that names their SHA-256 (each file replaced atomically)."""
    assert train.labels is not None and test.labels is not None  # checked by the caller
    epochs = epochs if epochs is not None else default_epochs(len(train))
    log.info(
        "training a feature network on %d training images (%d epochs) into %s",
        len(train),
        epochs,
        folder,
    )
    model = train_classifier(
        train.images,
        train.labels,
        epochs=epochs,
        seed=FEATURE_SEED,
        num_classes=len(subject.classes),
        batch_size=BATCH,
        lr=CLASSIFIER_LR,
        device=subject.device,
        progress=progress,
    )
    weights = tensorfiles.tensors_to_bytes(model.state_dict())
    held_out = subject.data.test_fraction != 0
    sidecar = {
        **wanted,
        "description": "vaegen feature network "
        "(vaegen.evaluation.reference_classifier.Classifier) trained by `vaegen evaluate` on one "
        "dataset's training split",
        "data": asdict(subject.data),  # source, options, test_fraction and split_seed
        "trained_on_run": None if subject.run_path is None else str(subject.run_path),
        "n_train": len(train),
        "n_test": len(test),
        "epochs": epochs,
        "optimizer": f"Adam lr {CLASSIFIER_LR:g}, cosine decay to 0, batch {BATCH}",
        "test_accuracy": accuracy(model, test.images, test.labels),
        "test_images": "the held-out test split"
        if held_out
        else "the training images (none held out: test_fraction 0)",
        "device": str(subject.device),
        "vaegen_version": __version__,
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
    }
    write_group(
        folder, {WEIGHTS: weights, SIDECAR: (json.dumps(sidecar, indent=2) + "\n").encode()}
    )
    return sidecar


def _label(folder: Path, sidecar: dict[str, Any]) -> dict[str, Any]:
    """What eval.json says of a trained network beside each number measured through it."""
    return {
        "kind": "trained on this dataset",
        "name": "vaegen Classifier trained on the training split of "
        f"{sidecar['data'].get('source')!r}, penultimate layer",
        "id": sidecar["weights_sha256"][:16],
        "path": str(folder),
        "test_accuracy": {
            "value": sidecar["test_accuracy"],
            "units": f"fraction of {sidecar['n_test']} test images classed as their label",
        },
        "epochs": sidecar["epochs"],
        "seed": sidecar["seed"],
        "comparable": "only with runs evaluated with this same network (the same id): the "
        "numbers are specific to this dataset and this network, not comparable with "
        "FashionMNIST's or another network's",
    }

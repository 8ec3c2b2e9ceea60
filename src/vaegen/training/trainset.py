"""The data a training run holds: both splits of its source as float tensors on its device."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..data import ImageDataset, load_splits, to_float
from ..data.memory import available_bytes, gib
from ..errors import DataError, VaegenError
from ..rundir.config import MAX_PRIOR_COMPONENTS, MAX_PRIOR_DRAWS, RunConfig, check_count
from . import distributed


@dataclass
class TrainingData:
    """The training and test sets as tensors on the device: x float N x C x H x W in [0, 1],
    y int64 labels (None unless the model is conditional)."""

    x_train: torch.Tensor
    y_train: torch.Tensor | None
    x_test: torch.Tensor
    y_test: torch.Tensor | None
    classes: list[str]
    image_shape: tuple[int, int, int]
    facts: dict[str, Any]  # what config.json records about the dataset


def load_training_data(
    config: RunConfig, device: torch.device, procs: distributed.Processes
) -> TrainingData:
    """Both splits of config's source, checked for what training needs: images in each split, of
    one shape, and labels for a conditional model. VaegenError names what is missing."""
    with distributed.main_process_first(procs):  # one download, which the others then find
        train_ds, test_ds = load_splits(  # training on the CPU holds a float32 copy in memory
            config.data.source, float32_copy=device.type == "cpu", **config.data.load_options()
        )
    for name, ds in (("training", train_ds), ("test", test_ds)):
        if len(ds) == 0:  # the loss per image would divide by zero
            raise VaegenError(
                f"{config.data.source}: its {name} split has no images; training needs at "
                "least one image in each"
            )
    if train_ds.image_shape != test_ds.image_shape:
        raise VaegenError(
            f"train images are {train_ds.image_shape} but test images are {test_ds.image_shape}"
        )
    conditional = config.model.conditional
    if conditional and (train_ds.labels is None or test_ds.labels is None):
        raise VaegenError(f"--conditional needs labels, and {config.data.source!r} has none")

    def labels(ds: ImageDataset) -> torch.Tensor | None:
        return ds.labels.to(device) if conditional and ds.labels is not None else None

    facts = {
        "image_shape": list(train_ds.image_shape),
        "classes": train_ds.classes,
        "train_size": len(train_ds),
        "test_size": len(test_ds),
    }
    return TrainingData(
        to_float(train_ds.images, device),
        labels(train_ds),
        to_float(test_ds.images, device),
        labels(test_ds),
        train_ds.classes,
        train_ds.image_shape,
        facts,
    )


def check_prior_fit(
    labels: torch.Tensor | None,
    *,
    n: int,
    classes: list[str],
    latent_dim: int,
    components: int,
    draws: int,
    source: str,
) -> None:
    """A DataError, before any training or encoding, when the mixture prior cannot be fitted to
    the training set of `source`: n images with `labels` (int64 N, a conditional run) or None.
    Each class (or the whole set, unconditional) needs 2 images (EM needs two codes); the
    `draws` codes per image (draws x n x latent_dim float32, 4 bytes each) must fit in memory.
    train calls it before the first epoch, fit_prior before encoding: the same counts that
    failed the fit after a whole training now fail at once."""
    check_count("components", components, 1, MAX_PRIOR_COMPONENTS)
    check_count("draws", draws, 0, MAX_PRIOR_DRAWS)
    if labels is None:
        if n < 2:
            raise DataError(
                f"{source}: {n} training image(s); a prior cannot be fitted to fewer than 2 "
                "(--prior-components 0 trains without one)"
            )
    else:
        counts = torch.bincount(labels.cpu(), minlength=len(classes)).tolist()
        few = [
            f"class {k} has {c} training image(s) (named {classes[k]!r})"
            for k, c in enumerate(counts)
            if c < 2
        ]
        if few:
            raise DataError(
                f"{source}: {'; '.join(few[:3])}{'; ...' if len(few) > 3 else ''}: a prior "
                "(a mixture per class) cannot be fitted to fewer than 2; add images, hold out "
                "fewer (--test-fraction), or train without one (--prior-components 0)"
            )
    need = draws * n * latent_dim * 4  # float32 codes drawn, besides the means
    free = available_bytes()
    if draws and free is not None and need > free:
        raise DataError(
            f"--prior-draws {draws} (prior_draws) would draw {draws} x {n} codes of "
            f"{latent_dim} dimensions, {gib(need)} GiB, and {gib(free)} GiB is available; "
            "use fewer draws (0 fits the means)"
        )

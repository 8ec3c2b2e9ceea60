"""The data a training run holds: both splits of its source as float tensors on its device."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from . import distributed
from .config import RunConfig
from .data import ImageDataset, load_splits, to_float
from .errors import VaegenError


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
        to_float(train_ds.images, device), labels(train_ds),
        to_float(test_ds.images, device), labels(test_ds),
        train_ds.classes, train_ds.image_shape, facts,
    )  # fmt: skip

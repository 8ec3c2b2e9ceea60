"""TSTR's classifier architectures: the MLP beside the CNN, one training loop for both."""

from __future__ import annotations

import pytest
import torch

from vaegen.errors import VaegenError
from vaegen.evaluation.reference_classifier import Classifier, accuracy, train_classifier
from vaegen.evaluation.tstr_classifiers import (
    ARCHITECTURES,
    MLP_HIDDEN,
    MLP_LR,
    PixelMLP,
    mlp_epochs,
)

from .conftest import make_images


def _shapes(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n images of conftest's three shapes, N x 1 x 12 x 12 uint8, and their int64 labels."""
    x, y = make_images(n, size=12, seed=seed)
    return torch.from_numpy(x)[:, None], torch.from_numpy(y).long()


# The CNN that train_classifier made before it had an `architecture` keyword: 1 epoch (3 batches
# of 128) on _shapes(300, seed=4), seed 3. Per tensor, the sum and the sum of magnitudes of its
# weights, computed with that code (torch 2.13, 1 and 2 threads agree to 1e-7). A change of the
# CNN's random streams, layers or training moves these by far more than the tolerance, which only
# allows for the rounding of another CPU or thread count (the SHA-256 of the weights differs
# between 1 and 2 threads, so the test cannot compare bytes).
CNN_BEFORE = {
    "conv1.weight": (-1.76096569, 49.73373),
    "conv1.bias": (0.210533769, 4.6815424),
    "conv2.weight": (0.651760773, 544.127872),
    "conv2.bias": (0.344489937, 1.97573827),
    "fc1.weight": (-13.3394617, 1538.94343),
    "fc1.bias": (0.107246035, 2.48587237),
    "fc2.weight": (0.4061513, 17.1851933),
    "fc2.bias": (-0.0573482029, 0.161866162),
}


def _fingerprint(model: torch.nn.Module) -> dict[str, tuple[float, float]]:
    return {
        name: (float(t.double().sum()), float(t.double().abs().sum()))
        for name, t in model.state_dict().items()
    }


def test_the_cnn_trains_as_it_did_before_there_was_a_choice():
    images, labels = _shapes(300, seed=4)
    kw = {"epochs": 1, "seed": 3, "progress": False}
    default = train_classifier(images, labels, **kw)
    cnn = train_classifier(images, labels, architecture="cnn", **kw)
    assert type(cnn) is Classifier
    for name, t in default.state_dict().items():
        assert torch.equal(t, cnn.state_dict()[name]), name
    got = _fingerprint(cnn)
    assert list(got) == list(CNN_BEFORE)
    for name, (total, magnitude) in CNN_BEFORE.items():
        assert got[name][0] == pytest.approx(total, rel=1e-4, abs=1e-5), name
        assert got[name][1] == pytest.approx(magnitude, rel=1e-4), name


def test_the_mlp_learns_separable_shapes_well_above_chance():
    images, labels = _shapes(300, seed=0)
    test_images, test_labels = _shapes(90, seed=1)
    before = torch.random.get_rng_state()
    kw = {"epochs": 5, "seed": 0, "lr": MLP_LR, "progress": False, "architecture": "mlp"}
    model = train_classifier(images, labels, **kw)
    assert torch.equal(torch.random.get_rng_state(), before)  # drawn from a forked RNG
    assert type(model) is PixelMLP and not model.training
    widths = [m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert widths == [MLP_HIDDEN, MLP_HIDDEN, 3]
    assert accuracy(model, test_images, test_labels) >= 0.9  # chance: 1/3
    # seeded: the same seed gives the same weights, another seed other ones
    again = train_classifier(images, labels, **kw)
    other = train_classifier(images, labels, **{**kw, "seed": 1})
    for name, t in model.state_dict().items():
        assert torch.equal(t, again.state_dict()[name]), name
    assert not torch.equal(model.fc1.weight, other.fc1.weight)


def test_the_mlp_reads_any_image_shape_as_a_vector_of_pixels():
    for shape in ((1, 28, 28), (3, 12, 12), (1, 5, 3), (2, 1, 1)):
        model = PixelMLP(shape, 4)
        assert model.fc1.in_features == shape[0] * shape[1] * shape[2]
        assert model(torch.rand(2, *shape)).shape == (2, 4)
    with pytest.raises(VaegenError, match="at least 2 classes, got 1"):
        PixelMLP((1, 4, 4), 1)


def test_an_unknown_architecture_is_refused_with_the_choices():
    images, labels = _shapes(12, seed=0)
    assert ARCHITECTURES == ("cnn", "mlp")
    with pytest.raises(
        VaegenError, match='unknown classifier architecture "vit": choose one of "cnn", "mlp"'
    ):
        train_classifier(images, labels, epochs=1, progress=False, architecture="vit")


def test_the_mlp_trains_the_measured_epochs():
    """10 epochs beside a full evaluation's 5 CNN epochs, 4 beside --quick's 2 (measured: see
    tstr_classifiers.MLP_LR)."""
    assert (mlp_epochs(5), mlp_epochs(2), mlp_epochs(1)) == (10, 4, 2)
    assert MLP_LR == 2e-3

"""The classifier architectures "train on synthetic, test on real" trains, beside the reference CNN.

A generator can suit one classifier and not another: images whose class shows only in local
texture teach a CNN and not a network that sees each pixel by itself, and the reverse. TSTR
therefore trains two architectures of different kinds, each beside its own real-data baseline
(as DPImageBench reports several classifiers for the same reason):

    "cnn"  vaegen.evaluation.reference_classifier.Classifier: two 3 x 3 convolutions, then fc128
    "mlp"  PixelMLP below: fully connected layers on the flattened pixels, no notion of nearness

Both are trained by reference_classifier.train_classifier (its `architecture` keyword): the same
loop, optimiser, schedule, batch size and seeded random streams.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import VaegenError

ARCHITECTURES = ("cnn", "mlp")  # the names train_classifier's `architecture` accepts

# The MLP is the textbook baseline on 28 x 28 pixels (Keras's MNIST MLP example): two hidden
# layers of 512 ReLU units, each followed by dropout 0.2. It has no convolution and sees the
# pixels as an unordered vector: the other kind of classifier TSTR wants. Two layers, not one:
# measured below, the second adds 0.6 points (about the test set's interval: a weak preference)
# for about 20 s more per training at 60,000 images. Wider or deeper was not tried: it costs time
# that this second opinion should not.
MLP_HIDDEN = 512  # units of each hidden layer
MLP_DROPOUT = 0.2  # dropout after each hidden layer

# Adam's peak learning rate and epochs (cosine decay to 0, batch 128, as the CNN's), measured on
# FashionMNIST: trained on the first N training images (seed 5), test accuracy on the 10,000 test
# images (Wilson 95 % interval about +-0.6 points; one seed each), seconds of one training on an
# AMD EPYC (family 25, model 17; 2 cores, KVM, shared with other work), torch 2.13 CPU, with
# torch.set_num_threads(1): with 2 threads the shared cores made per-batch times swing 5-40x (the
# MLP's 10 epochs did not finish in 300 s); one thread repeats to about 20 %.
#   N = 60,000: 512-512 lr 1e-3 10 epochs 89.46 % in 44-53 s (twice); lr 2e-3 10 epochs 89.52 %
#               in 50 s; lr 5e-4 10 epochs 89.05 % in 44 s; lr 1e-3 5 epochs 88.43 % in 23 s;
#               one hidden layer of 512, lr 1e-3 10 epochs 88.90 % in 28 s.
#               The CNN beside it, same session, lr 2e-3 5 epochs (a full evaluation): 91.60 % in
#               173 s, so the MLP at 10 epochs costs about a third of the CNN.
#   N = 2,000 (--quick: CNN 2 epochs, MLP 4): lr 1e-3 77.0 %, lr 2e-3 78.4 %, ~2 s; CNN 74.3 %.
#   N = 10,000, 10 epochs: lr 1e-3 85.74 %, lr 2e-3 85.81 %, ~10 s.
# lr 2e-3, the CNN's, is as good as 1e-3 at 60,000 images and better with few steps; 10 epochs
# gain a point over 5 for ~25 s per training. So the MLP trains twice the CNN's epochs.
MLP_LR = 2e-3
MLP_EPOCHS_PER_CNN_EPOCH = 2


class PixelMLP(nn.Module):
    """flatten -> Linear(C*H*W -> 512) + ReLU -> dropout -> Linear(512 -> 512) + ReLU -> dropout
    -> Linear(512 -> classes). forward: float images N x C x H x W in [0, 1] -> logits
    N x classes."""

    def __init__(self, image_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        c, h, w = image_shape
        if num_classes < 2:
            raise VaegenError(f"a classifier needs at least 2 classes, got {num_classes}")
        self.image_shape = (c, h, w)
        self.num_classes = num_classes
        self.fc1 = nn.Linear(c * h * w, MLP_HIDDEN)
        self.fc2 = nn.Linear(MLP_HIDDEN, MLP_HIDDEN)
        self.fc3 = nn.Linear(MLP_HIDDEN, num_classes)
        self.dropout = nn.Dropout(MLP_DROPOUT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.flatten(1) - 0.5) * 2.0  # centred like the CNN's input: a fixed map
        x = self.dropout(torch.relu(self.fc1(x)))
        x = self.dropout(torch.relu(self.fc2(x)))
        return self.fc3(x)


def build_mlp(image_shape: tuple[int, int, int], num_classes: int) -> PixelMLP:
    """A freshly initialised PixelMLP for C x H x W images (torch's global RNG draws the weights)."""
    return PixelMLP(tuple(image_shape), num_classes)  # type: ignore[arg-type]


def mlp_epochs(cnn_epochs: int) -> int:
    """The MLP's epochs in a TSTR whose CNN trains `cnn_epochs` epochs (a quick evaluation trains
    fewer): MLP_EPOCHS_PER_CNN_EPOCH times as many, at least 1."""
    return max(1, MLP_EPOCHS_PER_CNN_EPOCH * cnn_epochs)


def check_architecture(architecture: str) -> None:
    """Refuse a name that is not one of ARCHITECTURES, naming the choices."""
    if architecture not in ARCHITECTURES:
        choices = ", ".join(f'"{a}"' for a in ARCHITECTURES)
        raise VaegenError(
            f'unknown classifier architecture "{architecture}": choose one of {choices}'
        )

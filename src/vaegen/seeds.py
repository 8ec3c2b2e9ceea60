"""The random streams, frozen: each stream's offset from the seed it derives from.

Training derives every stream from config.train.seed, an evaluation from its own seed, a
classifier (the feature network, TSTR's) from the seed it is given. A stream's numbers follow from
its offset, so changing one changes the numbers of every run or evaluation that used it: the
offsets are part of what a seed means, and tests/test_seeds.py pins them. Messages that name a
stream's seed read it from here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainingStreams:
    init: int = 0  # the model's initial parameters (torch.manual_seed)
    shuffle: int = 1  # each epoch's permutation of the training images
    noise: int = 2  # the reparameterisation's noise
    test_loss: int = 3  # the noise of the test-set loss measured after each epoch
    parity: int = 4  # the noise of the hand-derived step's parity check on the first batch
    prior: int = 0  # the mixture prior's fit (scikit-learn) and the posterior draws it fits


@dataclass(frozen=True)
class EvaluationStreams:
    real_subset: int = 0  # which N real training images are compared with N generated ones
    elbo: int = 1  # the noise of the test-set ELBO
    binarize: int = 2  # the stochastic binarisation of the test images (--binarize)
    iwae: int = 3  # the importance samples of the IWAE bound
    generated: int = 4  # the N generated images
    tstr: int = 5  # the classifier trained on the generated images (and its real baseline)
    holdout: int = 6  # which test images are held out for the DCR share and which are fresh
    bootstrap: int = 7  # the resampling of every bootstrap interval
    two_sample: int = 8  # the folds and subsets of the real-versus-generated classifier test
    kid: int = 9  # the disjoint subsets of the kernel distance
    tstr_mlp: int = 10  # TSTR's MLP (vaegen.evaluation.tstr_classifiers) and its real baseline


@dataclass(frozen=True)
class ClassifierStreams:
    init: int = 0  # initial weights and dropout (torch.manual_seed)
    batches: int = 1  # shuffling and flips


TRAINING = TrainingStreams()
EVALUATION = EvaluationStreams()
CLASSIFIER = ClassifierStreams()

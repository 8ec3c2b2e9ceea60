"""What every part of `vaegen evaluate` reads: the run, its data, N, the seed, and the images,
feature network and features that several parts share, each made once."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..data import ImageDataset
from ..model.likelihoods import Likelihood
from ..rundir import Run
from ..sampling.generate import generate, reconstruct
from ..sampling.priors import Prior
from ..seeds import EVALUATION
from .estimators import NEAR_QUANTILE, PR_K
from .features import FeatureNet, Subject, data_fingerprint, feature_network
from .fidelity import AB_STEPS, DC_K, KID_SUBSET_SIZE
from .intervals import Interval
from .real_cache import RealSide, open_real_side
from .reference_classifier import Classifier, extract_features

NATS = "nats per image"
FRACTION = "fraction of test images"
SECONDS = "seconds"


def q(value: float | None, units: str) -> dict[str, Any]:
    """A number with its units, as every number in eval.json is written."""
    return {"value": value, "units": units}


def qi(interval: Interval, units: str) -> dict[str, Any]:
    """A number with its interval and units: {"value", "low", "high", "n", "method", "level",
    "units"}, as eval.json writes every number that has an interval (intervals.Interval)."""
    return {**interval.to_dict(), "units": units}


BOOTSTRAP_RESAMPLES = 1000  # resamples of every bootstrap interval but the Frechet distance's
FRECHET_RESAMPLES = 500  # each costs three 128 x 128 factorisations; 500 pin a 95 % interval


def loss_units(lk: Likelihood) -> str:
    """The units of a run's loss values per image, as metrics.jsonl and training print them."""
    if lk.nats_offset:
        return f"{lk.unit} per image (nats minus {lk.nats_offset_formula})"
    return f"{lk.unit} per image"


@dataclass
class Context:
    """The run (or, for images from elsewhere, None and the images), its data, N and its real
    images, the seed; shared images and features."""

    run: Run | None
    subject: Subject  # the data, shape, classes and device (features.subject_of(run))
    train: ImageDataset
    test: ImageDataset
    n: int  # generated images, and real training images to compare them with
    real_idx: torch.Tensor  # n indices into the training set
    seed: int
    progress: bool
    prior: str | Prior = (
        "fitted"  # a name (vaegen.sampling.priors), or a prior evaluate loaded once
    )
    feature_dir: Path | None = None  # --feature-net (None: RUN/feature_net); see .features
    feature_epochs: int | None = None  # --feature-epochs (None: the saved network's, or default)
    # images from elsewhere (uint8 N x C x H x W, labels N or None) measured in place of a run's
    _generated: tuple[torch.Tensor, torch.Tensor | None] | None = None
    _feature_net: FeatureNet | None = None
    # what the real side depends on beyond the data and the feature network (real_cache): N,
    # seed, the classifiers' recipe and the device they train on
    recipe: dict[str, Any] = field(default_factory=dict)
    _features: dict[str, torch.Tensor] = field(default_factory=dict)
    _real: RealSide | None = None
    _reconstructed: torch.Tensor | None = None

    def real_side(self) -> RealSide:
        """The cache entry of this evaluation's real side (real_cache), opened once: its key is
        the data's content, the feature network's identity, the recipe and the estimators'
        constants."""
        if self._real is None:
            net = self.feature_net()
            self._real = open_real_side(
                {
                    "data_sha256": data_fingerprint(self.train, self.test),
                    "feature_net": net.weights_sha256,
                    **self.recipe,
                    "constants": {
                        "pr_k": PR_K,
                        "dc_k": DC_K,
                        "kid_subset": KID_SUBSET_SIZE,
                        "ab_steps": AB_STEPS,
                        "near_quantile": NEAR_QUANTILE,
                        "bootstrap": BOOTSTRAP_RESAMPLES,
                        "frechet_bootstrap": FRECHET_RESAMPLES,
                    },
                }
            )
        return self._real

    def holdout_split(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Three disjoint sets of H real images for the memorisation measures, H = min(half the
        test set, N): indices of H training images (the first H of the N real ones), of H test
        images held out (the reference that is not training data) and of H other test images,
        fresh (real images the model never saw, evaluated as if generated: the floor)."""
        h = min(len(self.test) // 2, self.n)
        gen = torch.Generator().manual_seed(self.seed + EVALUATION.holdout)
        order = torch.randperm(len(self.test), generator=gen)
        return self.real_idx[:h], order[:h], order[h : 2 * h]

    @property
    def conditional(self) -> bool:
        """Whether the generated images come with the classes they were made for."""
        if self.run is None:
            return self.generated()[1] is not None
        return self.run.config.model.conditional

    def generated(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """N generated images (and labels for a conditional model), made once, seeded; the
        images given for a Context without a run."""
        if self._generated is None:
            assert self.run is not None, "a Context without a run is given its images"
            self._generated = generate(
                self.run, self.n, seed=self.seed + EVALUATION.generated, prior=self.prior
            )
        return self._generated

    def feature_net(self) -> FeatureNet:
        """The network images are compared through (vaegen.evaluation.features), found, loaded or
        trained once."""
        if self._feature_net is None:
            self._feature_net = feature_network(
                self.subject,
                self.train,
                self.test,
                folder=self.feature_dir,
                epochs=self.feature_epochs,
                progress=self.progress,
            )
        return self._feature_net

    def feature_skip(self) -> str | None:
        """Why no feature network can read this run's images, or None when one can."""
        return self.feature_net().skip

    def classifier(self) -> Classifier:
        """The feature network's model (only when feature_skip() is None)."""
        model = self.feature_net().model
        assert model is not None, "classifier() of a run whose features are skipped"
        return model

    def features(self, name: str) -> torch.Tensor:
        """The feature network's features (float32 count x 128, CPU) of one image set, made
        once: "test", "generated" (N), "train" (the N real training images) or "reconstructions"
        (of the test set)."""
        if name not in self._features:
            images = {
                "test": lambda: self.test.images,
                "generated": lambda: self.generated()[0],
                "train": lambda: self.train.images[self.real_idx],
                "reconstructions": self.reconstructions,
            }[name]

            def extract() -> torch.Tensor:
                return extract_features(self.classifier(), images(), progress=self.progress)

            real = name in ("test", "train")  # the same for every run of this dataset
            self._features[name] = (
                self.real_side().tensor(f"features.{name}", extract) if real else extract()
            )
        return self._features[name]

    def reconstructions(self) -> torch.Tensor:
        """The test images decoded from their encoder means (with their labels for a conditional
        model), uint8 like generated images, made once (a run's Context only)."""
        assert self.run is not None, "reconstructions need a run's model"
        if self._reconstructed is None:
            labels = self.test.labels if self.conditional else None
            self._reconstructed = reconstruct(self.run, self.test.images, labels)
        return self._reconstructed

"""vaegen: learn an image dataset's distribution with a VAE and generate simulated data from it."""

import os

# Before torch is imported, because GNU OpenMP (PyTorch's CPU threads) reads it when it loads:
# an idle worker thread spins 1,000 times before it sleeps instead of 300,000. With the default,
# two trainings side by side on 2 cores took 5 to 21 times as long as one alone (the threads of
# each spin on the cores the other needs); with 1,000, 1.6 to 1.8 times, and one alone takes
# about as long (benchmarks/side_by_side.py; docs/results/side_by_side.md). A
# value the user set is kept.
os.environ.setdefault("GOMP_SPINCOUNT", "1000")

from ._version import __version__
from .data import ImageDataset, load_dataset
from .evaluation import evaluate, evaluate_samples
from .model.vae import VAE, ConvVAE
from .pipeline import train
from .rundir import Run, load_run
from .rundir.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from .sampling.generate import generate
from .sampling.priors import fit_prior

__all__ = [
    "VAE",
    "ConvVAE",
    "DataConfig",
    "ImageDataset",
    "ModelConfig",
    "Run",
    "RunConfig",
    "TrainConfig",
    "__version__",
    "evaluate",
    "evaluate_samples",
    "fit_prior",
    "generate",
    "load_dataset",
    "load_run",
    "train",
]

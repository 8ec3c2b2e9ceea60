"""vaegen: learn an image dataset's distribution with a VAE and generate simulated data from it."""

from ._version import __version__
from .config import DataConfig, ModelConfig, RunConfig, TrainConfig
from .data import ImageDataset, load_dataset
from .evaluate import evaluate
from .generate import generate
from .models import VAE, ConvVAE
from .run import Run, load_run
from .train import train

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
    "generate",
    "load_dataset",
    "load_run",
    "train",
]

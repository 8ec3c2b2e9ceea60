"""vaegen: learn an image dataset's distribution with a VAE and generate simulated data from it."""

__version__ = "0.1.0"

from .config import DataConfig, ModelConfig, RunConfig, TrainConfig
from .data import ImageDataset, load_dataset
from .evaluate import evaluate
from .generate import generate
from .models import VAE, ConvVAE
from .train import Run, load_run, train

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

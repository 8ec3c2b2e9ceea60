"""Run configuration: small frozen dataclasses, validated on creation, saved as JSON in every run.

Defaults reproduce the reference article: the seed MLP with a 2-D latent, its unit-variance
Gaussian loss (`gaussian`, alias `seed`), 50 epochs, batch 128, Adam with learning rate 1e-3.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .._version import __version__
from ..data import check_options
from ..data.named import NAMED_DATASETS
from ..data.splits import DEFAULT_TEST_FRACTION
from ..errors import VaegenError
from ..model.likelihoods import ALIASES, LIKELIHOODS, LOSS_CHOICES, canonical_loss
from ..model.vae import MODELS

MODEL_KINDS = tuple(MODELS)
STEPS = ("auto", "autograd", "fast", "cuda-graph")
PRECISIONS = ("float32", "bf16")  # of the training step's matrix products

ARTICLE_LOSS = "gaussian"  # the reference article's: 0.5 * squared error, a unit-variance Gaussian

# The article's unit-variance Gaussian suits the datasets it was written for; on other images
# (smaller, or with other grey levels) what z explains of 0.5 * squared error can be worth less
# than its KL term, and the latent collapses: 1,797 8 x 8 digits trained conditionally gave KL
# 0.001 nats and one image per class. With sigma set in closed form from the errors themselves,
# the same run keeps both dimensions (KL 3.7 nats), and samples of a class vary
# (docs/data.md, "The loss for your own images"; docs/results/own_images_loss.md).
OWN_IMAGES_LOSS = "gaussian-optimal-sigma"

# the JSON types each annotation accepts (bool is an int to Python, but never a count here)
_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "str | None": (str, type(None)),
    "int": (int,),
    "int | None": (int, type(None)),
    "float": (int, float),
    "float | None": (int, float, type(None)),
    "bool": (bool,),
}
_TYPE_WORDS = {
    "str": "a string",
    "str | None": "a string or null",
    "int": "an integer",
    "int | None": "an integer or null",
    "float": "a number",
    "float | None": "a number or null",
    "bool": "true or false",
}


def _require(ok: bool, name: str, value: object, allowed: str) -> None:
    if not ok:
        raise VaegenError(f"{name} = {value!r} is not valid: {allowed}")


# Upper bounds on sizes and counts: generous (far beyond what vaegen's models and data use:
# the synth preset's latent is 64-D, its hidden layer 2048 wide), but finite, so that a typo
# such as --hidden 10000000000 is a one-line error at once, not terabytes asked of the
# allocator (or an hour of work) before something fails.
MAX_LATENT_DIM = 4096  # a 4096-D latent already needs D x D covariances per prior component
MAX_HIDDEN = 65_536  # an MLP layer of 784 x 65,536 float32 weights is 200 MB; wider is a typo
MAX_THREADS = 1024  # more CPU threads than any machine vaegen runs on has cores
MAX_EPOCHS = 1_000_000
MAX_BATCH_SIZE = 2**31 - 1  # torch indexes a batch with int32 in places; larger is no batch
MAX_PRIOR_COMPONENTS = 100_000  # each is a D x D covariance; fits use min(K, n_class // 2)
# each draw is another copy of every training image's code (N x D float32): 1000 draws of
# 60,000 64-D codes are already 15 GiB (the memory itself is checked before training)
MAX_PRIOR_DRAWS = 1000
# A seed must fit torch's Generator.manual_seed (-2**63 .. 2**64 - 1) after the small offsets
# vaegen adds for its separate streams (vaegen.seeds: 0 to 5), and numpy's SeedSequence takes
# it modulo 2**64, scikit-learn modulo 2**32: the signed 64-bit range serves them all.
SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1


def check_count(name: str, value: int, low: int, high: int) -> None:
    """A VaegenError naming `name` unless low <= value <= high (an int, not a bool)."""
    ok = isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
    _require(ok, name, value, f"an integer from {low} to {high}")


def check_seed(name: str, value: int) -> None:
    """A VaegenError naming `name` unless `value` is a seed every random stream takes."""
    check_count(name, value, SEED_MIN, SEED_MAX)


def _check_types(obj: object) -> None:
    """Each field has the type its annotation names, checked before any comparison, so that a
    config.json with "latent_dim": "two" is an error that names the field and the type it needs."""
    for f in dataclasses.fields(obj):  # type: ignore[arg-type]
        value = getattr(obj, f.name)
        accepted = _TYPES[str(f.type)]
        is_bool = isinstance(value, bool)
        if not isinstance(value, accepted) or (is_bool and bool not in accepted):
            raise VaegenError(
                f"{f.name} = {value!r} is not valid: it must be {_TYPE_WORDS[str(f.type)]}, "
                f"not {type(value).__name__}"
            )


@dataclass(frozen=True)
class Option:
    """A config field's command-line option. The flag is --FIELD-NAME (underscores as hyphens)
    unless `flag` names another; `help` is its help, to which "(default D)" is added (D the
    field's default, or `default_text`); `choices` and `metavar` are argparse's; `resumable`:
    a resumed run may change the field (see rundir.resume_config). Help may hold {synth}, the
    value in --preset synth; a callable help is called when the parser is built."""

    help: str | Callable[[], str]
    flag: str | None = None
    choices: tuple[Any, ...] | None = None
    metavar: str | None = None
    default_text: str | None = None
    resumable: bool = False


def option(default: Any, help: str | Callable[[], str], **kwargs: Any) -> Any:
    """A dataclass field with default `default`, declared together with its command-line
    option (see `Option`): the flag, its help, and what a resume may change come from here."""
    return field(default=default, metadata={"option": Option(help, **kwargs)})


def options(section: type) -> list[tuple[dataclasses.Field, Option]]:
    """The fields of a config section (DataConfig, ModelConfig, TrainConfig) that are options,
    in declaration order, with their declarations."""
    return [
        (f, f.metadata["option"]) for f in dataclasses.fields(section) if "option" in f.metadata
    ]


@dataclass(frozen=True)
class DataConfig:
    source: str = option(
        "fashion-mnist", "named dataset, IDX folder, .npz or image folder", flag="data"
    )
    data_dir: str | None = option(
        None, "folder to look in first for a named dataset", default_text=""
    )
    channels: int | None = option(
        None,
        "convert every image to 1 channel (grey: Pillow's ITU-R 601 luma) or 3 (RGB; grey "
        "repeated)",
        choices=(1, 3),
        default_text="as the images are; a folder of grey and colour images gives colour",
    )
    image_size: int | None = option(
        None,
        "resize every image to S x S pixels (bilinear, aspect ratio not kept)",
        metavar="S",
        default_text="keep their size; images of different sizes are an error",
    )
    # a source with its own test split takes none. Training records the fraction it used.
    test_fraction: float | None = option(
        None,
        "for an .npz or image folder, which have no test split: hold out this fraction of each "
        "class (of all images, at random, when there are no labels) for testing; 0: test on the "
        "training images. Named datasets and IDX folders keep their own test split",
        metavar="F",
        default_text=f"{DEFAULT_TEST_FRACTION:g}",
    )
    split_seed: int = option(
        0,
        "seed of the held-out test split (apart from --seed, so runs with different seeds are "
        "tested on the same images)",
        metavar="N",
    )
    skip_bad: bool = option(
        False,
        "leave unreadable image files out (with a warning naming the first) instead of stopping "
        "at the first",
    )

    def __post_init__(self) -> None:
        _check_types(self)
        _require(bool(self.source), "data", self.source, "name a dataset or a path")
        check_options(self.channels, self.image_size, self.test_fraction, self.split_seed)

    def load_options(self) -> dict[str, Any]:
        """Keyword arguments of data.load_dataset and load_splits for this config."""
        d = dataclasses.asdict(self)
        del d["source"]
        return d


@dataclass(frozen=True)
class ModelConfig:
    model: str = option("mlp", "model architecture", choices=MODEL_KINDS)
    latent_dim: int = option(2, "latent dimensions")
    hidden: int = option(256, "hidden layer width")
    conditional: bool = option(False, "condition on the class label")

    def __post_init__(self) -> None:
        _check_types(self)
        _require(self.model in MODEL_KINDS, "model", self.model, f"one of {', '.join(MODEL_KINDS)}")
        check_count("latent_dim", self.latent_dim, 1, MAX_LATENT_DIM)
        check_count("hidden", self.hidden, 1, MAX_HIDDEN)


def _loss_help() -> str:
    losses = "; ".join(f"{name}: {lk.description}" for name, lk in LIKELIHOODS.items())
    aliases = ", ".join(f"{a} = {b}" for a, b in ALIASES.items())
    return f"decoder likelihood: {losses} ({aliases})"


@dataclass(frozen=True)
class TrainConfig:
    # None: the default for the data source (default_loss), which training resolves and
    # config.json records; a name is stored as the registry's (an alias resumes as its name)
    loss: str | None = option(
        None,
        _loss_help,
        choices=LOSS_CHOICES,
        metavar="LOSS",
        default_text=f"{ARTICLE_LOSS} for FashionMNIST and MNIST, {OWN_IMAGES_LOSS} for other "
        "images",
    )
    beta: float = option(1.0, "weight of the KL term")
    epochs: int = option(50, "epochs", resumable=True)
    batch_size: int = option(128, "images per step")
    lr: float = option(1e-3, "Adam learning rate")
    seed: int = option(0, "random seed")
    device: str = option("auto", "auto, cpu, cuda or cuda:N", resumable=True)
    threads: int = option(0, "CPU threads; 0: vaegen's measured choice", resumable=True)
    deterministic: bool = option(
        False,
        "use only deterministic algorithms (bitwise repeatable on a GPU; slower there)",
        resumable=True,
    )
    step: str = option(
        "auto",
        "training step: fast (hand-derived, MLP on a CPU), autograd, cuda-graph (autograd's step "
        "recorded once and replayed; a CUDA GPU, one process), or auto: fast where it applies "
        "and matches autograd on the first batch, cuda-graph on a GPU (vaegen.training.step)",
        choices=STEPS,
        resumable=True,
    )
    precision: str = option(
        "float32",
        "matrix products of training: float32 (the article's math) or bf16 (bfloat16 products, "
        "float32 weights; needs a CPU with AVX512-BF16 or AMX, or a GPU)",
        choices=PRECISIONS,
    )
    # The Gaussian mixture prior fitted after training (vaegen.sampling.priors.fit_prior); a
    # resumed run may change it, since it is fitted after the last epoch.
    prior_components: int = option(
        10,
        "a Gaussian mixture prior of K components per class, fitted to the training images' "
        "codes after training and used by generate ({synth} with --preset synth; 0: none, and "
        "the run's prior is dropped)",
        metavar="K",
        resumable=True,
    )
    prior_draws: int = option(
        0,
        "fit the mixture to R codes drawn from each training image's posterior q(z|x) instead "
        "of to their means (0: the means; {synth} with --preset synth)",
        metavar="R",
        resumable=True,
    )
    prior_reg_covar: float = option(
        1e-6,
        "variance added to each component's covariance, in squared latent units: larger widens "
        "the components beyond the codes they were fitted to (scikit-learn's default; {synth} "
        "with --preset synth)",
        metavar="V",
        resumable=True,
    )

    def __post_init__(self) -> None:
        _check_types(self)
        # stored by its registry name, so that a run saved with an alias resumes under the name
        if self.loss is not None:
            object.__setattr__(self, "loss", canonical_loss(self.loss))
        _require(self.step in STEPS, "step", self.step, f"one of {', '.join(STEPS)}")
        _require(self.precision in PRECISIONS, "precision", self.precision, " or ".join(PRECISIONS))
        _require(self.beta >= 0, "beta", self.beta, "a number >= 0")
        check_count("epochs", self.epochs, 1, MAX_EPOCHS)
        check_count("batch_size", self.batch_size, 1, MAX_BATCH_SIZE)
        _require(self.lr > 0, "lr", self.lr, "a number > 0")
        check_seed("seed", self.seed)
        check_count("threads", self.threads, 0, MAX_THREADS)
        check_count("prior_components", self.prior_components, 0, MAX_PRIOR_COMPONENTS)
        check_count("prior_draws", self.prior_draws, 0, MAX_PRIOR_DRAWS)
        _require(
            0 <= self.prior_reg_covar < float("inf"),
            "prior_reg_covar",
            self.prior_reg_covar,
            "a finite number >= 0",
        )


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, dataset: dict[str, Any] | None = None) -> str:
        """config.json: this config, the vaegen version, and facts about the dataset trained on
        (image shape, class names) that are needed to rebuild the model without the data."""
        d = {"vaegen_version": __version__, **self.to_dict(), "dataset": dataset or {}}
        return json.dumps(d, indent=2) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        parts = {}  # keys other than the three sections (version, dataset facts) are not config
        for f, sub in (("data", DataConfig), ("model", ModelConfig), ("train", TrainConfig)):
            values = d.get(f, {})
            if not isinstance(values, dict):
                raise VaegenError(f"config field {f!r} must be an object, got {values!r}")
            known = {x.name for x in dataclasses.fields(sub)}
            unknown = set(values) - known
            if unknown:
                raise VaegenError(
                    f"config section {f!r} has unknown fields {sorted(unknown)}; "
                    f"known: {sorted(known)}"
                )
            try:
                parts[f] = sub(**values)
            except VaegenError as e:
                raise VaegenError(f"{f}.{e}") from None
        return cls(**parts)


def differences(a: RunConfig, b: RunConfig, ignore: tuple[str, ...] = ()) -> list[str]:
    """Fields that differ between two configs, as 'section.field: a -> b' lines."""
    out = []
    da, db = a.to_dict(), b.to_dict()
    for section in da:
        for key in da[section]:
            name = f"{section}.{key}"
            if name not in ignore and da[section][key] != db[section][key]:
                out.append(f"{name}: {da[section][key]!r} -> {db[section][key]!r}")
    return out


# ------------------------------------------------------------------------------- presets


# `vaegen train --preset NAME` starts from one of these; any flag given beside it overrides its
# field. "article" is the default: the reference article's model and loss. "synth" is the
# recipe vaegen recommends for simulated data (docs/simulated-data.md), chosen by the
# measurements of docs/results/synth_ablation.md: a conditional MLP with a 64-D latent, a hidden layer eight times as wide, a
# Bernoulli decoder and the KL term weighted 0.1 (the fitted prior, not N(0, I), is what samples
# come from, so a latent that strays from N(0, I) costs the samples nothing), and a prior of 100
# Gaussians per class fitted to 3 codes drawn from each training image's posterior, each widened
# by a variance of 0.1 (the widening raised recall from 0.387 to 0.457), trained within 15
# minutes on 2 CPU cores (13 on an AMD EPYC's, the prior's fit included).
PRESETS: dict[str, RunConfig] = {
    "article": RunConfig(train=TrainConfig(loss=ARTICLE_LOSS)),
    "synth": RunConfig(
        model=ModelConfig(latent_dim=64, hidden=2048, conditional=True),
        train=TrainConfig(
            loss="bernoulli",
            beta=0.1,
            epochs=50,
            prior_components=100,
            prior_draws=3,
            prior_reg_covar=0.1,
        ),
    ),
}
PRESET_HELP = {
    "article": "the reference article's model: 2-D latent, unit-variance Gaussian (default)",
    "synth": "vaegen's recipe for simulated data: conditional, 64-D latent, hidden 2048, "
    "Bernoulli likelihood, beta 0.1, 50 epochs, a 100-component prior per class",
}


def default_loss(source: str) -> str:
    """The loss a config that names none (TrainConfig.loss None: no --loss, no --preset) trains
    with: the article's for the named datasets (FashionMNIST, MNIST), OWN_IMAGES_LOSS for any
    other source."""
    return ARTICLE_LOSS if source in NAMED_DATASETS else OWN_IMAGES_LOSS


def preset(name: str) -> RunConfig:
    """The RunConfig of preset `name` (see PRESETS); an unknown name lists the choices."""
    if name not in PRESETS:
        raise VaegenError(f"preset = {name!r} is not valid: one of {', '.join(PRESETS)}")
    return PRESETS[name]


def resumable_fields() -> tuple[str, ...]:
    """The fields a resumed run may change ("train.epochs", ...): those declared resumable, where
    it runs and how fast, how long, and the prior fitted after the last epoch."""
    sections = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}
    return tuple(
        f"{s}.{f.name}" for s, cls in sections.items() for f, o in options(cls) if o.resumable
    )

"""A run made complete by its config in one call, as `vaegen train` makes it: the training loop
(vaegen.training.loop), then the prior the config names (fitted, or removed for prior_components 0),
then the figures and the report. `vaegen.train` is this module's `train`; the command line calls
it too, so the API and the CLI give the same run.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from .report import write_report
from .report.figures import draw_all
from .rundir import Run, layout, load_split
from .rundir.config import RunConfig
from .sampling import priors
from .training import distributed
from .training.loop import train as train_loop

log = logging.getLogger(__name__)


def train(
    config: RunConfig,
    out: str | Path,
    *,
    resume: bool = False,
    figures: bool = True,
    progress: bool = True,
    checkpoint_every: int = 0,
    tensorboard: bool = False,
    max_steps: int | None = None,
) -> Run:
    """Train a VAE into the run directory `out` and leave the run complete: its prior fitted (or
    removed) as config.train.prior_* say, and, unless figures=False, RUN/figures/ and
    RUN/report.html. Returns the Run.

    config.train.loss None trains with the data source's default loss (config.default_loss:
    the article's for FashionMNIST and MNIST, a Gaussian with its sigma set in closed form for
    one's own images); config.json records the loss used. resume, progress, checkpoint_every,
    tensorboard, max_steps: as training.loop.train, the training loop alone. A run stopped by
    max_steps before its last epoch is not finished, so nothing is added to it. Started by torchrun, every
    process trains; the first alone finishes the run, holding the run's lock until it is done
    (evaluate cannot start in between and sample N(0, I))."""
    out = Path(out)
    procs = distributed.from_env()
    held = layout.lock_for_writing(out, "training") if procs.is_main else None
    with held or contextlib.nullcontext():
        run = train_loop(
            config,
            out,
            resume=resume,
            progress=progress,
            checkpoint_every=checkpoint_every,
            tensorboard=tensorboard,
            max_steps=max_steps,
        )
        if procs.is_main and is_finished(run):
            finish(run, figures=figures)
    return run


def is_finished(run: Run) -> bool:
    """Whether the run has trained every epoch its config asks for."""
    return bool(run.metrics) and run.metrics[-1]["epoch"] >= run.config.train.epochs


def finish(run: Run, *, figures: bool = True) -> None:
    """What a trained run's config asks for after its last epoch: the prior run.config names
    (fitted unless the run has it already: a finished run resumed keeps a mixture `fit-prior`
    made; removed with prior_components 0), then, with `figures`, the figures and the report."""
    components = run.config.train.prior_components
    if components and not priors.mixture_is_current(run):
        priors.fit_prior(run)  # with the run's training seed
    elif not components and priors.drop_mixture(run):
        log.warning("%s: prior_components 0, so its fitted mixture is removed", run.path)
    if figures:
        test = load_split(run, "test")
        draw_all(run, test)
        write_report(run, test=test)

"""The `vaegen fit-prior` command: fit a run's mixture prior again, with the mixture flags of
`vaegen train` (TrainConfig's prior_* fields) named without their prefix; each defaults to the
run's own value."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..rundir import Run
from .options import add_config_flags, given

MIXTURE_FIELDS = ("prior_components", "prior_draws", "prior_reg_covar")


def add_fit_prior_command(sub: argparse._SubParsersAction) -> None:
    fp = sub.add_parser(
        "fit-prior",
        help="fit a run's latent prior: a Gaussian mixture per class on its training codes",
        description="Fit a Gaussian mixture (scikit-learn, full covariances; one per class for a "
        "conditional run) to the training images' latent codes and store it in RUN/prior/ for "
        "generate, evaluate and the report, beside their aggregate posterior (--prior posterior). "
        "Without flags it fits the mixture the run's config names.",
    )
    fp.add_argument("run", type=Path)
    add_config_flags(
        fp, "train", only=MIXTURE_FIELDS, strip="prior_", default_text="default: the run's own"
    )
    fp.add_argument(
        "--seed", type=int, help="random seed of the fit (default: the run's training seed)"
    )


def cmd_fit_prior(args: argparse.Namespace) -> Run:
    """Fit the prior, redraw the samples figure where there is one; the refitted run."""
    from ..report.figures import draw_all
    from ..rundir import layout, load_run
    from ..sampling.priors import fit_prior

    run = load_run(args.run)
    mixture = given(args, "train")
    prior = fit_prior(
        run,
        components=mixture.get("prior_components"),
        seed=args.seed,
        draws=mixture.get("prior_draws"),
        reg_covar=mixture.get("prior_reg_covar"),
    )
    samples = run.path / layout.FIGURES / "samples.png"
    if samples.exists():  # drawn from the previous prior: redraw it from this one
        draw_all(run, only=[samples.name])
    fits, k = prior.info["per_class"], prior.info["components"]
    print(
        f"{run.path / 'prior'}: {len(fits)} mixture(s) of up to {k} Gaussians "
        f"({sum(f['converged'] for f in fits)} converged)"
    )
    return run

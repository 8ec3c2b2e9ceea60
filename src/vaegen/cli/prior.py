"""The `vaegen fit-prior` command and the mixture flags it shares with `vaegen train`: each flag
is one field of config.TrainConfig (prior_components, prior_draws, prior_reg_covar), whose
default is the run's own (its preset's, or the values it was trained with)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..rundir import Run
from ..rundir.config import PRESETS, TrainConfig


def add_mixture_flags(p: argparse.ArgumentParser, prefix: str, when: str) -> None:
    """fit-prior's --components, --draws and --reg-covar; train's --prior-components,
    --prior-draws and --prior-reg-covar (default None: the config's value)."""
    article, synth = TrainConfig(), PRESETS["synth"].train
    default = "default: the run's own; a new run's" if not prefix else "default for a new run"
    p.add_argument(
        f"--{prefix}components", type=int, metavar="K",
        help=f"{when}a Gaussian mixture prior of K components per class, used by generate "
        f"({default} {article.prior_components}, {synth.prior_components} with --preset synth"
        f"{'; 0: none, and a resumed run drops the one it has' if prefix else ''})",
    )  # fmt: skip
    p.add_argument(
        f"--{prefix}draws", type=int, metavar="R",
        help="fit the mixture to R codes drawn from each training image's posterior q(z|x) "
        f"instead of to their means ({default} {article.prior_draws}: the means; "
        f"{synth.prior_draws} with --preset synth)",
    )  # fmt: skip
    p.add_argument(
        f"--{prefix}reg-covar", type=float, metavar="V",
        help="variance added to each component's covariance, in squared latent units: larger "
        f"widens the components beyond the codes they were fitted to ({default} "
        f"{article.prior_reg_covar:g}, {synth.prior_reg_covar:g} with --preset synth)",
    )  # fmt: skip


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
    add_mixture_flags(fp, "", "")
    fp.add_argument(
        "--seed", type=int, help="random seed of the fit (default: the run's training seed)"
    )


def cmd_fit_prior(args: argparse.Namespace) -> Run:
    """Fit the prior, redraw the samples figure where there is one; the refitted run."""
    from ..report.figures import draw_all
    from ..rundir import layout, load_run
    from ..sampling.priors import fit_prior

    run = load_run(args.run)
    prior = fit_prior(
        run, components=args.components, seed=args.seed, draws=args.draws,
        reg_covar=args.reg_covar,
    )  # fmt: skip
    samples = run.path / layout.FIGURES / "samples.png"
    if samples.exists():  # drawn from the previous prior: redraw it from this one
        draw_all(run, only=[samples.name])
    fits, k = prior.info["per_class"], prior.info["components"]
    print(f"{run.path / 'prior'}: {len(fits)} mixture(s) of up to {k} Gaussians "
          f"({sum(f['converged'] for f in fits)} converged)")  # fmt: skip
    return run

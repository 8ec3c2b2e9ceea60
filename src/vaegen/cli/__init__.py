"""The `vaegen` command. Thin: parse arguments, call the library, print.

Every flag of `vaegen train` is one config field (--latent-dim <-> model.latent_dim), built from
the field's declaration (cli.options); `cli_reference` renders docs/cli.md from this parser.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._version import __version__
from ..console import configure_logging
from ..errors import Terminated, VaegenError, terminated_as_interrupt
from ..rundir import Run
from ..rundir.config import ARTICLE_LOSS, PRESET_HELP, PRESETS, DataConfig, RunConfig, preset
from ..sampling.priors import PRIOR_CHOICES
from ..training import distributed
from .data import CACHE_HELP, add_data_command, cmd_data
from .options import SECTIONS, add_config_flags, config_from_args, given, reference
from .prior import add_fit_prior_command, cmd_fit_prior


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vaegen",
        description="Learn an image dataset's distribution with a VAE and generate simulated data.",
        epilog=CACHE_HELP,
    )
    p.add_argument("--version", action="version", version=f"vaegen {__version__}")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars or epoch lines")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser(
        "train",
        help="train a VAE into a run directory",
        description="Train a VAE into a run directory. In several processes (DDP): "
        "torchrun --nproc-per-node N -m vaegen train --out RUN ...",
        epilog=CACHE_HELP,
    )
    t.add_argument(
        "--preset",
        choices=PRESETS,
        metavar="NAME",
        help="start from a named recipe; flags given beside it override its fields: "
        + "; ".join(f"{k}: {v}" for k, v in PRESET_HELP.items()),
    )
    for section in SECTIONS:  # every field of the run's config, declared in rundir.config
        add_config_flags(t, section, resumable_note=True)
    t.add_argument("--out", type=Path, help="run directory (default runs/run-DATE-TIME)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out")
    t.add_argument(
        "--checkpoint-every",
        type=int,
        default=0,
        metavar="N",
        help="also checkpoint every N steps (default: at the end of each epoch only)",
    )
    t.add_argument(
        "--no-plots", action="store_true", help="do not draw the figures and report at the end"
    )
    t.add_argument(
        "--tensorboard",
        action="store_true",
        help="also log each epoch's metrics to RUN/tensorboard (needs the tensorboard package)",
    )

    g = sub.add_parser("generate", help="write simulated images (and labels) to a file or folder")
    g.add_argument("run", type=Path)
    g.add_argument("--n", type=int, required=True, help="number of images")
    g.add_argument(
        "--label",
        nargs="+",
        action="extend",
        metavar="CLASS",
        help="class names or indices to draw, repeatable: --label Sneaker Bag or --label Sneaker "
        "--label Bag (conditional runs; default: all, spread evenly)",
    )
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g.add_argument(
        "--temperature",
        type=float,
        default=1.0,
        help="spread of the prior's samples: N(0, T^2 I), or each fitted component's or "
        "posterior's spread times T (default 1)",
    )
    g.add_argument(
        "--out",
        type=Path,
        required=True,
        help="FILE.npz, or a folder: IDX .gz files (default) or PNGs with --format png",
    )
    g.add_argument("--format", choices=["npz", "idx", "png"], help="output format")
    g.add_argument(
        "--split",
        choices=["train", "test"],
        default="train",
        help="IDX file prefix: train- or t10k- (default train)",
    )
    g.add_argument("--overwrite", action="store_true", help="replace existing output files")
    g.add_argument("--device", default="cpu", help="device to decode on (default cpu)")
    _prior_flag(g)

    add_fit_prior_command(sub)

    ev = sub.add_parser(
        "evaluate",
        help="measure a run's quality (writes RUN/eval.json), or any generator's images against "
        "a dataset (--samples FILE --data SOURCE)",
    )
    ev.add_argument("run", type=Path, nargs="?", help="the run directory (not with --samples)")
    ev.add_argument(
        "--samples",
        type=Path,
        default=None,
        metavar="FILE",
        help="images made anywhere (.npz, IDX folder or image folder, labelled with the data's "
        "classes or not) to measure against --data instead of a run's samples: the image-based "
        "part of the certificate",
    )
    add_config_flags(ev, "data", default_text="with --samples only")
    ev.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="FILE",
        help="with --samples: also write the result as JSON to FILE",
    )
    ev.add_argument(
        "--iw-samples",
        type=int,
        default=1000,
        metavar="K",
        help="importance samples per test image for the NLL bound (default 1000)",
    )
    ev.add_argument(
        "--n-generated",
        type=int,
        default=60000,
        metavar="N",
        help="images generated for the Frechet distance, precision and recall, class agreement "
        "and TSTR, and real training images to compare (default 60000, the training set's size)",
    )
    ev.add_argument(
        "--binarize",
        action="store_true",
        help="likelihood of stochastically binarised test images (bernoulli-loss runs)",
    )
    ev.add_argument("--quick", action="store_true", help="smaller K, N and classifier epochs")
    ev.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    ev.add_argument("--device", default="cpu", help="device (default cpu)")
    ev.add_argument(
        "--feature-net",
        type=Path,
        default=None,
        metavar="DIR",
        help="data other than FashionMNIST: the folder of the classifier that Frechet, precision/"
        "recall and agreement are measured with (default RUN/feature_net, trained there on "
        "first use); point runs on the same data at one folder to compare their numbers",
    )
    ev.add_argument(
        "--feature-epochs",
        type=int,
        default=None,
        metavar="E",
        help="epochs of that classifier (default: the saved one's, or scaled to the data's size)",
    )
    _prior_flag(ev)

    pl = sub.add_parser("plot", help="draw a run's figures into RUN/figures/")
    pl.add_argument("run", type=Path)

    rp = sub.add_parser("report", help="write RUN/report.html (self-contained, opens from disk)")
    rp.add_argument("run", type=Path)

    add_data_command(sub)
    return p


def cli_reference() -> str:
    """docs/cli.md: the reference of every command and flag, from the parser itself."""
    return reference(_parser())


def _prior_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--prior",
        choices=PRIOR_CHOICES,
        default="fitted",
        help="where z comes from: the run's fitted Gaussian mixture (N(0, I) for a run without "
        "one), the training images' aggregate posterior (a random training image's code drawn "
        "from its q(z|x): samples near particular training images) or N(0, I) (default fitted)",
    )


def _cmd_train(args: argparse.Namespace) -> int:
    from .. import rundir
    from ..pipeline import is_finished, train
    from ..rundir import layout

    procs = distributed.from_env()
    if procs.several and args.out is None:  # each process would pick its own time stamp
        raise VaegenError("training in several processes (torchrun) needs --out")
    out = args.out or Path("runs") / time.strftime("run-%Y%m%d-%H%M%S")
    # no --preset: the library's default config, whose loss is the data source's default
    base = preset(args.preset) if args.preset else RunConfig()
    resumed = args.resume and not args.preset and (out / layout.CONFIG).exists()
    if resumed:
        # unspecified flags keep the saved run's values; with --preset they are the preset's
        # (the same command with --resume added continues the run it started)
        base, _ = rundir.load_config(out)
    config = config_from_args(args, base)
    run = train(
        config,
        out,
        resume=args.resume,
        progress=not args.quiet,
        figures=not args.no_plots,
        checkpoint_every=args.checkpoint_every,
        tensorboard=args.tensorboard,
    )
    if not procs.is_main:  # the summary is the first process's
        return 0
    if not args.no_plots and is_finished(run):
        print(f"report: {run.path / layout.REPORT}")
    last = run.metrics[-1] if run.metrics else None
    loss = run.config.train.loss
    if last:
        defaulted = config.train.loss is None and loss != ARTICLE_LOSS
        print(
            f"{run.path}: {last['epoch']} epochs, test {loss} loss "
            f"{last['test_loss']:.3f} per image (recon {last['test_recon']:.3f} + "
            f"KL {last['test_kl']:.3f})"
            + (
                f"; {loss} is vaegen's default for images other than FashionMNIST and MNIST "
                "(--loss gaussian gives the article's)"
                if defaulted
                else ""
            )
        )
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from ..rundir import load_run
    from ..rundir.layout import EVAL
    from ..sampling.generate import generate_to
    from ..sampling.writers import output_format

    output_format(args.out, args.format)  # a bad --out fails before any work
    run = load_run(args.run, device=args.device)
    written = generate_to(
        run,
        args.n,
        args.out,
        labels=args.label,
        seed=args.seed,
        temperature=args.temperature,
        prior=args.prior,
        fmt=args.format,
        split=args.split,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    counts = ""
    if written.counts is not None:
        per_class = [f"{run.classes[k]}: {c}" for k, c in enumerate(written.counts) if c]
        counts = " (" + ", ".join(per_class) + ")"
    files = f"{written.files} file{'s' if written.files != 1 else ''}"
    print(f"wrote {written.n} images{counts} to {args.out} ({files})")
    manifest = written.manifest or {}
    if manifest.get("certificate") is not None:
        carries = f"with the certificate of {Path(run.path).absolute() / EVAL}"
    else:
        carries = f"no certificate: {manifest.get('certificate_note')}"
    print(f"manifest: {written.manifest_path} ({carries})")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from ..evaluation import evaluate
    from ..evaluation.scorecard import format_table
    from ..rundir import load_run

    data = given(args, "data")
    if args.samples is not None or data:
        return _evaluate_samples(args, data)
    if args.run is None:
        raise VaegenError("evaluate needs a run directory, or --samples FILE --data SOURCE")
    if args.out is not None:
        raise VaegenError("--out is for --samples; a run's evaluation is written to RUN/eval.json")
    result = evaluate(
        load_run(args.run, device=args.device),
        iw_samples=args.iw_samples,
        n_generated=args.n_generated,
        binarize=args.binarize,
        quick=args.quick,
        seed=args.seed,
        progress=not args.quiet,
        prior=args.prior,
        feature_net=args.feature_net,
        feature_epochs=args.feature_epochs,
    )
    print(format_table(result))
    return 0


def _evaluate_samples(args: argparse.Namespace, data: dict[str, Any]) -> int:
    from ..evaluation import evaluate_samples
    from ..evaluation.scorecard import format_table
    from ..files import atomic_write_text

    if args.samples is None or "source" not in data:
        raise VaegenError(
            "--samples FILE and --data SOURCE go together: the images to measure and the real "
            "dataset to measure them against"
        )
    if args.run is not None:
        raise VaegenError(f"--samples measures images without a run: leave out {args.run}")
    if args.out is not None:
        _check_result_file(args.out)  # before the measuring, not after
    result = evaluate_samples(
        args.samples,
        DataConfig(**data),
        n=args.n_generated,
        quick=args.quick,
        seed=args.seed,
        device=args.device,
        progress=not args.quiet,
        feature_net=args.feature_net,
        feature_epochs=args.feature_epochs,
    )
    if args.out is not None:
        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(format_table(result))
    return 0


def _check_result_file(out: Path) -> None:
    """--out may replace an earlier result of `evaluate --samples`, never another file."""
    if out.is_symlink() or out.is_dir():
        raise VaegenError(f"--out {out} is a link or a folder; name a new file")
    if not out.exists():
        return
    try:
        earlier = json.loads(out.read_text(encoding="utf-8"))
        ours = isinstance(earlier, dict) and {"samples", "certificate"} <= set(earlier)
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        ours = False
    if not ours:
        raise VaegenError(
            f"--out {out} exists and is not an earlier result of `vaegen evaluate --samples`; "
            "vaegen leaves it as it is: name another file"
        )


def _cmd_plot(args: argparse.Namespace) -> int:
    from ..report.figures import draw_all
    from ..rundir import load_run

    run = load_run(args.run)
    for path in draw_all(run):
        print(path)
    _refresh_report(run)
    return 0


def _cmd_fit_prior(args: argparse.Namespace) -> int:
    _refresh_report(cmd_fit_prior(args))  # its samples figure is drawn from the new prior
    return 0


def _refresh_report(run: Run) -> None:
    """Rewrite RUN/report.html, where there is one, after figures it embeds were redrawn."""
    from ..report import REPORT, write_report

    if (run.path / REPORT).exists():
        print(f"report: {write_report(run)}")


def _cmd_report(args: argparse.Namespace) -> int:
    from ..report import write_report
    from ..rundir import load_run

    print(write_report(load_run(args.run)))
    return 0


_COMMANDS = {
    "train": _cmd_train,
    "generate": _cmd_generate,
    "evaluate": _cmd_evaluate,
    "plot": _cmd_plot,
    "report": _cmd_report,
    "data": cmd_data,
    "fit-prior": _cmd_fit_prior,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for a user error)."""
    args = _parser().parse_args(argv)
    configure_logging(logging.WARNING if args.quiet else logging.INFO)
    try:
        with terminated_as_interrupt(enabled=not distributed.started_by_torchrun()):
            return _COMMANDS[args.command](args)
    except VaegenError as e:
        print(f"vaegen: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        then = (
            "a run continues with `vaegen train --out RUN --resume`"
            if args.command == "train"
            else "the previous files are kept"
        )
        print(f"vaegen: interrupted; {then}", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130

"""What each ingredient of the simulated-data recipe buys: train the conditional model with the
ingredients switched on one at a time, and score every run the same way.

Rows (each adds one thing to the row before it, all conditional, seed 0, device cpu):
  article CVAE   2-D latent, hidden 256, unit-variance Gaussian, samples from N(0, I)
  + fitted prior the 10-component Gaussian mixture per class (vaegen.sampling.priors)
  + 16-D latent
  + likelihood   --loss bernoulli (also scored: gaussian-sigma, gaussian-pixel-sigma, beta 0.01)
  + hidden 1024  (also scored: gaussian-optimal-sigma)
  + beta 0.1     (also scored: beta 0.03)
  + 32-D latent
  + 64-D latent
  + hidden 2048
  + prior        100 components per class fitted to 3 codes drawn from each posterior
  + reg_covar    0.1 added to each component's covariance
  + 50 epochs    the `--preset synth` recipe

Scores, on N generated images (labels spread evenly) in the reference classifier's features:
the Frechet distance to the test set and that of the test set's reconstructions (the decoder's
share), precision and recall against the test set (k = 3), the reference classifier's agreement
with the requested class (overall and the worst class), the test-set loss, the training time
(the sum of the epochs' times: what the user waits for, test passes included) and the time the
prior took to fit (null where an earlier call fitted it). TSTR is not run
here (it costs two classifier trainings a row): `vaegen evaluate` measures it for a chosen run.

    python benchmarks/synth_ablation.py OUT [--epochs 20] [--n 10000] [--rows I ...]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from record import append_result

from vaegen import load_dataset, load_run
from vaegen.evaluation.estimators import (
    class_agreement,
    frechet_distance_features,
    precision_recall,
)
from vaegen.evaluation.reference_classifier import (
    extract_features,
    load_reference_classifier,
    predict,
)
from vaegen.rundir.config import PRESETS, ModelConfig, RunConfig, TrainConfig
from vaegen.sampling.generate import generate, reconstruct
from vaegen.sampling.priors import fit_prior
from vaegen.training.loop import train


@dataclass(frozen=True)
class Row:
    name: str
    config: RunConfig
    prior: str  # "standard" or "fitted"


def rows(epochs: int) -> list[Row]:
    """The ablation's rows: each the one above it with one ingredient more."""
    article = RunConfig(
        model=ModelConfig(conditional=True), train=TrainConfig(epochs=epochs, device="cpu")
    )

    def with_(base: RunConfig, **fields: object) -> RunConfig:
        model = {k: v for k, v in fields.items() if k in ModelConfig.__dataclass_fields__}
        tr = {k: v for k, v in fields.items() if k in TrainConfig.__dataclass_fields__}
        return replace(base, model=replace(base.model, **model), train=replace(base.train, **tr))

    d16 = with_(article, latent_dim=16)
    synth = PRESETS["synth"]
    likelihood = with_(d16, loss=synth.train.loss)
    wide = with_(likelihood, hidden=1024)
    low_beta = with_(wide, beta=synth.train.beta)
    d32 = with_(low_beta, latent_dim=32)
    d64 = with_(d32, latent_dim=synth.model.latent_dim)
    wider = with_(d64, hidden=synth.model.hidden)
    big_prior = with_(
        wider, prior_components=synth.train.prior_components, prior_draws=synth.train.prior_draws
    )
    smooth_prior = with_(big_prior, prior_reg_covar=synth.train.prior_reg_covar)
    return [
        Row("article CVAE, N(0, I)", article, "standard"),
        Row("+ fitted prior", article, "fitted"),
        Row("+ 16-D latent", d16, "fitted"),
        Row("  likelihood: beta 0.01 (gaussian)", with_(d16, beta=0.01), "fitted"),
        Row("  likelihood: gaussian-sigma", with_(d16, loss="gaussian-sigma"), "fitted"),
        Row(
            "  likelihood: gaussian-pixel-sigma", with_(d16, loss="gaussian-pixel-sigma"), "fitted"
        ),
        Row(f"+ likelihood: {synth.train.loss}", likelihood, "fitted"),
        Row("+ hidden 1024", wide, "fitted"),
        Row(
            "  likelihood: gaussian-optimal-sigma",
            with_(wide, loss="gaussian-optimal-sigma"),
            "fitted",
        ),
        Row(f"+ beta {synth.train.beta:g}", low_beta, "fitted"),
        Row("  beta 0.03", with_(wide, beta=0.03), "fitted"),
        Row("+ 32-D latent", d32, "fitted"),
        Row(f"+ {synth.model.latent_dim}-D latent", d64, "fitted"),
        Row(f"+ hidden {synth.model.hidden}", wider, "fitted"),
        Row(
            f"+ prior: {synth.train.prior_components} components, {synth.train.prior_draws} draws",
            big_prior,
            "fitted",
        ),
        Row(f"+ prior: reg_covar {synth.train.prior_reg_covar:g}", smooth_prior, "fitted"),
        Row(
            f"+ {synth.train.epochs} epochs (--preset synth)", with_(synth, device="cpu"), "fitted"
        ),
    ]


def slug(config: RunConfig, prior: bool = True) -> str:
    """The row's folder name; prior=False: that of the model alone (rows that differ only in
    the prior fitted after training share one trained model)."""
    m, t = config.model, config.train
    name = f"d{m.latent_dim}-h{m.hidden}-{t.loss}-b{t.beta:g}-e{t.epochs}"
    mixture = (t.prior_components, t.prior_draws, t.prior_reg_covar)
    default = TrainConfig()
    if prior and mixture != (
        default.prior_components,
        default.prior_draws,
        default.prior_reg_covar,
    ):
        name += "-k{}x{}-r{:g}".format(*mixture)
    return name


def score(run_dir: Path, prior: str, n: int, ref: dict) -> dict:
    run = load_run(run_dir)
    clf, test, f_test = ref["clf"], ref["test"], ref["f_test"]
    images, labels = generate(run, n, prior=prior, seed=0)
    f_gen = extract_features(clf, images, progress=False)
    recon = reconstruct(run, test.images, test.labels)
    agree, per_class = class_agreement(predict(clf, images), labels, len(run.classes))
    worst = min(range(len(per_class)), key=lambda k: per_class[k])
    precision, recall = precision_recall(f_test, f_gen)
    return {
        "frechet": frechet_distance_features(f_gen, f_test),
        "frechet_recon": frechet_distance_features(
            extract_features(clf, recon, progress=False), f_test
        ),
        "precision": precision,
        "recall": recall,
        "agreement": agree,
        "worst_class": f"{run.classes[worst]} {per_class[worst]:.3f}",
        "test_loss": run.metrics[-1]["test_loss"],
        "loss": run.config.train.loss,
        "train_seconds": sum(m["seconds"] for m in run.metrics),
    }


def record_of(row: Row, result: dict, n: int) -> dict:
    """A row's scores as benchmarks/results/synth_ablation.jsonl holds them (a variant's name
    without its indent, agreement in percent)."""
    worst, worst_agreement = result["worst_class"].rsplit(" ", 1)
    return {
        "name": row.name.strip(),
        "variant": row.name.startswith(" "),
        "row": result["row"],
        "epochs": row.config.train.epochs,
        "n": n,
        "frechet": round(result["frechet"], 3),
        "frechet_recon": round(result["frechet_recon"], 3),
        "precision": round(result["precision"], 4),
        "recall": round(result["recall"], 4),
        "agreement_pct": round(100 * result["agreement"], 2),
        "worst_class": worst,
        "worst_class_pct": round(100 * float(worst_agreement), 1),
        "loss": result["loss"],
        "test_loss": round(result["test_loss"], 4),
        "train_s": round(result["train_seconds"], 1),
        "prior_s": None if result["prior_seconds"] is None else round(result["prior_seconds"], 1),
        "wall_s": round(result["wall_seconds"], 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="folder for the runs and results.jsonl")
    p.add_argument("--epochs", type=int, default=20, help="epochs of every row but the last")
    p.add_argument("--n", type=int, default=10000, help="generated images per row")
    p.add_argument("--rows", nargs="*", type=int, help="row numbers to run (default all)")
    args = p.parse_args()
    torch.manual_seed(0)
    clf = load_reference_classifier()
    test = load_dataset("fashion-mnist", "test")
    ref = {"clf": clf, "test": test, "f_test": extract_features(clf, test.images, progress=False)}
    train_set = load_dataset("fashion-mnist", "train")
    floor = precision_recall(
        ref["f_test"], extract_features(clf, train_set.images[: args.n], progress=False)
    )
    print(f"real training images: precision {floor[0]:.3f} recall {floor[1]:.3f}", flush=True)
    append_result(
        "synth_ablation",
        {
            "name": "real training images",
            "reference": True,
            "n": args.n,
            "precision": round(floor[0], 4),
            "recall": round(floor[1], 4),
        },
    )
    args.out.mkdir(parents=True, exist_ok=True)
    for i, row in enumerate(rows(args.epochs)):
        if args.rows and i not in args.rows:
            continue
        run_dir = args.out / slug(row.config)
        model_dir = args.out / slug(row.config, prior=False)
        t0 = time.perf_counter()
        if not run_dir.exists() and (model_dir / "model.safetensors").exists():
            shutil.copytree(model_dir, run_dir, ignore=shutil.ignore_patterns("prior"))
        prior_seconds = None
        if not (run_dir / "prior").exists():
            run = train(row.config, run_dir, resume=True, progress=False)
            t = row.config.train  # explicit: a copied model's config.json names its own prior
            t1 = time.perf_counter()
            fit_prior(
                run,
                train_set,
                components=t.prior_components,
                seed=0,
                draws=t.prior_draws,
                reg_covar=t.prior_reg_covar,
            )
            prior_seconds = time.perf_counter() - t1
        result = {"row": i, "name": row.name, **score(run_dir, row.prior, args.n, ref)}
        result["prior_seconds"] = prior_seconds
        result["wall_seconds"] = time.perf_counter() - t0
        with open(args.out / "results.jsonl", "a") as f:
            f.write(json.dumps(result) + "\n")
        print(json.dumps(result), flush=True)
        append_result("synth_ablation", record_of(row, result, args.n))


if __name__ == "__main__":
    main()

"""Which latent prior makes the best samples for a trained run: N(0, I), Gaussian mixtures fitted
to the training codes (Ghosh et al. 2020; to their means, or to codes drawn from their
posteriors), the aggregate posterior itself (every training image's q(z|x)), or a second-stage
VAE trained on the codes (Dai & Wipf 2019).

For each prior it generates images (labels spread over the classes for a conditional run) and
reports, in the reference FashionMNIST classifier's feature space: the Frechet distance to the
test set, precision and recall (k = 3), the classifier's agreement with the requested class
(overall and the worst class), how near the samples lie to particular training images (the
median distance to the nearest training image over the test images' own, and the fraction of
near copies, as `vaegen evaluate` measures them), optionally a short train-on-synthetic score,
and the time the prior took to fit. As references: the test set's reconstructions (what a
perfect prior could reach with this decoder) and real training images (the floor).

    python benchmarks/prior_comparison.py RUN [RUN ...] [--n 10000] [--components 1 10 20]
        [--draw-components 50 100 --draws 3] [--tstr-n 20000] [--second-stage-epochs 0]

--tstr-n M trains the reference architecture for 2 epochs on M generated images, twice (seeds 5
and 6), and reports the mean test accuracy beside that of M real training images: a quick,
noisy (about +-0.5 points) stand-in for `vaegen evaluate`'s TSTR.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from record import append_result

from vaegen import load_run
from vaegen.data import load_splits
from vaegen.evaluation.estimators import (
    class_agreement,
    frechet_distance_features,
    kth_nearest_sq,
    nearness,
    precision_recall,
)
from vaegen.evaluation.reference_classifier import (
    accuracy,
    extract_features,
    load_reference_classifier,
    predict,
    train_classifier,
)
from vaegen.model.encode import latent_posteriors
from vaegen.sampling.generate import reconstruct
from vaegen.sampling.priors import StandardNormal, aggregate_posterior, fit_gaussian_mixture


class SecondStage(nn.Module):
    """A VAE on latent codes (Dai & Wipf 2019, the second stage): [z, onehot] -> 256 -> 256 -> u,
    u -> 256 -> 256 -> mean of z, with a learned per-dimension log-variance of z given u (their
    gamma, which lets the second stage match the codes' scale)."""

    def __init__(self, d: int, classes: int, width: int = 256) -> None:
        super().__init__()
        self.d, self.classes = d, classes
        self.enc = nn.Sequential(
            nn.Linear(d + classes, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU()
        )
        self.mu, self.logvar = nn.Linear(width, d), nn.Linear(width, d)
        self.dec = nn.Sequential(
            nn.Linear(d + classes, width),
            nn.ReLU(),
            nn.Linear(width, width),
            nn.ReLU(),
            nn.Linear(width, d),
        )
        self.log_gamma = nn.Parameter(torch.zeros(d))

    def onehot(self, y: torch.Tensor | None, n: int) -> torch.Tensor:
        if not self.classes:
            return torch.zeros(n, 0)
        return nn.functional.one_hot(y, self.classes).float()

    def loss(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        c = self.onehot(y, len(z))
        h = self.enc(torch.cat([z, c], 1))
        mu, logvar = self.mu(h), self.logvar(h).clamp(-30, 20)
        u = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        mean = self.dec(torch.cat([u, c], 1))
        nll = 0.5 * ((z - mean) ** 2 / self.log_gamma.exp() + self.log_gamma).sum(1)
        kl = -0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(1)
        return (nll + kl).mean()

    @torch.no_grad()
    def sample(self, y: torch.Tensor | None, n: int, gen: torch.Generator) -> torch.Tensor:
        u = torch.randn(n, self.d, generator=gen)
        return self.dec(torch.cat([u, self.onehot(y, n)], 1))


def fit_second_stage(
    mu: torch.Tensor, logvar: torch.Tensor, y: torch.Tensor | None, classes: int, epochs: int = 40
) -> SecondStage:
    """Train on codes drawn from q(z|x) afresh every epoch, as the two-stage VAE does."""
    torch.manual_seed(0)
    model = SecondStage(mu.shape[1], classes)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    n = len(mu)
    for _ in range(epochs):
        perm = torch.randperm(n)
        for i in range(0, n, 256):
            idx = perm[i : i + 256]
            z = mu[idx] + torch.randn_like(mu[idx]) * (0.5 * logvar[idx]).exp()
            loss = model.loss(z, None if y is None else y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


@torch.no_grad()
def decode(run, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    out = [
        run.likelihood.mean(
            run.model.decode(z[i : i + 4096], None if y is None else y[i : i + 4096])
        )
        for i in range(0, len(z), 4096)
    ]
    return (torch.cat(out) * 255).round().to(torch.uint8)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+")
    p.add_argument("--n", type=int, default=10000, help="images scored per prior")
    p.add_argument(
        "--components",
        type=int,
        nargs="+",
        default=[1, 10, 20],
        help="mixtures fitted to the latent means",
    )
    p.add_argument(
        "--draw-components",
        type=int,
        nargs="*",
        default=[],
        help="mixtures fitted to --draws codes from each posterior",
    )
    p.add_argument("--draws", type=int, default=3)
    p.add_argument(
        "--reg-covar",
        type=float,
        default=1e-6,
        help="variance added to each mixture component (--preset synth: 0.1)",
    )
    p.add_argument("--second-stage-epochs", type=int, default=40, help="0: skip it")
    p.add_argument("--tstr-n", type=int, default=0, help="short TSTR on this many images")
    args = p.parse_args()
    clf = load_reference_classifier()
    for path in args.runs:
        run = load_run(path)
        compare(run, path, clf, args)


def compare(run, path: str, clf, args: argparse.Namespace) -> None:
    conditional = run.config.model.conditional
    data = run.config.data
    train, test = load_splits(data.source, **data.load_options())
    k = len(run.classes)
    n, m = args.n, max(args.n, args.tstr_n)
    y = (torch.arange(m) % k) if conditional else None
    f_test = extract_features(clf, test.images, progress=False)
    f_train = extract_features(clf, train.images, progress=False)
    d_test = kth_nearest_sq(f_test, f_train, 1).sqrt()
    rows = []
    recorded: list[dict] = []  # the same numbers, for benchmarks/results/prior_comparison.jsonl

    def score(name: str, images: torch.Tensor, seconds: float, labels=y) -> None:
        """labels: the class each image was drawn for (or is), for agreement and TSTR."""
        f = extract_features(clf, images[:n], progress=False)
        fd = frechet_distance_features(f, f_test)
        precision, recall = precision_recall(f_test, f)
        ratio, copies = nearness(kth_nearest_sq(f, f_train, 1).sqrt(), d_test)
        nearest = f"{ratio:.3f} / {copies:.3f}"
        agree, tstr = "-", "-"
        entry = {
            "prior": name,
            "frechet": round(fd, 3),
            "precision": round(precision, 4),
            "recall": round(recall, 4),
            "nearest_median_ratio": round(ratio, 4),
            "near_copies_pct": round(100 * copies, 2),
        }
        if labels is not None and conditional:
            yn = labels[:n]
            overall, per = class_agreement(predict(clf, images[:n]), yn, k)
            worst = min((c for c in range(k) if per[c] is not None), key=lambda c: per[c])
            agree = f"{overall:.3f} ({run.classes[worst]} {per[worst]:.3f})"
            entry["agreement_pct"] = round(100 * overall, 2)
            entry["worst_class"] = run.classes[worst]
            entry["worst_class_pct"] = round(100 * per[worst], 2)
            if args.tstr_n:
                xs, ys = images[: args.tstr_n], labels[: args.tstr_n]
                accs = [
                    accuracy(
                        train_classifier(
                            xs, ys, epochs=2, seed=s, num_classes=k, lr=2e-3, progress=False
                        ),
                        test.images,
                        test.labels,
                    )
                    for s in (5, 6)
                ]
                tstr = f"{sum(accs) / 2:.4f}"
                entry["short_tstr_pct"] = round(100 * sum(accs) / 2, 2)
        if seconds:
            entry["fit_s"] = round(seconds, 1)
        recorded.append(entry)
        rows.append((name, fd, f"{precision:.3f} / {recall:.3f}", agree, nearest, tstr, seconds))

    gen = torch.Generator().manual_seed(0)
    pick = torch.randperm(len(train), generator=gen)[:m]
    score("real training images (floor)", train.images[pick], 0.0, train.labels[pick])
    ty = test.labels if conditional else None
    score("test reconstructions", reconstruct(run, test.images, ty), 0.0, test.labels)
    z = StandardNormal(run.config.model.latent_dim).sample(y, m, torch.Generator())
    score("N(0, I)", decode(run, z, y), 0.0)
    labels = train.labels if conditional else None
    mu, logvar = latent_posteriors(run.model, train.images, labels)
    posterior = aggregate_posterior(mu, logvar, labels, k)
    draws = torch.Generator().manual_seed(0)
    for source, comps_list in (("means", args.components), ("draws", args.draw_components)):
        for comps in comps_list:
            t0 = time.perf_counter()
            codes, code_labels = mu, labels
            if source == "draws":
                codes, code_labels = posterior.draws(args.draws, draws)
            prior = fit_gaussian_mixture(codes, code_labels, k, comps, 0, args.reg_covar)
            seconds = time.perf_counter() - t0
            z = prior.sample(y, m, torch.Generator().manual_seed(0))
            what = "means" if source == "means" else f"{args.draws} draws per image"
            name = f"Gaussian mixture, K = {comps}, {what}, V = {args.reg_covar:g}"
            score(name, decode(run, z, y), seconds)
    z = posterior.sample(y, m, torch.Generator().manual_seed(0))
    score("aggregate posterior", decode(run, z, y), 0.0)
    if args.second_stage_epochs:
        t0 = time.perf_counter()
        second = fit_second_stage(
            mu, logvar, labels, k if conditional else 0, epochs=args.second_stage_epochs
        )
        seconds = time.perf_counter() - t0
        z = second.sample(y, m, torch.Generator().manual_seed(0))
        score(f"second-stage VAE ({args.second_stage_epochs} epochs)", decode(run, z, y), seconds)

    print(
        f"\n{path}: {'conditional ' if conditional else ''}{run.config.model.model}, "
        f"{run.config.model.latent_dim}-D latent, {run.config.train.loss} loss, N = {n}"
        + (f", short TSTR on {args.tstr_n}" if args.tstr_n else "")
    )
    print(
        f"  {'prior':<56} {'Frechet':>8}  {'prec / recall':<14} {'agreement':<28} "
        f"{'nearest / copies':<16} {'TSTR':<7} fit s"
    )
    for name, fd, pr, agree, nearest, tstr, seconds in rows:
        print(
            f"  {name:<56} {fd:8.1f}  {pr:<14} {agree:<28} {nearest:<16} {tstr:<7} {seconds:5.1f}"
        )
    model, train_config = run.config.model, run.config.train
    described = (
        f"{'conditional ' if conditional else ''}{model.model}, {model.latent_dim}-D latent, "
        f"{len(run.metrics)} epochs, {train_config.loss} loss ({path})"
    )
    append_result(
        "prior_comparison",
        {
            "run": described,
            "latent_dim": model.latent_dim,
            "n": n,
            "tstr_n": args.tstr_n,
            "reg_covar": args.reg_covar,
            "priors": recorded,
        },
    )


if __name__ == "__main__":
    main()

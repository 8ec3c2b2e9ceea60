"""Which latent prior makes the best samples for a trained run: N(0, I), a Gaussian mixture fitted
to the training codes (Ghosh et al. 2020), or a second-stage VAE trained on them (Dai & Wipf 2019).

For each prior it generates N images (labels spread over the classes for a conditional run) and
reports, in the reference FashionMNIST classifier's feature space: the Frechet distance to the
test set, the classifier's agreement with the requested class (overall and the worst class), and
the time the prior took to fit. As references: the Frechet distance of the test set's
reconstructions (what a perfect prior could reach with this decoder) and of N real training
images (the floor).

    python benchmarks/prior_comparison.py RUN [RUN ...] [--n 10000] [--components 1 10 20]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from vaegen import load_run
from vaegen.classifier import extract_features, load_reference_classifier, predict
from vaegen.data import load_splits, to_float
from vaegen.generate import reconstruct
from vaegen.metrics import frechet_distance_features
from vaegen.priors import StandardNormal, fit_gaussian_mixture


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
            nn.Linear(d + classes, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
            nn.Linear(width, d),
        )  # fmt: skip
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
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--components", type=int, nargs="+", default=[1, 10, 20])
    p.add_argument("--second-stage-epochs", type=int, default=40)
    args = p.parse_args()
    clf = load_reference_classifier()
    for path in args.runs:
        run = load_run(path)
        conditional = run.config.model.conditional
        data = run.config.data
        train, test = load_splits(data.source, **data.load_options())
        k = len(run.classes)
        n = args.n
        y = (torch.arange(n) % k) if conditional else None
        f_test = extract_features(clf, test.images, progress=False)
        rows = []

        def score(
            name: str, images: torch.Tensor, seconds: float, labels: torch.Tensor | None = y,
            f_test=f_test, k=k, run=run, rows=rows,
        ) -> None:  # fmt: skip
            """labels: the class each image was drawn for (or is), for the agreement."""
            fd = frechet_distance_features(extract_features(clf, images, progress=False), f_test)
            agree = "-"
            if labels is not None and run.config.model.conditional:
                y = labels
                hit = predict(clf, images) == y
                per = torch.stack([hit[y == c].double().mean() for c in range(k)])
                worst = int(per.argmin())
                agree = f"{hit.double().mean():.3f} (worst {run.classes[worst]} {per[worst]:.3f})"
            rows.append((name, fd, agree, seconds))

        gen = torch.Generator().manual_seed(0)
        pick = torch.randperm(len(train), generator=gen)[:n]
        score("real training images (floor)", train.images[pick], 0.0, train.labels[pick])
        ty = test.labels if conditional else None
        score("test reconstructions", reconstruct(run, test.images, ty), 0.0, test.labels)
        z = StandardNormal(run.config.model.latent_dim).sample(y, n, torch.Generator())
        score("N(0, I)", decode(run, z, y), 0.0)
        labels = train.labels if conditional else None
        with torch.no_grad():  # the codes' means for the mixtures, and their spread for stage 2
            mu, logvar = run.model.encode(to_float(train.images, run.device), labels)
        for comps in args.components:
            t0 = time.perf_counter()
            prior = fit_gaussian_mixture(mu, labels, k, comps, seed=0)
            seconds = time.perf_counter() - t0
            z = prior.sample(y, n, torch.Generator().manual_seed(0))
            score(f"Gaussian mixture, K = {comps} per class", decode(run, z, y), seconds)
        t0 = time.perf_counter()
        second = fit_second_stage(mu, logvar, labels, k if conditional else 0,
                                  epochs=args.second_stage_epochs)  # fmt: skip
        seconds = time.perf_counter() - t0
        z = second.sample(y, n, torch.Generator().manual_seed(0))
        score(f"second-stage VAE ({args.second_stage_epochs} epochs)", decode(run, z, y), seconds)

        print(f"\n{path}: {'conditional ' if conditional else ''}{run.config.model.model}, "
              f"{run.config.model.latent_dim}-D latent, {run.config.train.loss} loss, N = {n}")  # fmt: skip
        print(f"  {'prior':<40} {'Frechet':>8}  {'agreement':<32} fit s")
        for name, fd, agree, seconds in rows:
            print(f"  {name:<40} {fd:8.1f}  {agree:<32} {seconds:5.1f}")


if __name__ == "__main__":
    main()

"""Latent priors: the Gaussian mixture fit against known mixtures, its storage in the run, and
sampling that is seeded, repeatable and follows the fitted parameters."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from vaegen import generate, load_run
from vaegen.cli import main
from vaegen.errors import RunError, VaegenError
from vaegen.rundir import load_split
from vaegen.rundir.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaegen.sampling.priors import (
    AggregatePosterior,
    GaussianMixturePrior,
    StandardNormal,
    aggregate_posterior,
    fit_gaussian_mixture,
    fit_prior,
    load_prior,
)
from vaegen.training.loop import train


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from .conftest import write_idx_dataset

    base = tmp_path_factory.mktemp("priors")
    data = write_idx_dataset(base / "data")
    out = {}
    for name, conditional in (("cond", True), ("plain", False)):
        cfg = RunConfig(
            DataConfig(str(data)),
            ModelConfig(hidden=32, latent_dim=3, conditional=conditional),
            TrainConfig(epochs=2, batch_size=32, lr=3e-3, loss="gaussian"),
        )
        out[name] = train(cfg, base / name, progress=False).path
    return out


def two_blobs(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n 2-D points per class: class 0 a quarter around (-4, 0) and the rest around (4, 0),
    class 1 around (0, 5)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, 2, generator=g) * 0.3 + torch.tensor([-4.0, 0.0])
    b = torch.randn(n, 2, generator=g) * 0.3 + torch.tensor([4.0, 0.0])
    c = torch.randn(n, 2, generator=g) * torch.tensor([0.2, 0.6]) + torch.tensor([0.0, 5.0])
    z = torch.cat([a[: n // 4], b[: n - n // 4], c])
    y = torch.cat([torch.zeros(n, dtype=torch.int64), torch.ones(n, dtype=torch.int64)])
    return z, y


def test_the_mixture_recovers_known_clusters_per_class():
    z, y = two_blobs(2000)
    prior = fit_gaussian_mixture(z, y, num_classes=2, components=2, seed=0)
    means0 = sorted(prior.means[0, :, 0].tolist())
    assert means0 == pytest.approx([-4.0, 4.0], abs=0.05)
    assert sorted(prior.weights[0].tolist()) == pytest.approx([0.25, 0.75], abs=0.02)
    # class 1 is one Gaussian: its two components together reproduce its mean and spread
    samples = prior.sample(torch.ones(20000, dtype=torch.int64), 20000, torch.Generator())
    assert samples.mean(0).tolist() == pytest.approx([0.0, 5.0], abs=0.03)
    assert samples.std(0).tolist() == pytest.approx([0.2, 0.6], rel=0.05)
    left = prior.sample(torch.zeros(20000, dtype=torch.int64), 20000, torch.Generator())
    assert (left[:, 0] < 0).double().mean().item() == pytest.approx(0.25, abs=0.02)
    assert left[:, 0].abs().mean().item() == pytest.approx(4.0, abs=0.05)  # never in between


def test_temperature_scales_each_components_spread_not_the_layout():
    z, y = two_blobs(2000)
    prior = fit_gaussian_mixture(z, y, num_classes=2, components=2, seed=0)
    labels = torch.zeros(5000, dtype=torch.int64)  # class 0: blobs at x = -4 and 4, sd 0.3
    cold = prior.sample(labels, 5000, torch.Generator().manual_seed(1), temperature=0.1)
    assert (cold[:, 0] < 0).double().mean().item() == pytest.approx(0.25, abs=0.03)
    assert (cold[:, 0].abs() - 4).std().item() == pytest.approx(0.03, rel=0.1)
    assert cold[:, 1].std().item() == pytest.approx(0.03, rel=0.1)


def test_sampling_is_seeded_and_needs_labels_when_fitted_per_class():
    z, y = two_blobs(500)
    prior = fit_gaussian_mixture(z, y, num_classes=2, components=3, seed=0)
    labels = torch.tensor([0, 1] * 50)
    a = prior.sample(labels, 100, torch.Generator().manual_seed(5))
    assert torch.equal(a, prior.sample(labels, 100, torch.Generator().manual_seed(5)))
    assert not torch.equal(a, prior.sample(labels, 100, torch.Generator().manual_seed(6)))
    with pytest.raises(VaegenError, match="fitted per class: pass the labels"):
        prior.sample(None, 100, torch.Generator())
    standard = StandardNormal(2).sample(None, 4, torch.Generator().manual_seed(3), 2.0)
    assert torch.equal(
        standard, 2.0 * torch.randn(4, 2, generator=torch.Generator().manual_seed(3))
    )


def test_a_fitted_prior_round_trips_through_the_run_directory(runs):
    run = load_run(runs["cond"])
    fitted = fit_prior(run, components=4, seed=0)
    info = json.loads((run.path / "prior" / "prior.json").read_text())
    assert info["kind"] == "gmm" and info["conditional"] and len(info["per_class"]) == 3
    loaded = load_prior(run)
    assert isinstance(loaded, GaussianMixturePrior)
    for name in ("weights", "means", "covariances"):
        assert torch.equal(getattr(loaded, name), getattr(fitted, name)), name
    assert loaded.means.shape == (3, 4, 3)
    assert torch.allclose(loaded.weights.sum(1), torch.ones(3, dtype=torch.float64))
    assert isinstance(load_prior(run, "standard"), StandardNormal)

    labels = torch.arange(30) % 3
    same = [loaded.sample(labels, 30, torch.Generator().manual_seed(0)) for _ in range(2)]
    assert torch.equal(*same)


def test_generate_uses_the_fitted_prior_and_old_runs_behave_as_before(runs, tmp_path):
    import shutil

    plain = load_run(shutil.copytree(runs["plain"], tmp_path / "plain"))
    before = generate(plain, 50, seed=3)[0]  # no prior yet: N(0, I)
    assert torch.equal(before, generate(plain, 50, seed=3, prior="standard")[0])
    prior = fit_prior(plain, components=2)
    after = generate(plain, 50, seed=3)[0]
    assert not torch.equal(before, after)
    assert torch.equal(before, generate(plain, 50, seed=3, prior="standard")[0])
    # the fitted images are the decoder's mean at the fitted prior's z, by hand
    z = prior.sample(None, 50, torch.Generator().manual_seed(3))
    by_hand = (plain.likelihood.mean(plain.model.decode(z)) * 255).round().to(torch.uint8)
    assert torch.equal(after, by_hand)


def test_a_damaged_or_foreign_prior_is_refused(runs, tmp_path):
    import shutil

    run = load_run(shutil.copytree(runs["cond"], tmp_path / "cond"))
    fit_prior(run, components=2)
    params = run.path / "prior" / "prior.safetensors"
    params.write_bytes(params.read_bytes()[:100])
    with pytest.raises(RunError, match=r"prior\.safetensors: not a valid safetensors file"):
        load_prior(run)
    other = load_run(shutil.copytree(runs["plain"], tmp_path / "plain"))
    fit_prior(other, components=2)
    shutil.rmtree(run.path / "prior")
    shutil.copytree(other.path / "prior", run.path / "prior")  # unconditional: 1 class
    with pytest.raises(RunError, match="refit it with `vaegen fit-prior"):
        load_prior(run)
    with pytest.raises(VaegenError, match="prior = 'best' is not valid"):
        load_prior(run, "best")


def test_cli_fit_prior_and_generate_with_either_prior(runs, tmp_path, capsys):
    import shutil
    import zipfile

    out = shutil.copytree(runs["cond"], tmp_path / "cond")
    assert main(["fit-prior", str(out), "--components", "3"]) == 0
    assert "3 mixture(s) of up to 3 Gaussians" in capsys.readouterr().out
    files = {}
    for prior in ("fitted", "standard"):
        path = tmp_path / f"{prior}.npz"
        argv = ["generate", str(out), "--n", "30", "--prior", prior, "--out", str(path)]
        assert main(argv) == 0
        with zipfile.ZipFile(path) as zf:
            files[prior] = zf.read("x.npy")
    assert files["fitted"] != files["standard"]
    run = load_run(out)
    images, _ = generate(run, 30, seed=0)
    assert files["fitted"].endswith(images[:, 0].numpy().tobytes())


def test_cli_training_fits_the_prior_at_the_end(tiny_data, tmp_path):
    out = tmp_path / "r"
    argv = [
        "-q",
        "train",
        "--data",
        str(tiny_data),
        "--hidden",
        "16",
        "--epochs",
        "1",
        "--conditional",
        "--prior-components",
        "2",
        "--no-plots",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    assert isinstance(load_prior(load_run(out)), GaussianMixturePrior)
    assert load_prior(load_run(out)).info["draws"] == 0
    drawn = tmp_path / "drawn"
    assert main([*argv[:-1], str(drawn), "--prior-draws", "2", "--prior-reg-covar", "0.25"]) == 0
    drawn_prior = load_prior(load_run(drawn))
    assert (drawn_prior.info["draws"], drawn_prior.info["reg_covar"]) == (2, 0.25)
    assert json.loads((drawn / "config.json").read_text())["train"]["prior_reg_covar"] == 0.25
    none = tmp_path / "none"
    argv[argv.index(str(out))] = str(none)
    argv[argv.index("--prior-components") + 1] = "0"
    assert main(argv) == 0
    assert not (none / "prior").exists()
    assert math.isfinite(load_run(none).metrics[-1]["test_loss"])


def test_evaluate_generates_from_the_prior_it_is_asked_for(runs, tmp_path, monkeypatch, capsys):
    import hashlib
    import importlib
    import shutil

    def prior_sha256(run: Path, kind: str) -> str | None:  # of the file the prior draws from
        name = {"gmm": "prior.safetensors", "posterior": "posterior.safetensors"}.get(kind)
        return (
            None
            if name is None
            else hashlib.sha256((run / "prior" / name).read_bytes()).hexdigest()
        )

    context = importlib.import_module("vaegen.evaluation.context")
    out = shutil.copytree(runs["cond"], tmp_path / "cond")
    fit_prior(load_run(out), components=2)
    asked, loads = [], []
    real_generate = context.generate

    def spy(run, n, **kw):
        asked.append(getattr(kw["prior"], "kind", kw["prior"]))
        return real_generate(run, n, **kw)

    def counted(run, which="fitted"):
        loads.append(which)
        return load_prior(run, which)

    monkeypatch.setattr(context, "generate", spy)
    for module in (
        "vaegen.evaluation",
        "vaegen.sampling.generate",
    ):  # the prior is loaded once, not twice
        monkeypatch.setattr(importlib.import_module(module), "load_prior", counted)
    kw = {"quick": True, "iw_samples": 5, "n_generated": 60, "progress": False}
    for flag, used, named in (
        ("fitted", "gmm", "fitted Gaussian mixture"),
        ("posterior", "posterior", "aggregate posterior"),
        ("standard", "standard", "N(0, I)"),
    ):
        argv = [
            "-q",
            "evaluate",
            str(out),
            "--quick",
            "--iw-samples",
            "5",
            "--n-generated",
            "60",
            "--prior",
            flag,
        ]
        assert main(argv) == 0
        saved = json.loads((out / "eval.json").read_text())["settings"]["prior"]
        assert saved == {"requested": flag, "used": used, "sha256": prior_sha256(out, used)}
        assert f"samples from the {named} prior" in capsys.readouterr().out
    assert asked == ["gmm", "posterior", "standard"]
    assert loads == ["fitted", "posterior", "standard"]
    from vaegen import evaluate

    shutil.rmtree(out / "prior")  # a run without a fitted prior: N(0, I), and it says so
    assert evaluate(load_run(out), **kw)["settings"]["prior"]["used"] == "standard"


def test_fit_prior_redraws_the_samples_figure_from_the_new_prior(runs, tmp_path):
    import base64
    import shutil

    from vaegen.report import write_report
    from vaegen.report.figures import draw_all

    out = shutil.copytree(runs["plain"], tmp_path / "plain")
    draw_all(load_run(out), only=["samples.png", "manifold.png"])
    figures = out / "figures"
    before = {p.name: p.read_bytes() for p in figures.iterdir()}
    assert main(["-q", "fit-prior", str(out), "--components", "2"]) == 0
    assert (figures / "samples.png").read_bytes() != before["samples.png"]
    assert (figures / "manifold.png").read_bytes() == before["manifold.png"]  # not the prior's
    assert not (out / "report.html").exists()  # none is made where there was none

    def embedded(figure: str) -> bool:
        uri = base64.b64encode((figures / figure).read_bytes()).decode()
        return uri in (out / "report.html").read_text()

    write_report(load_run(out))
    assert main(["-q", "fit-prior", str(out), "--components", "3"]) == 0
    assert embedded("samples.png")  # the report shows the figure of the new prior
    fit_prior(load_run(out), components=2)  # the API redraws nothing
    old = (figures / "samples.png").read_bytes()
    assert main(["-q", "plot", str(out)]) == 0  # `vaegen plot` redraws it, and the report
    assert (figures / "samples.png").read_bytes() != old and embedded("samples.png")


def test_the_fit_is_seeded_and_takes_one_component_but_not_zero():
    z, y = two_blobs(600)
    a = fit_gaussian_mixture(z, y, num_classes=2, components=3, seed=4)
    b = fit_gaussian_mixture(z, y, num_classes=2, components=3, seed=4)
    for name in ("weights", "means", "covariances"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    one = fit_gaussian_mixture(z, None, num_classes=2, components=1)
    assert one.means.shape == (1, 1, 2) and one.weights.tolist() == [[1.0]]
    assert torch.allclose(one.means[0, 0], z.double().mean(0))
    with pytest.raises(VaegenError, match="components = 0 is not valid"):
        fit_gaussian_mixture(z, None, num_classes=2, components=0)
    # any seed torch takes (a run's --seed): scikit-learn gets it modulo 2**32
    for seed, same in ((-1, 2**32 - 1), (2**32 + 4, 4)):
        c = fit_gaussian_mixture(z, y, num_classes=2, components=3, seed=seed)
        d = fit_gaussian_mixture(z, y, num_classes=2, components=3, seed=same)
        assert torch.equal(c.means, d.means)


def test_fit_prior_refuses_a_bad_reg_covar_and_components_0_drops_the_mixture(
    runs, tmp_path, capsys
):
    import shutil

    out = shutil.copytree(runs["plain"], tmp_path / "plain")
    for bad in ("-1", "nan", "inf"):
        assert main(["-q", "fit-prior", str(out), "--reg-covar", bad]) == 2
        assert f"reg_covar = {float(bad)} is not valid" in capsys.readouterr().err
        with pytest.raises(VaegenError, match="prior_reg_covar"):  # train's flag, the same
            TrainConfig(prior_reg_covar=float(bad))
    assert main(["-q", "fit-prior", str(out), "--components", "2"]) == 0
    assert load_prior(load_run(out)).kind == "gmm"
    # resumed with --prior-components 0 (nothing left to train): N(0, I) from now on
    assert (
        main(
            ["-q", "train", "--out", str(out), "--resume", "--prior-components", "0", "--no-plots"]
        )
        == 0
    )
    assert (
        "its fitted mixture is removed" in capsys.readouterr().err
    )  # a warning: shown with -q too
    run = load_run(out)
    assert run.config.train.prior_components == 0 and load_prior(run).kind == "standard"
    assert (out / "prior" / "posterior.json").exists()  # --prior posterior still works
    fitted, _ = generate(run, 5, seed=3)
    standard, _ = generate(run, 5, seed=3, prior="standard")
    assert torch.equal(fitted, standard)


# ------------------------------------------------------------------ the aggregate posterior


def test_the_aggregate_posterior_draws_each_classs_own_codes_uniformly():
    # 9 codes: class 0 holds codes 0, 3, 6, class 1 codes 1, 4, 7, class 2 codes 2, 5, 8
    mu = torch.arange(9, dtype=torch.float32)[:, None].repeat(1, 2) * 10
    labels = torch.arange(9) % 3
    post = aggregate_posterior(mu, torch.full((9, 2), -60.0), labels, 3)  # sigma ~ 1e-13
    want = torch.tensor([1, 2, 0, 2] * 3000)
    z = post.sample(want, len(want), torch.Generator().manual_seed(0))
    index = (z[:, 0] / 10).round().long()
    assert torch.allclose(z[:, 0], z[:, 1], atol=1e-9) and torch.equal(index % 3, want)
    counts = index.bincount(minlength=9)
    # class 2 asked 6,000 times, 1 and 0 3,000: each of a class's three codes a third of its draws
    assert counts[[2, 5, 8]].tolist() == pytest.approx([2000] * 3, rel=0.1)
    assert counts[[1, 4, 7]].tolist() == pytest.approx([1000] * 3, rel=0.1)
    again = post.sample(want, len(want), torch.Generator().manual_seed(0))
    assert torch.equal(z, again)
    assert not torch.equal(z, post.sample(want, len(want), torch.Generator().manual_seed(1)))
    with pytest.raises(VaegenError, match="fitted per class: pass the labels"):
        post.sample(None, 4, torch.Generator())
    with pytest.raises(VaegenError, match=r"no training image of class \[3\]"):
        post.sample(torch.tensor([0, 3]), 2, torch.Generator())


def test_each_draw_comes_from_its_own_images_posterior_at_the_temperature():
    mu = torch.tensor([[0.0, 100.0], [50.0, -50.0]])
    sigma = torch.tensor([[1.0, 0.5], [2.0, 0.1]])
    post = AggregatePosterior(mu, sigma, None, {"kind": "posterior"})
    z = post.sample(None, 40000, torch.Generator().manual_seed(2), temperature=1.5)
    first = z[:, 0] < 25  # the two posteriors never overlap
    assert first.double().mean().item() == pytest.approx(0.5, abs=0.02)
    for rows, i in ((first, 0), (~first, 1)):
        assert z[rows].mean(0).tolist() == pytest.approx(mu[i].tolist(), abs=0.05)
        assert z[rows].std(0).tolist() == pytest.approx((1.5 * sigma[i]).tolist(), rel=0.03)


def test_the_aggregate_posterior_round_trips_and_generate_decodes_it(runs, tmp_path):
    import shutil

    from vaegen.data import to_float
    from vaegen.rundir import load_split

    run = load_run(shutil.copytree(runs["cond"], tmp_path / "cond"))
    for old in (run.path / "prior").glob("posterior.*"):  # as a run fitted before it existed
        old.unlink()
    with pytest.raises(VaegenError, match=r"holds no aggregate posterior.*vaegen fit-prior"):
        load_prior(run, "posterior")
    fit_prior(run, components=2)
    post = load_prior(run, "posterior")
    assert isinstance(post, AggregatePosterior)
    train_ds = load_split(run, "train")
    with torch.no_grad():
        mu, logvar = run.model.encode(to_float(train_ds.images, "cpu"), train_ds.labels)
    assert torch.allclose(post.mu, mu, atol=1e-6)
    assert torch.allclose(post.sigma, (0.5 * logvar).exp(), rtol=1e-5)
    assert torch.equal(post.labels, train_ds.labels)
    info = json.loads((run.path / "prior" / "posterior.json").read_text())
    assert info["kind"] == "posterior" and info["conditional"]

    images, labels = generate(run, 40, seed=7, prior="posterior")
    z = post.sample(labels, 40, torch.Generator().manual_seed(7))
    decoded = run.likelihood.mean(run.model.decode(z, labels))
    assert torch.equal(images, (decoded * 255).round().to(torch.uint8))
    assert not torch.equal(images, generate(run, 40, seed=7)[0])  # the mixture draws others

    plain = load_run(shutil.copytree(runs["plain"], tmp_path / "plain"))
    fit_prior(plain, components=2)
    shutil.copy(plain.path / "prior" / "posterior.safetensors", run.path / "prior")
    shutil.copy(plain.path / "prior" / "posterior.json", run.path / "prior")
    with pytest.raises(RunError, match="fitted to other weights"):
        load_prior(run, "posterior")
    info = json.loads((run.path / "prior" / "posterior.json").read_text())
    del info["model_sha256"]  # as an earlier vaegen wrote it: the shapes still tell
    (run.path / "prior" / "posterior.json").write_text(json.dumps(info))
    with pytest.raises(RunError, match="does not fit this run"):
        load_prior(run, "posterior")


def test_a_finished_run_resumed_keeps_the_mixture_it_has_and_refits_another(runs, tmp_path):
    import shutil

    out = shutil.copytree(runs["plain"], tmp_path / "plain")
    assert main(["-q", "fit-prior", str(out), "--components", "3", "--seed", "5"]) == 0
    before = (out / "prior" / "prior.json").read_bytes()
    resume = ["-q", "train", "--out", str(out), "--resume", "--no-plots"]
    assert main(resume) == 0  # nothing to train, and the mixture it has is the one it names
    assert (out / "prior" / "prior.json").read_bytes() == before  # not refitted with seed 0
    assert main([*resume, "--prior-components", "4"]) == 0  # another one: refitted
    assert load_prior(load_run(out)).info["components"] == 4
    for flag, value, key in (
        ("--prior-draws", "2", "draws"),
        ("--prior-reg-covar", "0.5", "reg_covar"),
    ):
        assert main([*resume, flag, value]) == 0
        assert load_prior(load_run(out)).info[key] == float(value)
    assert main([*resume, "--epochs", "3"]) == 0  # trained on: refitted to the new weights
    run = load_run(out)
    assert load_prior(run).info["model_sha256"] == run.weights_sha256()


PROBE = """
import sys
from pathlib import Path
from vaegen.errors import RunError
from vaegen.rundir.layout import lock_for_writing
try:
    with lock_for_writing(Path(sys.argv[1]), "probe"):
        print("free", flush=True)
        if len(sys.argv) > 2:  # hold it
            sys.stdin.readline()
except RunError as e:
    print(e)
    sys.exit(3)
"""


def test_the_run_is_locked_while_its_prior_is_fitted(runs, tmp_path, monkeypatch):
    """`vaegen evaluate` (or another writer) started while `vaegen train` fits its prior, or
    while `fit-prior` runs, is refused rather than reading half a prior."""
    import shutil

    import vaegen.sampling.priors

    out = shutil.copytree(runs["plain"], tmp_path / "plain")
    (tmp_path / "probe.py").write_text(PROBE)
    probe = [sys.executable, str(tmp_path / "probe.py"), str(out)]
    env = {**os.environ, "PYTHONPATH": str(Path(vaegen.sampling.priors.__file__).parents[1])}
    seen = []
    real = vaegen.sampling.priors.fit_prior

    def probing(run, *args, **kwargs):
        seen.append(subprocess.run(probe, env=env, capture_output=True, text=True))
        return real(run, *args, **kwargs)

    monkeypatch.setattr(vaegen.sampling.priors, "fit_prior", probing)
    assert (
        main(
            ["-q", "train", "--out", str(out), "--resume", "--prior-components", "2", "--no-plots"]
        )
        == 0
    )
    (during,) = seen
    assert during.returncode == 3 and "is in use by process" in during.stdout
    assert subprocess.run(probe, env=env).returncode == 0  # free again afterwards
    # fit_prior itself takes the lock: refused while another process holds it
    holder = subprocess.Popen(
        [*probe, "hold"], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "free"
        with pytest.raises(RunError, match=r"is in use by process \d+ on .*\(probe, "):
            real(load_run(out), components=2)
    finally:
        holder.communicate("\n", timeout=60)


def test_the_mixture_can_be_fitted_to_codes_drawn_from_the_posteriors(runs, tmp_path, capsys):
    import shutil

    out = shutil.copytree(runs["cond"], tmp_path / "cond")
    argv = ["fit-prior", str(out), "--components", "2", "--draws", "3", "--reg-covar", "0.2"]
    assert main([*argv, "--seed", "4"]) == 0
    run = load_run(out)
    fitted, post = load_prior(run), load_prior(run, "posterior")
    eps = torch.randn(3, *post.mu.shape, generator=torch.Generator().manual_seed(4))
    z = (post.mu + post.sigma * eps).reshape(-1, post.mu.shape[1])
    by_hand = fit_gaussian_mixture(z, post.labels.repeat(3), 3, components=2, seed=4, reg_covar=0.2)
    assert torch.equal(fitted.means, by_hand.means)
    assert torch.equal(fitted.covariances, by_hand.covariances) and fitted.info["reg_covar"] == 0.2
    assert fitted.info["draws"] == 3 and "3 codes drawn from each of" in fitted.info["fitted_to"]
    # config.json names the mixture the run has now: it is the default of the next fit
    tc = run.config.train
    assert (tc.prior_components, tc.prior_draws, tc.prior_reg_covar) == (2, 3, 0.2)
    means = fit_prior(run, seed=4, draws=0)
    assert not torch.equal(means.means, fitted.means) and means.info["draws"] == 0
    assert means.info["components"] == 2 and load_run(out).config.train.prior_draws == 0
    with pytest.raises(VaegenError, match="draws = -1 is not valid"):
        fit_prior(run, components=2, draws=-1)


# ------------------------------------------------------------------ how the mixtures are fitted


def test_a_class_float32_cannot_hold_is_refitted_in_float64():
    """40 points in 8-D spread 30 wide, 10 components: in float32 scikit-learn finds singular
    covariances and refuses the fit; vaegen refits that class in float64 (the same fit as
    scikit-learn's own in float64), and keeps float32 for a class that fits in it."""
    from sklearn.mixture import GaussianMixture

    g = torch.Generator().manual_seed(0)
    z = torch.cat([30 * torch.randn(40, 8, generator=g), torch.randn(400, 8, generator=g)])
    y = torch.cat([torch.zeros(40, dtype=torch.int64), torch.ones(400, dtype=torch.int64)])
    prior = fit_gaussian_mixture(z, y, num_classes=2, components=10, seed=0)
    assert [f["dtype"] for f in prior.info["per_class"]] == ["float64", "float32"]
    gm = GaussianMixture(10, covariance_type="full", reg_covar=1e-6, random_state=0)
    gm.fit(z[:40].double().numpy())
    assert torch.allclose(prior.means[0], torch.from_numpy(gm.means_))
    assert torch.allclose(prior.covariances[0], torch.from_numpy(gm.covariances_))
    with pytest.raises(ValueError, match="ill-defined empirical covariance"):
        GaussianMixture(10, covariance_type="full", reg_covar=1e-6, random_state=0).fit(
            z[:40].float().numpy()
        )


def test_classes_fitted_side_by_side_are_each_scikit_learns_own_fit():
    """Three groups fitted three at a time give, group by group and in order, what fitting each
    alone gives, and that is scikit-learn's float32 fit of the group with the same reg_covar
    (padded to K components)."""
    from sklearn.mixture import GaussianMixture

    from vaegen.sampling.mixture import fit_mixtures

    g = torch.Generator().manual_seed(1)
    groups = [(torch.randn(n, 3, generator=g) + 3 * i).numpy() for i, n in enumerate((300, 8, 500))]
    together = fit_mixtures(groups, 4, seed=2, reg_covar=0.3, workers=3)
    alone = fit_mixtures(groups, 4, seed=2, reg_covar=0.3, workers=1)
    for a, b in zip(together[:3], alone[:3], strict=True):
        assert torch.equal(a, b)
    assert [f["components"] for f in together[3]] == [4, 4, 4]
    small = [f["components"] for f in fit_mixtures(groups[1:2], 5, seed=2)[3]]
    assert small == [4]  # 8 points: at most n // 2 components
    for row, x in enumerate(groups):
        gm = GaussianMixture(4, covariance_type="full", reg_covar=0.3, random_state=2).fit(x)
        for fitted, param in zip(together[:3], ("weights_", "means_", "covariances_"), strict=True):
            want = torch.from_numpy(getattr(gm, param)).double()
            assert torch.allclose(fitted[row], want, atol=1e-5), param


def test_fit_prior_fits_what_the_runs_config_names(tiny_data, tmp_path):
    """The prior's components, draws and reg_covar are part of the run's config (--preset synth:
    100, 3 and 0.1): fit_prior(run) fits those, arguments override them, and a run trained
    without a prior (0 components) gets the default mixture when one is asked for."""
    from vaegen.rundir.config import PRESETS
    from vaegen.sampling.priors import DEFAULT_COMPONENTS

    synth = PRESETS["synth"].train
    assert (synth.prior_components, synth.prior_draws, synth.prior_reg_covar) == (100, 3, 0.1)
    cfg = RunConfig(
        DataConfig(str(tiny_data)),
        ModelConfig(hidden=16, conditional=True),
        TrainConfig(epochs=1, prior_components=3, prior_draws=2, prior_reg_covar=0.5),
    )
    run = train(cfg, tmp_path / "r", progress=False)
    assert json.loads((run.path / "config.json").read_text())["train"]["prior_draws"] == 2
    prior = fit_prior(run)
    assert (prior.info["components"], prior.info["draws"], prior.info["reg_covar"]) == (3, 2, 0.5)
    # every component's covariance holds the 0.5 added to its diagonal
    assert torch.linalg.eigvalsh(prior.covariances[prior.weights > 0]).min() >= 0.5 - 1e-6
    assert prior.info["fitted_to"].startswith("2 codes drawn from each of")
    prior = fit_prior(run, components=2, draws=0, reg_covar=1e-6)
    assert (prior.info["components"], prior.info["draws"], prior.info["reg_covar"]) == (2, 0, 1e-6)
    assert torch.linalg.eigvalsh(prior.covariances[prior.weights > 0]).min() < 0.5
    none = train(
        replace(cfg, train=replace(cfg.train, prior_components=0)), tmp_path / "n", progress=False
    )
    assert fit_prior(none).info["components"] == DEFAULT_COMPONENTS
    with pytest.raises(VaegenError, match="prior_draws = -1 is not valid"):
        TrainConfig(prior_draws=-1)


def test_a_finished_run_resumed_with_new_prior_settings_records_them(tiny_data, tmp_path):
    """`vaegen train --resume` of a finished run with other --prior-* flags refits the prior
    without training, and config.json then names the prior that RUN/prior/ holds, so that a later
    `fit-prior RUN` fits the same one. The fit's seed defaults to the run's training seed."""
    out = tmp_path / "r"
    common = [
        "--quiet",
        "train",
        "--data",
        str(tiny_data),
        "--epochs",
        "1",
        "--hidden",
        "16",
        "--conditional",
        "--seed",
        "3",
        "--no-plots",
        "--out",
        str(out),
    ]
    assert main([*common, "--prior-components", "2"]) == 0
    weights = (out / "model.safetensors").read_bytes()
    assert main([*common, "--resume", "--prior-components", "3", "--prior-draws", "2"]) == 0
    assert (out / "model.safetensors").read_bytes() == weights  # no further training
    saved = json.loads((out / "config.json").read_text())["train"]
    assert (saved["prior_components"], saved["prior_draws"]) == (3, 2)
    run = load_run(out)
    on_disk = load_prior(run)
    assert (on_disk.info["components"], on_disk.info["draws"]) == (3, 2)
    # the draws from the posteriors are seeded with train.seed (3) unless --seed says otherwise
    again = fit_prior(run)
    assert torch.equal(again.means, on_disk.means)
    assert torch.equal(fit_prior(run, seed=3).means, on_disk.means)
    assert not torch.equal(fit_prior(run, seed=0).means, on_disk.means)


def test_a_prior_fitted_to_earlier_weights_is_refused_until_refitted(tiny_data, tmp_path):
    """The mixture and the aggregate posterior record the SHA-256 of the weights they were fitted
    to. After the run trains on (here: resumed for a second epoch without a refit), sampling them
    would decode codes fitted to other weights: both are refused with the fix named, N(0, I)
    still works, and a refit is accepted. A fit that fails writes nothing: the previous pair
    stays. A prior fitted by an earlier vaegen (no hash recorded) is trusted as before."""
    cfg = RunConfig(
        DataConfig(str(tiny_data)),
        ModelConfig(hidden=16, conditional=True),
        TrainConfig(epochs=1, prior_components=2),
    )
    run = train(cfg, tmp_path / "r", progress=False)
    fit_prior(run)
    first = load_run(run.path).weights_sha256()
    assert load_prior(run).info["model_sha256"] == first
    folder = run.path / "prior"
    fitted = {name: (folder / name).read_bytes() for name in sorted(os.listdir(folder))}
    assert len(fitted) == 4  # prior and posterior, safetensors and JSON each

    # a fit that fails (class 1 keeps one image) leaves every file as it was
    train_set = load_split(run, "train")
    keep = (train_set.labels != 1) | (
        torch.arange(len(train_set)) == int((train_set.labels == 1).nonzero()[0])
    )
    few = replace(train_set, images=train_set.images[keep], labels=train_set.labels[keep])
    with pytest.raises(VaegenError, match="class 1 has 1 training image"):
        fit_prior(run, train=few)
    assert {name: (folder / name).read_bytes() for name in fitted} == fitted

    later = train(
        replace(cfg, train=replace(cfg.train, epochs=2)), run.path, resume=True, progress=False
    )
    assert later.weights_sha256() != first
    for which in ("fitted", "posterior"):
        with pytest.raises(RunError, match=r"fitted to other weights .*vaegen fit-prior"):
            load_prior(load_run(run.path), which)
    assert isinstance(load_prior(load_run(run.path), "standard"), StandardNormal)
    fit_prior(later)
    for which in ("fitted", "posterior"):
        assert load_prior(load_run(run.path), which).kind in ("gmm", "posterior")

    # no hash recorded (an earlier vaegen): trusted
    info = json.loads((folder / "prior.json").read_text())
    del info["model_sha256"]
    (folder / "prior.json").write_text(json.dumps(info))
    train(replace(cfg, train=replace(cfg.train, epochs=3)), run.path, resume=True, progress=False)
    assert load_prior(load_run(run.path)).kind == "gmm"
    with pytest.raises(RunError, match="fitted to other weights"):
        load_prior(load_run(run.path), "posterior")


def test_the_weights_hash_sees_every_weight_and_nothing_else(runs):
    """weights_sha256 is the same for every load of model.safetensors (the test above: and for the
    weights in memory after training), and changes when any one number of any tensor moves by one
    ulp (float32, torch.nextafter)."""
    run = load_run(runs["cond"])
    base = run.weights_sha256()
    assert load_run(runs["cond"]).weights_sha256() == base
    with torch.no_grad():
        for p in run.model.parameters():
            old = p.view(-1)[-1].item()
            p.view(-1)[-1] = torch.nextafter(torch.tensor(old), torch.tensor(math.inf))
            assert run.weights_sha256() != base
            p.view(-1)[-1] = old
    assert run.weights_sha256() == base


def test_every_blas_library_runs_one_thread_while_the_mixtures_are_fitted():
    """In a fresh process (scikit-learn and scipy not yet loaded), every BLAS library loaded by
    the end of a fit, scipy's included, is held to one thread during the fit: scipy's BLAS left at
    the machine's thread count inside scikit-learn's OpenMP loops made OpenBLAS print "Detect
    OpenMP Loop" about 500 times per 100-component fit."""
    code = (
        "import numpy as np, sys\n"
        "import vaegen.sampling.mixture as m\n"
        "from threadpoolctl import threadpool_info\n"
        "assert 'scipy.linalg' not in sys.modules\n"
        "seen, real = [], m.fit_one\n"
        "def spy(*args):\n"
        "    out = real(*args)\n"
        "    seen.extend(i['num_threads'] for i in threadpool_info() if i['user_api'] == 'blas')\n"
        "    return out\n"
        "m.fit_one = spy\n"
        "m.fit_mixtures([np.random.default_rng(0).standard_normal((200, 3))] * 2, 2, 0)\n"
        "print(seen)\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert seen and set(seen) == {1}, seen


def test_a_prior_file_with_a_nan_or_another_dtype_is_refused_not_sampled(runs, tmp_path):
    """A NaN mean decoded to black images, and a float64 posterior crashed inside the model."""
    import shutil

    from safetensors.torch import load_file, save_file

    out = shutil.copytree(runs["cond"], tmp_path / "cond")
    fit_prior(load_run(out), components=2)
    for name, tensor, change in (
        ("prior.safetensors", "means", lambda t: t.index_fill(0, torch.tensor([0]), math.nan)),
        ("posterior.safetensors", "mu", lambda t: t.double()),
        ("posterior.safetensors", "labels", lambda t: t.float()),
    ):
        path = out / "prior" / name
        good = path.read_bytes()
        tensors = load_file(path)
        tensors[tensor] = change(tensors[tensor])
        save_file(tensors, path)
        which = "fitted" if name == "prior.safetensors" else "posterior"
        with pytest.raises(RunError, match=rf"{name}: tensor '{tensor}' must be finite"):
            generate(load_run(out), 4, prior=which)
        path.write_bytes(good)
    assert len(generate(load_run(out), 4)[0]) == 4

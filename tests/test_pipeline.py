"""The library owns its policy: `vaegen.train` (the API) and `vaegen train` (the CLI) make the
same run from the same settings: the loss for the data source, the prior, figures and report."""

from __future__ import annotations

import json

import vaegen
from vaegen import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaegen.cli import main
from vaegen.rundir.config import OWN_IMAGES_LOSS
from vaegen.tensorfiles import read_tensors


def test_the_api_and_the_cli_make_the_same_run(tiny_data, tmp_path):
    config = RunConfig(
        DataConfig(str(tiny_data)),
        ModelConfig(hidden=16),
        TrainConfig(epochs=2, batch_size=32, prior_components=2),
    )
    api = vaegen.train(config, tmp_path / "api", progress=False)
    argv = [
        "-q",
        "train",
        "--data",
        str(tiny_data),
        "--hidden",
        "16",
        "--epochs",
        "2",
        "--batch-size",
        "32",
        "--prior-components",
        "2",
        "--out",
        str(tmp_path / "cli"),
    ]
    assert main(argv) == 0
    cli = tmp_path / "cli"
    # one's own images train with the loss vaegen chooses for them, through either door
    assert api.config.train.loss == OWN_IMAGES_LOSS
    assert (api.path / "config.json").read_text() == (cli / "config.json").read_text()
    for name in ("model.safetensors", "prior/prior.safetensors", "prior/posterior.safetensors"):
        a, b = read_tensors(api.path / name), read_tensors(cli / name)
        assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a), name
    for name in ("report.html", "figures/samples.png", "figures/loss_curve.png"):
        assert (api.path / name).is_file() and (cli / name).is_file(), name


def test_a_loss_given_is_kept_and_an_unfinished_run_is_not_finished(tiny_data, tmp_path):
    config = RunConfig(
        DataConfig(str(tiny_data)), ModelConfig(hidden=8), TrainConfig(epochs=2, loss="bernoulli")
    )
    run = vaegen.train(config, tmp_path / "r", progress=False, max_steps=3, figures=False)
    saved = json.loads((run.path / "config.json").read_text())
    assert saved["train"]["loss"] == "bernoulli"
    assert not (run.path / "prior").exists()  # stopped inside epoch 1 of 2: nothing added
    run = vaegen.train(config, tmp_path / "r", resume=True, progress=False, figures=False)
    assert (run.path / "prior" / "prior.json").is_file() and not (run.path / "figures").exists()

"""The benchmarks measure what they say: vaegen's rows train on the CPU whatever devices exist."""

from __future__ import annotations

import importlib.util
import itertools
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("fast_step", [True, False])
def test_vaegen_rows_are_pinned_to_the_cpu(monkeypatch, fast_step):
    """On a GPU machine `device auto` would move rows (c) and (d) to the GPU while (a) and (b)
    stay on the CPU: the ratios would compare different machines."""
    bench = load("epoch_speed")
    seen = []

    def fake_train(config, out, progress=True):
        seen.append(config.train)
        return SimpleNamespace(metrics=[{"seconds": 1.0}])

    monkeypatch.setattr(bench, "train", fake_train)
    assert bench.epoch_vaegen(None, fast_step=fast_step) == 1.0
    (tc,) = seen
    assert tc.device == "cpu"
    assert tc.step == ("auto" if fast_step else "autograd")


def test_the_ablation_adds_one_ingredient_a_row():
    """Each '+' row of benchmarks/synth_ablation.py is the '+' row above it with exactly one
    change (a config field, the fitted mixture's size, or the prior sampled), and the last is
    `--preset synth` on the CPU."""
    from dataclasses import replace

    from vaegen.rundir.config import PRESETS, differences

    bench = load("synth_ablation")
    rows = [r for r in bench.rows(epochs=20) if not r.name.startswith(" ")]  # not the variants
    for before, after in itertools.pairwise(rows):
        fields = differences(before.config, after.config)
        fitted = [f for f in fields if f.startswith("train.prior_")]  # one ingredient: the mixture
        changed = [f for f in fields if f not in fitted] + (["the mixture"] if fitted else [])
        if before.prior != after.prior:
            changed.append(f"prior {before.prior} -> {after.prior}")
        assert len(changed) == 1, (after.name, changed)
    synth = PRESETS["synth"]
    assert rows[-1].config == replace(synth, train=replace(synth.train, device="cpu"))
    assert rows[0].prior == "standard" and rows[0].config.model.conditional


def test_the_whole_run_benchmark_times_vaegen_on_the_cpu_around_the_whole_call(monkeypatch):
    """Its vaegen row trains on the CPU whatever devices exist, and its time is the whole
    `train` call (test passes and checkpoints included), not the epochs' step times."""
    bench = load("whole_run")
    seen = []

    def fake_train(config, out, progress=True):
        seen.append(config.train)
        time.sleep(0.05)
        return SimpleNamespace(metrics=[{"seconds": 0.001}] * config.train.epochs)

    monkeypatch.setattr(bench, "train", fake_train)
    whole, epochs = bench.run_vaegen(None, 3)
    (tc,) = seen
    assert tc.device == "cpu" and tc.epochs == 3
    assert epochs == [0.001] * 3 and whole >= 0.05

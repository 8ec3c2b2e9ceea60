"""The benchmarks measure what they say: vaegen's rows train on the CPU whatever devices exist."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
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

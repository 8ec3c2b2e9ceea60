"""The training step: the trainer uses the hand-derived step where it applies, checks it against
autograd on the first batch, and falls back to autograd when the two disagree."""

from __future__ import annotations

import json

import pytest
import torch

from vaegen import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaegen.errors import VaegenError
from vaegen.model.likelihoods import kl_divergence, likelihood
from vaegen.model.vae import VAE
from vaegen.training import hand_derived_step, step as step_module
from vaegen.training.hand_derived_step import HandDerivedStep
from vaegen.training.loop import train
from vaegen.training.step import HandDerivedStepMismatch, objective, parity_error


def config(data, step: str = "auto", **model) -> RunConfig:
    return RunConfig(
        DataConfig(str(data)),
        ModelConfig(**{"hidden": 32, **model}),
        TrainConfig(epochs=2, batch_size=32, lr=3e-3, step=step, loss="gaussian"),
    )


def metrics(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_the_mlp_on_a_cpu_trains_with_the_fast_step(tiny_data, tmp_path, monkeypatch):
    """Every step of the default path goes through HandDerivedStep, and the run says so."""
    calls = []
    real = HandDerivedStep.__call__

    def counting(self, x, y, generator):
        calls.append(len(x))
        return real(self, x, y, generator)

    monkeypatch.setattr(HandDerivedStep, "__call__", counting)
    run = train(config(tiny_data), tmp_path / "r", progress=False)
    steps = 2 * 8  # 256 images in batches of 32, two epochs
    assert len(calls) == steps + 1  # and once for the parity check on the first batch
    assert [m["step"] for m in metrics(run.path)] == ["fast", "fast"]

    conv = train(config(tiny_data, model="conv"), tmp_path / "c", progress=False)
    assert [m["step"] for m in metrics(conv.path)] == ["autograd", "autograd"]


def test_parity_error_sees_a_wrong_gradient():
    torch.manual_seed(0)
    model = VAE(image_shape=(1, 6, 6), latent_dim=2, hidden=16, num_classes=3)
    lk = likelihood("gaussian")
    x, y = torch.rand(20, 1, 6, 6), torch.arange(20) % 3
    fast = HandDerivedStep(model, lk, 0.5, batch_size=20)
    assert parity_error(model, fast, lk, 0.5, x, y, seed=3) is None
    assert parity_error(model, fast, lk, 1.0, x, y, seed=3) is not None  # another beta

    def flipped(xb, yb, gen):
        sums = fast(xb, yb, gen)
        model.fc_mu.bias.grad.neg_()
        return sums

    problem = parity_error(model, flipped, lk, 0.5, x, y, seed=3)
    assert problem is not None and problem.startswith("fc_mu.bias:")


def test_a_changed_model_makes_training_fall_back_to_autograd(tiny_data, tmp_path, monkeypatch):
    """Edit the decoder's math without the hand-derived step: the first batch's check sees it,
    training warns and uses autograd, so the run trains the model's math, not the stale copy."""
    real_decode = VAE.decode

    def shifted(self, z, y=None):
        return real_decode(self, z, y) + 0.25

    monkeypatch.setattr(VAE, "decode", shifted)
    with pytest.warns(RuntimeWarning, match="disagrees with autograd"):
        guarded = train(config(tiny_data), tmp_path / "guarded", progress=False)
    assert [m["step"] for m in metrics(guarded.path)] == ["autograd", "autograd"]
    reference = train(config(tiny_data, step="autograd"), tmp_path / "ref", progress=False)
    for a, b in zip(metrics(guarded.path), metrics(reference.path), strict=True):
        assert a["train_loss"] == b["train_loss"] and a["test_loss"] == b["test_loss"]

    with pytest.raises(HandDerivedStepMismatch, match=r"fc4\.bias: max difference"):
        train(config(tiny_data, step="fast"), tmp_path / "forced", progress=False)


def test_step_fast_where_it_does_not_apply_is_an_error(tiny_data, tmp_path, monkeypatch):
    with pytest.raises(VaegenError, match="step = 'fast' is not available here"):
        train(config(tiny_data, step="fast", model="conv"), tmp_path / "c", progress=False)
    monkeypatch.setattr(hand_derived_step, "supports", lambda *a: False)
    run = train(config(tiny_data), tmp_path / "auto", progress=False)
    assert [m["step"] for m in metrics(run.path)] == ["autograd", "autograd"]


def _subnormals(run_dir) -> int:
    """Subnormal float32 values (nonzero, below 1.2e-38 in magnitude) in a run's newest
    optimizer state."""
    from vaegen.tensorfiles import read_tensors

    (state,) = (run_dir / "state").glob("*/optimizer.safetensors")
    tiny = torch.finfo(torch.float32).tiny
    return sum(
        int(((t != 0) & (t.abs() < tiny)).sum())
        for t in read_tensors(state).values()
        if t.is_floating_point()
    )


@pytest.mark.slow
@pytest.mark.parametrize("step", ["fast", "autograd"])
def test_adam_moments_never_become_subnormal(tmp_path, monkeypatch, step):
    """Each border pixel is lit in a single image of 1,500, so its first-layer weights get a
    gradient once an epoch (batches of 1) and Adam's first moment decays through the subnormal
    range in between. Training flushes tiny moments: none is left; without the flush, some are."""
    import numpy as np

    from vaegen.training import step as step_module

    x = np.zeros((1500, 8, 8), np.uint8)
    x[:, 1:7, 1:7] = np.arange(1500).reshape(-1, 1, 1) % 200  # the centre, in every image
    border = [(i, j) for i in range(8) for j in range(8) if i in (0, 7) or j in (0, 7)]
    for k, (i, j) in enumerate(border):
        x[k * 20, i, j] = 255  # lonely pixels, each lit once
    np.savez(tmp_path / "d.npz", x=x)

    def run(name: str) -> int:
        cfg = RunConfig(
            DataConfig(str(tmp_path / "d.npz")),
            ModelConfig(hidden=4),
            TrainConfig(epochs=1, batch_size=1, step=step, loss="gaussian"),
        )
        train(cfg, tmp_path / name, progress=False)
        return _subnormals(tmp_path / name)

    assert run("flushed") == 0
    monkeypatch.setattr(step_module, "FLUSH_EVERY", 10**9)
    assert run("unflushed") > 0
    # what was flushed was too small to move any weight: the same weights, bit for bit
    from vaegen import load_run

    flushed, unflushed = (
        load_run(tmp_path / "flushed").model,
        load_run(tmp_path / "unflushed").model,
    )
    for (name, a), b in zip(
        flushed.state_dict().items(), unflushed.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


# -------------------------------------------------------------------------------- bfloat16


def bf16_config(data, precision: str, step: str = "auto") -> RunConfig:
    return RunConfig(
        DataConfig(str(data)),
        ModelConfig(hidden=32),
        TrainConfig(
            epochs=3, batch_size=32, lr=3e-3, step=step, precision=precision, loss="gaussian"
        ),
    )


def test_bf16_without_bfloat16_instructions_is_a_clear_error(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setattr(step_module, "bf16_supported", lambda device: False)
    with pytest.raises(VaegenError, match=r"bfloat16 instructions.*--precision float32"):
        train(bf16_config(tiny_data, "bf16"), tmp_path / "r", progress=False)


def test_bf16_trains_with_bfloat16_products_and_float32_weights(tiny_data, tmp_path, monkeypatch):
    """With bfloat16 instructions (pretended here: PyTorch emulates them on any CPU, slowly), the
    step runs the model's products in bfloat16 under autocast, through autograd, keeps its
    weights and loss terms in float32, and ends near float32's loss, not on it."""
    monkeypatch.setattr(step_module, "bf16_supported", lambda device: True)
    dtypes = []
    real = torch.nn.functional.linear

    def recording(x, w, b=None):
        out = real(x, w, b)
        dtypes.append(out.dtype)
        return out

    monkeypatch.setattr(torch.nn.functional, "linear", recording)
    half = train(bf16_config(tiny_data, "bf16"), tmp_path / "bf16", progress=False)
    assert torch.bfloat16 in dtypes  # training's products (the test pass stays float32)
    assert all(p.dtype == torch.float32 for p in half.model.parameters())
    assert {m["step"] for m in half.metrics} == {"autograd"}
    dtypes.clear()
    full = train(bf16_config(tiny_data, "float32"), tmp_path / "fp32", progress=False)
    assert torch.bfloat16 not in dtypes
    a, b = half.metrics[-1]["test_loss"], full.metrics[-1]["test_loss"]
    assert a != b and abs(a - b) <= 0.03 * abs(b), (a, b)
    with pytest.raises(VaegenError, match="step = 'fast' is not available"):
        train(bf16_config(tiny_data, "bf16", step="fast"), tmp_path / "fast", progress=False)


def test_the_bf16_objective_computes_its_loss_terms_in_float32():
    """Only the products are bfloat16: the KL and reconstruction sums over a batch would lose
    digits in bfloat16's 8-bit mantissa (a sum of 128 terms near 100 is off by about 0.4 %)."""
    torch.manual_seed(0)
    model = VAE((1, 6, 6), latent_dim=2, hidden=16)
    x = torch.rand(128, 1, 6, 6)
    gen = torch.Generator().manual_seed(1)
    got = objective(model, likelihood("bernoulli"), 1.0, x, None, generator=gen, bf16=True)
    assert got.dtype == torch.float32
    gen.manual_seed(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, generator=gen)
    kl = kl_divergence(out.mu.float(), out.logvar.float()).sum()
    torch.testing.assert_close(got[2], kl, rtol=1e-6, atol=0)


@pytest.mark.parametrize("bf16", [False, True])
def test_processes_share_out_the_noise_one_process_draws(monkeypatch, bf16):
    """Each of N processes takes its part of the whole batch's noise, drawn as the model draws it
    alone (in mu's dtype: bfloat16 under autocast, where a float32 draw gives other numbers)."""
    from vaegen.training.distributed import Processes
    from vaegen.training.step import autograd_step

    model = VAE(image_shape=(1, 4, 4), latent_dim=3, hidden=8)
    x = torch.rand(7, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    seen = []
    real = step_module.objective

    def spy(net, lk, beta, xb, yb, eps=None, generator=None, bf16=False):
        seen.append(eps)
        return real(net, lk, beta, xb, yb, eps=eps, generator=generator, bf16=bf16)

    monkeypatch.setattr(step_module, "objective", spy)
    opt = torch.optim.Adam(model.parameters())
    for rank in (0, 1):
        step = autograd_step(
            model, model, likelihood("gaussian"), 1.0, opt, Processes(rank, 2), bf16
        )
        step(x, None, torch.Generator().manual_seed(5))
    alone = torch.randn(
        (7, 3),
        generator=torch.Generator().manual_seed(5),
        dtype=torch.bfloat16 if bf16 else torch.float32,
    )
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        mu = model.fc_mu(torch.relu(model.fc1(x.view(7, -1))))
    assert alone.dtype == mu.dtype  # the model's own draw, in mu's dtype
    assert torch.equal(torch.cat(seen), alone)

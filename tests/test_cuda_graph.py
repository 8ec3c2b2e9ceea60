"""The CUDA-graph step: the same math as autograd's step, recorded once and replayed.

Its eager half (warm-up steps, an epoch's shorter last batch) is checked on any machine; the
captured graph needs a CUDA GPU, and those tests are skipped without one."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from vaegen import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaegen.errors import VaegenError
from vaegen.model.likelihoods import likelihood
from vaegen.model.vae import VAE
from vaegen.rundir.checkpoint import load_state
from vaegen.tensorfiles import read_tensors
from vaegen.training.cuda_graph import GraphedStep
from vaegen.training.distributed import Processes
from vaegen.training.loop import NonFiniteLossError, train
from vaegen.training.step import autograd_step, make_optimizer, objective

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_the_eager_half_trains_exactly_what_autograd_trains():
    """Warm-up steps and short batches: the noise drawn outside the model is the noise the model
    would draw (the same generator, shape and dtype), so weights match autograd_step bit for bit."""
    torch.manual_seed(0)
    model_a = VAE(image_shape=(1, 6, 6), latent_dim=3, hidden=16, num_classes=3)
    model_b = copy.deepcopy(model_a)
    lk = likelihood("gaussian")
    opt_a = make_optimizer(model_a.parameters(), 1e-2)
    opt_b = make_optimizer(model_b.parameters(), 1e-2)
    step_a = autograd_step(model_a, model_a, lk, 0.5, opt_a, Processes())
    step_b = GraphedStep(
        lambda x, y, eps: objective(model_b, lk, 0.5, x, y, eps=eps),
        opt_b,
        batch_size=10**6,
        latent_dim=3,
        noise_dtype=torch.float32,
        device=torch.device("cpu"),
    )
    gen_a, gen_b = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    for i in range(6):
        x, y = torch.rand(10 + i, 1, 6, 6), torch.arange(10 + i) % 3
        sums_a = step_a(x, y, gen_a)
        opt_a.step()
        assert torch.equal(sums_a, step_b(x, y, gen_b)), i
    for (name, a), b in zip(
        model_a.state_dict().items(), model_b.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


def test_step_cuda_graph_without_a_gpu_is_an_error(tiny_data, tmp_path):
    cfg = RunConfig(
        DataConfig(str(tiny_data)),
        ModelConfig(hidden=16),
        TrainConfig(epochs=1, batch_size=32, step="cuda-graph", device="cpu"),
    )
    with pytest.raises(VaegenError, match="step = 'cuda-graph' needs a CUDA GPU"):
        train(cfg, tmp_path / "r", progress=False)


# ------------------------------------------------------------------------------ on a GPU


def gpu_config(data: Path, step: str, epochs: int = 3, **kw) -> RunConfig:
    model = {k: kw.pop(k) for k in ("model", "conditional") if k in kw}
    kw = {"lr": 3e-3, **kw}
    return RunConfig(
        DataConfig(str(data)),
        ModelConfig(hidden=32, latent_dim=4, **model),
        # 256 images in batches of 30: 8 replayed batches and an eager one of 16 an epoch.
        # Deterministic: cuDNN's fastest convolution gradients add up in a varying order, and
        # two eager runs of the conv model differ by some 1e-4 of a weight (measured on an H200)
        TrainConfig(
            epochs=epochs,
            batch_size=30,
            step=step,
            device="cuda",
            deterministic=True,
            **kw,
        ),
    )


def assert_close_weights(a: Path, b: Path, rtol: float = 1e-4) -> None:
    ta, tb = read_tensors(a / "model.safetensors"), read_tensors(b / "model.safetensors")
    assert ta.keys() == tb.keys()
    for k in ta:
        scale = float(tb[k].abs().max()) + 1e-6
        assert float((ta[k] - tb[k]).abs().max()) <= rtol * scale, k


def steps_of(run_dir: Path) -> list[str]:
    return [json.loads(x)["step"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


@cuda
@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"conditional": True, "model": "conv", "loss": "gaussian-optimal-sigma"},
        {"conditional": True, "loss": "bernoulli", "beta": 0.1},
    ],
)
def test_the_graph_trains_what_autograd_trains(tiny_data, tmp_path, kw):
    graph = train(gpu_config(tiny_data, "auto", **kw), tmp_path / "graph", progress=False)
    eager = train(gpu_config(tiny_data, "autograd", **kw), tmp_path / "eager", progress=False)
    assert steps_of(graph.path) == ["cuda-graph"] * 3  # auto's choice on a GPU
    assert steps_of(eager.path) == ["autograd"] * 3
    assert_close_weights(graph.path, eager.path)
    for a, b in zip(graph.metrics, eager.metrics, strict=True):
        assert a["test_loss"] == pytest.approx(b["test_loss"], rel=1e-4)


@cuda
def test_the_graph_in_bf16_trains_what_autograd_trains_in_bf16(tiny_data, tmp_path):
    kw = {"precision": "bf16"}
    graph = train(gpu_config(tiny_data, "cuda-graph", **kw), tmp_path / "graph", progress=False)
    eager = train(gpu_config(tiny_data, "autograd", **kw), tmp_path / "eager", progress=False)
    assert_close_weights(graph.path, eager.path, rtol=1e-2)
    fp32 = train(gpu_config(tiny_data, "cuda-graph"), tmp_path / "fp32", progress=False)
    a, b = graph.metrics[-1]["test_loss"], fp32.metrics[-1]["test_loss"]
    assert a != b and abs(a - b) <= 0.03 * abs(b), (a, b)


@cuda
def test_a_resumed_graph_run_continues_the_same_numbers(tiny_data, tmp_path):
    train(gpu_config(tiny_data, "cuda-graph", epochs=4), tmp_path / "full", progress=False)
    train(gpu_config(tiny_data, "cuda-graph", epochs=2), tmp_path / "split", progress=False)
    train(
        gpu_config(tiny_data, "cuda-graph", epochs=4),
        tmp_path / "split",
        resume=True,
        progress=False,
    )
    assert_close_weights(tmp_path / "full", tmp_path / "split")


@cuda
def test_a_nan_on_the_gpu_stops_training_before_any_checkpoint(tiny_data, tmp_path):
    """A GPU checks the loss every 20 steps and at the epoch's end (9 steps here): the NaN of a
    huge learning rate is caught there, over the replayed steps, and nothing is saved."""
    with pytest.raises(
        NonFiniteLossError, match=r"the loss became -?(nan|inf) at epoch 1, step 1-9: "
    ):
        train(gpu_config(tiny_data, "cuda-graph", lr=1e30), tmp_path / "nan", progress=False)
    assert load_state(tmp_path / "nan" / "state") is None
    assert not (tmp_path / "nan" / "model.safetensors").exists()

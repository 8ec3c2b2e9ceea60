"""The training step: autograd's, or the hand-derived one, behind one `make_step`.

A step takes a batch and a noise generator, leaves the gradient of the batch's objective
(sum over images of recon + beta * kl) in every parameter's `.grad`, and returns the 3-vector
(loss, recon, kl) summed over the batch (and over processes). `Step.train_step()` runs it and
then updates the weights; on a CUDA GPU in one process both are captured in a CUDA graph
(vaegen.training.cuda_graph), the same math launched at once.

The hand-derived step (hand_derived_step) is a second copy of the model's math. So that an edit of
model/vae.py or model/likelihoods.py cannot leave it silently training different math, `make_step`
checks it against autograd through the readable code (`VAE.forward`, the likelihood's `terms`) on
the first batch of every run, before the first update: the same batch, the same noise, the loss and
every gradient compared. On a mismatch training warns and uses autograd (or, when the fast step was
asked for by name, stops with an error).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import VaegenError
from ..model.likelihoods import Likelihood
from . import distributed, hand_derived_step
from .cuda_graph import GraphedStep

log = logging.getLogger(__name__)

# Tolerance of the parity check, relative to the largest magnitude of each reference tensor.
# Both sides compute in float32 with different summation orders. Measured on FashionMNIST's first
# 128 images (the seed MLP with 2- and 16-D latents, conditional or not, both likelihoods, beta 1
# and 0.25; AMD EPYC, 2 threads): gradients differ by at most 4e-7 of each tensor's largest entry,
# the loss terms by at most 6e-6 of the smallest of them. 1e-4 leaves a margin of over 200x on the
# gradients for other shapes and CPUs, and is still far below a real error: a dropped term or a
# wrong sign moves a gradient by a large fraction of its size.
PARITY_RTOL = 1e-4

# Adam's moments of a weight whose gradient stays zero for a while (encoder weights from pixels that
# are black in every image of recent batches, the rows of dead ReLU units) shrink by beta1 = 0.9 a
# step and spend some 150 steps among float32's subnormal numbers (below 1.2e-38) before they
# reach zero; arithmetic on subnormals is many times slower on x86 CPUs. Measured after 20 epochs
# of a conditional MLP (16-D, hidden 512): 67 % of the first layer's exp_avg were subnormal. Every
# FLUSH_EVERY steps, moments below MOMENT_FLOOR are set to zero. A first moment that small moves
# a weight by at most lr * 1e-30 / eps = 1e-25 (eps = 1e-8), and a second moment that small adds
# at most sqrt(1e-30) = 1e-15 to eps: below float32's resolution of any weight above 1e-18, so
# the weights are those of stock Adam. A value needs about 175 steps to fall from the
# floor to the subnormal range, so flushing every 16 steps leaves none.
MOMENT_FLOOR = 1e-30
FLUSH_EVERY = 16

StepFn = Callable[[torch.Tensor, torch.Tensor | None, torch.Generator], torch.Tensor]


class HandDerivedStepMismatch(VaegenError):
    """The hand-derived step disagrees with autograd (and it was asked for by name)."""


@dataclass
class Step:
    """A training step (`forward_backward`), the optimizer it feeds, and which kind it is."""

    forward_backward: StepFn
    optimizer: Any  # torch.optim.Optimizer or hand_derived_step.FlatAdam: step / state_dict / load
    name: str  # "fast", "autograd" or "cuda-graph"
    graphed: GraphedStep | None = None  # "cuda-graph": forward, backward and update in a graph

    def train_step(
        self,
        xb: torch.Tensor,
        yb: torch.Tensor | None,
        generator: torch.Generator,
        global_step: int,
    ) -> torch.Tensor:
        """forward_backward on a batch, then the optimizer step numbered `global_step` (from 1,
        over the whole run, so a resumed run flushes at the same steps), then every FLUSH_EVERY
        steps the flush of tiny moments. Returns the (loss, recon, kl) sums, which the caller
        checks for NaN (not necessarily every step: a check waits for the device)."""
        if self.graphed is not None:
            sums = self.graphed(xb, yb, generator)
        else:
            sums = self.forward_backward(xb, yb, generator)
            self.optimizer.step()
        if global_step % FLUSH_EVERY == 0:
            flush_tiny_moments(self.optimizer)
        return sums


@torch.no_grad()
def flush_tiny_moments(optimizer: Any) -> None:
    """Set every Adam moment whose magnitude is below MOMENT_FLOOR to zero, in place."""
    for state in optimizer.state.values():
        for key in ("exp_avg", "exp_avg_sq"):
            moment = state.get(key)
            if moment is not None:
                moment.masked_fill_(moment.abs() < MOMENT_FLOOR, 0.0)


def make_optimizer(
    params: Iterable[nn.Parameter], lr: float, capturable: bool = False
) -> torch.optim.Optimizer:
    """Adam with its fused kernel where this PyTorch has one for the device (CPU: torch >= 2.4).

    The same update as the stock Adam, in one kernel instead of a dozen per step: measured
    (benchmarks/epoch_speed.py) the largest single gain for the small seed model.
    capturable: safe to record in a CUDA graph (its step count stays on the GPU)."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True, capturable=capturable)
    except (RuntimeError, ValueError, TypeError):  # no fused kernel for this device or version
        return torch.optim.Adam(params, lr=lr, capturable=capturable)


def objective(
    model: nn.Module,
    lk: Likelihood,
    beta: float,
    xb: torch.Tensor,
    yb: torch.Tensor | None,
    generator: torch.Generator | None = None,
    eps: torch.Tensor | None = None,
    bf16: bool = False,
) -> torch.Tensor:
    """The readable math: (loss, recon, kl) summed over the batch, loss = recon + beta * kl.

    bf16: the model's matrix products in bfloat16 (torch.autocast: float32 weights, products
    accumulated in float32, results rounded to bfloat16); the loss terms in float32."""
    with torch.autocast(xb.device.type, dtype=torch.bfloat16, enabled=bf16):
        out = model(xb, yb, generator=generator, eps=eps)
    if bf16:
        out = type(out)(*(t.float() for t in out))
    terms = lk.terms(out.recon, xb, out.mu, out.logvar)
    recon, kl = terms.recon.sum(), terms.kl.sum()
    return torch.stack([recon + beta * kl, recon, kl])


def autograd_step(
    model: nn.Module,
    net: nn.Module,
    lk: Likelihood,
    beta: float,
    optimizer: torch.optim.Optimizer,
    procs: distributed.Processes,
    bf16: bool = False,
) -> StepFn:
    """The step through autograd. `net` is the model or its DistributedDataParallel wrapper;
    bf16: its products in bfloat16 (see `objective`)."""

    def forward_backward(
        xb: torch.Tensor, yb: torch.Tensor | None, generator: torch.Generator
    ) -> torch.Tensor:
        eps = None
        if procs.several:  # the whole batch's noise, then this process's part of both
            # in the dtype of mu, as the model draws it alone (bfloat16 under autocast; a float32
            # draw takes other numbers from the generator)
            dtype = torch.bfloat16 if bf16 else torch.float32
            eps = torch.randn(
                (len(xb), model.latent_dim), generator=generator, device=xb.device, dtype=dtype
            )
            part = procs.shard(len(xb))
            xb, yb, eps = xb[part], None if yb is None else yb[part], eps[part]
            sums = objective(net, lk, beta, xb, yb, eps=eps, bf16=bf16)
        else:
            sums = objective(net, lk, beta, xb, yb, generator=generator, bf16=bf16)
        optimizer.zero_grad(set_to_none=True)
        # DDP averages the processes' gradients, and the objective is their sum
        (sums[0] * procs.world_size if procs.several else sums[0]).backward()
        return distributed.sum_over_processes(sums.detach())

    return forward_backward


def parity_error(
    model: nn.Module,
    step: StepFn,
    lk: Likelihood,
    beta: float,
    xb: torch.Tensor,
    yb: torch.Tensor | None,
    seed: int,
) -> str | None:
    """Compare `step` on one batch with autograd through `objective`: the same noise (a generator
    seeded with `seed`), the loss terms and every parameter's gradient. Returns None when they
    agree to PARITY_RTOL, else what differs. Leaves the parameters unchanged."""
    params = dict(model.named_parameters())
    gen = torch.Generator(device=xb.device).manual_seed(seed)
    sums = step(xb, yb, gen).detach().clone()
    grads = {name: p.grad.detach().clone() for name, p in params.items()}  # type: ignore[union-attr]
    gen.manual_seed(seed)
    with torch.enable_grad():
        ref_sums = objective(model, lk, beta, xb, yb, generator=gen)
        ref_grads = torch.autograd.grad(ref_sums[0], list(params.values()))
    problems = []
    for name, got, want in (
        ("loss terms", sums, ref_sums.detach()),
        *((n, grads[n], g) for n, g in zip(params, ref_grads, strict=True)),
    ):
        scale = float(want.abs().max()) if want.numel() else 0.0
        diff = float((got - want).abs().max()) if want.numel() else 0.0
        if not diff <= PARITY_RTOL * scale + 1e-12:  # also catches NaN
            problems.append(f"{name}: max difference {diff:.3g}, largest value {scale:.3g}")
    return "; ".join(problems) or None


def bf16_supported(device: torch.device) -> bool:
    """Whether `device` multiplies bfloat16 matrices in hardware: a CUDA GPU that PyTorch says
    supports it, or a CPU with AVX512-BF16 or AMX instructions. Elsewhere PyTorch emulates them,
    far slower than float32 (65x for 1024 x 1024 products on an AVX2-only AMD EPYC)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(torch.cpu, name, lambda: False)() for name in checks)
    return False


def make_step(
    model: nn.Module,
    *,
    lk: Likelihood,
    beta: float,
    lr: float,
    wanted: str,
    device: torch.device,
    procs: distributed.Processes,
    batch_size: int,
    check_batch: tuple[torch.Tensor, torch.Tensor | None],
    seed: int,
    precision: str = "float32",
) -> Step:
    """The step `wanted` asks for ("auto", "fast", "autograd" or "cuda-graph") with its optimizer.

    "auto" uses the hand-derived step where it applies (the MLP on a CPU in one process, with a
    likelihood that has a fast form, in float32) once it matches autograd on `check_batch`
    (images, labels); on a CUDA GPU in one process, autograd's step captured in a CUDA graph;
    autograd otherwise. precision "bf16" trains with autograd under autocast, where the device
    has bfloat16 instructions (an error elsewhere). Call after loading a checkpoint's weights,
    before its optimizer state.
    """
    bf16 = precision == "bf16"
    if bf16 and not bf16_supported(device):
        raise VaegenError(
            f"precision = 'bf16' needs bfloat16 instructions, and this {device.type} has none "
            "(a CPU needs AVX512-BF16 or AMX, a GPU bfloat16 support): PyTorch would emulate "
            "them, many times slower than float32; train with the default --precision float32"
        )
    applies = not procs.several and not bf16 and hand_derived_step.supports(model, lk, device)
    if wanted == "fast" and not applies:
        raise VaegenError(
            "step = 'fast' is not available here: the hand-derived step trains the MLP model on "
            "a CPU in one process, with a likelihood that has a fast form, in float32; use "
            "--step auto"
        )
    graphable = device.type == "cuda" and not procs.several
    if wanted == "cuda-graph" and not graphable:
        raise VaegenError(
            "step = 'cuda-graph' needs a CUDA GPU and one process (DistributedDataParallel "
            "steps are not captured); use --step auto"
        )
    if wanted in ("auto", "cuda-graph") and graphable:
        optimizer = make_optimizer(model.parameters(), lr, capturable=True)

        def objective_with(xb: torch.Tensor, yb: torch.Tensor | None, eps: torch.Tensor) -> Any:
            return objective(model, lk, beta, xb, yb, eps=eps, bf16=bf16)

        noise_dtype = torch.bfloat16 if bf16 else torch.float32  # mu's under autocast
        graphed = GraphedStep(
            objective_with, optimizer, batch_size, model.latent_dim, noise_dtype, device
        )
        fb = autograd_step(model, model, lk, beta, optimizer, procs, bf16)
        return Step(fb, optimizer, "cuda-graph", graphed)
    if wanted != "autograd" and applies:
        fast = hand_derived_step.HandDerivedStep(model, lk, beta, batch_size)
        problem = parity_error(model, fast, lk, beta, *check_batch, seed=seed)
        if problem is None:
            optimizer = hand_derived_step.FlatAdam(model, lambda params: make_optimizer(params, lr))
            return Step(fast, optimizer, "fast")
        message = (
            "the hand-derived training step disagrees with autograd on the first batch "
            f"({problem}): training.hand_derived_step no longer matches the model or the loss"
        )
        if wanted == "fast":
            raise HandDerivedStepMismatch(message)
        log.warning("%s; training with autograd instead", message)
        warnings.warn(message + "; training with autograd instead", RuntimeWarning, stacklevel=2)
        for p in model.parameters():
            p.grad = None
    optimizer = make_optimizer(model.parameters(), lr)
    net: nn.Module = model
    if procs.several:  # after the checkpoint is loaded: DDP starts from process 0's weights
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    return Step(autograd_step(model, net, lk, beta, optimizer, procs, bf16), optimizer, "autograd")

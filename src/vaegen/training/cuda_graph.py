"""The autograd step captured once in a CUDA graph, then replayed: forward, backward and Adam's
update as one launch.

The seed model's step is some forty small kernels; on a GPU, launching them one by one from
Python takes longer than running them, so the GPU waits on the host. A CUDA graph records the
kernels of one step once and launches them all again with a single call (PyTorch's
"whole-network capture": torch.cuda.graph, Adam with capturable=True).

The math is autograd_step's, to the bit where the GPU's kernels allow: the step reads the batch
and the reparameterisation's noise from buffers filled before each replay, and the noise is drawn
from the training's noise generator outside the graph, exactly as the model would draw it (same
generator, shape and dtype), so a run trains the same numbers whichever step it uses. The first
WARMUP_STEPS full batches of a call run eagerly on a side stream (PyTorch's recipe: lazy
initialisation such as Adam's state and cuBLAS's workspace must not happen during capture); a
batch of another size (an epoch's last, shorter one) always runs eagerly, through the same
weights, gradients and optimizer state the graph uses.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

WARMUP_STEPS = 3

# (images, labels or None, noise) -> (loss, recon, kl) summed over the batch, with autograd
Objective = Callable[[torch.Tensor, torch.Tensor | None, torch.Tensor], torch.Tensor]


class GraphedStep:
    """Call with (images B x C x H x W, labels B or None, noise generator): the step's objective
    (loss, recon, kl) summed over the batch, a float32 3-vector on the GPU, after the optimizer's
    update. The tensor returned by a replay is the graph's own output buffer: read it before the
    next call."""

    def __init__(
        self,
        objective: Objective,
        optimizer: torch.optim.Optimizer,
        batch_size: int,
        latent_dim: int,
        noise_dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        """objective: the model's (see vaegen.training.step.objective) with the noise passed in;
        optimizer: Adam with capturable=True; batch_size: the batches the graph takes;
        noise_dtype: the dtype the model draws its noise in (that of mu: bfloat16 under
        autocast)."""
        self.objective, self.optimizer, self.batch_size = objective, optimizer, batch_size
        self.latent_dim, self.noise_dtype, self.device = latent_dim, noise_dtype, device
        self.eager_full_steps = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.x: torch.Tensor | None = None  # the graph's inputs and output
        self.y: torch.Tensor | None = None
        self.eps: torch.Tensor | None = None
        self.sums: torch.Tensor | None = None

    def noise(
        self, n: int, generator: torch.Generator, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """n x latent_dim standard normal noise from `generator`, the numbers the model's
        reparameterize would draw (torch.randn is an empty tensor's normal_)."""
        if out is None:
            out = self._buffer(n)
        return out.normal_(generator=generator)

    def _buffer(self, n: int) -> torch.Tensor:
        return torch.zeros((n, self.latent_dim), device=self.device, dtype=self.noise_dtype)

    def eager(
        self, xb: torch.Tensor, yb: torch.Tensor | None, gen: torch.Generator
    ) -> torch.Tensor:
        """One step without the graph (autograd_step's order: objective, zero_grad, backward,
        update). Once a graph exists its gradient tensors are zeroed in place, not dropped: the
        graph writes to them."""
        sums = self.objective(xb, yb, self.noise(len(xb), gen))
        self.optimizer.zero_grad(set_to_none=self.graph is None)
        sums[0].backward()
        self.optimizer.step()
        return sums.detach()

    def __call__(
        self, xb: torch.Tensor, yb: torch.Tensor | None, gen: torch.Generator
    ) -> torch.Tensor:
        if len(xb) != self.batch_size:
            return self.eager(xb, yb, gen)
        if self.graph is None and self.eager_full_steps < WARMUP_STEPS:
            self.eager_full_steps += 1
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                sums = self.eager(xb, yb, gen)
            main = torch.cuda.current_stream(self.device)
            main.wait_stream(side)
            sums.record_stream(main)  # the caller reads it there: not reused before that
            return sums
        if self.graph is None:
            self._capture(xb, yb)
        assert self.graph is not None and self.x is not None and self.eps is not None
        assert self.sums is not None
        self.x.copy_(xb)
        if self.y is not None and yb is not None:
            self.y.copy_(yb)
        self.noise(len(xb), gen, out=self.eps)
        self.graph.replay()
        return self.sums

    def _capture(self, xb: torch.Tensor, yb: torch.Tensor | None) -> None:
        """Record one step on static buffers shaped like this batch. Capture runs no kernel:
        the weights and the optimizer state are untouched until the first replay."""
        self.x = torch.empty_like(xb)
        self.y = None if yb is None else torch.empty_like(yb)
        self.eps = self._buffer(len(xb))
        self.optimizer.zero_grad(set_to_none=True)  # backward allocates them in the graph's pool
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            sums = self.objective(self.x, self.y, self.eps)
            sums[0].backward()
            self.optimizer.step()
        self.graph, self.sums = graph, sums.detach()

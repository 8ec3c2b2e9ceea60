"""The MLP VAE's training step with its gradients written out by hand, for the CPU.

Why: the seed model is small. One step on a batch of 128 is five 128 x 784 x 256 matrix products,
about 1.6 ms on two cores; through autograd the same step spends nearly as much again on
bookkeeping: fresh buffers for every activation and gradient (with their page faults), a few dozen
small kernels, Adam's loop over ten tensors. This step computes the same loss and the same
gradients in closed form into buffers allocated once, and the parameters, gradients and Adam's
moments each live in one flat tensor so that Adam is one kernel over one tensor.
tests/test_hand_derived_step.py checks the loss and every gradient against autograd, and so does
every training run on its first batch (step.make_step) before it trusts this step.

The forward pass, for a batch of B images with P pixels, H hidden units, D latent dimensions and
C classes (conditional models only; `[a, b]` is concatenation along the feature axis):

    h1 = relu(x W1' + b1)                        B x H   encoder
    hl = relu(onehot(y) Wl' + bl)                B x H   label embedding
    hc = h1, or [h1, hl]
    mu = hc Wmu' + bmu,  lv = clamp(hc Wlv' + blv, LOGVAR_MIN, LOGVAR_MAX)     B x D
    z  = mu + eps * s,   s = exp(lv / 2),  eps ~ N(0, I)
    zc = z, or [z, onehot(y)]
    h3 = relu(zc W3' + b3)                       B x H   decoder
    r  = h3 W4' + b4                             B x P   decoder output (pixel means or logits)
    loss = sum over images of recon + beta * kl, kl = -1/2 sum(1 + lv - mu^2 - s^2)

and its gradients, from the top: dr = d recon / d r from the likelihood's `fast_output`
(gaussian: r - x; bernoulli: sigmoid(r) - x), then back through each Linear (dW = d_out' in, db = column sums of d_out,
d_in = d_out W) and ReLU (d_in = d_out where the output is > 0), with
dmu = dz + beta mu and dlv = (dz eps s / 2 + beta (s^2 - 1) / 2) where lv was not clamped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..model.likelihoods import Likelihood
from ..model.vae import LOGVAR_MAX, LOGVAR_MIN, VAE


def _relu_backward_(grad: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """grad where the ReLU's output is > 0, else 0, in place: autograd's own kernel for it (one
    pass; masked_fill_ with a comparison is two, and measured ten times slower here)."""
    return torch.ops.aten.threshold_backward.grad_input(grad, output, 0, grad_input=grad)


def supports(model: nn.Module, lk: Likelihood, device: torch.device) -> bool:
    """Whether `HandDerivedStep` can train this model with this likelihood on this device.

    CPU only, where it was measured; a GPU trains with autograd."""
    return (
        type(model) is VAE
        and lk.fast_output is not None
        and device.type == "cpu"
        and all(p.dtype == torch.float32 for p in model.parameters())
    )


class HandDerivedStep:
    """Forward and backward of `model` (a `VAE`) on one batch, into preallocated buffers.

    Calling it returns the 3-vector (loss, recon, kl), each summed over the batch, and leaves the
    gradient of `loss` in every parameter's `.grad` (overwritten, not accumulated).
    """

    def __init__(self, model: VAE, lk: Likelihood, beta: float, batch_size: int) -> None:
        if lk.fast_output is None:
            raise ValueError(f"the {lk.name} likelihood has no hand-derived form")
        self.output, self.beta, self.classes = lk.fast_output, beta, model.num_classes
        self.params = dict(model.named_parameters())  # looked up once: Module.__getattr__ is slow
        B, H, D, C = batch_size, model.fc1.out_features, model.latent_dim, model.num_classes
        P = model.fc1.in_features
        weight = model.fc1.weight

        def buf(*shape: int) -> torch.Tensor:
            return torch.empty(shape, dtype=weight.dtype, device=weight.device)

        # hc = [h1, hl]; h1 and hl are views of it, so the heads read one matrix
        self.hc, self.zc = buf(B, H + (H if C else 0)), buf(B, D + C)
        self.h1, self.hl = self.hc[:, :H], self.hc[:, H:]
        self.z, self.onehot = self.zc[:, :D], self.zc[:, D:]
        self.lv_raw, self.eps, self.s = buf(B, D), buf(B, D), buf(B, D)
        self.h3, self.r, self.dh3 = buf(B, H), buf(B, P), buf(B, H)
        self.dhc = torch.empty_like(self.hc)
        for p in model.parameters():
            if p.grad is None or p.grad.shape != p.shape:
                p.grad = torch.zeros_like(p)

    @torch.no_grad()
    def __call__(
        self, x: torch.Tensor, y: torch.Tensor | None, generator: torch.Generator | None
    ) -> torch.Tensor:
        """x: N x C x H x W in [0, 1] (N <= batch_size), y: N class indices or None."""
        b, beta, H = len(x), self.beta, self.h1.shape[1]
        x = x.reshape(b, -1)
        w = self.params
        g = {name: p.grad for name, p in self.params.items()}
        hc, h1, hl, zc, z = self.hc[:b], self.h1[:b], self.hl[:b], self.zc[:b], self.z[:b]
        lv_raw, eps, s = self.lv_raw[:b], self.eps[:b], self.s[:b]
        h3, r, dh3, dhc = self.h3[:b], self.r[:b], self.dh3[:b], self.dhc[:b]

        # forward
        torch.addmm(w["fc1.bias"], x, w["fc1.weight"].t(), out=h1).relu_()
        if self.classes:
            if y is None:
                raise ValueError("this model is conditional: pass the class labels y")
            onehot = self.onehot[:b]
            onehot.copy_(F.one_hot(y, self.classes))
            torch.addmm(w["fc_label.bias"], onehot, w["fc_label.weight"].t(), out=hl).relu_()
        mu = torch.addmm(w["fc_mu.bias"], hc, w["fc_mu.weight"].t())
        torch.addmm(w["fc_logvar.bias"], hc, w["fc_logvar.weight"].t(), out=lv_raw)
        lv = lv_raw.clamp(LOGVAR_MIN, LOGVAR_MAX)
        torch.randn(eps.shape, generator=generator, out=eps)
        torch.exp(0.5 * lv, out=s)
        torch.addcmul(mu, eps, s, out=z)
        torch.addmm(w["fc3.bias"], zc, w["fc3.weight"].t(), out=h3).relu_()

        # the decoder's output r, its loss, and dr = d loss / d r in place of r
        recon, dr = self.output(h3, w["fc4.weight"], w["fc4.bias"], x, r)
        var = s * s
        kl = 0.5 * (torch.dot(mu.view(-1), mu.view(-1)) + (var - lv).sum() - mu.numel())

        # backward
        torch.mm(dr.t(), h3, out=g["fc4.weight"])
        torch.sum(dr, 0, out=g["fc4.bias"])
        _relu_backward_(torch.mm(dr, w["fc4.weight"], out=dh3), h3)
        torch.mm(dh3.t(), zc, out=g["fc3.weight"])
        torch.sum(dh3, 0, out=g["fc3.bias"])
        dz = dh3 @ w["fc3.weight"][:, : z.shape[1]]
        dlv = (dz * eps * s).add_(var - 1, alpha=beta).mul_(0.5)
        dlv.masked_fill_(lv != lv_raw, 0)  # no gradient where the clamp is active
        dmu = dz.add_(mu, alpha=beta)
        torch.mm(dmu.t(), hc, out=g["fc_mu.weight"])
        torch.sum(dmu, 0, out=g["fc_mu.bias"])
        torch.mm(dlv.t(), hc, out=g["fc_logvar.weight"])
        torch.sum(dlv, 0, out=g["fc_logvar.bias"])
        torch.mm(dmu, w["fc_mu.weight"], out=dhc).addmm_(dlv, w["fc_logvar.weight"])
        dh1 = _relu_backward_(dhc[:, :H], h1)
        torch.mm(dh1.t(), x, out=g["fc1.weight"])
        torch.sum(dh1, 0, out=g["fc1.bias"])
        if self.classes:
            dl = _relu_backward_(dhc[:, H:], hl)
            torch.mm(dl.t(), self.onehot[:b], out=g["fc_label.weight"])
            torch.sum(dl, 0, out=g["fc_label.bias"])
        return torch.stack([recon + beta * kl, recon, kl])


class FlatAdam:
    """Adam over all of a model's parameters held in one flat tensor.

    The parameters (and their gradients) become views of one flat tensor (and its gradient), so
    each step is one fused Adam kernel over one tensor instead of a loop over ten. Each view
    starts on a 64-byte boundary, as a tensor of its own would (the padding stays zero: its
    gradient is zero, so is its update). The update is the same as `torch.optim.Adam` over
    `model.parameters()`, and so is `state_dict()`: a checkpoint does not depend on which of the
    two trained it.
    """

    ALIGN = 16  # elements: 64 bytes of float32

    def __init__(
        self, model: nn.Module, make: Callable[[list[nn.Parameter]], torch.optim.Optimizer]
    ) -> None:
        """make: params -> torch optimizer (training.step.make_optimizer with the learning rate)."""
        self.params = list(model.parameters())
        self.offsets: list[int] = []
        end = 0
        for p in self.params:
            self.offsets.append(end)
            end += -(-p.numel() // self.ALIGN) * self.ALIGN
        first = self.params[0]
        flat = torch.zeros(end, dtype=first.dtype, device=first.device)
        self.flat = nn.Parameter(flat)
        self.flat.grad = torch.zeros_like(flat)
        views, grads = self._views(flat), self._views(self.flat.grad)
        for p, view, grad in zip(self.params, views, grads, strict=True):
            view.copy_(p.detach())
            p.data, p.grad = view, grad
        self.opt: torch.optim.Optimizer = make([self.flat])

    def _views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Each parameter's part of `flat` (a flat tensor laid out like the parameters)."""
        return [
            flat[o : o + p.numel()].view_as(p)
            for o, p in zip(self.offsets, self.params, strict=True)
        ]

    def step(self) -> None:
        self.opt.step()

    @property
    def state(self) -> Any:
        """The wrapped optimizer's state: one entry, for the flat tensor."""
        return self.opt.state

    def state_dict(self) -> dict[str, Any]:
        """The state `torch.optim.Adam(model.parameters())` would have: one entry per parameter."""
        sd = self.opt.state_dict()
        (group,) = sd["param_groups"]
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in sd["state"].get(0, {}).items():
            parts = [value] * len(self.params) if value.dim() == 0 else self._views(value)
            for i, part in enumerate(parts):
                state.setdefault(i, {})[key] = part.clone()
        return {
            "state": state,
            "param_groups": [{**group, "params": list(range(len(self.params)))}],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a per-parameter Adam state (see `state_dict`)."""
        groups, state = state_dict["param_groups"], state_dict["state"]
        if len(groups) != 1 or len(groups[0]["params"]) != len(self.params):
            raise ValueError(
                f"optimizer state has {sum(len(g['params']) for g in groups)} parameters in "
                f"{len(groups)} groups; this model has {len(self.params)} in one"
            )
        flat_state: dict[str, torch.Tensor] = {}
        if state:
            if sorted(state) != list(range(len(self.params))):
                raise ValueError("optimizer state does not cover every parameter")
            for key in state[0]:
                parts = [state[i][key] for i in range(len(self.params))]
                if parts[0].dim() == 0:
                    if any(not torch.equal(t, parts[0]) for t in parts):
                        raise ValueError(f"optimizer state {key!r} differs between parameters")
                    flat_state[key] = parts[0].clone()  # not shared with the caller's state
                else:
                    for i, (t, p) in enumerate(zip(parts, self.params, strict=True)):
                        if t.shape != p.shape:
                            raise ValueError(
                                f"optimizer state {i}.{key} has shape {tuple(t.shape)}, "
                                f"the parameter {tuple(p.shape)}"
                            )
                    flat_state[key] = torch.zeros_like(self.flat)
                    for view, t in zip(self._views(flat_state[key]), parts, strict=True):
                        view.copy_(t)
        self.opt.load_state_dict(
            {
                "state": {0: flat_state} if flat_state else {},
                "param_groups": [{**groups[0], "params": [0]}],
            }
        )

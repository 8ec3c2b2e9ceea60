"""The hand-derived training step and the flat Adam against autograd and torch.optim.Adam."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from vaegen import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaegen.model.likelihoods import likelihood
from vaegen.model.vae import VAE, ConvVAE
from vaegen.tensorfiles import read_tensors
from vaegen.training.hand_derived_step import FlatAdam, HandDerivedStep, supports
from vaegen.training.loop import train
from vaegen.training.step import make_optimizer


def autograd_grads(model, loss, beta, x, y, generator):
    out = model(x, y, generator=generator)
    terms = likelihood(loss).terms(out.recon, x, out.mu, out.logvar)
    total = terms.recon.sum() + beta * terms.kl.sum()
    model.zero_grad(set_to_none=True)
    total.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    return (total.detach(), terms.recon.sum().detach(), terms.kl.sum().detach()), grads


@pytest.mark.parametrize("classes", [0, 4])
@pytest.mark.parametrize("loss", ["gaussian", "bernoulli"])
@pytest.mark.parametrize("beta", [1.0, 0.25])
@pytest.mark.parametrize("clamped", [None, "upper", "lower"])
def test_loss_and_gradients_match_autograd(classes, loss, beta, clamped):
    torch.manual_seed(0)
    model = VAE(image_shape=(1, 10, 12), latent_dim=3, hidden=24, num_classes=classes)
    if clamped:  # the log-variance clamp is active for one latent dimension: no gradient there
        with torch.no_grad():
            model.fc_logvar.bias[1] = 45.0 if clamped == "upper" else -45.0
    x = torch.rand(37, 1, 10, 12)
    y = torch.randint(0, classes, (37,)) if classes else None
    want, want_grads = autograd_grads(model, loss, beta, x, y, torch.Generator().manual_seed(7))

    step = HandDerivedStep(model, likelihood(loss), beta, batch_size=50)
    for p in model.parameters():  # stale values must be overwritten, not accumulated into
        p.grad.fill_(123.0)
    got = step(x, y, torch.Generator().manual_seed(7))
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-3)
    for name, p in model.named_parameters():
        scale = want_grads[name].abs().max().item()
        torch.testing.assert_close(p.grad, want_grads[name], rtol=1e-4, atol=1e-5 * scale)
    if clamped:
        assert torch.all(model.fc_logvar.bias.grad[1] == 0)


def test_a_smaller_last_batch_reuses_the_buffers():
    torch.manual_seed(1)
    model = VAE(image_shape=(1, 6, 6), latent_dim=2, hidden=16)
    step = HandDerivedStep(model, likelihood("gaussian"), 1.0, batch_size=32)
    x = torch.rand(32, 1, 6, 6)
    step(x, None, torch.Generator().manual_seed(0))
    got = step(x[:5], None, torch.Generator().manual_seed(1))
    want, grads = autograd_grads(
        model, "gaussian", 1.0, x[:5], None, torch.Generator().manual_seed(1)
    )
    torch.testing.assert_close(got[0], want[0])
    torch.testing.assert_close(model.fc1.weight.grad, grads["fc1.weight"])


def test_supports_only_the_mlp_with_its_losses_on_a_cpu():
    cpu = torch.device("cpu")
    gaussian, bernoulli = likelihood("gaussian"), likelihood("bernoulli")
    assert supports(VAE(), gaussian, cpu) and supports(VAE(num_classes=3), bernoulli, cpu)
    assert not supports(ConvVAE(), gaussian, cpu)
    assert not supports(VAE(), gaussian, torch.device("cuda"))
    assert not supports(VAE().double(), gaussian, cpu)


FUSED_ADAM = tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 4)


def same_steps(ref: VAE, ref_opt, model: VAE, opt, steps: int, seed: int) -> None:
    """Give both models the same random gradients and step both optimizers; then the weights
    must agree."""
    gen = torch.Generator().manual_seed(seed)
    for i in range(steps):
        for a, b in zip(ref.parameters(), model.parameters(), strict=True):
            g = torch.randn(a.shape, generator=gen) * (i + 1)
            a.grad = g.clone()
            b.grad.copy_(g)  # the flat gradient's view
        ref_opt.step()
        opt.step()
    for a, b in zip(ref.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)


@pytest.mark.parametrize("fused", [False, True] if FUSED_ADAM else [False])
def test_flat_adam_takes_the_same_steps_as_torch_adam(fused):
    def adam(params):
        return torch.optim.Adam(params, lr=1e-2, fused=fused)

    torch.manual_seed(2)
    ref = VAE(image_shape=(1, 5, 7), latent_dim=2, hidden=9, num_classes=3)
    flat_model = VAE(image_shape=(1, 5, 7), latent_dim=2, hidden=9, num_classes=3)
    flat_model.load_state_dict(ref.state_dict())
    ref_opt = adam(ref.parameters())
    flat_opt = FlatAdam(flat_model, adam)
    same_steps(ref, ref_opt, flat_model, flat_opt, steps=3, seed=0)
    # the padding between parameters in the flat tensor stays zero
    padding = torch.ones_like(flat_opt.flat, dtype=torch.bool)
    for offset, p in zip(flat_opt.offsets, flat_model.parameters(), strict=True):
        padding[offset : offset + p.numel()] = False
    assert padding.any() and torch.all(flat_opt.flat[padding] == 0)
    assert flat_opt.flat.data_ptr() % 64 == 0
    assert all(p.data_ptr() % 64 == 0 for p in flat_model.parameters())

    # its state_dict is torch.optim.Adam's, and loads back
    mine, theirs = flat_opt.state_dict(), ref_opt.state_dict()
    assert mine["param_groups"] == theirs["param_groups"]
    assert mine["state"].keys() == theirs["state"].keys()
    for i, per_param in theirs["state"].items():
        for key, value in per_param.items():
            torch.testing.assert_close(mine["state"][i][key], value, rtol=0, atol=1e-7)
    # loaded into a fresh model, it goes on exactly as torch's Adam does (moments and step count)
    other = VAE(image_shape=(1, 5, 7), latent_dim=2, hidden=9, num_classes=3)
    other.load_state_dict(ref.state_dict())
    other_opt = FlatAdam(other, adam)
    other_opt.load_state_dict(theirs)
    same_steps(ref, ref_opt, other, other_opt, steps=2, seed=1)


def test_flat_adam_refuses_a_state_of_another_model():
    a, b = VAE(hidden=8), VAE(hidden=9)
    opt_a = torch.optim.Adam(a.parameters())
    for p in a.parameters():
        p.grad = torch.ones_like(p)
    opt_a.step()
    flat_b = FlatAdam(b, lambda params: torch.optim.Adam(params))
    with pytest.raises(ValueError, match="has shape"):
        flat_b.load_state_dict(opt_a.state_dict())
    with pytest.raises(ValueError, match="parameters in"):
        flat_b.load_state_dict({"state": {}, "param_groups": []})


def test_training_with_the_fast_step_follows_autograd(tiny_data, tmp_path):
    """Two epochs of the trainer either way: the same losses to float rounding, and the
    checkpoint written by one resumes with the other."""
    config = RunConfig(
        DataConfig(str(tiny_data)),
        ModelConfig(hidden=32, conditional=True),
        TrainConfig(epochs=2, batch_size=32, lr=3e-3),
    )
    fast = train(config, tmp_path / "fast", progress=False)
    slow = train(
        replace(config, train=replace(config.train, step="autograd")),
        tmp_path / "slow",
        progress=False,
    )
    for a, b in zip(fast.metrics, slow.metrics, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["test_loss"] == pytest.approx(b["test_loss"], rel=1e-3)
    wf, ws = (
        read_tensors(fast.path / "model.safetensors"),
        read_tensors(slow.path / "model.safetensors"),
    )
    for k in wf:
        torch.testing.assert_close(wf[k], ws[k], rtol=1e-3, atol=1e-4)

    # autograd's checkpoint, Adam's state included, goes on with the fast step
    more = RunConfig(config.data, config.model, TrainConfig(epochs=3, batch_size=32, lr=3e-3))
    resumed = train(more, tmp_path / "slow", resume=True, progress=False)
    assert [m["epoch"] for m in resumed.metrics] == [1, 2, 3]
    straight = train(more, tmp_path / "straight", progress=False)
    assert resumed.metrics[2]["train_loss"] == pytest.approx(
        straight.metrics[2]["train_loss"], rel=1e-4
    )
    for name, p in straight.model.named_parameters():
        torch.testing.assert_close(
            dict(resumed.model.named_parameters())[name], p, rtol=1e-3, atol=1e-4
        )


@pytest.mark.skipif(not FUSED_ADAM, reason="PyTorch has a fused CPU Adam from 2.4 on")
def test_the_flat_adam_is_fused():
    opt = FlatAdam(VAE(hidden=8), lambda params: make_optimizer(params, 1e-3))
    assert opt.opt.param_groups[0]["params"] == [opt.flat]
    assert opt.opt.param_groups[0]["fused"] is True

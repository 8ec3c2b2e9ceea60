"""Model shapes, the reference architecture exactly, and conditioning."""

from __future__ import annotations

import pytest
import torch

from vaegen.models import LOGVAR_MAX, LOGVAR_MIN, MODELS, VAE


@pytest.mark.parametrize("kind", sorted(MODELS))
@pytest.mark.parametrize("num_classes", [0, 3])
@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 12, 12), (3, 8, 8)])
def test_shapes(kind, num_classes, shape):
    model = MODELS[kind](image_shape=shape, latent_dim=5, hidden=32, num_classes=num_classes)
    x = torch.rand(7, *shape)
    y = torch.arange(7) % 3 if num_classes else None
    out = model(x, y, generator=torch.Generator().manual_seed(0))
    assert out.recon.shape == (7, *shape)
    assert out.mu.shape == out.logvar.shape == out.z.shape == (7, 5)
    assert model.decode(out.z, y).shape == (7, *shape)


def test_seed_model_is_the_articles_architecture():
    model = VAE()
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    assert shapes == {
        "fc1.weight": (256, 784), "fc1.bias": (256,),
        "fc_mu.weight": (2, 256), "fc_mu.bias": (2,),
        "fc_logvar.weight": (2, 256), "fc_logvar.bias": (2,),
        "fc3.weight": (256, 2), "fc3.bias": (256,),
        "fc4.weight": (784, 256), "fc4.bias": (784,),
    }  # fmt: skip
    # no output activation: the decoder's output is the last Linear's output
    z = torch.randn(4, 2)
    expected = model.fc4(torch.relu(model.fc3(z))).view(4, 1, 28, 28)
    torch.testing.assert_close(model.decode(z), expected)


def test_conditional_model_is_the_article_series_cvae():
    model = VAE(num_classes=10)
    assert tuple(model.fc_label.weight.shape) == (256, 10)
    assert tuple(model.fc_mu.weight.shape) == (2, 512)
    assert tuple(model.fc3.weight.shape) == (256, 12)
    z = torch.zeros(2, 2)
    a, b = model.decode(z, torch.tensor([0, 1]))
    assert not torch.equal(a, b)  # the label changes what is decoded
    with pytest.raises(ValueError, match="pass the class labels"):
        model.decode(z)


def test_logvar_is_kept_in_a_safe_range():
    model = VAE()
    with torch.no_grad():
        model.fc_logvar.bias.fill_(1e6)
    _, logvar = model.encode(torch.rand(2, 1, 28, 28))
    assert torch.isfinite(logvar.exp()).all()


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_the_log_variance_is_clamped_at_both_ends(kind):
    """A runaway log-variance head stops at LOGVAR_MIN / LOGVAR_MAX, so exp(logvar) stays finite
    and away from 0 (a variance of exp(-45) would underflow the KL's log terms in float32)."""
    model = MODELS[kind](image_shape=(1, 12, 12), latent_dim=3, hidden=16)
    with torch.no_grad():
        model.fc_logvar.weight.zero_()
        model.fc_logvar.bias.copy_(torch.tensor([-45.0, 0.5, 45.0]))
    _, logvar = model.encode(torch.rand(4, 1, 12, 12))
    assert torch.equal(logvar[:, 0], torch.full((4,), LOGVAR_MIN))
    assert torch.equal(logvar[:, 1], torch.full((4,), 0.5))
    assert torch.equal(logvar[:, 2], torch.full((4,), LOGVAR_MAX))

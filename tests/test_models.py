"""Model shapes, the reference architecture exactly, and conditioning."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from vaegen.evaluation.estimators import iwae_log_likelihood
from vaegen.model.likelihoods import likelihood
from vaegen.model.vae import LOGVAR_MAX, LOGVAR_MIN, MODELS, VAE, ConvVAE


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
        "fc1.weight": (256, 784),
        "fc1.bias": (256,),
        "fc_mu.weight": (2, 256),
        "fc_mu.bias": (2,),
        "fc_logvar.weight": (2, 256),
        "fc_logvar.bias": (2,),
        "fc3.weight": (256, 2),
        "fc3.bias": (256,),
        "fc4.weight": (784, 256),
        "fc4.bias": (784,),
    }
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


# ------------------------------------------------------------- the conv model on any size

ODD_SHAPES = [(3, 30, 30), (1, 7, 13), (3, 5, 6), (1, 1, 1)]


@pytest.mark.parametrize("kind", sorted(MODELS))
@pytest.mark.parametrize("shape", [*ODD_SHAPES, (1, 8, 8), (3, 32, 32)])
@pytest.mark.parametrize("scale", ["none", "pixel"])
def test_any_image_size_goes_through(kind, shape, scale):
    """Every C x H x W >= 1 x 1 x 1: the decoder's output is C x H x W, or 2C x H x W for a
    learned scale, and generated images (from z alone) are H x W too."""
    model = MODELS[kind](image_shape=shape, latent_dim=3, hidden=16, scale=scale)
    c, h, w = shape
    out = model(torch.rand(4, *shape), generator=torch.Generator().manual_seed(0))
    assert out.recon.shape == (4, c * (2 if scale == "pixel" else 1), h, w)
    assert out.recon.is_contiguous()  # callers .view() the output
    assert model.decode(torch.randn(2, 3)).shape[-2:] == (h, w)


def test_a_zero_size_is_refused():
    for kind in MODELS:
        for shape in [(1, 0, 8), (1, 8, 0), (0, 8, 8)]:
            with pytest.raises(ValueError, match=rf"got {re.escape(str(shape))}; check the data"):
                MODELS[kind](image_shape=shape)


def _unpadded_forward(model: ConvVAE, x, y, eps) -> tuple[torch.Tensor, ...]:
    """The conv model's forward pass as written before it took any size: no pad, no crop."""
    h = F.relu(model.conv2(F.relu(model.conv1(x))))
    h = F.relu(model.fc1(h.flatten(1)))
    if y is not None:
        h = torch.cat([h, F.relu(model.fc_label(F.one_hot(y, model.num_classes).float()))], 1)
    mu, logvar = model.fc_mu(h), model.fc_logvar(h).clamp(LOGVAR_MIN, LOGVAR_MAX)
    z = mu + eps * torch.exp(0.5 * logvar)
    zc = z if y is None else torch.cat([z, F.one_hot(y, model.num_classes).float()], 1)
    f = F.relu(model.fc4(F.relu(model.fc3(zc)))).view(-1, 64, 7, 7)
    mean = model.deconv2(F.relu(model.deconv1(f)))
    if model.log_sigma is not None:
        mean = torch.cat([mean, model.log_sigma.expand_as(mean)], 1)
    return mean, mu, logvar, z


@pytest.mark.parametrize(("num_classes", "scale"), [(0, "none"), (10, "pixel")])
def test_28_by_28_is_the_model_it_always_was(num_classes, scale):
    """FashionMNIST's size needs no padding: the same parameters (so old checkpoints load) and
    bit for bit the same output as the forward pass without any padding or crop."""
    torch.manual_seed(0)
    model = ConvVAE(num_classes=num_classes, scale=scale)
    shapes = {name: tuple(p.shape) for name, p in model.state_dict().items()}
    want = {
        "conv1.weight": (32, 1, 4, 4),
        "conv1.bias": (32,),
        "conv2.weight": (64, 32, 4, 4),
        "conv2.bias": (64,),
        "fc1.weight": (256, 3136),
        "fc1.bias": (256,),
        "fc_mu.weight": (2, 256 * (2 if num_classes else 1)),
        "fc_mu.bias": (2,),
        "fc_logvar.weight": (2, 256 * (2 if num_classes else 1)),
        "fc_logvar.bias": (2,),
        "fc3.weight": (256, 2 + num_classes),
        "fc3.bias": (256,),
        "fc4.weight": (3136, 256),
        "fc4.bias": (3136,),
        "deconv1.weight": (64, 32, 4, 4),
        "deconv1.bias": (32,),
        "deconv2.weight": (32, 1, 4, 4),
        "deconv2.bias": (1,),
    }
    if num_classes:
        want |= {"fc_label.weight": (256, num_classes), "fc_label.bias": (256,)}
    if scale == "pixel":
        want["log_sigma"] = (1, 1, 28, 28)
    assert shapes == want
    x = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    y = torch.arange(6) if num_classes else None
    eps = torch.randn(6, 2, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        got = model(x, y, eps=eps)
        for a, b in zip(got, _unpadded_forward(model, x, y, eps), strict=True):
            assert torch.equal(a, b)


def _fill_border(model: ConvVAE, value: float, rows: slice, cols: slice):
    """Make the last transposed convolution write `value` into output[..., rows, cols] of its
    padded H' x W' output (a forward hook; returns its handle)."""

    def hook(module, inputs, output):
        output = output.clone()
        output[..., rows, cols] = value
        return output

    return model.deconv2.register_forward_hook(hook)


@pytest.mark.parametrize("shape", [(3, 30, 30), (1, 7, 13)])
@pytest.mark.parametrize("loss", ["gaussian", "bernoulli", "gaussian-pixel-sigma"])
def test_the_padded_border_never_reaches_the_loss(shape, loss):
    """What the decoder writes below row H or right of column W changes no loss, no IWAE bound
    and no generated image; what it writes in the last row or column inside does."""
    lk = likelihood(loss)
    torch.manual_seed(0)
    model = ConvVAE(image_shape=shape, latent_dim=3, hidden=16, scale=lk.scale).eval()
    _, h, w = shape
    x = torch.rand(5, *shape, generator=torch.Generator().manual_seed(1))
    z = torch.randn(5, 3, generator=torch.Generator().manual_seed(2))

    def measured() -> list[torch.Tensor]:
        with torch.no_grad():
            out = model(x, generator=torch.Generator().manual_seed(3))
            terms = lk.terms(out.recon, x, out.mu, out.logvar)
            iwae = iwae_log_likelihood(model, x, None, lk, k=3, seed=4)
            return [terms.recon, terms.kl, iwae, lk.mean(model.decode(z))]

    before = measured()
    below, right = slice(h, None), slice(w, None)
    for rows, cols in [(below, slice(None)), (slice(None), right)]:
        handle = _fill_border(model, 50.0, rows, cols)
        after = measured()
        handle.remove()
        for a, b in zip(before, after, strict=True):
            assert torch.equal(a, b)
    handle = _fill_border(model, 50.0, slice(h - 1, h), slice(w - 1, w))  # the last pixel
    after = measured()
    handle.remove()
    assert not torch.equal(before[0], after[0]) and not torch.equal(before[3], after[3])


@pytest.mark.parametrize("shape", [(3, 30, 30), (1, 7, 13)])
def test_the_encoder_sees_the_image_and_zeros_beyond_it(shape):
    """An image's encoding is that of the image with zeros below and to the right up to the next
    multiple of 4 (not above or left, not anything else), whatever the other images of the
    batch are."""
    torch.manual_seed(0)
    model = ConvVAE(image_shape=shape, latent_dim=3, hidden=16).eval()
    c, h, w = shape
    hp, wp = -(-h // 4) * 4, -(-w // 4) * 4
    x = torch.rand(4, *shape, generator=torch.Generator().manual_seed(1))

    def encoded_on(canvas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = F.relu(model.conv2(F.relu(model.conv1(canvas))))
        return model._heads(F.relu(model.fc1(f.flatten(1))), None)

    zeros = torch.zeros(4, c, hp, wp)
    zeros[..., :h, :w] = x
    ones = torch.ones(4, c, hp, wp)
    ones[..., :h, :w] = x
    shifted = torch.zeros(4, c, hp, wp)
    shifted[..., hp - h :, wp - w :] = x
    with torch.no_grad():
        mu, logvar = model.encode(x)
        want_mu, want_logvar = encoded_on(zeros)
        torch.testing.assert_close(mu, want_mu, rtol=0, atol=1e-6)
        torch.testing.assert_close(logvar, want_logvar, rtol=0, atol=1e-6)
        # the premise: what the border holds, and where the image sits, change the encoding
        assert not torch.allclose(mu, encoded_on(ones)[0], atol=1e-4)
        assert not torch.allclose(mu, encoded_on(shifted)[0], atol=1e-4)
        alone = model.encode(x[2:3])[0]
        torch.testing.assert_close(alone, mu[2:3], rtol=0, atol=1e-6)


def structured(n: int, shape: tuple[int, int, int], seed: int) -> torch.Tensor:
    """n images in [0, 1] of 4 kinds (image i is of kind i % 4): the top, bottom, left or right
    half lit at a random brightness in a colour of its kind (one channel: grey), on faint
    noise. Knowing an image's kind and brightness is worth several nats per image."""
    gen = torch.Generator().manual_seed(seed)
    c, h, w = shape
    x = 0.1 * torch.rand(n, c, h, w, generator=gen)
    colours = torch.tensor([[1.0, 0.1, 0.1], [0.1, 1.0, 0.1], [0.1, 0.1, 1.0], [1.0, 1.0, 0.1]])
    halves = [
        (slice(0, h // 2), slice(None)),
        (slice(h // 2, None), slice(None)),
        (slice(None), slice(0, w // 2)),
        (slice(None), slice(w // 2, None)),
    ]
    brightness = 0.5 + 0.5 * torch.rand(n, generator=gen)
    for i in range(n):
        colour = colours[i % 4] if c == 3 else torch.ones(1)
        rows, cols = halves[i % 4]
        x[i, :, rows, cols] = (brightness[i] * colour).view(c, 1, 1)
    return x


# the unit-variance Gaussian lets a tiny grey image's posterior collapse (its squared errors are
# worth less than the KL of saying which kind it is); Bernoulli's cross-entropy is not
@pytest.mark.parametrize(
    ("shape", "loss"),
    [
        ((3, 30, 30), "gaussian"),
        ((3, 32, 32), "gaussian"),
        ((1, 8, 8), "bernoulli"),
        ((1, 7, 13), "bernoulli"),
    ],
)
def test_the_conv_model_learns_at_any_size(shape, loss):
    """A short training (Adam) brings the held-out loss (reconstruction + KL) below what any
    model that ignores its input can reach: the mean training image's reconstruction term. So
    the padded encoder passes on what each image is, and the cropped decoder draws it."""
    lk = likelihood(loss)
    torch.manual_seed(0)
    model = ConvVAE(image_shape=shape, latent_dim=4, hidden=32)
    train, test = structured(128, shape, seed=1), structured(64, shape, seed=2)
    mean_image = train.mean(0, keepdim=True).clamp(1e-4, 1 - 1e-4).expand_as(test)
    constant = mean_image if loss == "gaussian" else torch.logit(mean_image)  # the best constant
    baseline = lk.recon(constant, test).mean().item()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def test_loss() -> float:
        with torch.no_grad():
            out = model(test, generator=torch.Generator().manual_seed(0))
            terms = lk.terms(out.recon, test, out.mu, out.logvar)
            return (terms.recon + terms.kl).mean().item()

    start = test_loss()
    gen = torch.Generator().manual_seed(3)
    for _ in range(6):
        for idx in torch.randperm(len(train), generator=gen).split(32):
            out = model(train[idx], generator=gen)
            terms = lk.terms(out.recon, train[idx], out.mu, out.logvar)
            opt.zero_grad()
            (terms.recon + terms.kl).sum().backward()
            opt.step()
    end = test_loss()
    assert end < baseline < start, (start, baseline, end)

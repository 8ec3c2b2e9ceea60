"""One training epoch of the reference VAE, three ways, measured in the same run.

(a) the reference article's pipeline: a per-image Dataset (uint8 -> float tensor per item, like
    ToTensor), DataLoader(batch_size=128, shuffle=True) with the default collate, stock Adam;
(b) a plain loop over one in-memory float tensor with shuffled index batches and stock Adam; (c)
vaegen's own trainer, `vaegen.training.loop.train` (the code `vaegen train` runs: its hand-derived
step,
    vaegen.training.hand_derived_step, on a CPU);
(d) the same trainer with autograd's backward and a per-parameter fused Adam instead of the
    hand-derived step: what (c) gains from vaegen.training.hand_derived_step.

All three do the same math: the seed model, 0.5 * summed squared error + KL, batch 128, Adam 1e-3.
Timings are noisy, so the script prints ratios against (a) and (b) measured here and now, and the
achieved arithmetic rate against this machine's float32 matrix-multiply rate measured here too.
Two ratios: the median of the per-round ratios, and the ratio of the fastest epochs. On a shared
machine whose speed changes with its neighbours' load, the fastest of several runs is the best
estimate of what each pipeline costs (the advice of Python's timeit), and the median shows the
spread.

    python benchmarks/epoch_speed.py [--rounds 3] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from record import append_result

from vaegen import DataConfig, RunConfig, TrainConfig, load_dataset
from vaegen.model.likelihoods import GAUSSIAN
from vaegen.model.vae import VAE
from vaegen.training.loop import default_threads, train


class ArticleDataset(torch.utils.data.Dataset):
    """The article's data path, as torchvision's FashionMNIST + ToTensor do it: per item, a PIL
    image from the uint8 array, then back to a C x H x W float tensor in [0, 1]."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.data = images[:, 0]  # N x 28 x 28 uint8, as torchvision keeps it
        self.targets = labels

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        pic = Image.fromarray(self.data[i].numpy(), mode="L")
        img = torch.from_numpy(np.array(pic, np.uint8, copy=True))
        img = img.view(pic.size[1], pic.size[0], 1).permute((2, 0, 1)).contiguous()
        return img.to(dtype=torch.float32).div(255), int(self.targets[i])


def article_epoch(model: nn.Module, opt: torch.optim.Optimizer, loader) -> torch.Tensor:
    """One epoch of the article's training loop: flatten, one-hot labels (which its model
    ignores), the summed MSE loss, Adam; the running loss kept as a tensor
    (`train_loss += loss.data`), which it returns."""
    mse = nn.MSELoss(reduction="sum")
    train_loss = torch.zeros(())
    for img, label in loader:
        img = img.view(img.size(0), -1)
        _one_hot = torch.zeros(label.shape[0], 10).scatter_(1, label.view(-1, 1), 1)
        opt.zero_grad()
        out = model(img.view(-1, 1, 28, 28))
        recon = out.recon.view(img.size(0), -1)
        kld = -0.5 * torch.sum(1 + out.logvar - out.mu.pow(2) - out.logvar.exp())
        loss = 0.5 * mse(recon, img) + kld
        loss.backward()
        train_loss += loss.data
        opt.step()
    return train_loss


def article_loader(images: torch.Tensor, labels: torch.Tensor) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(ArticleDataset(images, labels), batch_size=128, shuffle=True)


def epoch_article(images: torch.Tensor, labels: torch.Tensor) -> float:
    """The article's pipeline: its second epoch, timed (the first warms up)."""
    torch.manual_seed(0)
    model = VAE()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = article_loader(images, labels)
    for _ in range(2):
        t0 = time.perf_counter()
        article_epoch(model, opt, loader)
        seconds = time.perf_counter() - t0
    return seconds


def _step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    terms = GAUSSIAN.terms(out.recon, x, out.mu, out.logvar)
    loss = terms.recon.sum() + terms.kl.sum()
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.detach()


def plain_epoch(model: nn.Module, opt: torch.optim.Optimizer, x_all: torch.Tensor) -> torch.Tensor:
    """One epoch of the plain loop: shuffled index batches of 128 of the in-memory floats, on
    their device (the running loss stays there: no host synchronisation within the epoch)."""
    perm = torch.randperm(len(x_all), device=x_all.device)
    total = torch.zeros((), device=x_all.device)
    for i in range(0, len(x_all), 128):
        total += _step(model, opt, x_all[perm[i : i + 128]])
    return total


def epoch_plain(images: torch.Tensor) -> float:
    torch.manual_seed(0)
    model = VAE()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x_all = images.float().div(255)
    for _ in range(2):
        t0 = time.perf_counter()
        plain_epoch(model, opt, x_all)
        seconds = time.perf_counter() - t0
    return seconds


def epoch_vaegen(data_dir: str | None, fast_step: bool = True) -> float:
    """vaegen's trainer for 2 epochs; its own timing of epoch 2 (the shuffle and the training
    steps; not the test-set evaluation that follows)."""
    with tempfile.TemporaryDirectory() as tmp:
        step = "auto" if fast_step else "autograd"
        config = RunConfig(
            DataConfig(data_dir=data_dir), train=TrainConfig(epochs=2, device="cpu", step=step)
        )
        run = train(config, Path(tmp) / "bench", progress=False)
    return run.metrics[-1]["seconds"]


def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - t0) / 1e9


def training_flops_per_epoch(images: int = 60000, hidden: int = 256, latent: int = 2) -> float:
    """Matrix-multiply flops of one epoch: forward 2*(784*h + h*2l + l*h + h*784) per image,
    backward twice that (gradients of inputs and of weights) less the gradient of the input
    images, which nothing needs."""
    forward = 2 * (784 * hidden + hidden * 2 * latent + latent * hidden + hidden * 784)
    return (3 * forward - 2 * 784 * hidden) * images


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=5, help="repeat each measurement (median)")
    p.add_argument("--data-dir", help="where FashionMNIST is (default: vaegen's search order)")
    args = p.parse_args()

    threads = default_threads()
    ds = load_dataset("fashion-mnist", "train", args.data_dir)
    images = ds.images  # uint8 60000 x 1 x 28 x 28
    results: dict[str, list[float]] = {"a": [], "b": [], "c": [], "d": [], "mm": []}
    for r in range(args.rounds):
        results["a"].append(epoch_article(images, ds.labels))
        results["b"].append(epoch_plain(images))
        results["c"].append(epoch_vaegen(args.data_dir))
        results["d"].append(epoch_vaegen(args.data_dir, fast_step=False))
        results["mm"].append(matmul_gflops())
        print(
            f"round {r + 1}: (a) {results['a'][-1]:.2f} s  (b) {results['b'][-1]:.2f} s  "
            f"(c) {results['c'][-1]:.2f} s  (d) {results['d'][-1]:.2f} s  matmul {results['mm'][-1]:.0f} GFLOP/s",
            flush=True,
        )
    med = {k: statistics.median(v) for k, v in results.items()}
    best = {k: min(v) for k, v in results.items()}
    # ratios within each round (the three ran back to back), then their median: steadier than a
    # ratio of medians on a machine whose speed drifts
    ratio = {
        (x, y): statistics.median(p / q for p, q in zip(results[x], results[y], strict=True))
        for x in "abcd"
        for y in "ab"
    }
    flops = training_flops_per_epoch()
    print()
    print(f"torch {torch.__version__}, {threads} threads, {args.rounds} rounds")
    print(
        "| pipeline | s/epoch, median (min) | time vs (a): median (of minima) "
        "| time vs (b): median (of minima) | GFLOP/s at the minimum | of matmul rate |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    names = {
        "a": "(a) article: per-image Dataset + DataLoader",
        "b": "(b) plain loop, in-memory tensor, stock Adam",
        "c": "(c) vaegen train",
        "d": "(d) vaegen train, autograd step",
    }
    mm = max(results["mm"])
    for k, name in names.items():
        rate = flops / best[k] / 1e9
        print(
            f"| {name} | {med[k]:.2f} ({best[k]:.2f}) "
            f"| {ratio[k, 'a']:.2f}x ({best[k] / best['a']:.2f}x) "
            f"| {ratio[k, 'b']:.2f}x ({best[k] / best['b']:.2f}x) | {rate:.0f} | {rate / mm:.0%} |"
        )
    print(
        f"\nmatrix multiply (2048^3 float32): {mm:.0f} GFLOP/s at best; one epoch's matrix "
        f"products are {flops / 1e9:.0f} GFLOP, {flops / mm / 1e9:.2f} s at that rate"
    )
    print(
        f"vaegen: {1 / ratio['c', 'a']:.1f}x faster than (a) ({best['a'] / best['c']:.1f}x on the "
        f"fastest epochs), {ratio['c', 'b']:.2f}x the time of (b) ({best['c'] / best['b']:.2f}x)"
    )
    pipelines = [
        {
            "pipeline": k,
            "name": name,
            "epoch_s_median": round(med[k], 3),
            "epoch_s_min": round(best[k], 3),
            "vs_a_median": round(ratio[k, "a"], 3),
            "vs_a_of_minima": round(best[k] / best["a"], 3),
            "vs_b_median": round(ratio[k, "b"], 3),
            "vs_b_of_minima": round(best[k] / best["b"], 3),
            "gflops_at_min": round(flops / best[k] / 1e9, 1),
            "matmul_rate_pct": round(100 * flops / best[k] / 1e9 / mm, 1),
            "epoch_s": [round(t, 3) for t in results[k]],
        }
        for k, name in names.items()
    ]
    append_result(
        "epoch_speed",
        {
            "rounds": args.rounds,
            "images": len(images),
            "batch_size": 128,
            "matmul_gflops_best": round(mm, 1),
            "epoch_gflop": round(flops / 1e9, 1),
            "pipelines": pipelines,
        },
    )


if __name__ == "__main__":
    main()

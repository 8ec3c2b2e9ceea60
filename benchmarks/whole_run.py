"""Whole training runs of the reference VAE, the way a user waits for them, measured in one run.

The pipelines of benchmarks/epoch_speed.py, each trained for E epochs from scratch on the CPU: (a)
the article's per-image Dataset + DataLoader, (b) a plain loop over one in-memory tensor, (c)
`vaegen.training.loop.train` (the code `vaegen train` runs). Each pays for what its user pays for:
(a) and (b) compute the test-set loss after every epoch, as the article does; (c) is timed around
the whole `train` call, so its test passes, checkpoint writes and start-up count. Early epochs (the
first three) and late ones (the last three) are reported apart, because epoch times drift over a
run; for (c) those are its own per-epoch step times (metrics.jsonl `seconds`). The order of the
pipelines rotates from round to round; ratios are taken within a round.

    python benchmarks/whole_run.py [--epochs 10] [--rounds 2] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from epoch_speed import article_epoch, article_loader, plain_epoch
from record import append_result

from vaegen import DataConfig, RunConfig, TrainConfig, load_dataset
from vaegen.model.likelihoods import GAUSSIAN, evaluate_loss
from vaegen.model.vae import VAE
from vaegen.training.loop import default_threads, train

Result = tuple[float, list[float]]  # (whole run in s, per-epoch s)


def test_loss(model: nn.Module, x_test: torch.Tensor) -> float:
    """The test-set loss per image after an epoch (vaegen's own measure of it)."""
    return evaluate_loss(model, x_test, None, GAUSSIAN.name, seed=0)["loss"]


EpochFn = Callable[[nn.Module, torch.optim.Optimizer], object]


def _timed_run(prepare: Callable[[], EpochFn], x_test: torch.Tensor, epochs: int) -> Result:
    """A fresh seed model and Adam, `prepare()` (the pipeline's data, timed with the run), then
    `epochs` of the epoch it returns, each followed by a test-loss pass as the article does."""
    t_start = time.perf_counter()
    torch.manual_seed(0)
    model = VAE()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    epoch = prepare()
    epoch_times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        epoch(model, opt)
        test_loss(model, x_test)
        epoch_times.append(time.perf_counter() - t0)
    return time.perf_counter() - t_start, epoch_times


def run_article(
    images: torch.Tensor, labels: torch.Tensor, x_test: torch.Tensor, epochs: int
) -> Result:
    def prepare() -> EpochFn:
        loader = article_loader(images, labels)
        return lambda model, opt: article_epoch(model, opt, loader)

    return _timed_run(prepare, x_test, epochs)


def run_plain(images: torch.Tensor, x_test: torch.Tensor, epochs: int) -> Result:
    def prepare() -> EpochFn:
        x_all = images.float().div(255)
        return lambda model, opt: plain_epoch(model, opt, x_all)

    return _timed_run(prepare, x_test, epochs)


def run_vaegen(data_dir: str | None, epochs: int) -> Result:
    with tempfile.TemporaryDirectory() as tmp:
        config = RunConfig(
            DataConfig(data_dir=data_dir), train=TrainConfig(epochs=epochs, device="cpu")
        )
        t0 = time.perf_counter()
        run = train(config, Path(tmp) / "bench", progress=False)
        whole = time.perf_counter() - t0
    return whole, [m["seconds"] for m in run.metrics]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--data-dir")
    args = p.parse_args()
    torch.set_num_threads(default_threads())
    train_set = load_dataset("fashion-mnist", "train", args.data_dir)
    x_test = load_dataset("fashion-mnist", "test", args.data_dir).images.float().div(255)
    pipelines: dict[str, Callable[[], Result]] = {
        "(a) article": lambda: run_article(train_set.images, train_set.labels, x_test, args.epochs),
        "(b) plain loop": lambda: run_plain(train_set.images, x_test, args.epochs),
        "(c) vaegen train": lambda: run_vaegen(args.data_dir, args.epochs),
    }
    names = list(pipelines)
    results: dict[str, list[Result]] = {n: [] for n in names}
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            whole, epochs = pipelines[name]()
            results[name].append((whole, epochs))
            print(
                f"round {r + 1} {name}: {whole:.1f} s, epochs {epochs[0]:.2f} ... {epochs[-1]:.2f} s",
                flush=True,
            )
    print(
        f"\n{args.epochs} epochs, {torch.get_num_threads()} threads, {args.rounds} rounds (medians)"
    )
    print(
        f"{'pipeline':<18} {'whole run':>10} {'early epoch':>12} {'late epoch':>11} {'vs (a)':>7} {'vs (b)':>7}"
    )
    recorded = []
    for name in names:
        whole = [w for w, _ in results[name]]
        ratio_a = [w / a for w, (a, _) in zip(whole, results[names[0]], strict=True)]
        ratio_b = [w / b for w, (b, _) in zip(whole, results[names[1]], strict=True)]
        early = [statistics.mean(e[:3]) for _, e in results[name]]
        late = [statistics.mean(e[-3:]) for _, e in results[name]]
        print(
            f"{name:<18} {statistics.median(whole):9.1f}s {statistics.median(early):11.2f}s "
            f"{statistics.median(late):10.2f}s {statistics.median(ratio_a):6.2f}x "
            f"{statistics.median(ratio_b):6.2f}x"
        )
        recorded.append(
            {
                "pipeline": name[1],  # "(a) article" -> "a"
                "name": name,
                "whole_s": round(statistics.median(whole), 2),
                "early_epoch_s": round(statistics.median(early), 3),
                "late_epoch_s": round(statistics.median(late), 3),
                "vs_a": round(statistics.median(ratio_a), 3),
                "vs_b": round(statistics.median(ratio_b), 3),
                "whole_s_rounds": [round(w, 2) for w in whole],
                "epoch_s_rounds": [[round(t, 3) for t in e] for _, e in results[name]],
            }
        )
    append_result(
        "whole_run", {"epochs": args.epochs, "rounds": args.rounds, "pipelines": recorded}
    )


if __name__ == "__main__":
    main()

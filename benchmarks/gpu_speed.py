"""Training speed on a CUDA GPU: images/s of vaegen's steps, the article's model and the conv model.

Rows: for each model, each step vaegen has on a GPU (autograd: PyTorch's eager step; cuda-graph: the
same step recorded once and replayed) in float32 and bf16, trained by `vaegen.training.loop.train`
for E epochs on FashionMNIST. images/s is the median over epochs 2..E of metrics.jsonl's
images_per_second (the epoch's shuffle and training steps); the whole call's wall time is reported
beside it (start-up, data loading, a test pass and checkpoint writes each epoch). The reference row
is a plain PyTorch loop on the same GPU: one in-memory tensor, shuffled index batches of 128, stock
Adam, no host synchronisation inside the epoch (median of epochs 2..E).

Run it with an older vaegen first on PYTHONPATH to measure "before": rows of steps that version
does not have are left out.

    python benchmarks/gpu_speed.py [--epochs 6] [--data-dir DIR] [--json OUT] [--label NAME]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from epoch_speed import plain_epoch
from record import append_result

from vaegen import DataConfig, ModelConfig, RunConfig, TrainConfig, load_dataset
from vaegen.model.vae import VAE
from vaegen.rundir.config import STEPS
from vaegen.training.loop import train

MODELS = {
    "article": (ModelConfig(), "gaussian"),
    "conv": (ModelConfig(model="conv", conditional=True, latent_dim=16), "bernoulli"),
}


def vaegen_row(model: str, step: str, precision: str, epochs: int, data_dir: str | None) -> dict:
    model_config, loss = MODELS[model]
    config = RunConfig(
        DataConfig(data_dir=data_dir),
        model_config,
        TrainConfig(epochs=epochs, device="cuda", step=step, precision=precision, loss=loss),
    )
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run = train(config, Path(tmp) / "run", progress=False)
        wall = time.perf_counter() - t0
    rates = [m["images_per_second"] for m in run.metrics[1:]]
    return {
        "model": model,
        "step": run.metrics[-1]["step"],
        "precision": precision,
        "images_per_second": statistics.median(rates),
        "wall_seconds": wall,
        "final_test_loss": run.metrics[-1]["test_loss"],
    }


def plain_row(epochs: int, data_dir: str | None) -> dict:
    """The article's model in the plain loop of benchmarks/epoch_speed.py, on the GPU."""
    images = load_dataset("fashion-mnist", "train", data_dir=data_dir).images
    x_all = images.to("cuda").float().div(255)
    torch.manual_seed(0)
    model = VAE().cuda()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    rates = []
    for _ in range(epochs):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        plain_epoch(model, opt, x_all).item()  # the epoch's loss, read once
        rates.append(len(x_all) / (time.perf_counter() - t0))
    return {
        "model": "article",
        "step": "plain loop",
        "precision": "float32",
        "images_per_second": statistics.median(rates[1:]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--data-dir")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument("--label", default="", help="a name for this version (before, after)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("this benchmark needs a CUDA GPU")
    rows = [plain_row(args.epochs, args.data_dir)]
    for model in MODELS:
        for step in ("autograd", "cuda-graph"):
            if step not in STEPS:
                continue
            for precision in ("float32", "bf16"):
                rows.append(vaegen_row(model, step, precision, args.epochs, args.data_dir))
                print(json.dumps(rows[-1]), flush=True)
    print(f"\n{torch.cuda.get_device_name()}, torch {torch.__version__}, {args.label}")
    print(f"{'model':8} {'step':11} {'precision':9} {'images/s':>10} {'whole run s':>11}")
    for r in rows:
        wall = f"{r['wall_seconds']:11.1f}" if "wall_seconds" in r else " " * 11
        print(
            f"{r['model']:8} {r['step']:11} {r['precision']:9} "
            f"{r['images_per_second']:10.0f} {wall}"
        )
    if args.json:
        info = {
            "device": torch.cuda.get_device_name(),
            "torch": torch.__version__,
            "label": args.label,
            "epochs": args.epochs,
            "rows": rows,
        }
        Path(args.json).write_text(json.dumps(info, indent=1))
    append_result("gpu_speed", {"label": args.label, "epochs": args.epochs, "rows": rows})


if __name__ == "__main__":
    main()

"""Train vaegen's reference FashionMNIST classifier and write it into the package's assets.

    python scripts/train_reference_classifier.py [--epochs 8] [--seed 0] [--threads 2] [--device cpu]

Writes src/vaegen/evaluation/assets/fashion_classifier.safetensors (float32 weights, safetensors)
and fashion_classifier.json beside it (test accuracy, epochs, seed, date, training seconds, SHA-256
of the weights). `vaegen evaluate` measures Frechet distances in this network's feature space, so
the weights must stay fixed once published: retraining changes every Frechet number ever reported.
Refuses to write weights whose test accuracy is below 91%.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import sys
import time
from pathlib import Path

import torch

from vaegen import __version__
from vaegen.data import load_dataset
from vaegen.evaluation.reference_classifier import (
    REFERENCE_SIDECAR,
    REFERENCE_WEIGHTS,
    accuracy,
    train_classifier,
)
from vaegen.files import atomic_write_bytes, atomic_write_text
from vaegen.tensorfiles import tensors_to_bytes

ASSETS = Path(__file__).resolve().parents[1] / "src" / "vaegen" / "evaluation" / "assets"
MIN_ACCURACY = 0.91


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=2e-3, help="Adam's peak learning rate")
    p.add_argument("--flip", action="store_true", help="also show images mirrored left-right")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for torch")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--data-dir", default=None, help="folder holding FashionMNIST's IDX files")
    p.add_argument("--out", type=Path, default=ASSETS, help="folder to write the two files into")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    # full float32 on a GPU too (no TF32), so that the accuracy measured here is the one a CPU
    # measures with the written weights
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False

    train = load_dataset("fashion-mnist", "train", args.data_dir)
    test = load_dataset("fashion-mnist", "test", args.data_dir)
    assert train.labels is not None and test.labels is not None  # named datasets are labelled
    t0 = time.perf_counter()
    # measured (8 epochs, seed 0): lr 2e-3 without flips 92.4% test accuracy; lr 1e-3 91.5%;
    # flips cost accuracy at this budget (91.2% at 1e-3, 91.7% at 2e-3): they slow the fit
    model = train_classifier(
        train.images,
        train.labels,
        epochs=args.epochs,
        seed=args.seed,
        lr=args.lr,
        flip=args.flip,
        device=args.device,
    )
    seconds = time.perf_counter() - t0
    model = model.cpu()  # measured as it will be used: float32 on the CPU
    acc = accuracy(model, test.images, test.labels)
    train_acc = accuracy(model, train.images, train.labels)
    where = f"{args.threads} CPU threads" if args.device == "cpu" else args.device
    print(
        f"test accuracy {acc:.4f} (train {train_acc:.4f}) after {args.epochs} epochs, "
        f"{seconds:.0f} s on {where}"
    )
    if acc < MIN_ACCURACY:
        print(f"below the required {MIN_ACCURACY:.0%}: nothing written", file=sys.stderr)
        return 1
    data = tensors_to_bytes(model.state_dict())
    atomic_write_bytes(args.out / REFERENCE_WEIGHTS, data)
    sidecar = {
        "description": "vaegen reference FashionMNIST classifier (vaegen.evaluation.reference_classifier.Classifier)",
        "architecture": "conv3x3(1->32)+ReLU+maxpool2, conv3x3(32->64)+ReLU+maxpool2, "
        "fc(3136->128)+ReLU [features], dropout 0.3, fc(128->10)",
        "test_accuracy": round(acc, 4),
        "train_accuracy": round(train_acc, 4),
        "epochs": args.epochs,
        "seed": args.seed,
        "optimizer": f"Adam lr {args.lr:g}, cosine decay to 0, batch 128"
        + (", random left-right flips" if args.flip else ""),
        "training_seconds": round(seconds, 1),
        "trained_on": where,
        "date": datetime.date.today().isoformat(),
        "vaegen_version": __version__,
        "torch_version": torch.__version__,
        "weights_sha256": hashlib.sha256(data).hexdigest(),
    }
    atomic_write_text(args.out / REFERENCE_SIDECAR, json.dumps(sidecar, indent=2) + "\n")
    print(f"wrote {args.out / REFERENCE_WEIGHTS} ({len(data) / 1e6:.2f} MB) and its sidecar")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

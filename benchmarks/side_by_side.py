"""Two `vaegen train` processes on one machine: how much longer than one alone?

For each OpenMP spin count (vaegen's default, 1000, and GNU OpenMP's own, 300,000), time one
training alone and two identical trainings started together (until both finish), in rounds
whose order rotates, and print each pair's time as a multiple of one alone in the same round.
Each training is `vaegen -q train --epochs E --no-plots --prior-components 0` of the article's
model in a fresh process (its start-up and test passes included: what a user waits for).

    python benchmarks/side_by_side.py [--epochs 5] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from record import append_result

SPIN_COUNTS = {"vaegen (1000)": "1000", "GNU OpenMP default (300000)": "300000"}


def run_together(n: int, epochs: int, spin: str, out: Path) -> float:
    """Seconds until n trainings started together have all finished."""
    env = {**os.environ, "GOMP_SPINCOUNT": spin}
    argv = [
        sys.executable,
        "-m",
        "vaegen",
        "-q",
        "train",
        "--epochs",
        str(epochs),
        "--no-plots",
        "--prior-components",
        "0",
        "--device",
        "cpu",
    ]
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen([*argv, "--out", str(out / f"run{i}")], env=env, stdout=subprocess.DEVNULL)
        for i in range(n)
    ]
    if any(p.wait() for p in procs):
        raise SystemExit("a training failed")
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    ratios: dict[str, list[float]] = {name: [] for name in SPIN_COUNTS}
    times: dict[str, dict[str, list[float]]] = {n: {"alone": [], "pair": []} for n in SPIN_COUNTS}
    names = list(SPIN_COUNTS)
    for r in range(args.rounds):
        for name in names[r % 2 :] + names[: r % 2]:
            with tempfile.TemporaryDirectory() as tmp:
                alone = run_together(1, args.epochs, SPIN_COUNTS[name], Path(tmp) / "a")
                pair = run_together(2, args.epochs, SPIN_COUNTS[name], Path(tmp) / "b")
            ratios[name].append(pair / alone)
            times[name]["alone"].append(alone)
            times[name]["pair"].append(pair)
            print(
                f"round {r + 1}, {name}: one alone {alone:.1f} s, two together {pair:.1f} s "
                f"({pair / alone:.2f}x)",
                flush=True,
            )
    for name, values in ratios.items():
        print(f"{name}: two together take {statistics.median(values):.2f}x one alone (median)")
    spin_counts = [
        {
            "spin_count": int(SPIN_COUNTS[name]),
            "name": name.split(" (")[0],
            "alone_s": [round(t, 2) for t in times[name]["alone"]],
            "together_s": [round(t, 2) for t in times[name]["pair"]],
            "together_over_alone": [round(r, 2) for r in ratios[name]],
        }
        for name in SPIN_COUNTS
    ]
    append_result(
        "side_by_side", {"epochs": args.epochs, "rounds": args.rounds, "spin_counts": spin_counts}
    )


if __name__ == "__main__":
    main()

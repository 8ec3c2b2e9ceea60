"""Loading an image folder with and without the folder cache, measured once.

Writes N small PNGs (28 x 28 RGB, random pixels, one sub-folder per class) into a temporary
folder, then times `load_dataset` on it three ways: (a) decoding with the cache off
(VAEGEN_NO_CACHE=1), (b) the first load with the cache on (decode, then store the entry),
(c) the second load (read the entry; nothing is decoded). The files were just written, so the
operating system's page cache holds them in all three: this compares decoding with reading one
file, not disk speeds. The cache lives in the temporary folder too; nothing else is touched.

    python benchmarks/folder_cache.py [--n 5000] [--size 28]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from record import append_result

from vaegen import load_dataset


def write_pngs(root: Path, n: int, size: int, classes: int = 10) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / f"class{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:05d}.png")
    return root


def timed_load(folder: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    ds = load_dataset(folder, test_fraction=0)
    return time.perf_counter() - t0, ds.cache


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown CPU"
    names = [line.split(":", 1)[1].strip() for line in out.splitlines() if "Model name" in line]
    return names[0] if names else "unknown CPU"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=5000, help="number of PNGs (default 5000)")
    p.add_argument("--size", type=int, default=28, help="their side in pixels (default 28)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_pngs(Path(tmp) / "images", args.n, args.size)
        os.environ["VAEGEN_CACHE_DIR"] = str(Path(tmp) / "cache")
        os.environ["VAEGEN_NO_CACHE"] = "1"
        off, _ = timed_load(folder)
        os.environ["VAEGEN_NO_CACHE"] = "0"
        first, how_first = timed_load(folder)
        second, how_second = timed_load(folder)
        assert how_first.startswith("miss") and how_second.startswith("hit"), (
            how_first,
            how_second,
        )
        entry = next((Path(tmp) / "cache" / "folders").glob("*.safetensors"))
        size_mb = entry.stat().st_size / 1e6
    print(
        f"{args.n} PNGs of {args.size} x {args.size} RGB, {len(os.sched_getaffinity(0))} "
        f"CPUs ({cpu_name()}); cache entry {size_mb:.1f} MB"
    )
    print(f"(a) cache off, decode:            {off:6.2f} s")
    print(f"(b) first load, decode and store: {first:6.2f} s")
    print(f"(c) second load, from the cache:  {second:6.2f} s ({first / second:.0f}x (b))")
    append_result(
        "folder_cache",
        {
            "n": args.n,
            "size": args.size,
            "decode_s": round(off, 3),
            "first_load_s": round(first, 3),
            "cached_s": round(second, 3),
            "entry_mb": round(size_mb, 2),
            "cpus": len(os.sched_getaffinity(0)),
        },
    )


if __name__ == "__main__":
    main()

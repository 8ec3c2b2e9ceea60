"""The certificate of a run, and the time `vaegen evaluate` takes with and without the real side's
cache: evaluate RUN with an empty cache (cold), then again (warm), and record both times, each
part's seconds and the certificate (each headline number with its interval and floor).

    python benchmarks/certificate.py RUN --label NAME [--cache DIR] [--warm-only] [--prior P]

--cache: the cache folder to use (default: a new temporary one, so the first pass is cold);
--warm-only: one evaluation against --cache as it is (for a second run of the same dataset,
whose real side the first already measured). Appends to benchmarks/results/certificate.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from record import append_result


def evaluate_once(run: Path, prior: str) -> tuple[float, dict]:
    """One `vaegen evaluate RUN --prior PRIOR` in this process: seconds, and its eval.json."""
    from vaegen.cli import main

    start = time.perf_counter()
    if main(["-q", "evaluate", str(run), "--prior", prior]) != 0:
        raise SystemExit(f"vaegen evaluate {run} failed")
    seconds = time.perf_counter() - start
    return seconds, json.loads((run / "eval.json").read_text())


def summary(result: dict) -> dict:
    """What the record keeps of an eval.json: seconds per part, the certificate, the cache."""
    return {
        "seconds": {k: v["value"] for k, v in result["seconds"].items()},
        "certificate": result["certificate"]["measures"],
        "real_side": result["settings"].get("real_side"),
        "n": result["settings"]["n_generated"],
        "iw_samples": result["settings"]["iw_samples"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path)
    p.add_argument("--label", required=True, help="the run's name in the tables")
    p.add_argument("--cache", type=Path, default=None, help="cache folder (default: a new one)")
    p.add_argument("--warm-only", action="store_true", help="one pass against --cache as it is")
    p.add_argument("--prior", default="fitted", help="evaluate's --prior (default fitted)")
    args = p.parse_args(argv)
    if args.warm_only and args.cache is None:
        p.error("--warm-only needs --cache: the folder the real side was kept in")
    cache = args.cache or Path(tempfile.mkdtemp(prefix="vaegen-cache-"))
    os.environ["VAEGEN_CACHE_DIR"] = str(cache)
    passes = {}
    for name in ("warm",) if args.warm_only else ("cold", "warm"):
        seconds, result = evaluate_once(args.run, args.prior)
        passes[name] = {"wall_s": round(seconds, 1), **summary(result)}
        print(f"{name}: {seconds:.0f} s", file=sys.stderr)
    results = {"label": args.label, "run": str(args.run), "prior": args.prior, "passes": passes}
    append_result("certificate", results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

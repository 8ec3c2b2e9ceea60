"""Render vaegen's results tables from the records in benchmarks/results/*.jsonl.

Every table is named, and drawn by one function from the records (see `TABLES`). A Markdown file
shows a table between two markers, and only the text between them is ever rewritten:

    <!-- results:NAME -->
    (the table and its caption line, generated)
    <!-- /results -->

The files searched for markers are the repository's top-level *.md (README.md) and every *.md
under docs/; each benchmark's page, docs/results/NAME.md, holds its table NAME below a
hand-written introduction, and docs/results/index.md lists the pages (table `index`).

    python scripts/render_results.py [--check] [--results DIR] [--root DIR] [FILE ...]

Without --check the files whose blocks changed are rewritten in place. With --check nothing is
written, and the exit status is 1 when a file's blocks differ from a fresh render (each such file
is named). FILE limits the work to those files. An unknown table name, a marker without its end,
a malformed marker or record, a page missing for a benchmark or a results file that no table
renders is an error (exit status 2) naming the file and line.

Numbers are shown as recorded: a record's "16.00" stays "16.00" (floats are read as Decimal), so
a transcribed table keeps the precision it was published with.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # scripts, no package
from record import PROVENANCE

from vaegen.files import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]

START = re.compile(r"<!-- results:([A-Za-z0-9_-]+) -->")
END = "<!-- /results -->"
PAGES_DIR = Path("docs") / "results"
RESULTS_DIR = Path("benchmarks") / "results"

Records = dict[str, list[dict]]


class ResultsError(Exception):
    """A problem with a results file or a Markdown file's markers; the message names where."""


# ------------------------------------------------------------------------------------- records


def load_records(results_dir: Path) -> Records:
    """Every record of every results_dir/*.jsonl, by file stem, in file order."""
    records: Records = {}
    for path in sorted(Path(results_dir).glob("*.jsonl")):
        rows = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line, parse_float=Decimal)
            except json.JSONDecodeError as e:
                raise ResultsError(f"{path}:{n}: not a JSON record ({e.msg})") from None
            if not isinstance(rec, dict) or not isinstance(rec.get("results"), dict):
                raise ResultsError(f"{path}:{n}: a record is an object with a 'results' object")
            missing = [f for f in PROVENANCE if f not in rec]
            if missing:
                raise ResultsError(f"{path}:{n}: the record lacks {', '.join(missing)}")
            if rec["benchmark"] != path.stem:
                raise ResultsError(
                    f"{path}:{n}: a record of benchmark {rec['benchmark']!r} in {path.name}"
                )
            rows.append(rec)
        records[path.stem] = rows
    return records


def latest(records: list[dict], key: Callable[[dict], Any]) -> list[dict]:
    """The last record for each key of its results, in the order the keys first appear: a new
    run of a configuration replaces the old one's row in place."""
    last: dict[Any, dict] = {}
    for rec in records:
        last[key(rec["results"])] = rec
    return list(last.values())


@dataclass
class Row:
    """A configuration's results merged over its records (later fields win, dictionaries merge
    entry by entry), and which records gave each field."""

    results: dict = field(default_factory=dict)
    origin: dict[str, list[dict]] = field(default_factory=dict)

    def get(self, name: str, default: Any = None) -> Any:
        return self.results.get(name, default)

    def sources(self, names: Iterable[str] | None = None) -> list[dict]:
        names = self.origin if names is None else [n for n in names if n in self.origin]
        return _unique_records(rec for n in names for rec in self.origin[n])


def merged(records: list[dict], key: Callable[[dict], Any]) -> dict[Any, Row]:
    """Records merged by key: for data transcribed over several commits, where a later record
    adds a measurement to a configuration measured earlier."""
    rows: dict[Any, Row] = {}
    for rec in records:
        row = rows.setdefault(key(rec["results"]), Row())
        for name, value in rec["results"].items():
            old = row.results.get(name)
            if isinstance(value, dict) and isinstance(old, dict):
                row.results[name] = {**old, **value}
                row.origin[name] = [*row.origin[name], rec]
            else:
                row.results[name] = value
                row.origin[name] = [rec]
    return rows


def _unique_records(records: Iterable[dict]) -> list[dict]:
    seen: dict[int, dict] = {}
    for rec in records:
        seen.setdefault(id(rec), rec)
    return list(seen.values())


# ----------------------------------------------------------------------------------- formatting


def num(x: Any, spec: str | None = None) -> str:
    """A number as recorded (spec None) or formatted; lists joined by ', '; None as ''."""
    if x is None:
        return ""
    if isinstance(x, list):
        return ", ".join(num(v, spec) for v in x)
    if isinstance(x, bool) or not isinstance(x, (int, Decimal)):
        return str(x)
    return format(x, spec) if spec else str(x)


def pct(x: Any, spec: str | None = None) -> str:
    return "" if x is None else f"{num(x, spec)} %"


def secs(x: Any, spec: str | None = None) -> str:
    return "" if x is None else f"{num(x, spec)} s"


def plural(n: Any, word: str) -> str:
    return f"{num(n)} {word}{'' if n == 1 else 's'}"


def cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def md_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(cell(h) for h in header) + " |"]
    lines.append("|" + " --- |" * len(header))
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _uniq(values: Iterable[Any]) -> list[Any]:
    out: list[Any] = []
    for v in values:
        if v is not None and v not in out:
            out.append(v)
    return out


def command_text(command: Any) -> str | None:
    if command is None:
        return None
    if isinstance(command, str):
        return command
    argv = [str(a) for a in command]
    text = shlex.join(argv)
    return f"python {text}" if argv and argv[0].endswith(".py") else text


def machine_text(machine: Any) -> str | None:
    if not isinstance(machine, dict):
        return None if machine is None else str(machine)
    cpu, gpu = machine.get("cpu"), machine.get("gpu")
    if cpu and gpu:
        return f"{cpu}, GPU: {gpu}"
    return cpu or gpu or None


def caption(records: list[dict]) -> str:
    """One line naming where a table's numbers come from: commands, commits, versions, machines,
    threads, dates, and for transcribed records the README they were copied from."""
    if not records:
        return ""
    records = sorted(records, key=lambda r: str(r["date"] or ""))

    def listing(name: str, values: list[Any], none: str = "not recorded") -> str:
        """The distinct values, in date order; `none` alone when no record has one, and after
        the others when only some lack it."""
        known = _uniq(None if v is None else str(v) for v in values)
        if not known:
            return f"{name}: {none}"
        if any(v is None for v in values):
            known.append(f"{none} (for the rest)")
        plural = name + ("s" if len(known) > 1 and name in ("command", "commit", "machine") else "")
        return f"{plural}: {'; '.join(known)}"

    commands = [command_text(r["command"]) for r in records]
    commits = [
        (r["commit"][:7] + (" (with uncommitted changes)" if r["dirty"] else ""))
        if r["commit"]
        else None
        for r in records
    ]
    dates = sorted(_uniq(str(r["date"])[:10] if r["date"] else None for r in records))
    parts = [
        listing("command", [c and f"`{c}`" for c in commands], "not stated"),
        listing("commit", commits, "not in a git checkout"),
        listing("vaegen", [r["vaegen"] for r in records]),
        listing("torch", [r["torch"] for r in records]),
        listing("machine", [machine_text(r["machine"]) for r in records]),
        listing("threads", [r["threads"] for r in records]),
        listing("cores", [r["cores"] for r in records]),
        "date" + (f"s: {dates[0]} to {dates[-1]}" if len(dates) > 1 else f": {dates[0]}")
        if dates
        else "date: not recorded",
    ]
    sources = _uniq(r.get("source") for r in records)
    readme = [s.removeprefix("README.md at ") for s in sources if s.startswith("README.md at ")]
    others = [s for s in sources if not s.startswith("README.md at ")]
    if readme:
        parts.append("transcribed from README.md at " + ", ".join(readme))
    parts += [f"source: {s}" for s in others]
    return "*Recorded* " + " · ".join(parts) + "."


def block(table: str, notes: Iterable[str], records: list[dict]) -> str:
    """A table, its notes (one paragraph each) and its caption line."""
    paragraphs = [table, *[n for n in notes if n], caption(records)]
    return "\n\n".join(p for p in paragraphs if p)


# --------------------------------------------------------------------------------------- tables


@dataclass(frozen=True)
class Table:
    name: str
    stems: tuple[str, ...]
    render: Callable[[Records], str]
    how: str  # how to add a record: the command, or where the numbers come from


TABLES: dict[str, Table] = {}


def table(name: str, *stems: str, how: str) -> Callable:
    def register(fn: Callable[[Records], str]) -> Callable[[Records], str]:
        TABLES[name] = Table(name, stems or (name,), fn, how)
        return fn

    return register


# The benchmarks' pages, in the order the index lists them: stem -> (title, what it measures).
PAGES: dict[str, tuple[str, str]] = {
    "epoch_speed": (
        "One epoch, four ways",
        "one training epoch on a CPU: the article's pipeline, a plain loop and vaegen",
    ),
    "whole_run": (
        "Whole runs",
        "whole training runs on a CPU, start-up, test passes and checkpoints included",
    ),
    "conv_cpu_speed": (
        "The conv model on a CPU",
        "the conv model's speed by memory layout, oneDNN and batch size",
    ),
    "side_by_side": (
        "Two trainings on one machine",
        "two trainings side by side against one alone, by OpenMP spin count",
    ),
    "ddp_cpu": (
        "Several processes on a CPU",
        "DistributedDataParallel in two processes against one process on the same cores",
    ),
    "gpu_speed": (
        "Training speed on a GPU",
        "images per second of each training step on a CUDA GPU",
    ),
    "gpu_whole_run": (
        "The default run on a GPU",
        "the 50-epoch default run on a GPU, before and after the CUDA-graph step",
    ),
    "folder_cache": ("The folder cache", "loading an image folder decoded against from the cache"),
    "own_images_loss": (
        "Small images and the loss",
        "which loss keeps the latent of small images (8 × 8 digits) from collapsing",
    ),
    "evaluate_runs": (
        "Three 50-epoch runs evaluated",
        "`vaegen evaluate` on the article's model and two conditional ones",
    ),
    "evaluate_binarized": (
        "Binarised likelihoods",
        "Bernoulli models scored on binarised test images, against the published NLL",
    ),
    "prior_comparison": (
        "Which prior",
        "the latent prior samples are drawn from: N(0, I), mixtures, a second-stage VAE",
    ),
    "synth_evaluate": (
        "The simulated-data recipe",
        "`vaegen evaluate` on `--preset synth`, its other priors and earlier recipes",
    ),
    "synth_ablation": (
        "The recipe's ingredients",
        "the simulated-data recipe built one ingredient at a time",
    ),
    "certificate": (
        "The certificate",
        "`vaegen evaluate`'s certificate of `--preset synth` and the article's CVAE, and its time "
        "with a cold and a warm cache",
    ),
    "file_safety_campaign": (
        "The file-safety campaign",
        "kills, races, planted links and a full disk against vaegen's files",
    ),
}


def _empty(t: Table) -> str:
    files = ", ".join(f"benchmarks/results/{s}.jsonl" for s in t.stems)
    return f"*No records yet in {files}: {t.how}.*"


def render_table(name: str, records: Records) -> str:
    t = TABLES[name]
    if not any(records.get(s) for s in t.stems):
        return _empty(t)
    return t.render(records)


# ----- speed on a CPU

EPOCH_PIPELINES = {
    "a": "(a) the article: per-image Dataset (PIL → tensor per item) + DataLoader",
    "b": "(b) plain loop over one in-memory tensor, stock Adam",
    "c": "(c) `vaegen train`",
    "d": "(d) `vaegen train` with autograd's step instead of its own",
}


@table("epoch_speed", how="`python benchmarks/epoch_speed.py` appends one")
def render_epoch_speed(records: Records) -> str:
    rec = records["epoch_speed"][-1]
    r = rec["results"]
    rows = [
        [
            EPOCH_PIPELINES.get(p["pipeline"], p["pipeline"]),
            f"{num(p['epoch_s_median'], '.2f')} ({num(p['epoch_s_min'], '.2f')})",
            f"{num(p['vs_a_median'], '.2f')}x ({num(p['vs_a_of_minima'], '.2f')}x)",
            f"{num(p['vs_b_median'], '.2f')}x ({num(p['vs_b_of_minima'], '.2f')}x)",
            num(p["gflops_at_min"], ".0f"),
            pct(p["matmul_rate_pct"], ".0f"),
        ]
        for p in r["pipelines"]
    ]
    header = [
        "pipeline",
        "s/epoch, median (min)",
        "time vs (a): median (of minima)",
        "time vs (b): median (of minima)",
        "GFLOP/s at the minimum",
        "of the matmul rate",
    ]
    run = (
        f"{plural(r['rounds'], 'round')} of {num(r['images'], ',')} images, batch {r['batch_size']}"
    )
    if r.get("matmul_gflops_best") is not None:
        run += f"; float32 matrix multiply at up to {num(r['matmul_gflops_best'], '.0f')} GFLOP/s"
    if r.get("note"):
        run += f"; {r['note']}"
    return block(md_table(header, rows), [run + "."], [rec])


@table("whole_run", how="`python benchmarks/whole_run.py` appends one")
def render_whole_run(records: Records) -> str:
    names = {"a": "(a) the article", "b": "(b) plain loop", "c": "(c) `vaegen train`"}
    shown = latest(records["whole_run"], lambda r: r["epochs"])
    rows, notes = [], []
    for rec in shown:
        r = rec["results"]
        for i, p in enumerate(r["pipelines"]):
            ratio_a = p.get("vs_a")
            ratio_b = p.get("vs_b")
            rows.append(
                [
                    f"{plural(r['epochs'], 'epoch')}, {plural(r['rounds'], 'round')}"
                    if i == 0
                    else "",
                    names.get(p["pipeline"], p["pipeline"]),
                    secs(p.get("whole_s"), ".1f"),
                    secs(p.get("early_epoch_s"), ".2f"),
                    secs(p.get("late_epoch_s"), ".2f"),
                    "" if ratio_a is None else f"{num(ratio_a, '.2f')}x",
                    "" if ratio_b is None else f"{num(ratio_b, '.2f')}x",
                ]
            )
        drift = [
            f"{names.get(p['pipeline'], p['pipeline'])}'s epochs went from "
            f"{secs(p['first_epoch_s'])} to {secs(p['last_epoch_s'])} over the run"
            for p in r["pipelines"]
            if p.get("first_epoch_s") is not None
        ]
        said = [n for n in (r.get("note"), *drift) if n]
        if said:
            notes.append(f"{r['epochs']} epochs: {'; '.join(said)}.")
    header = [
        "run",
        "pipeline",
        "whole run (median)",
        "early epochs (1-3)",
        "late epochs (last 3)",
        "time vs (a)",
        "time vs (b)",
    ]
    return block(md_table(header, rows), [" ".join(notes)], shown)


@table("conv_cpu_speed", how="the numbers come from a measurement made by hand")
def render_conv_cpu_speed(records: Records) -> str:
    rec = records["conv_cpu_speed"][-1]
    r = rec["results"]

    def ips(b: dict, layout: str) -> str:
        value = num(b.get(f"{layout}_images_per_s"), ".0f")
        epoch = b.get(f"{layout}_epoch_s")
        return value + (f" ({num(epoch, '.1f')} s an epoch)" if epoch is not None else "")

    rows = [
        [
            b["batch"],
            ips(b, "nchw"),
            ips(b, "channels_last"),
            ips(b, "onednn_off"),
            ips(b, "channels_last_onednn_off"),
        ]
        for b in r["batches"]
    ]
    header = [
        "batch",
        "NCHW, oneDNN on (vaegen)",
        "channels-last",
        "oneDNN off",
        "channels-last, oneDNN off",
    ]
    return block(md_table(header, rows), [f"{r['model']}; {r['unit']}."], [rec])


@table("side_by_side", how="`python benchmarks/side_by_side.py` appends one")
def render_side_by_side(records: Records) -> str:
    rec = records["side_by_side"][-1]
    r = rec["results"]
    rows = [
        [
            f"{num(s['spin_count'], ',')} ({s['name']})",
            secs(s["alone_s"], ".1f"),
            secs(s["together_s"], ".1f"),
            ", ".join(f"{num(v)}x" for v in s["together_over_alone"]),
        ]
        for s in r["spin_counts"]
    ]
    header = [
        "OpenMP spin count (`GOMP_SPINCOUNT`)",
        "one alone",
        "two together",
        "two together ÷ one alone",
    ]
    run = f"{r['epochs']}-epoch trainings, {plural(r['rounds'], 'round')} (one value a round)."
    return block(md_table(header, rows), [run], [rec])


@table("ddp_cpu", how="the numbers come from a measurement made by hand")
def render_ddp_cpu(records: Records) -> str:
    shown = latest(records["ddp_cpu"], lambda r: (r["processes"], r["threads_per_process"]))
    rows = [
        [
            f"{r['processes']} process{'es' if r['processes'] != 1 else ''} × "
            f"{r['threads_per_process']} thread{'s' if r['threads_per_process'] != 1 else ''}",
            secs(r["epoch_s"]),
        ]
        for r in (rec["results"] for rec in shown)
    ]
    return block(md_table(["processes × threads each", "one epoch"], rows), [], shown)


# ----- speed on a GPU

GPU_MODELS = {"article": "the article's", "conv": "conditional conv (16-D, Bernoulli)"}


def _ips(value: Any) -> str:
    if isinstance(value, list):
        return "–".join(num(v, ",.0f") for v in value)
    return num(value, ",.0f")


@table("gpu_speed", how="`python benchmarks/gpu_speed.py` appends one")
def render_gpu_speed(records: Records) -> str:
    shown = latest(records["gpu_speed"], lambda r: r.get("label", ""))
    columns: list[tuple[str, str, str]] = []  # (header, label, step)
    cells: dict[tuple[str, str], dict[tuple[str, str], str]] = {}
    plain = [rec for rec in shown if any(x["step"] == "plain loop" for x in rec["results"]["rows"])]
    if plain:
        columns.append(("plain PyTorch loop", plain[-1]["results"].get("label", ""), "plain loop"))
    for rec in shown:
        label = rec["results"].get("label", "")
        steps = _uniq(x["step"] for x in rec["results"]["rows"] if x["step"] != "plain loop")
        named = f"vaegen {label}:" if label else "vaegen"
        columns += [(f"{named} `{s}`", label, s) for s in steps]
        for x in rec["results"]["rows"]:
            key = (x["model"], x["precision"])
            cells.setdefault(key, {})[(label, x["step"])] = _ips(x["images_per_second"])
    rows = [
        [GPU_MODELS.get(m, m), p, *[cells[(m, p)].get((lab, s), "") for _, lab, s in columns]]
        for m, p in cells
    ]
    epochs = _uniq(rec["results"].get("epochs") for rec in shown)
    notes = [f"Images per second, the median over epochs 2-{'/'.join(map(str, epochs))}."]
    notes += [
        f"{rec['results']['label']}: {rec['results']['note']}."
        for rec in shown
        if rec["results"].get("note")
    ]
    notes += [
        f"The plain loop: {x['note']}."
        for rec in plain
        for x in rec["results"]["rows"]
        if x["step"] == "plain loop" and x.get("note")
    ]
    header = ["model", "precision", *[h for h, _, _ in columns]]
    return block(md_table(header, rows), [" ".join(notes)], shown)


@table("gpu_whole_run", how="the numbers come from `vaegen train --device cuda` runs")
def render_gpu_whole_run(records: Records) -> str:
    shown = latest(records["gpu_whole_run"], lambda r: (r.get("label"), r.get("precision")))
    rows = [
        [
            r.get("label", ""),
            r.get("precision", ""),
            f"`{r['step']}`" if r.get("step") else "",
            secs(r.get("whole_s")),
            secs(r.get("steps_s")),
            secs(r.get("epoch_s")),
            num(r.get("test_loss")),
        ]
        for r in (rec["results"] for rec in shown)
    ]
    notes = [
        f"{r.get('label')}, {r.get('precision')}: {r['note']}."
        for r in (rec["results"] for rec in shown)
        if r.get("note")
    ]
    header = [
        "vaegen",
        "precision",
        "step",
        "whole run",
        "training steps",
        "an epoch's steps",
        "test loss, last epoch",
    ]
    epochs = _uniq(rec["results"].get("epochs") for rec in shown)
    run = f"{'/'.join(map(str, epochs))} epochs, the default model. " + " ".join(notes)
    return block(md_table(header, rows), [run], shown)


# ----- data


@table("folder_cache", how="`python benchmarks/folder_cache.py` appends one")
def render_folder_cache(records: Records) -> str:
    shown = latest(records["folder_cache"], lambda r: (r["n"], r.get("size")))
    rows = []
    for r in (rec["results"] for rec in shown):
        what = r.get("images") or f"PNGs of {r['size']} × {r['size']} RGB"
        entry = r.get("entry_mb")
        rows.append(
            [
                f"{num(r['n'], ',')} {what}",
                secs(r.get("decode_s")),
                secs(r.get("first_load_s")),
                secs(r.get("cached_s")),
                "" if entry is None else f"{num(entry, '.1f')} MB",
            ]
        )
    header = [
        "images",
        "decoded (cache off)",
        "first load (decode and store)",
        "from the cache",
        "cache entry",
    ]
    return block(md_table(header, rows), [], shown)


LOSS_NOTES = {
    "gaussian": "the article's",
    "gaussian-sigma": "σ learned by gradient",
    "gaussian-optimal-sigma": "the default here",
}


@table("own_images_loss", how="the numbers come from `vaegen train --data digits.npz` runs")
def render_own_images_loss(records: Records) -> str:
    shown = latest(records["own_images_loss"], lambda r: (r["loss"], r["latent_dim"]))
    rows = []
    for r in (rec["results"] for rec in shown):
        d = r["latent_dim"]
        label = f"`{r['loss']}`" if d == 2 else f"`{r['loss']} --latent-dim {d}`"
        if d == 2 and r["loss"] in LOSS_NOTES:
            label += f" ({LOSS_NOTES[r['loss']]})"
        spread_notes = []
        if r.get("spread_other_seeds"):
            seeds = r["spread_other_seeds"]
            spread_notes.append(f"{num(list(seeds.values()))} with seeds {', '.join(seeds)}")
        least = r.get("spread_least_class")
        if least is not None:
            spread_notes.append(
                "least class "
                + ("-".join(num(v) for v in least) if isinstance(least, list) else num(least))
            )
        spread = num(r["spread"]) + (f" ({'; '.join(spread_notes)})" if spread_notes else "")
        reads = pct(r["classifier_pct"])
        if r.get("classifier_note"):
            reads += f" ({r['classifier_note']})"
        elif r.get("classifier_least_class_pct") is not None:
            reads += f" (least class {pct(r['classifier_least_class_pct'])})"
        rows.append([label, num(r["kl_nats"]), f"{r['active_dims']} of {d}", spread, reads])
    header = [
        "loss",
        "KL, nats per image",
        "latent dims in use",
        "within-class pixel spread, samples / real",
        "classifier reads the requested digit",
    ]
    data = _uniq(f"{rec['results']['data']}, {rec['results']['epochs']} epochs" for rec in shown)
    return block(md_table(header, rows), ["; ".join(data) + "."], shown)


# ----- quality


def _on(row: Row, name: str, machine_key: str) -> str | None:
    """A time measured on the record's CPU or GPU, named after that machine."""
    value = row.get(name)
    if value is None:
        return None
    machines = [r["machine"].get(machine_key) for r in row.origin[name]]
    return f"{num(value)} s on {machines[-1] or 'the ' + machine_key.upper()}"


@table("evaluate_runs", how="the numbers come from `vaegen evaluate` runs")
def render_evaluate_runs(records: Records) -> str:
    cols = list(merged(records["evaluate_runs"], lambda r: r["run"]).values())

    def times(c: Row, stem: str) -> str:
        parts = [_on(c, f"{stem}_cpu", "cpu"), _on(c, f"{stem}_gpu", "gpu")]
        graph = c.get(f"{stem}_gpu_cuda_graph")
        if graph is not None:
            parts.append(f"{num(graph)} s with the CUDA-graph step")
        return "; ".join(p for p in parts if p)

    def test_loss(c: Row) -> str:
        cpu, gpu = c.get("test_loss_cpu"), c.get("test_loss_gpu")
        if cpu is not None and gpu is not None:
            return f"{num(cpu)} (CPU) / {num(gpu)} (GPU)"
        return num(cpu if cpu is not None else gpu)

    def elbo(c: Row) -> str:
        if c.get("neg_elbo") is None:
            return ""
        return f"{num(c.get('neg_elbo'))} ({num(c.get('recon'))} recon + {num(c.get('kl'))} KL)"

    def tstr(c: Row) -> str:
        if c.get("tstr_ratio") is None:
            return "" if "conditional" in c.get("model", "") else "not conditional"
        synthetic, real = pct(c.get("tstr_synthetic_pct")), pct(c.get("tstr_real_pct"))
        return f"{synthetic} / {real} ({num(c.get('tstr_ratio'))})"

    floor = _uniq(c.get("frechet_floor") for c in cols)
    lines: list[tuple[str, Callable[[Row], str]]] = [
        ("command", lambda c: f"`{command_text(c.origin['model'][0]['command'])}`"),
        ("training time", lambda c: times(c, "train_s")),
        ("test loss (metrics.jsonl, last epoch)", test_loss),
        ("negative ELBO", elbo),
        ("IWAE bound on −log p(x), K = 1000", lambda c: num(c.get("iwae"))),
        (
            "the same as a Gaussian NLL",
            lambda c: (
                f"{num(c.get('gaussian_nll_nats'))} nats"
                if c.get("gaussian_nll_nats") is not None
                else ""
            ),
        ),
        ("latent 5-NN accuracy (chance 10 %)", lambda c: pct(c.get("knn5_pct"))),
        (
            "Frechet distance, generated vs test "
            f"(floor: real train vs test {num(floor[0]) if floor else '?'})",
            lambda c: num(c.get("frechet")),
        ),
        ("train on synthetic / on real, tested on real (ratio)", tstr),
        ("`vaegen evaluate` time", lambda c: times(c, "evaluate_s")),
    ]
    header = ["", *[c.get("model") for c in cols]]
    rows = [[name, *[fn(c) for c in cols]] for name, fn in lines]
    settings = _uniq(c.get("evaluate") for c in cols)
    epochs = _uniq(c.get("epochs") for c in cols)
    notes = [
        f"{'/'.join(map(str, epochs))}-epoch runs; evaluated with " + "; ".join(settings) + "."
    ]
    used = _unique_records(r for c in cols for r in c.sources())
    return block(md_table(header, rows), notes, used)


@table("evaluate_binarized", how="the numbers come from `vaegen evaluate --binarize` runs")
def render_evaluate_binarized(records: Records) -> str:
    shown = latest(records["evaluate_binarized"], lambda r: r["run"])
    cols = [rec["results"] for rec in shown]
    floor = _uniq(c.get("frechet_floor") for c in cols)

    def nats(x: Any) -> str:
        return "" if x is None else f"{num(x)} nats"

    lines: list[tuple[str, Callable[[dict], str]]] = [
        ("training time", lambda c: secs(c.get("train_s"))),
        ("negative ELBO, binarised test", lambda c: nats(c.get("neg_elbo_nats"))),
        (f"IWAE bound, K = {num(cols[0].get('iw_samples'))}", lambda c: nats(c.get("iwae_nats"))),
        ("latent 5-NN accuracy", lambda c: pct(c.get("knn5_pct"))),
        (
            f"Frechet distance (floor {num(floor[0]) if floor else '?'})",
            lambda c: num(c.get("frechet")),
        ),
        ("`vaegen evaluate --binarize` time", lambda c: secs(c.get("evaluate_s"))),
    ]
    header = ["", *[f"`{c['run']}`" for c in cols]]
    rows = [[name, *[fn(c) for c in cols]] for name, fn in lines]
    epochs = _uniq(c.get("epochs") for c in cols)
    notes = [
        f"{'/'.join(map(str, epochs))} epochs, trained on grey levels and scored on "
        "stochastically binarised test images. The published plain VAE on binarised "
        "FashionMNIST: about 229 nats."
    ]
    return block(md_table(header, rows), notes, shown)


@table("prior_comparison", how="`python benchmarks/prior_comparison.py RUN` appends one")
def render_prior_comparison(records: Records) -> str:
    shown = latest(records["prior_comparison"], lambda r: r["run"])
    runs = [rec["results"] for rec in shown]
    dims = [r.get("latent_dim") for r in runs]
    labels = [
        f"{d}-D latent" if dims.count(d) == 1 else r["run"] for d, r in zip(dims, runs, strict=True)
    ]
    priors = _uniq(p["prior"] for r in runs for p in r["priors"])
    by_run = [{p["prior"]: p for p in r["priors"]} for r in runs]
    header = ["prior"]
    for label in labels:
        header += [f"{label}: Frechet", "agreement", "fit"]
    rows = []
    for prior in priors:
        row = [prior]
        for table_of_run in by_run:
            p = table_of_run.get(prior, {})
            row += [
                num(p.get("frechet"), ".1f"),
                pct(p.get("agreement_pct"), ".1f"),
                secs(p.get("fit_s")),
            ]
        rows.append(row)
    notes = [
        "Runs: "
        + "; ".join(
            f"{label}: {r['run']}, N = {num(r['n'], ',')} images a prior"
            for label, r in zip(labels, runs, strict=True)
        )
        + "."
    ]
    return block(md_table(header, rows), notes, shown)


SYNTH_TARGETS = {
    "frechet": "≤ 70",
    "frechet_recon": "samples ≤ 2x",
    "agreement": "≥ 90 % in every class",
    "tstr": "≥ 0.95",
    "train": "≤ 15 minutes",
}
PUBLISHED_CVAE = "published CVAE 81.0 % / 86.6 % (0.935)"  # the anchor TSTR compares with


def _classes_below(classes: dict | None, limit: int = 90) -> str:
    if not classes:
        return ""
    return ", ".join(f"{name} {pct(v)}" for name, v in classes.items() if v < limit)


def _model_values(cols: list[Row], names: tuple[str, ...]) -> dict[str, dict[str, tuple[Any, Row]]]:
    """For each model, the model-level measurements (likelihood, 5-NN, training time) whichever
    column of that model recorded them."""
    out: dict[str, dict[str, tuple[Any, Row]]] = {}
    for c in cols:
        for name in names:
            if c.get("model") and c.get(name) is not None:
                out.setdefault(c.get("model"), {})[name] = (c.get(name), c)
    return out


MODEL_LEVEL = ("iwae_nats", "knn5_pct", "train_steps_s")


@table("synth_evaluate", how="the numbers come from `vaegen evaluate` runs")
def render_synth_evaluate(records: Records) -> str:
    rows_by_config = merged(records["synth_evaluate"], lambda r: r["config"])
    cols = [c for c in rows_by_config.values() if not c.get("reference")]
    refs = [c for c in rows_by_config.values() if c.get("reference")]
    models = _model_values(cols, MODEL_LEVEL)
    first_of_model: dict[str, Row] = {}
    for c in cols:
        first_of_model.setdefault(c.get("model"), c)
    real = refs[-1] if refs else Row()

    def model_level(c: Row, name: str, fmt: Callable[[Any], str]) -> str:
        found = models.get(c.get("model"), {}).get(name)
        if found is None:
            return ""
        return fmt(found[0]) if first_of_model[c.get("model")] is c else "the same"

    def training(c: Row) -> str:
        text = model_level(c, "train_steps_s", secs)
        if c.get("prior_fit_s") is not None:
            text += f" (and {secs(c.get('prior_fit_s'))} to fit the prior)"
        return text

    def first(c: Row) -> bool:
        return c is cols[0]

    def recon(c: Row) -> str:
        if c.get("frechet_recon") is None:
            return ""
        ratio = num(c.get("samples_over_recon"))
        what = "samples / reconstructions " if first(c) else ""
        return f"{num(c.get('frechet_recon'))} ({what}{ratio})"

    def tstr(c: Row) -> str:
        if c.get("tstr_ratio") is None:
            return ""
        ratio = num(c.get("tstr_ratio"))
        synthetic, real = pct(c.get("tstr_synthetic_pct")), pct(c.get("tstr_real_pct"))
        return f"{synthetic} / {real} ({'ratio ' if first(c) else ''}{ratio})"

    def nearest(c: Row) -> str:
        if c.get("nearest_median_ratio") is None:
            return ""
        return f"{num(c.get('nearest_median_ratio'))}, {pct(c.get('near_copies_pct'))}"

    half = real.get("recall")
    half_text = (
        f" ({(half / 2).quantize(Decimal('0.001'), ROUND_HALF_UP)})"
        if isinstance(half, Decimal)
        else ""
    )
    real_nearest = "test images 1, 5 %"
    if real.get("recon_nearest_median_ratio") is not None:
        real_nearest += (
            f"; their reconstructions {num(real.get('recon_nearest_median_ratio'))}, "
            f"{pct(real.get('recon_near_copies_pct'))}"
        )
    real_frechet = num(real.get("frechet")) + (
        f" ({real.get('frechet_note')})" if real.get("frechet_note") else ""
    )
    real_pr = (
        f"{num(real.get('precision'))} / {num(real.get('recall'))}"
        if real.get("recall") is not None
        else ""
    )
    real_acc = (
        f"{pct(real.get('test_accuracy_pct'))} (test accuracy)"
        if real.get("test_accuracy_pct") is not None
        else ""
    )
    lines: list[tuple[str, Callable[[Row], str], str, str]] = [
        (
            "Frechet distance of samples to the test set",
            lambda c: num(c.get("frechet")),
            SYNTH_TARGETS["frechet"],
            real_frechet,
        ),
        ("the same for the test set's reconstructions", recon, SYNTH_TARGETS["frechet_recon"], ""),
        (
            "precision / recall (k = 3)",
            lambda c: f"{num(c.get('precision'))} / {num(c.get('recall'))}",
            f"recall ≥ half of real's{half_text}",
            real_pr,
        ),
        (
            "reference classifier's agreement with the requested class",
            lambda c: pct(c.get("agreement_pct")),
            SYNTH_TARGETS["agreement"],
            real_acc,
        ),
        (
            "classes below 90 %",
            lambda c: _classes_below(c.get("classes_pct")),
            "",
            _classes_below(real.get("classes_pct")),
        ),
        (
            "train on synthetic / on real, tested on real",
            tstr,
            SYNTH_TARGETS["tstr"],
            PUBLISHED_CVAE,
        ),
        (
            "nearest training image: median distance / test images', near copies",
            nearest,
            "",
            real_nearest,
        ),
        (
            "IWAE bound, K = 1000 (grey levels, Bernoulli)",
            lambda c: model_level(c, "iwae_nats", lambda v: f"{num(v)} nats"),
            "",
            "",
        ),
        ("latent 5-NN accuracy", lambda c: model_level(c, "knn5_pct", pct), "", ""),
        ("training steps, 50 epochs", training, SYNTH_TARGETS["train"], ""),
    ]
    header = [
        "",
        *[c.get("label", c.get("config")) for c in cols],
        "target",
        real.get("label", "real data"),
    ]
    rows = [[name, *[fn(c) for c in cols], target, ref] for name, fn, target, ref in lines]
    columns = []
    for c in cols:
        text = f"**{c.get('label', c.get('config'))}**: {c.get('model')}; prior {c.get('prior')}"
        if c.get("note"):
            text += f"; {c.get('note')}"
        columns.append(f"- {text}.")
    settings = _uniq(
        f"N = {num(c.get('n_generated'), ',')} generated images, K = {num(c.get('iw_samples'))}"
        for c in cols
    )
    notes = ["Every column: " + "; ".join(settings) + ".", "\n".join(columns)]
    used = _unique_records(r for c in [*cols, *refs] for r in c.sources())
    return block(md_table(header, rows), notes, used)


ABLATION_MARKS = ("*", "†", "‡", "§")


@table("synth_ablation", how="`python benchmarks/synth_ablation.py OUT` appends one a row")
def render_synth_ablation(records: Records) -> str:
    shown = latest(records["synth_ablation"], lambda r: r["name"])
    marks: dict[str, str] = {}
    rows, refs = [], []
    for r in (rec["results"] for rec in shown):
        if r.get("reference"):
            refs.append(
                f"{r['name'].capitalize()} (N = {num(r['n'], ',')}) reach precision "
                f"{num(r['precision'], '.3f')} and recall {num(r['recall'], '.3f')}."
            )
            continue
        mark = ""
        if r.get("note"):
            mark = " " + marks.setdefault(
                r["note"], ABLATION_MARKS[len(marks) % len(ABLATION_MARKS)]
            )
        train = secs(r.get("train_s"), ".0f")
        if r.get("prior_s") is not None:
            train += f" + {secs(r['prior_s'], '.0f')}"
        name = ("&nbsp;" * 4 if r.get("variant") else "") + r["name"]
        rows.append(
            [
                name,
                num(r.get("frechet"), ".1f"),
                num(r.get("frechet_recon"), ".1f"),
                f"{num(r.get('precision'), '.3f')} / {num(r.get('recall'), '.3f')}",
                f"{pct(r.get('agreement_pct'), '.1f')} "
                f"({r.get('worst_class')} {pct(r.get('worst_class_pct'), '.1f')})",
                train + mark,
            ]
        )
    header = [
        "row",
        "Frechet: samples",
        "Frechet: test reconstructions",
        "precision / recall",
        "agreement (worst class)",
        "training time",
    ]
    escaped = {"*": "\\*"}  # a paragraph starting with "* " would be a list
    footnotes = " ".join(
        f"{escaped.get(m, m)} {note[0].upper()}{note[1:]}." for note, m in marks.items()
    )
    ns = _uniq(rec["results"].get("n") for rec in shown)
    run = (
        f"N = {'/'.join(num(n, ',') for n in ns)} samples a row; training time is the sum of "
        "the epochs' step times, and + the prior's fit where it was timed."
    )
    return block(md_table(header, rows), [footnotes, " ".join([run, *refs])], shown)


# ----- the certificate


def _interval(m: dict | None) -> str:
    if not m:
        return "—"
    if m.get("low") is None:
        return num(m.get("value"), ".4g")
    return f"{m['value']:.4g} [{m['low']:.4g}, {m['high']:.4g}]"


@table("certificate", how="`python benchmarks/certificate.py RUN --label NAME` appends one")
def render_certificate(records: Records) -> str:
    shown = latest(records["certificate"], lambda r: r["label"])
    labels = [rec["results"]["label"] for rec in shown]
    warm = [rec["results"]["passes"]["warm"] for rec in shown]
    measures: dict[str, dict[str, Any]] = {}
    for label, p in zip(labels, warm, strict=True):
        for m in p["certificate"]:
            row = measures.setdefault(m["measure"], {"name": m["name"], "floor": m.get("floor")})
            row[label] = m
            row["ideal"] = m.get("ideal")
    rows = []
    for row in measures.values():
        floor = _interval(row["floor"]) if row["floor"] else num(row["ideal"])
        cells = []
        for label in labels:
            m = row.get(label)
            verdict = m["reading"].split(": ", 1)[-1] if m else ""
            cells.append(f"{_interval(m)}: {verdict}" if m else "—")
        rows.append([row["name"], *cells, floor])
    cert = md_table(["measure", *labels, "real data"], rows)
    parts = ("likelihood", "tstr", "precision_recall", "frechet", "nearest_training")
    timing_rows = []
    for label, rec in zip(labels, shown, strict=True):
        for name, p in rec["results"]["passes"].items():
            sec = p["seconds"]
            rest = sec["total"] - sum(sec.get(k, 0) for k in parts)
            timing_rows.append(
                [
                    label,
                    name,
                    secs(p["wall_s"], ".0f"),
                    *[secs(sec.get(k), ".0f") for k in parts],
                    secs(rest, ".0f"),
                ]
            )
    timing = md_table(
        [
            "run",
            "cache",
            "evaluate",
            "likelihood",
            "TSTR",
            "precision/recall",
            "Frechet",
            "nearest",
            "the rest",
        ],
        timing_rows,
    )
    n = _uniq(p["n"] for p in warm)
    k = _uniq(p["iw_samples"] for p in warm)
    notes = [
        f"N = {', '.join(map(str, n))} generated images, IWAE K = {', '.join(map(str, k))}; 95 % "
        "intervals. Real data: the same measure of N real training images against the test "
        "images (memorisation: fresh test images; near copies: 0.05 by construction). The "
        "readings compare the intervals ([Metrics](../metrics.md#the-certificate)).",
        timing,
        "Seconds of `vaegen evaluate`: cold with an empty cache, warm with the real side kept "
        "by the cold pass (a run of another model on the same data finds it too). The "
        "likelihood (the IWAE bound: K decoder passes per test image) and TSTR's classifiers "
        "trained on the generated images depend on the run and are measured every time.",
        *(
            f"{rec['results']['label']}: {rec['results']['note']}."
            for rec in shown
            if rec["results"].get("note")
        ),
    ]
    return block(cert, notes, shown)


# ----- files


@table("file_safety_campaign", how="`python benchmarks/file_safety_campaign.py` appends one")
def render_file_safety_campaign(records: Records) -> str:
    rec = records["file_safety_campaign"][-1]
    r = rec["results"]
    outcomes = ("passed", "failed", "skipped", "error")
    rows = [
        [f"`{case}`", *[counts.get(o, 0) for o in outcomes]]
        for case, counts in sorted(r["cases"].items())
    ]
    rows.append(["all", *[sum(c.get(o, 0) for c in r["cases"].values()) for o in outcomes]])
    form = "quick form" if r.get("quick") else "full form"
    how = f"{form}, seed {r.get('seed')}, {r.get('jobs')} cases at once"
    return block(md_table(["case", *outcomes], rows), [how + "."], [rec])


# ----- the headline and the index

# The README's comparison: the article's conditional VAE and `--preset synth`, two rows of the
# ablation, so that both are scored the same way (the same script, N and machine).
HEADLINE_ROWS = {
    "article CVAE, N(0, I)": "article CVAE, N(0, I)",
    "+ 50 epochs (--preset synth)": "`--preset synth`",
}


@table("headline", "synth_ablation", how="`python benchmarks/synth_ablation.py OUT` appends them")
def render_headline(records: Records) -> str:
    shown = [
        rec
        for rec in latest(records["synth_ablation"], lambda r: r["name"])
        if rec["results"]["name"] in HEADLINE_ROWS
    ]
    rows = []
    for r in (rec["results"] for rec in shown):
        train = secs(r.get("train_s"), ".0f")
        if r.get("prior_s") is not None:
            train += f" + {secs(r['prior_s'], '.0f')} prior fit"
        rows.append(
            [
                f"{HEADLINE_ROWS[r['name']]}, {plural(r['epochs'], 'epoch')}",
                num(r.get("frechet"), ".1f"),
                num(r.get("frechet_recon"), ".1f"),
                f"{num(r.get('precision'), '.3f')} / {num(r.get('recall'), '.3f')}",
                f"{pct(r.get('agreement_pct'), '.1f')} "
                f"({r.get('worst_class')} {pct(r.get('worst_class_pct'), '.1f')})",
                train,
            ]
        )
    header = [
        "model",
        "Frechet: samples",
        "Frechet: test reconstructions",
        "precision / recall",
        "agreement (worst class)",
        "training time",
    ]
    return block(md_table(header, rows), [], shown)


@table("index", *PAGES, how="no results are recorded yet")
def render_index(records: Records) -> str:
    rows = []
    for stem, (title, what) in PAGES.items():
        recs = records.get(stem, [])
        dates = sorted(_uniq(str(r["date"])[:10] for r in recs if r["date"]))
        when = (
            (dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]}") if dates else "none yet"
        )
        rows.append([f"[{title}]({stem}.md)", what, len(recs), when])
    return md_table(["results", "what they measure", "records", "measured"], rows)


# ------------------------------------------------------------------------------------ documents


def _is_fence(line: str) -> bool:
    return line.lstrip().startswith(("```", "~~~"))


def render_text(text: str, records: Records, where: str) -> tuple[str, list[str]]:
    """text with every results block's content replaced by a fresh render, and the tables it
    shows; `where` names the file in errors."""
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    names: list[str] = []
    fenced = False
    i = 0
    while i < len(lines):
        line, stripped = lines[i], lines[i].strip()
        i += 1
        if _is_fence(line):
            fenced = not fenced
        if fenced or not stripped.startswith(("<!-- results", "<!-- /results")):
            out.append(line)
            continue
        if stripped == END:
            raise ResultsError(f"{where}:{i}: {END} without a <!-- results:NAME --> before it")
        start = START.fullmatch(stripped)
        if not start:
            raise ResultsError(
                f"{where}:{i}: a malformed marker {stripped!r} (write <!-- results:NAME -->)"
            )
        name = start.group(1)
        if name not in TABLES:
            raise ResultsError(
                f"{where}:{i}: unknown results table {name!r} (the tables: {', '.join(TABLES)})"
            )
        end = i
        while end < len(lines) and lines[end].strip() != END:
            if lines[end].strip().startswith("<!-- results"):
                break
            end += 1
        if end == len(lines) or lines[end].strip() != END:
            raise ResultsError(f"{where}:{i}: <!-- results:{name} --> has no {END} after it")
        out += [line, render_table(name, records) + "\n", lines[end]]
        names.append(name)
        i = end + 1
    return "".join(out), names


def markdown_files(root: Path) -> list[Path]:
    """The files searched for results blocks: the top-level *.md and every *.md under docs/."""
    return sorted(root.glob("*.md")) + sorted((root / "docs").rglob("*.md"))


def render_all(
    root: Path = ROOT, results_dir: Path | None = None, files: list[Path] | None = None
) -> dict[Path, str]:
    """Every Markdown file holding results blocks, with its fresh text. Checks, when `files` is
    None, that every results file is rendered by a table, that every benchmark has its page
    holding its table, and that every table appears somewhere."""
    root = Path(root)
    records = load_records(root / RESULTS_DIR if results_dir is None else Path(results_dir))
    rendered = {s for t in TABLES.values() for s in t.stems}
    for stem in records:
        if stem not in rendered:
            raise ResultsError(
                f"{RESULTS_DIR / (stem + '.jsonl')}: no table renders it "
                "(add one to scripts/render_results.py)"
            )
    paths = markdown_files(root) if files is None else [Path(f) for f in files]
    out: dict[Path, str] = {}
    shown: dict[Path, list[str]] = {}
    for path in paths:
        where = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
        fresh, names = render_text(path.read_text(encoding="utf-8"), records, where)
        if names:
            out[path], shown[path] = fresh, names
    if files is None:
        for stem in [*PAGES, "index"]:
            page = root / PAGES_DIR / f"{stem}.md"
            if stem not in shown.get(page, []):
                raise ResultsError(
                    f"{page.relative_to(root)}: missing, or without its "
                    f"<!-- results:{stem} --> block"
                )
        unshown = [name for name in TABLES if all(name not in n for n in shown.values())]
        if unshown:
            raise ResultsError(f"tables rendered in no Markdown file: {', '.join(unshown)}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="*", type=Path, help="only these Markdown files")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file is stale")
    p.add_argument("--results", type=Path, help="the records' folder (default benchmarks/results)")
    p.add_argument("--root", type=Path, default=ROOT, help="the repository (default: this one)")
    args = p.parse_args(argv)
    root = args.root.resolve()
    try:
        fresh = render_all(root, args.results, [f.resolve() for f in args.files] or None)
    except (ResultsError, OSError) as e:
        print(f"render_results: error: {e}", file=sys.stderr)
        return 2
    stale = [path for path, text in fresh.items() if path.read_text(encoding="utf-8") != text]
    for path in stale:
        name = path.relative_to(root) if path.is_relative_to(root) else path
        if args.check:
            print(
                f"{name}: its results blocks differ from the records "
                "(run scripts/render_results.py)"
            )
        else:
            atomic_write_text(path, fresh[path])  # never half a page, nor through a link
            print(f"rewrote {name}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())

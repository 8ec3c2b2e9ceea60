"""Measurements as data: every results table in the documentation is rendered from the records in
benchmarks/results/*.jsonl (scripts/render_results.py), so a table can never drift from its data,
and every record says where its numbers come from."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


render = load(ROOT / "scripts" / "render_results.py")
record = load(ROOT / "benchmarks" / "record.py")

HEX40 = re.compile(r"[0-9a-f]{40}")


def test_every_rendered_table_equals_a_fresh_render_of_its_records():
    """docs/results/*.md, README.md's headline and any other results block are exactly what the
    records render today: after a change to a record or to the renderer, `make results`."""
    fresh = render.render_all(ROOT)
    assert ROOT / "docs" / "results" / "index.md" in fresh
    stale = [
        str(path.relative_to(ROOT))
        for path, text in fresh.items()
        if path.read_text(encoding="utf-8") != text
    ]
    assert not stale, f"stale results tables in {', '.join(stale)}: run `make results`"


def test_every_benchmark_has_its_page_and_every_results_file_its_table():
    stems = {path.stem for path in RESULTS.glob("*.jsonl")}
    assert stems <= set(render.PAGES)
    for stem in render.PAGES:
        page = (ROOT / "docs" / "results" / f"{stem}.md").read_text(encoding="utf-8")
        assert f"<!-- results:{stem} -->" in page
        assert page.startswith("# "), f"{stem}.md: a page starts with its title"
    scripts = {p.stem for p in (ROOT / "benchmarks").glob("*.py")} - {"record"}
    assert scripts <= set(render.PAGES), "a benchmark without its results page"


def _bump_numbers(value):
    """Every number in a record's results, plus 1000 (keys and strings left alone)."""
    if isinstance(value, dict):
        return {k: _bump_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_bump_numbers(v) for v in value]
    if isinstance(value, (int, Decimal)) and not isinstance(value, bool):
        return value + 1000
    return value


@pytest.mark.parametrize("name", [n for n in render.TABLES if n != "index"])
def test_a_table_shows_its_records_numbers(name):
    """Changing the numbers of a table's records changes the table: nothing in it is typed in."""
    records = render.load_records(RESULTS)
    if not any(records.get(stem) for stem in render.TABLES[name].stems):
        pytest.skip(f"no records for {name} yet")
    bumped = {
        stem: [{**rec, "results": _bump_numbers(rec["results"])} for rec in recs]
        for stem, recs in records.items()
    }
    assert render.render_table(name, bumped) != render.render_table(name, records)


def test_changing_a_number_in_a_copy_of_a_record_changes_the_rendered_page(tmp_path, capsys):
    """The renderer takes the results folder and the repository as parameters: a copy of both,
    one number changed, is stale under --check, and rendering rewrites only the block."""
    root = tmp_path / "repo"
    shutil.copytree(RESULTS, root / "benchmarks" / "results")
    shutil.copytree(ROOT / "docs" / "results", root / "docs" / "results")
    readme = root / "README.md"
    readme.write_text(
        "# vaegen\n\nHand-written text.\n\n<!-- results:headline -->\nold\n<!-- /results -->\n\n"
        "More text.\n",
        encoding="utf-8",
    )
    assert render.main(["--root", str(root)]) == 0  # fills the README's block
    assert render.main(["--root", str(root), "--check"]) == 0
    page = root / "docs" / "results" / "epoch_speed.md"
    assert "| 4.26 (4.02) |" in page.read_text(encoding="utf-8")

    jsonl = root / "benchmarks" / "results" / "epoch_speed.jsonl"
    text = jsonl.read_text(encoding="utf-8")
    assert text.count('"epoch_s_median": 4.26,') == 1
    jsonl.write_text(text.replace('"epoch_s_median": 4.26,', '"epoch_s_median": 4.31,'))
    capsys.readouterr()
    assert render.main(["--root", str(root), "--check"]) == 1
    out = capsys.readouterr().out
    assert "docs/results/epoch_speed.md" in out and "README.md" not in out
    assert "| 4.26 (4.02) |" in page.read_text(encoding="utf-8")  # --check writes nothing

    before = page.read_text(encoding="utf-8")
    assert render.main(["--root", str(root)]) == 0
    after = page.read_text(encoding="utf-8")
    assert "| 4.31 (4.02) |" in after and "4.26 (4.02)" not in after
    assert after.split("<!-- results:")[0] == before.split("<!-- results:")[0]  # the intro
    assert render.main(["--root", str(root), "--check"]) == 0

    headline = readme.read_text(encoding="utf-8")
    assert headline.startswith("# vaegen\n\nHand-written text.\n\n<!-- results:headline -->\n")
    assert headline.endswith("<!-- /results -->\n\nMore text.\n")
    assert "| `--preset synth`, 50 epochs | 17.3 |" in headline


def _repo_with(tmp_path: Path, text: str) -> Path:
    doc = tmp_path / "docs" / "page.md"
    doc.parent.mkdir(parents=True)
    doc.write_text(text, encoding="utf-8")
    return doc


def test_a_marker_without_its_end_is_an_error_naming_the_file_and_line(tmp_path, capsys):
    doc = _repo_with(tmp_path, "# Page\n\ntext\n<!-- results:epoch_speed -->\n| a |\n\nmore\n")
    with pytest.raises(render.ResultsError, match=r"docs/page\.md:4: .*no <!-- /results -->"):
        render.render_all(tmp_path, RESULTS, [doc])
    assert render.main(["--root", str(tmp_path), "--results", str(RESULTS), str(doc)]) == 2
    assert "docs/page.md:4" in capsys.readouterr().err
    assert doc.read_text(encoding="utf-8").count("| a |") == 1  # nothing written


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x\n<!-- results:no_such_table -->\n<!-- /results -->\n", r":2: unknown .*no_such_table"),
        ("x\n\n<!-- /results -->\n", r":3: <!-- /results --> without"),
        ("<!-- results:epoch_speed -->\n<!-- results:whole_run -->\n<!-- /results -->\n", r":1: "),
        ("<!-- results: epoch_speed -->\n<!-- /results -->\n", r":1: a malformed marker"),
    ],
)
def test_unknown_tables_and_stray_markers_are_errors(tmp_path, text, message):
    doc = _repo_with(tmp_path, text)
    with pytest.raises(render.ResultsError, match=message):
        render.render_all(tmp_path, RESULTS, [doc])


def test_markers_inside_code_blocks_are_left_alone(tmp_path):
    text = "```\n<!-- results:NAME -->\n<!-- /results -->\n```\n"
    doc = _repo_with(tmp_path, text)
    assert render.render_all(tmp_path, RESULTS, [doc]) == {}


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
    except OSError:
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _utc(date: str) -> datetime:
    when = datetime.fromisoformat(date)
    assert when.utcoffset() == timedelta(0), f"{date}: dates are UTC"
    return when


def test_every_record_carries_its_provenance():
    """The command, commit, versions, machine, threads, cores and date of every record; the
    transcribed ones say which README commit they were copied from, and carry that commit's
    hash and date."""
    in_git = _git("rev-parse", "HEAD") is not None
    count = 0
    for path in sorted(RESULTS.glob("*.jsonl")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            where = f"{path.name}:{n}"
            rec = json.loads(line)
            count += 1
            assert set(record.PROVENANCE) <= set(rec), where
            assert rec["benchmark"] == path.stem, where
            assert isinstance(rec["results"], dict) and rec["results"], where
            assert isinstance(rec["machine"], dict) and {"cpu", "gpu"} <= set(rec["machine"])
            assert rec["machine"]["cpu"] or rec["machine"]["gpu"], where
            assert rec["vaegen"], where
            when = _utc(rec["date"])
            if "source" in rec:  # transcribed from the README that published it
                assert HEX40.fullmatch(rec["commit"]), where
                assert rec["source"] == f"README.md at {rec['commit'][:7]}", where
                assert rec["command"] is None or isinstance(rec["command"], str), where
                if in_git:
                    committed = _git("log", "-1", "--format=%cI", rec["commit"])
                    assert committed, f"{where}: commit {rec['commit']} is not in the history"
                    assert datetime.fromisoformat(committed) == when, where
            else:  # appended by benchmarks/record.py
                assert isinstance(rec["command"], list) and rec["command"], where
                assert rec["commit"] is None or HEX40.fullmatch(rec["commit"]), where
                assert rec["dirty"] in (True, False, None), where
                assert rec["torch"] and rec["machine"]["cpu"], where
                assert isinstance(rec["threads"], int) and isinstance(rec["cores"], int), where
    assert count > 0


def test_append_result_appends_one_line_with_its_provenance(tmp_path, monkeypatch):
    import torch

    monkeypatch.setenv("VAEGEN_RESULTS_DIR", str(tmp_path / "records"))
    monkeypatch.setattr(sys, "argv", [str(ROOT / "benchmarks" / "demo.py"), "--rounds", "2"])
    path = record.append_result("demo", {"seconds": 1.25, "rows": [{"n": 3}]})
    assert path == tmp_path / "records" / "demo.jsonl"
    record.append_result("demo", {"seconds": 2.5}, command=["vaegen", "train"])
    first, second = (json.loads(line) for line in path.read_text().splitlines())
    assert list(first)[: len(record.PROVENANCE)] == list(record.PROVENANCE)
    assert first["command"] == ["benchmarks/demo.py", "--rounds", "2"]
    assert second["command"] == ["vaegen", "train"]
    assert first["results"] == {"seconds": 1.25, "rows": [{"n": 3}]}
    assert first["torch"] == torch.__version__ and first["threads"] == torch.get_num_threads()
    assert isinstance(first["cores"], int) and first["machine"]["cpu"]
    import vaegen

    assert first["vaegen"] == vaegen.__version__
    assert first["commit"] == _git("rev-parse", "HEAD")
    assert first["dirty"] in (True, False, None)
    _utc(first["date"])
    assert "source" not in first
    # the renderer reads what the recorder writes
    assert [r["results"]["seconds"] for r in render.load_records(path.parent)["demo"]] == [
        Decimal("1.25"),
        Decimal("2.5"),
    ]


def test_the_tests_never_append_to_the_committed_records():
    """conftest points VAEGEN_RESULTS_DIR at each test's own folder."""
    assert record.results_dir() != RESULTS
    assert not record.results_dir().is_relative_to(ROOT)


def test_a_benchmark_name_is_a_file_stem(tmp_path, monkeypatch):
    monkeypatch.setenv("VAEGEN_RESULTS_DIR", str(tmp_path))
    for bad in ("", "../x", "a/b", ".hidden"):
        with pytest.raises(ValueError):
            record.append_result(bad, {"x": 1})
    assert list(tmp_path.iterdir()) == []


def test_every_benchmark_records_what_it_measures():
    """Each script in benchmarks/ appends its measurements to benchmarks/results/<name>.jsonl."""
    for script in sorted((ROOT / "benchmarks").glob("*.py")):
        if script.stem == "record":
            continue
        text = script.read_text(encoding="utf-8")
        assert "from record import append_result" in text, script.name
        assert re.search(rf'append_result\(\s*"{script.stem}"', text), script.name

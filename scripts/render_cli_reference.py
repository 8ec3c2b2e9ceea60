"""Write docs/cli.md from vaegen's argument parser (tests/test_cli_reference.py checks that the
committed page equals what this writes)."""

from __future__ import annotations

from pathlib import Path

from vaegen.cli import cli_reference

PAGE = Path(__file__).resolve().parents[1] / "docs" / "cli.md"

if __name__ == "__main__":
    PAGE.write_text(cli_reference(), encoding="utf-8")
    print(PAGE)

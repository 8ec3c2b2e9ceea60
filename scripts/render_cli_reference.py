"""Write docs/cli.md from vaegen's argument parser (tests/test_cli_reference.py checks that the
committed page equals what this writes)."""

from __future__ import annotations

from pathlib import Path

from vaegen.cli import cli_reference
from vaegen.files import atomic_write_text

PAGE = Path(__file__).resolve().parents[1] / "docs" / "cli.md"

if __name__ == "__main__":
    atomic_write_text(PAGE, cli_reference())
    print(PAGE)

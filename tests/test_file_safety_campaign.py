"""The file-safety campaign (benchmarks/file_safety_campaign.py) passes in its quick form: kills,
SIGTERM, planted files and links, two writers and a full disk, all through the real command
line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

CAMPAIGN = Path(__file__).resolve().parents[1] / "benchmarks" / "file_safety_campaign.py"


@pytest.mark.slow
def test_the_quick_file_safety_campaign_passes(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(CAMPAIGN), "--quick", "--seed", "0", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    not_passed = [line for line in proc.stdout.splitlines() if '"outcome": "passed"' not in line]
    assert proc.returncode == 0, (
        "the campaign failed:\n" + "\n".join(not_passed) + f"\n--- stderr:\n{proc.stderr[-4000:]}"
    )

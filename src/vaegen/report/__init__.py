"""One self-contained report.html for a run: configuration, metrics, figures, evaluation, and a
latent explorer that decodes points of the latent plane in the browser.

payload.py gathers the report's data from the run (needs torch: it encodes and decodes with the
model, and draws missing figures); render.py turns that data into the page (pure: no torch, no
numpy); assets/ holds the page's script and stylesheet, inlined into every page.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from pathlib import Path

from ..data import ImageDataset
from ..files import atomic_write_text
from ..rundir import Run, layout
from .payload import report_data
from .render import ReportData, render_page, render_value, script_json

__all__ = [
    "REPORT",
    "ReportData",
    "build_report",
    "render_page",
    "render_value",
    "report_data",
    "script_json",
    "write_report",
]

log = logging.getLogger(__name__)

REPORT = layout.REPORT


def write_report(run: Run, path: Path | None = None, *, test: ImageDataset | None = None) -> Path:
    """Write the run's report (default RUN/report.html, atomically) and return its path.

    test: the test split, when the caller has it loaded already; otherwise it is loaded from the
    run's data source. Without it the page still works, with no points in the explorer. Figures
    missing from RUN/figures are drawn first (figures.draw_missing), which needs the test split too.
    """
    into_run = path is None  # then held as the run's other writers hold it
    path = run.path / REPORT if into_run else Path(path)
    with layout.lock_for_writing(run.path, "writing the report") if into_run else nullcontext():
        atomic_write_text(path, build_report(run, test))
    log.debug("wrote %s", path)
    return path


def build_report(run: Run, test: ImageDataset | None = None) -> str:
    """The whole HTML page as one string."""
    return render_page(report_data(run, test))

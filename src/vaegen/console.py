"""What vaegen shows on the console: progress bars (only on a terminal) and log lines on stderr."""

from __future__ import annotations

import logging
import sys


def show_progress(wanted: bool) -> bool:
    """Whether to draw progress bars: when asked for and stderr is a terminal. Sent to a file or
    a pipe, a bar's refreshes would fill it with long lines; the one line per epoch the log
    writes is what a log wants."""
    return wanted and sys.stderr.isatty()


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (tests and notebooks replace it)."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


def configure_logging(level: int) -> None:
    """Log vaegen's messages at `level` and above to stderr, as bare lines (once, however
    often it is called)."""
    logger = logging.getLogger("vaegen")
    for h in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
        logger.removeHandler(h)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)

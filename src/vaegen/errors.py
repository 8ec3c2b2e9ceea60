"""The one exception type the command line prints cleanly (exit status 2, no traceback), and
SIGTERM turned into an interrupt, so that a stopped command unwinds through its cleanup."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator, Sequence


class VaegenError(Exception):
    """A problem the user can fix: bad input, a missing or corrupt file, a bad argument."""


class DataError(VaegenError, ValueError):
    """A dataset file is missing, truncated, corrupt or not what it claims to be."""


class RunError(VaegenError, ValueError):
    """A run directory or one of its files is missing, corrupt or inconsistent."""


class NonFiniteError(VaegenError, ValueError):
    """A tensor to be saved holds NaN or infinity: it is refused, and the old file kept."""


class WriteError(VaegenError, OSError):
    """A file could not be written (a full disk, no permission); the old file is untouched."""


def some_names(names: Sequence[str], most: int = 5) -> str:
    """The first `most` of `names` for a one-line message: "a, b, c and 4 more"."""
    rest = len(names) - most
    return ", ".join(names[:most]) + (f" and {rest} more" if rest > 0 else "")


class Terminated(KeyboardInterrupt):
    """SIGTERM (kill, a scheduler's time limit, torchrun stopping its workers)."""


@contextlib.contextmanager
def terminated_as_interrupt(enabled: bool = True) -> Iterator[None]:
    """SIGTERM raises Terminated, as Ctrl-C raises KeyboardInterrupt, so that it unwinds through
    the same cleanup: temporaries and half-assembled outputs removed, the previous files kept
    (Python's default for SIGTERM ends the process at once and leaves them; the next writer then
    sweeps them). Not `enabled` in a torchrun worker: one waiting in a collective runs no Python
    until the wait ends, and torchrun, which stops its workers with SIGTERM, would wait 30 s for
    each before killing it anyway."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)

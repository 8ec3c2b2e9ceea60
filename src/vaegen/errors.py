"""The one exception type the command line prints cleanly (exit status 2, no traceback)."""


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

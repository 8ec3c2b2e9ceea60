"""Where vaegen keeps what it downloads and decodes: the user cache."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """vaegen's user cache: $VAEGEN_CACHE_DIR when set, else $XDG_CACHE_HOME/vaegen, else
    ~/.cache/vaegen. Downloaded datasets go to its NAME/ folders, decoded image folders to folders/."""
    if os.environ.get("VAEGEN_CACHE_DIR"):
        return Path(os.environ["VAEGEN_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vaegen"


ENV_OFF = "VAEGEN_NO_CACHE"  # set (to anything but 0, false, no or off): every cache is off


def cache_off() -> bool:
    """Whether the user turned vaegen's caches off ($VAEGEN_NO_CACHE)."""
    return os.environ.get(ENV_OFF, "").strip().lower() not in ("", "0", "false", "no", "off")

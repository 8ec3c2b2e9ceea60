"""Will a dataset fit in memory? Checked before an image folder is decoded or an .npz is read,
so that a dataset too large for the machine is a one-line error in a second instead of a swap
storm or the kernel's out-of-memory killer minutes later.

`available_bytes()` is the memory this process can still take, in bytes: /proc/meminfo's
MemAvailable (free memory plus the page cache the kernel can drop), capped by the room left
under the memory limit of the cgroup at /sys/fs/cgroup when it has one (a container's: Docker,
Kubernetes); where there is no /proc/meminfo, os.sysconf's free physical pages; None when
nothing says (then nothing is checked).

`check_fits(where, n, shape, need)` raises a DataError when `need` bytes are more than that.
What a load needs (`data` computes it): `BYTES_PER_VALUE` (2) bytes per uint8 image value, the
decoded array and one copy of it (the per-image arrays while they are stacked, or the train and
test subsets taken from the whole), plus 4 bytes per value for each float32 copy a caller makes
(training on the CPU holds its train and test images as float32). Sizes in messages are GiB
(2**30 bytes).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import DataError

GiB = 1 << 30
BYTES_PER_VALUE = 2  # the decoded uint8 array and one copy of it, per image value
FLOAT32_BYTES = 4  # per image value, for each float32 copy of the images
_MEMINFO = Path("/proc/meminfo")
_CGROUP = Path("/sys/fs/cgroup")


def available_bytes() -> int | None:
    """Bytes of memory this process can still use, or None when that cannot be told (see the
    module's doc)."""
    free = _meminfo_available()
    if free is None:
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):  # not on this platform
            free = None
    limit = _cgroup_room()
    if limit is not None:
        free = limit if free is None else min(free, limit)
    return free


def _meminfo_available() -> int | None:
    try:
        for line in _MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # the kernel writes kB (KiB)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_room() -> int | None:
    """The limit of the cgroup mounted at /sys/fs/cgroup (a container's own) less what it uses,
    not counting its inactive file cache, which the kernel drops before it kills; None when it
    has no limit. cgroup v2 (memory.max) or v1 (memory/memory.limit_in_bytes)."""
    for limit_file, used_file, stat_file, inactive in (
        ("memory.max", "memory.current", "memory.stat", "inactive_file"),
        (
            "memory/memory.limit_in_bytes",
            "memory/memory.usage_in_bytes",
            "memory/memory.stat",
            "total_inactive_file",
        ),
    ):
        try:
            limit = (_CGROUP / limit_file).read_text().strip()
            if limit == "max" or int(limit) >= 1 << 60:  # no limit (v1 writes a huge number)
                return None
            used = int((_CGROUP / used_file).read_text())
            stat = dict(s.split()[:2] for s in (_CGROUP / stat_file).read_text().splitlines())
            used -= int(stat.get(inactive, 0))
            return max(0, int(limit) - max(0, used))
        except (OSError, ValueError):  # not this version, or unreadable
            continue
    return None


def gib(n_bytes: float) -> str:
    """n_bytes in GiB, in words: one decimal from 1 GiB up, two significant digits below."""
    v = n_bytes / GiB
    return f"{v:.1f}" if v >= 1 else f"{v:.2g}"


def check_fits(where: str, n: int, shape: tuple[int, int, int], need: int) -> None:
    """A DataError when `need` bytes (for n images of shape C x H x W) are more than
    `available_bytes()`; nothing when they fit or the available memory is unknown."""
    have = available_bytes()
    if have is None or need <= have:
        return
    c, h, w = shape
    raise DataError(
        f"{where}: {n} images of {c} x {h} x {w} need about {gib(need)} GiB of memory, "
        f"{gib(have)} GiB is available; use --image-size or a subset"
    )

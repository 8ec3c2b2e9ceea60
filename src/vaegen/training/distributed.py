"""Training in several processes: PyTorch's DistributedDataParallel, launched with torchrun.

    torchrun --nproc-per-node N -m vaegen train ...

torchrun starts N processes and tells each its RANK, LOCAL_RANK and WORLD_SIZE through the
environment; vaegen reads them, joins the process group (gloo on a CPU, NCCL on GPUs: process k
uses GPU LOCAL_RANK) and splits every batch of --batch-size images across the processes. Each
process draws the whole batch's reparameterisation noise from the shared stream and keeps its
part, so N processes do the same math as one, up to the order of floating-point sums: DDP sums
the gradients (it averages; the trainer scales each process's loss by N to undo that) and the
batch losses are summed over the processes too. Only process 0 writes files.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import VaegenError


@dataclass(frozen=True)
class Processes:
    """Where this process stands among the training processes (rank 0 of 1 when alone)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def several(self) -> bool:
        return self.world_size > 1

    def shard(self, n: int) -> slice:
        """This process's part of a batch of n images: contiguous, sizes differing by at most 1."""
        return slice(self.rank * n // self.world_size, (self.rank + 1) * n // self.world_size)


def from_env() -> Processes:
    """The process layout torchrun gives through RANK, LOCAL_RANK and WORLD_SIZE (none: alone)."""
    try:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        raise VaegenError(
            "WORLD_SIZE, RANK and LOCAL_RANK must be integers; start several processes with "
            "torchrun --nproc-per-node N -m vaegen train ..."
        ) from None
    if world_size < 1 or not 0 <= rank < world_size:
        raise VaegenError(f"RANK={rank} and WORLD_SIZE={world_size} do not fit together")
    return Processes(rank, world_size, local_rank)


def started_by_torchrun() -> bool:
    """Whether this process is one of several that torchrun started (a bad layout: False, and
    from_env reports it where it is read)."""
    try:
        return from_env().several
    except VaegenError:
        return False


@contextlib.contextmanager
def process_group(procs: Processes, device: torch.device) -> Iterator[None]:
    """Join the processes' group for one training call (nothing to do when alone); leave it after.

    Also quiets vaegen's log lines in every process but the first."""
    if not procs.several or dist.is_initialized():
        yield
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend)
    logger = logging.getLogger("vaegen")
    old_level = logger.level
    if not procs.is_main:
        logger.setLevel(logging.WARNING)
    try:
        yield
    except RuntimeError as e:
        if procs.is_main or not _peer_gone(e):
            raise
        # process 0 failed alone (a write, its data) and left: it prints the reason
        raise VaegenError(
            f"process {procs.rank} stopped: another process left the group (its connection "
            "closed); process 0's error says why"
        ) from None
    finally:
        logger.setLevel(old_level)
        dist.destroy_process_group()


def _peer_gone(e: BaseException) -> bool:
    """Whether a collective failed because another process closed its connection."""
    text = str(e)
    return any(s in text for s in ("closed by peer", "reset by peer", "Broken pipe"))


def sum_over_processes(t: torch.Tensor) -> torch.Tensor:
    """t summed over all processes, in place (t itself when alone)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t


def barrier() -> None:
    """Wait for every process (nothing when alone)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


@contextlib.contextmanager
def main_process_first(procs: Processes) -> Iterator[None]:
    """Run the block in process 0 first, then in the others: for work whose files the others
    then find, like downloading a dataset once rather than once per process."""
    if not procs.is_main:
        barrier()
    yield
    if procs.is_main:
        barrier()

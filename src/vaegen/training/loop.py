"""The training loop: the whole dataset as one tensor on the device, shuffled index batches, Adam.

Read it top to bottom: `train` takes the run directory's lock and the process settings; `_train`
loads the data, builds the model and its step, maybe restores a checkpoint, then for each epoch:
shuffle, step through the batches (`_train_epoch`), measure the test set and save (`_end_epoch`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .. import rundir, tensorfiles
from ..console import show_progress
from ..errors import NonFiniteError, RunError, VaegenError, WriteError
from ..model.likelihoods import evaluate_loss, likelihood
from ..rundir import Run, build_model, checkpoint as ckpt, layout, resolve_device
from ..rundir.config import RunConfig
from ..seeds import TRAINING
from . import collapse_guard, distributed
from .step import Step, make_step
from .trainset import TrainingData, check_prior_fit, load_training_data

log = logging.getLogger(__name__)


class NonFiniteLossError(VaegenError):
    """Training produced NaN or infinity."""


def check_every(device: torch.device) -> int:
    """Steps between checks of the loss for NaN: each step on a CPU, 20 on a GPU, which a check (a
    read from the device) idles until the host queues more work. No checkpoint skips a check."""
    return 1 if device.type == "cpu" else 20


def default_threads() -> int:
    """CPU threads for training: PyTorch's default, one per physical core. Measured
    (benchmarks/epoch_speed.py): on 2 cores, 2 threads train the seed model about 1.6x faster
    than 1 on an otherwise idle machine."""
    return torch.get_num_threads()


def train(
    config: RunConfig,
    out: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    checkpoint_every: int = 0,
    tensorboard: bool = False,
    max_steps: int | None = None,
) -> Run:
    """Train a VAE into the run directory `out` and return the Run.

    resume: continue the run in `out` from its newest checkpoint (start afresh when it has none;
    return at once when it is finished). checkpoint_every: also checkpoint every N optimizer steps
    (0: only at the end of each epoch). tensorboard: also log each epoch's metrics as TensorBoard
    scalars in RUN/tensorboard (needs the tensorboard package). max_steps: stop after this many
    optimizer steps of this call (the checkpoints written so far stay; resume continues). Losses
    in metrics.jsonl are per image. `config.train.step` picks the training step (training.step).
    Started by torchrun, every process calls this and they train together (training.distributed);
    only the first writes files, and it holds the run directory's lock while it trains.
    """
    if max_steps is not None and max_steps < 1:
        raise VaegenError(f"max_steps = {max_steps} is not valid: use an integer >= 1 or None")
    if checkpoint_every < 0:
        raise VaegenError(f"checkpoint_every = {checkpoint_every} is not valid: an integer >= 0")
    procs = distributed.from_env()
    run_dir = Path(out)
    config = rundir.resolve_config(config)  # the loss, split and paths config.json records
    tc = config.train
    device = resolve_device(tc.device)
    if procs.several and device.type == "cuda":  # one GPU per process
        device = torch.device("cuda", procs.local_rank)
        torch.cuda.set_device(device)
    with (
        layout.lock_for_writing(run_dir, "training") if procs.is_main else contextlib.nullcontext(),
        _torch_settings(device, tc.threads or default_threads(), tc.deterministic),
        distributed.process_group(procs, device),
    ):
        resumable = rundir.check_resumable(run_dir, config, resume)
        if (resumable or resume) and procs.is_main:  # (killed before config.json: resume too)
            # it holds the lock: no other process writes this run
            for path in layout.remove_stale_temporaries(run_dir):
                log.info("removed %s, left by an interrupted run", path)
        distributed.barrier()  # every process has looked at run_dir before the first writes
        run = _train(
            config,
            run_dir,
            device=device,
            resume=resume,
            progress=progress,
            checkpoint_every=checkpoint_every,
            tensorboard=tensorboard,
            max_steps=max_steps,
            procs=procs,
        )
        distributed.barrier()  # process 0 has written the run's last files
        return run


@contextlib.contextmanager
def _torch_settings(device: torch.device, threads: int, deterministic: bool) -> Iterator[None]:
    """Thread count and determinism for one training call, restored afterwards (they are global)."""
    old_threads = torch.get_num_threads()
    old_deterministic = torch.are_deterministic_algorithms_enabled()
    if device.type == "cpu":
        torch.set_num_threads(threads)
    if deterministic:
        # cuBLAS needs a fixed workspace to be deterministic; it reads this when it starts
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_deterministic)


@dataclass(kw_only=True)
class _Loop:
    """What the epoch loop reads and changes."""

    config: RunConfig
    run_dir: Path
    run: Run
    data: TrainingData
    step: Step
    shuffle_gen: torch.Generator  # the epochs' permutations
    noise_gen: torch.Generator  # the reparameterisation's noise
    progress: ckpt.Progress
    running: torch.Tensor  # float64 (loss, recon, kl) sums of this epoch's steps, on the device
    epoch_rng: torch.Tensor  # shuffle_gen's state at this epoch's start: a checkpoint redoes it
    procs: distributed.Processes
    x_epoch: torch.Tensor  # this epoch's shuffled copy of x_train (allocated once)
    y_epoch: torch.Tensor | None
    check_every: int  # steps between checks of the loss for NaN (and at every save)


def _train(
    config: RunConfig,
    run_dir: Path,
    *,
    device: torch.device,
    resume: bool,
    progress: bool,
    checkpoint_every: int,
    tensorboard: bool,
    max_steps: int | None,
    procs: distributed.Processes,
) -> Run:
    tc = config.train
    data = load_training_data(config, device, procs)
    if tc.prior_components:  # fitted after the last epoch: what would fail it fails now
        check_prior_fit(
            data.y_train if config.model.conditional else None,
            n=len(data.x_train),
            classes=data.classes,
            latent_dim=config.model.latent_dim,
            components=tc.prior_components,
            draws=tc.prior_draws,
            source=config.data.source,
        )
    torch.manual_seed(tc.seed + TRAINING.init)
    model = build_model(config, data.image_shape, len(data.classes)).to(device)
    shuffle_gen = torch.Generator(device=device).manual_seed(tc.seed + TRAINING.shuffle)
    noise_gen = torch.Generator(device=device).manual_seed(tc.seed + TRAINING.noise)

    state = ckpt.load_state(run_dir / layout.STATE) if resume else None
    if state is not None:
        tensorfiles.check_state_dict(state.model, model.state_dict(), run_dir / layout.STATE)
        if state.progress.device_type != device.type:
            raise RunError(
                f"{run_dir} was trained on {state.progress.device_type}, and its random-number "
                f"streams cannot continue on {device.type}; resume it with --device "
                f"{state.progress.device_type}"
            )
        model.load_state_dict(state.model)
    batch_size = min(tc.batch_size, len(data.x_train))  # the fast step's buffers: no larger
    check_batch = (
        data.x_train[:batch_size],
        None if data.y_train is None else data.y_train[:batch_size],
    )
    step = make_step(
        model,
        lk=likelihood(tc.loss),
        beta=tc.beta,
        lr=tc.lr,
        wanted=tc.step,
        device=device,
        procs=procs,
        batch_size=batch_size,
        check_batch=check_batch,
        seed=tc.seed + TRAINING.parity,
        precision=tc.precision,
    )
    run = Run(run_dir, config, model, data.classes, data.image_shape)
    loop = _Loop(
        config=config,
        run_dir=run_dir,
        run=run,
        data=data,
        step=step,
        shuffle_gen=shuffle_gen,
        noise_gen=noise_gen,
        progress=ckpt.Progress(device_type=device.type),
        running=torch.zeros(3, dtype=torch.float64, device=device),
        epoch_rng=shuffle_gen.get_state(),
        procs=procs,
        x_epoch=torch.empty_like(data.x_train),
        y_epoch=None if data.y_train is None else torch.empty_like(data.y_train),
        check_every=check_every(device),
    )
    if state is not None:
        step.optimizer.load_state_dict(state.optimizer)
        shuffle_gen.set_state(state.rng["shuffle_epoch_start"].cpu())
        noise_gen.set_state(state.rng["noise"].cpu())
        loop.progress = state.progress
        loop.running = torch.tensor(state.progress.running, dtype=torch.float64, device=device)
        run.metrics = list(state.progress.metrics)

    if loop.progress.epoch > tc.epochs:  # a finished run keeps the epochs it has trained
        run.config = replace(config, train=replace(tc, epochs=loop.progress.epoch))
    if procs.is_main:  # a finished run too: it records the resumable changes (the prior's)
        run_dir.mkdir(parents=True, exist_ok=True)
        _write(run_dir / layout.CONFIG, rundir.save_config, run_dir, run.config, data.facts)
    if loop.progress.epoch >= tc.epochs:
        if state is not None and state.progress.step > 0:
            # a checkpoint inside the next epoch (of a longer run) is not this run's end: the
            # weights file is, written at the end of the epoch before it
            tensorfiles.load_weights(model, run_dir / layout.WEIGHTS)
        log.info(
            "%s is finished (%d of %d epochs); nothing to do",
            run_dir,
            loop.progress.epoch,
            tc.epochs,
        )
        return run
    if state is not None:
        log.info(
            "resuming %s at epoch %d, step %d",
            run_dir,
            state.progress.epoch + 1,
            state.progress.step,
        )
    writer = None
    if procs.is_main and tensorboard:
        writer = rundir.tensorboard_writer(run_dir, first_epoch=loop.progress.epoch + 1)
    try:
        model.train()
        steps_left = max_steps
        for epoch in range(loop.progress.epoch, tc.epochs):
            t0 = time.perf_counter()  # an epoch's seconds count its shuffle too
            steps_left, whole = _train_epoch(
                loop, epoch, t0, progress, checkpoint_every, steps_left
            )
            if whole:
                _end_epoch(loop, epoch, t0, writer)
            if steps_left == 0:
                break
    finally:
        if writer is not None:
            writer.close()
    return run


def _train_epoch(
    loop: _Loop,
    epoch: int,
    t0: float,
    progress: bool,
    checkpoint_every: int,
    steps_left: int | None,
) -> tuple[int | None, bool]:
    """Shuffle, then step through the epoch's batches from where its progress record stands.
    Returns (the steps left of max_steps (None: no limit; 0: stop), whether the epoch is whole)."""
    tc, data, p = loop.config.train, loop.data, loop.progress
    n = len(data.x_train)
    steps_per_epoch = math.ceil(n / tc.batch_size)
    loop.epoch_rng = loop.shuffle_gen.get_state()  # saved with mid-epoch checkpoints
    perm = torch.randperm(n, generator=loop.shuffle_gen, device=data.x_train.device)
    # one gather per epoch, then contiguous batches: cheaper than a gather per step
    x_epoch, y_epoch = loop.x_epoch, loop.y_epoch
    torch.index_select(data.x_train, 0, perm, out=x_epoch)
    if data.y_train is not None and y_epoch is not None:
        torch.index_select(data.y_train, 0, perm, out=y_epoch)
    first = p.step if epoch == p.epoch else 0
    if first == 0:
        loop.running.zero_()
        p.elapsed_in_epoch = 0.0
    bar = tqdm(
        total=steps_per_epoch,
        initial=first,
        desc=f"epoch {epoch + 1}/{tc.epochs}",
        unit="batch",
        disable=not (show_progress(progress) and loop.procs.is_main),
        leave=False,
    )
    unchecked = first  # the first step whose loss is not yet checked for NaN
    with bar:
        for step in range(first, steps_per_epoch):
            batch = slice(step * tc.batch_size, (step + 1) * tc.batch_size)
            yb = None if y_epoch is None else y_epoch[batch]
            p.global_step += 1
            sums = loop.step.train_step(x_epoch[batch], yb, loop.noise_gen, p.global_step)
            loop.running += sums.double()  # a NaN or infinite loss stays in the sums
            bar.update(1)
            last = step == steps_per_epoch - 1
            save = checkpoint_every and p.global_step % checkpoint_every == 0 and not last
            if last or save or (step + 1) % loop.check_every == 0:  # always before a save
                total = loop.running[0].item()  # waits for the device
                if not math.isfinite(total):
                    since = f"{unchecked + 1}-" if unchecked < step else ""  # a range of steps
                    raise _diverged(
                        loop,
                        f"the loss became {total} at epoch {epoch + 1}, step {since}{step + 1}",
                        " and check that the data is scaled to [0, 1]",
                    )
                unchecked = step + 1
                if not bar.disable and ((step + 1) % 20 == 0 or last):
                    seen = min((step + 1) * tc.batch_size, n)
                    seconds = p.elapsed_in_epoch + time.perf_counter() - t0
                    bar.set_postfix(
                        loss=f"{total / seen:.2f}",
                        img_s=f"{seen / max(seconds, 1e-9):.0f}",
                        refresh=False,
                    )
            if save:
                p.epoch, p.step = epoch, step + 1
                p.elapsed_in_epoch += time.perf_counter() - t0
                t0 = time.perf_counter()
                _save(loop)
            if steps_left is not None:
                steps_left -= 1
                if steps_left == 0 and not last:
                    return 0, False
    p.elapsed_in_epoch += time.perf_counter() - t0
    return steps_left, True


def _end_epoch(loop: _Loop, epoch: int, t0: float, writer: Any) -> None:
    """Measure the test set, record the epoch, write the weights and the metrics, then save a
    checkpoint (the files are never behind the newest checkpoint, so a finished run's are whole)."""
    tc, data, p = loop.config.train, loop.data, loop.progress
    n = len(data.x_train)
    seconds = p.elapsed_in_epoch
    test = evaluate_loss(
        loop.run.model, data.x_test, data.y_test, tc.loss, seed=tc.seed + TRAINING.test_loss
    )
    if not math.isfinite(test["recon"] + test["kl"]):  # metrics.jsonl would hold NaN, not JSON
        raise _diverged(
            loop,
            f"the test loss became {test['recon'] + test['kl']} after epoch {epoch + 1} "
            "(its training loss stayed finite)",
        )
    totals = loop.running.tolist()
    record = {
        "epoch": epoch + 1,
        "train_loss": totals[0] / n,
        "train_recon": totals[1] / n,
        "train_kl": totals[2] / n,
        "test_loss": test["recon"] + tc.beta * test["kl"],
        "test_recon": test["recon"],
        "test_kl": test["kl"],
        "seconds": seconds,
        "images_per_second": n / seconds,
        "active_dims": collapse_guard.active_dims(test["kl_per_dim"]),
        "step": loop.step.name,
    }
    loop.run.metrics.append(record)
    if writer is not None:
        for key, value in record.items():
            if isinstance(value, (int, float)) and key != "epoch":
                writer.add_scalar(key, value, global_step=epoch + 1)
        writer.flush()
    log.info(
        "epoch %d/%d  train %.3f  test %.3f (recon %.3f + kl %.3f)  %.1f s, %.0f img/s",
        epoch + 1,
        tc.epochs,
        record["train_loss"],
        record["test_loss"],
        record["test_recon"],
        record["test_kl"],
        seconds,
        record["images_per_second"],
    )
    if epoch + 1 == tc.epochs and record["active_dims"] == 0:
        collapse_guard.warn(loop.config, test["kl_per_dim"])
    p.epoch, p.step, p.elapsed_in_epoch = epoch + 1, 0, 0.0
    loop.running.zero_()
    loop.epoch_rng = loop.shuffle_gen.get_state()  # the next epoch starts from here
    if loop.procs.is_main:  # before the checkpoint: a run killed in between redoes this epoch
        model, run_dir = loop.run.model, loop.run_dir
        _write(run_dir / layout.WEIGHTS, tensorfiles.save_weights, model, run_dir / layout.WEIGHTS)
        _write(run_dir / layout.METRICS, rundir.write_metrics, run_dir, loop.run.metrics)
    _save(loop)


def _save(loop: _Loop) -> None:
    """A checkpoint of where the loop stands (the first process writes it)."""
    if not loop.procs.is_main:
        return
    p = loop.progress
    p.running, p.metrics = loop.running.tolist(), loop.run.metrics
    state = ckpt.TrainingState(
        model=loop.run.model.state_dict(),
        optimizer=loop.step.optimizer.state_dict(),
        rng={"shuffle_epoch_start": loop.epoch_rng, "noise": loop.noise_gen.get_state()},
        progress=p,
    )
    state_dir = loop.run_dir / layout.STATE
    try:
        _write(state_dir, ckpt.save_state, state_dir, state)
    except NonFiniteError as e:  # Adam's moments can overflow while the loss stays finite
        at = f"epoch {p.epoch + 1}, step {p.step}" if p.step else f"the end of epoch {p.epoch}"
        raise _diverged(loop, f"{e} at {at}") from None


def _diverged(loop: _Loop, what: str, advice: str = "") -> NonFiniteLossError:
    """The error that stops a run whose numbers left the finite: what happened, the learning-rate
    hint (and `advice`), and where the last good checkpoint is."""
    return NonFiniteLossError(
        f"{what}: try a smaller learning rate (--lr, now {loop.config.train.lr}){advice}; the "
        f"last good checkpoint is kept in {loop.run_dir / layout.STATE}"
    )


def _write(what: Path, fn: Any, *args: Any) -> None:
    """fn(*args), a write into the run; a failed write (a full disk) is a one-line error that
    says the last complete checkpoint is kept and how to continue."""
    try:
        fn(*args)
    except WriteError as e:
        raise RunError(
            f"{e}; training stopped while writing {what}. The last complete checkpoint is kept: "
            "free space and continue with --resume"
        ) from None

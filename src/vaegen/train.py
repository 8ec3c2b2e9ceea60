"""The training loop: the whole dataset as one tensor on the device, shuffled index batches, Adam.

Read it top to bottom: set up (data, model, optimizer, RNG streams), maybe restore a checkpoint,
then for each epoch: shuffle, step through batches, evaluate on the test set, save.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from . import distributed, fast_step
from .config import RunConfig, differences
from .data import ImageDataset, load_dataset
from .errors import RunError, VaegenError
from .losses import LOSSES
from .models import MODELS

log = logging.getLogger(__name__)

# Fields that may change when a run is resumed: where and how fast it runs, and how long.
RESUMABLE_CHANGES = ("train.device", "train.threads", "train.epochs", "train.deterministic")


@dataclass
class Run:
    """A trained (or training) model with its run directory."""

    path: Path
    config: RunConfig
    model: nn.Module
    classes: list[str]
    image_shape: tuple[int, int, int]
    metrics: list[dict[str, Any]] = field(default_factory=list)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


class NonFiniteLossError(VaegenError):
    """Training produced NaN or infinity."""


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; anything else is passed to torch.device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise VaegenError(
            f"device = {name!r} is not valid: use auto, cpu, cuda or cuda:N"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise VaegenError(f"device = {name!r} but this PyTorch build sees no CUDA GPU; use cpu")
    return device


def default_threads() -> int:
    """CPU threads for training: PyTorch's default, one per physical core. Measured
    (benchmarks/epoch_speed.py): on 2 cores, 2 threads train the seed model about 1.6x faster
    than 1 on an otherwise idle machine."""
    return torch.get_num_threads()


def make_optimizer(params: Iterable[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """Adam with its fused kernel where this PyTorch has one for the device (CPU: torch >= 2.4).

    The same update as the stock Adam, in one kernel instead of a dozen per step: measured
    (benchmarks/epoch_speed.py) the largest single gain for the small seed model."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, ValueError, TypeError):  # no fused kernel for this device or version
        return torch.optim.Adam(params, lr=lr)


def build_model(
    config: RunConfig, image_shape: tuple[int, int, int], num_classes: int
) -> nn.Module:
    m = config.model
    if m.conditional and num_classes < 2:
        raise VaegenError(
            "--conditional needs a labelled dataset with at least 2 classes; "
            f"this one has {num_classes}"
        )
    try:
        return MODELS[m.model](
            image_shape=image_shape,
            latent_dim=m.latent_dim,
            hidden=m.hidden,
            num_classes=num_classes if m.conditional else 0,
        )
    except ValueError as e:  # a shape the architecture cannot take
        raise VaegenError(str(e)) from None


def dataset_facts(ds: ImageDataset, test: ImageDataset) -> dict[str, Any]:
    return {
        "image_shape": list(ds.image_shape),
        "classes": ds.classes,
        "train_size": len(ds),
        "test_size": len(test),
    }


def to_float(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 N x C x H x W -> float32 in [0, 1] on `device` (the article's ToTensor, for all at once)."""
    return images.to(device).float().div_(255.0)


@torch.no_grad()
def evaluate_loss(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None,
    loss_name: str,
    seed: int,
    batch_size: int = 2000,
) -> dict[str, float]:
    """Per-image loss terms over a dataset, one sampled z per image from a fixed-seed generator
    (so the number is repeatable and does not disturb training's RNG streams)."""
    was_training = model.training
    model.eval()
    gen = torch.Generator(device=x.device).manual_seed(seed)
    rec_sum = torch.zeros((), dtype=torch.float64, device=x.device)
    kl_sum = torch.zeros((), dtype=torch.float64, device=x.device)
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size]
        yb = None if y is None else y[i : i + batch_size]
        out = model(xb, yb, generator=gen)
        terms = LOSSES[loss_name](out.recon, xb, out.mu, out.logvar)
        rec_sum += terms.recon.sum(dtype=torch.float64)
        kl_sum += terms.kl.sum(dtype=torch.float64)
    model.train(was_training)
    n = len(x)
    rec, kl = rec_sum.item() / n, kl_sum.item() / n
    return {"loss": rec + kl, "recon": rec, "kl": kl}


def _check_resume_config(saved: RunConfig, wanted: RunConfig, run_dir: Path) -> None:
    diff = differences(saved, wanted, ignore=RESUMABLE_CHANGES)
    if diff:
        raise RunError(
            f"{run_dir}: cannot resume with a different configuration; these fields differ "
            "(saved -> requested):\n  " + "\n  ".join(diff)
        )


def train(
    config: RunConfig,
    out: str | Path,
    resume: bool = False,
    progress: bool = True,
    checkpoint_every: int = 0,
    tensorboard: bool = False,
    _stop_after_steps: int | None = None,
    _fast_step: bool = True,
) -> Run:
    """Train a VAE into the run directory `out` and return the Run.

    resume: continue the run in `out` from its newest checkpoint (start afresh when it has none;
    return at once when it is finished). checkpoint_every: also checkpoint every N optimizer steps
    (0: only at the end of each epoch). tensorboard: also log each epoch's metrics as TensorBoard
    scalars in RUN/tensorboard (needs the tensorboard package). Losses in metrics.jsonl are per
    image. The MLP model on a CPU trains with the hand-derived step of vaegen.fast_step
    (_fast_step=False: with autograd, for comparisons). Started by torchrun, every process calls
    this and they train together (vaegen.distributed); only the first writes files.
    """
    procs = distributed.from_env()
    run_dir = Path(out)
    if (run_dir / ckpt.CONFIG).exists():
        if not resume:
            raise RunError(
                f"{run_dir} already holds a run; pass --resume to continue it, "
                "or choose another --out"
            )
        saved, _ = ckpt.load_config(run_dir)
        _check_resume_config(saved, config, run_dir)
        if procs.is_main:
            for path in ckpt.remove_stale_temporaries(run_dir):
                log.info("removed %s, left by an interrupted run", path)

    tc = config.train
    device = resolve_device(tc.device)
    if procs.several and device.type == "cuda":  # one GPU per process
        device = torch.device("cuda", procs.local_rank)
        torch.cuda.set_device(device)
    with (
        _torch_settings(device, tc.threads or default_threads(), tc.deterministic),
        distributed.process_group(procs, device),
    ):
        distributed.barrier()  # every process has looked at run_dir before the first writes
        run = _train(
            config,
            run_dir,
            device,
            resume,
            progress,
            checkpoint_every,
            tensorboard,
            _stop_after_steps,
            _fast_step,
            procs,
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


def _train(
    config: RunConfig,
    run_dir: Path,
    device: torch.device,
    resume: bool,
    progress: bool,
    checkpoint_every: int,
    tensorboard: bool,
    _stop_after_steps: int | None,
    use_fast_step: bool,
    procs: distributed.Processes,
) -> Run:
    tc = config.train

    with distributed.main_process_first(procs):  # one download, which the others then find
        train_ds = load_dataset(config.data.source, "train", config.data.data_dir)
        test_ds = load_dataset(config.data.source, "test", config.data.data_dir)
    if train_ds.image_shape != test_ds.image_shape:
        raise VaegenError(
            f"train images are {train_ds.image_shape} but test images are {test_ds.image_shape}"
        )
    conditional = config.model.conditional
    if conditional and (train_ds.labels is None or test_ds.labels is None):
        raise VaegenError(f"--conditional needs labels, and {config.data.source!r} has none")

    torch.manual_seed(tc.seed)  # parameter initialisation
    model = build_model(config, train_ds.image_shape, len(train_ds.classes)).to(device)
    shuffle_gen = torch.Generator(device=device).manual_seed(tc.seed + 1)
    noise_gen = torch.Generator(device=device).manual_seed(tc.seed + 2)
    loss_fn = LOSSES[tc.loss]
    optimizer: torch.optim.Optimizer | fast_step.FlatAdam

    net: nn.Module = model  # what the autograd step calls: the model, or its DDP wrapper
    if use_fast_step and not procs.several and fast_step.supports(model, tc.loss, device):
        optimizer = fast_step.FlatAdam(model, lambda params: make_optimizer(params, tc.lr))
        batch_size = min(tc.batch_size, len(train_ds))  # the buffers: no larger than the data
        forward_backward = fast_step.FastStep(model, tc.loss, tc.beta, batch_size)
    else:
        optimizer = make_optimizer(model.parameters(), tc.lr)

        def forward_backward(
            xb: torch.Tensor, yb: torch.Tensor | None, generator: torch.Generator
        ) -> torch.Tensor:
            """The batch's (loss, recon, kl), each summed over its images (and processes)."""
            if procs.several:  # the whole batch's noise, then this process's part of both
                eps = torch.randn((len(xb), model.latent_dim), generator=generator, device=device)
                part = procs.shard(len(xb))
                xb, yb, eps = xb[part], None if yb is None else yb[part], eps[part]
                out = net(xb, yb, eps=eps)
            else:
                out = net(xb, yb, generator=generator)
            terms = loss_fn(out.recon, xb, out.mu, out.logvar)
            recon, kl = terms.recon.sum(), terms.kl.sum()
            loss = recon + tc.beta * kl
            optimizer.zero_grad(set_to_none=True)
            # DDP averages the processes' gradients, and the objective is their sum
            (loss * procs.world_size if procs.several else loss).backward()
            return distributed.sum_over_processes(torch.stack([loss, recon, kl]).detach())

    x_train = to_float(train_ds.images, device)
    y_train = train_ds.labels.to(device) if conditional else None
    x_test = to_float(test_ds.images, device)
    y_test = test_ds.labels.to(device) if conditional else None

    n = len(x_train)
    x_epoch = torch.empty_like(x_train)  # this epoch's shuffled copy
    y_epoch = None if y_train is None else torch.empty_like(y_train)
    steps_per_epoch = math.ceil(n / tc.batch_size)
    metrics: list[dict[str, Any]] = []
    start_epoch, start_step, global_step = 0, 0, 0
    epoch_rng = shuffle_gen.get_state()
    running = torch.zeros(3, dtype=torch.float64, device=device)  # loss, recon, kl sums
    elapsed_in_epoch = 0.0

    state = ckpt.load_state(run_dir) if resume else None
    if state is not None:
        ckpt.check_state_dict(state.model, model.state_dict(), run_dir / ckpt.STATE)
        saved_device = state.progress.get("device_type", device.type)
        if saved_device != device.type:
            raise RunError(
                f"{run_dir} was trained on {saved_device}, and its random-number streams cannot "
                f"continue on {device.type}; resume it with --device {saved_device}"
            )
        model.load_state_dict(state.model)
        optimizer.load_state_dict(state.optimizer)
        shuffle_gen.set_state(state.rng["shuffle_epoch_start"].cpu())
        noise_gen.set_state(state.rng["noise"].cpu())
        p = state.progress
        metrics = list(p["metrics"])
        start_epoch, start_step, global_step = p["epoch"], p["step"], p["global_step"]
        running = torch.tensor(p["running"], dtype=torch.float64, device=device)
        elapsed_in_epoch = p["elapsed_in_epoch"]
        if start_epoch >= tc.epochs:
            log.info(
                "%s is finished (%d of %d epochs); nothing to do", run_dir, start_epoch, tc.epochs
            )
            return Run(run_dir, config, model, train_ds.classes, train_ds.image_shape, metrics)
        log.info("resuming %s at epoch %d, step %d", run_dir, start_epoch + 1, start_step)
    if procs.several:  # after the checkpoint is loaded: DDP starts from process 0's weights
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    writer = None
    if procs.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        ckpt.save_config(run_dir, config, dataset_facts(train_ds, test_ds))
        if tensorboard:
            writer = _tensorboard_writer(run_dir, first_epoch=start_epoch + 1)

    def save(epoch: int, step: int) -> None:
        if not procs.is_main:
            return
        ckpt.save_state(
            run_dir,
            ckpt.TrainingState(
                model=model.state_dict(),
                optimizer=optimizer.state_dict(),
                rng={"shuffle_epoch_start": epoch_rng, "noise": noise_gen.get_state()},
                progress={
                    "epoch": epoch,
                    "step": step,
                    "device_type": device.type,
                    "global_step": global_step,
                    "running": running.tolist(),
                    "elapsed_in_epoch": elapsed_in_epoch,
                    "metrics": metrics,
                },
            ),
        )

    model.train()
    steps_this_call = 0
    for epoch in range(start_epoch, tc.epochs):
        t0 = time.perf_counter()  # an epoch's seconds count its shuffle too
        epoch_rng = shuffle_gen.get_state()  # saved with mid-epoch checkpoints to redo this shuffle
        perm = torch.randperm(n, generator=shuffle_gen, device=device)
        # one gather per epoch, then contiguous batches: cheaper than a gather per step
        torch.index_select(x_train, 0, perm, out=x_epoch)
        if y_train is not None:
            torch.index_select(y_train, 0, perm, out=y_epoch)
        first = start_step if epoch == start_epoch else 0
        if first == 0:
            running.zero_()
            elapsed_in_epoch = 0.0
        bar = tqdm(
            total=steps_per_epoch,
            initial=first,
            desc=f"epoch {epoch + 1}/{tc.epochs}",
            unit="batch",
            disable=not progress or not procs.is_main,
            leave=False,
        )
        for step in range(first, steps_per_epoch):
            batch = slice(step * tc.batch_size, (step + 1) * tc.batch_size)
            xb = x_epoch[batch]
            yb = None if y_train is None else y_epoch[batch]
            sums = forward_backward(xb, yb, noise_gen)  # loss, recon, kl
            if not torch.isfinite(sums[0]):
                raise NonFiniteLossError(
                    f"the loss became {sums[0].item()} at epoch {epoch + 1}, step {step + 1}: "
                    f"try a smaller learning rate (--lr, now {tc.lr}) and check that the data is "
                    "scaled to [0, 1]; the last good checkpoint is kept in "
                    f"{run_dir / ckpt.STATE}"
                )
            optimizer.step()
            running += sums.double()
            global_step += 1
            steps_this_call += 1
            if progress and (step % 20 == 0 or step == steps_per_epoch - 1):
                seconds = elapsed_in_epoch + time.perf_counter() - t0
                seen = min((step + 1) * tc.batch_size, n)
                bar.set_postfix(
                    loss=f"{running[0].item() / seen:.2f}",
                    img_s=f"{seen / max(seconds, 1e-9):.0f}",
                    refresh=False,
                )
            bar.update(1)
            done_epoch = step == steps_per_epoch - 1
            if checkpoint_every and global_step % checkpoint_every == 0 and not done_epoch:
                elapsed_in_epoch += time.perf_counter() - t0
                t0 = time.perf_counter()
                save(epoch, step + 1)
            if _stop_after_steps is not None and steps_this_call >= _stop_after_steps:
                bar.close()
                if writer is not None:
                    writer.close()
                return Run(run_dir, config, model, train_ds.classes, train_ds.image_shape, metrics)
        bar.close()
        seconds = elapsed_in_epoch + time.perf_counter() - t0
        test = evaluate_loss(model, x_test, y_test, tc.loss, seed=tc.seed + 3)
        totals = running.tolist()
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
        }
        metrics.append(record)
        if writer is not None:
            for key, value in record.items():
                if key != "epoch":
                    writer.add_scalar(key, value, global_step=epoch + 1)
            writer.flush()
        log.info(
            "epoch %d/%d  train %.3f  test %.3f (recon %.3f + kl %.3f)  %.1f s, %.0f img/s",
            epoch + 1, tc.epochs, record["train_loss"], record["test_loss"],
            record["test_recon"], record["test_kl"], seconds, record["images_per_second"],
        )  # fmt: skip
        elapsed_in_epoch = 0.0
        running.zero_()
        epoch_rng = shuffle_gen.get_state()  # the next epoch starts from here
        save(epoch + 1, 0)
        if procs.is_main:
            ckpt.save_weights(model, run_dir / ckpt.WEIGHTS)
            ckpt.write_metrics(run_dir, metrics)
    if writer is not None:
        writer.close()
    return Run(run_dir, config, model, train_ds.classes, train_ds.image_shape, metrics)


def _tensorboard_writer(run_dir: Path, first_epoch: int) -> Any:
    """A SummaryWriter for RUN/tensorboard. purge_step drops events a killed run wrote after its
    last checkpoint, so that a resumed run's curves have no duplicate epochs."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise VaegenError(
            "--tensorboard needs the tensorboard package: pip install 'vaegen[tensorboard]'"
        ) from None
    return SummaryWriter(str(run_dir / "tensorboard"), purge_step=first_epoch)


def load_run(path: str | Path, device: str = "cpu") -> Run:
    """Rebuild a trained model from its run directory (config.json + model.safetensors)."""
    run_dir = Path(path)
    config, facts = ckpt.load_config(run_dir)
    try:
        image_shape = tuple(int(v) for v in facts["image_shape"])
        classes = [str(c) for c in facts["classes"]]
    except (KeyError, TypeError, ValueError):
        raise RunError(
            f"{run_dir / ckpt.CONFIG}: missing the dataset's image_shape/classes"
        ) from None
    model = build_model(config, image_shape, len(classes))  # type: ignore[arg-type]
    ckpt.load_weights(model, run_dir / ckpt.WEIGHTS)
    model.to(resolve_device(device)).eval()
    return Run(run_dir, config, model, classes, image_shape, ckpt.read_metrics(run_dir))  # type: ignore[arg-type]

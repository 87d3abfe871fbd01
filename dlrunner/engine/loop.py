"""The training loop: `fit` runs the epochs, `train_epoch` the steps of one. Plain arguments, no
config: a test or a notebook calls them with a built job (dlrunner.build.build_job)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import nn

from dlrunner.engine import distributed
from dlrunner.engine.checkpoint import Checkpointer, Discard, payload
from dlrunner.engine.evaluate import evaluate, score_split  # noqa: F401 - evaluate: also imported from here
from dlrunner.engine.meter import Meter, Throughput
from dlrunner.engine.metric import improves, minimize
from dlrunner.engine.oom import OOMGuard
from dlrunner.engine.precision import Precision
from dlrunner.engine.step import Backward
from dlrunner.engine.stop import Interrupted, StopSignal
from dlrunner.tricks.base import Tricks

if TYPE_CHECKING:
    from dlrunner.engine.job import Job


@dataclass
class TrainState:
    """Where training stands; saved in every checkpoint."""

    epoch: int = 0  # the epoch in progress (0-based)
    batch: int = 0  # next batch of that epoch
    step: int = 0  # optimizer steps so far
    history: list[dict] = field(default_factory=list)  # one row per finished epoch
    best: float | None = None
    best_epoch: int | None = None
    seen: dict[str, int] = field(default_factory=dict)  # samples in the last finished epoch, per split (not saved)


def lr_of(optimizer: torch.optim.Optimizer) -> float:
    """The largest learning rate of the optimizer's groups (read afresh: tricks swap optimizers)."""
    return max(g["lr"] for g in optimizer.param_groups)


def fit(job: Job, state: TrainState, meter: Meter, stop: StopSignal, saver: Checkpointer | Discard, out: Any, *,
        epochs: int, until: int, metric: str, log_every: int, config_yaml: str,
        on_epoch_end: Callable[[dict, bool], None] = lambda row, improved: None, oom: OOMGuard | None = None) -> None:
    """Train from `state` to the end of epoch `until` of an `epochs`-epoch run (the schedule spans
    `epochs`; until < epochs pauses: stop_after). After each epoch: validate (no held-out split in
    mode=final: every epoch is the best), record the row, hand the checkpoint to `saver`, then
    `on_epoch_end(row, improved)` (metrics.csv, pictures, loggers). `out` shows the progress
    (dlrunner.reporting.console.Reporter); `stop()` is asked after every step. Raises Interrupted
    (after saving) on a stop request."""
    lower, world = minimize(metric), distributed.current()
    progress = Throughput(log_every, out.step, lambda: lr_of(job.optimizer))
    ddp = distributed.DataParallel(job.device) if world.active else None
    val = distributed.ShardedBatches(job.val, world) if world.active else None
    any_rank = (lambda flag: distributed.any_rank(flag, job.device)) if world.active else None
    nan_every = 1 if job.device.type == "cpu" else log_every  # each NaN check syncs a GPU
    while state.epoch < until:
        t0 = time.perf_counter()
        job.tricks.on_epoch_start(state.epoch)
        forward = ddp(job.model) if ddp else None  # after on_epoch_start: it may unfreeze layers
        with out.epoch(state.epoch, epochs, len(job.train), state.batch):
            done = train_epoch(job.model, job.train, job.loss_fn, job.optimizer, job.schedule, job.precision,
                               job.tricks, state, meter, stop, progress, nan_every=nan_every, forward=forward,
                               any_rank=any_rank, oom=oom, watch=job.watch)
        if not done:
            saver.save_now(payload(job, state, meter.reduced(), config_yaml))  # all ranks' partial sums
            raise Interrupted(stop.signum)
        if world.active:
            distributed.sync_buffers(job.model)  # BatchNorm statistics: rank 0's, as saved
        train_meter = meter.reduced()
        state.seen = {"train": train_meter.n}
        held_out = {} if job.data.val_in_train else score_split(job, "val", val, state.seen)
        row = {"epoch": state.epoch + 1, **train_meter.result("train"), **held_out, "lr": lr_of(job.optimizer),
               **job.tricks.on_epoch_end(state.epoch), "time": time.perf_counter() - t0}
        state.history.append(row)
        # mode=final selects nothing: every epoch replaces best.pt, the last weights are the model
        improved = job.data.val_in_train or improves(row.get(metric), state.best, lower)
        if improved:
            state.best, state.best_epoch = row.get(metric), row["epoch"]
        state.epoch, state.batch, meter = state.epoch + 1, 0, Meter(job.device)
        saver.epoch_end(payload(job, state, meter, config_yaml), improved)
        on_epoch_end(row, improved)
        if stop():
            raise Interrupted(stop.signum)


def train_epoch(model: nn.Module, batches, loss_fn: Callable, optimizer: torch.optim.Optimizer, schedule,
                precision: Precision, tricks: Tricks, state: TrainState, meter: Meter,
                should_stop: Callable[[], bool], on_progress: Callable[[int, torch.Tensor], None],
                nan_every: int = 1, forward: nn.Module | None = None,
                any_rank: Callable[[bool], bool] | None = None, oom: OOMGuard | None = None, watch=None) -> bool:
    """Train from state.batch to the end of state.epoch. False if stopped early (signal).
    The loss is checked for NaN/Inf before the backward pass every `nan_every` steps (each check
    syncs the device; on a CPU it is free), so the weights of the last good step are intact.

    Data parallel: `forward` is the DistributedDataParallel wrapper of `model`, `any_rank` turns
    a local flag into the same answer on every rank, and `batches.weight` is a rank's share of an
    uneven batch (dlrunner.engine.step). oom: on out-of-memory the batch is retried in smaller
    pieces (dlrunner.engine.oom); without it the error propagates. watch: the run's watchdog
    (dlrunner.watch): it sees the gradients before each step and the loss after it."""
    model.train()
    backward = Backward(forward if forward is not None else model, loss_fn, optimizer, precision, tricks, batches,
                        any_rank)
    for i, batch in batches.iterate(state.epoch, state.batch):
        x, y = tricks.on_batch(batch, state.step)
        check = state.step % nan_every == 0
        if oom is None:
            loss, out = backward(x, y, len(y), state.step, check)
        else:
            loss, out = oom.run(lambda micro: backward(x, y, micro, state.step, check), len(y))
        precision.unscale(optimizer)  # gradients are true values from here (fp16)
        tricks.after_backward(model, state.step)
        if watch is not None:
            watch.before_step(state.step, optimizer)
        precision.step(optimizer)
        schedule.step()
        tricks.after_step(model, state.step)
        meter.update(loss, out, y)
        if watch is not None:
            watch.after_step(state.step, state.epoch, loss, x, optimizer, schedule)
        state.step, state.batch = state.step + 1, i + 1
        on_progress(i + 1, loss)
        if should_stop():
            return False
    if watch is not None:
        watch.epoch_end(state.epoch, getattr(batches, "num_samples", 0))
    return True

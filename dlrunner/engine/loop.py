"""The training loop: one epoch of steps, and evaluation. Plain arguments, no config."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.distributed as dist
from torch import nn

from dlrunner.engine.oom import OOMGuard, pieces
from dlrunner.engine.precision import Precision
from dlrunner.tricks.base import Tricks


class Meter:
    """Sample-weighted loss and accuracy over a whole split, accumulated on the device
    (no host sync per step): loss = sum(batch_loss * batch_size) / N."""

    def __init__(self, device: torch.device, state: dict | None = None):
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.n = 0
        if state:
            self.loss_sum += state["loss_sum"]
            self.correct += state["correct"]
            self.n = int(state["n"])

    def update(self, loss: torch.Tensor, out: torch.Tensor, y: torch.Tensor) -> None:
        self.loss_sum.add_(loss.detach(), alpha=len(y))  # in place: few tiny ops on the hot path
        hard = y if y.dim() == 1 else y.argmax(1)  # soft targets (mixup, smoothing): the dominant class
        self.correct.add_((out.detach().argmax(1) == hard).sum())
        self.n += len(y)

    def result(self, prefix: str) -> dict[str, float]:
        n = max(self.n, 1)
        return {f"{prefix}/loss": self.loss_sum.item() / n, f"{prefix}/acc": self.correct.item() / n}

    def state_dict(self) -> dict:
        return {"loss_sum": self.loss_sum.cpu(), "correct": self.correct.cpu(), "n": self.n}

    def reduced(self) -> Meter:
        """The sums over all ranks of a data-parallel run (every rank must call it at the same
        point); itself when there is no process group."""
        if not (dist.is_available() and dist.is_initialized()):
            return self
        dev = self.loss_sum.device
        t = torch.stack([self.loss_sum, self.correct.to(torch.float64),
                         torch.tensor(float(self.n), dtype=torch.float64, device=dev)])
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        out = Meter(dev)
        out.loss_sum += t[0]
        out.correct += t[1].round().to(torch.int64)
        out.n = int(t[2].item())
        return out


class NonFiniteLoss(Exception):
    """The training loss became NaN/Inf; carries the batch so it can be replayed and localized."""

    def __init__(self, step: int, loss: float, batch: tuple[torch.Tensor, torch.Tensor]):
        super().__init__(f"non-finite loss ({loss}) at step {step}")
        self.step, self.loss, self.batch = step, loss, batch


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


def train_epoch(model: nn.Module, batches, loss_fn: Callable, optimizer: torch.optim.Optimizer, schedule,
                precision: Precision, tricks: Tricks, state: TrainState, meter: Meter,
                should_stop: Callable[[], bool], on_progress: Callable[[int, torch.Tensor], None],
                nan_every: int = 1, forward: nn.Module | None = None,
                any_rank: Callable[[bool], bool] | None = None, oom: OOMGuard | None = None, watch=None) -> bool:
    """Train from state.batch to the end of state.epoch. False if stopped early (signal).
    The loss is checked for NaN/Inf before the backward pass every `nan_every` steps (each check
    syncs the device; on a CPU it is free), so the weights of the last good step are intact.

    Data parallel: `forward` is the DistributedDataParallel wrapper of `model`, `any_rank` turns
    a local flag into the same answer on every rank (a NaN on one rank stops all of them), and
    `batches.weight` (a rank's share of an uneven batch) scales the loss that is backpropagated
    so the averaged gradient is the whole batch's.

    oom: on out-of-memory the batch is retried in smaller pieces whose gradients add up to the
    whole batch's (see dlrunner.engine.oom); without it the error propagates.

    watch: the run's watchdog (dlrunner.watch): it sees the gradients before each step and the
    loss after it, and checks its invariants every few steps."""
    model.train()
    fwd = forward if forward is not None else model

    def forward_backward(x: torch.Tensor, y: torch.Tensor, micro: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Gradients of the batch's loss, accumulated over pieces of at most `micro` samples
        (one piece, the usual case: no slicing, no extra op). Returns (loss, logits), detached
        when in pieces. The loss is checked before each backward: weights are not touched."""
        optimizer.zero_grad(set_to_none=True)
        n, weight = len(y), getattr(batches, "weight", 1.0)
        parts = pieces(n, micro)
        total, outs = None, []
        for lo, hi in parts:
            xs, ys = (x, y) if len(parts) == 1 else (x[lo:hi], y[lo:hi])
            with precision.autocast():
                out = fwd(xs)  # (B, K) logits
                loss = tricks.on_loss(loss_fn(out, ys), out, (xs, ys))
            if state.step % nan_every == 0:
                bad = not bool(torch.isfinite(loss.detach()))
                if any_rank is not None:
                    bad = any_rank(bad)
                if bad:
                    raise NonFiniteLoss(state.step, float(loss.detach()), (x, y))
            share = weight * (hi - lo) / n  # the mean over the batch is the share-weighted sum of piece means
            precision.backward(loss * share if share != 1.0 else loss)
            if len(parts) == 1:
                return loss, out
            total = loss.detach() * ((hi - lo) / n) + (0 if total is None else total)
            outs.append(out.detach())
        return total, torch.cat(outs)

    for i, batch in batches.iterate(state.epoch, state.batch):
        x, y = tricks.on_batch(batch, state.step)
        if oom is None:
            loss, out = forward_backward(x, y, len(y))
        else:
            loss, out = oom.run(lambda micro: forward_backward(x, y, micro), len(y))
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


@torch.no_grad()
def evaluate(model: nn.Module, batches, loss_fn: Callable, precision: Precision, prefix: str = "val",
             predict: Callable | None = None, reduce: bool = False, counts: dict | None = None) -> dict[str, float]:
    """Loss and accuracy over a whole split in eval mode (dropout off, BatchNorm running stats).
    reduce: `batches` is one rank's shard; sum over ranks. counts: gets {prefix: samples seen}."""
    was_training = model.training
    model.eval()
    meter = Meter(next(model.parameters()).device)
    for _, (x, y) in batches.iterate(0):
        with precision.autocast():
            out = predict(model, x) if predict else model(x)
        meter.update(loss_fn(out.float(), y), out, y)
    model.train(was_training)
    if reduce:
        meter = meter.reduced()
    if counts is not None:
        counts[prefix] = meter.n
    return meter.result(prefix)


class Throughput:
    """Refreshes the progress display every `every` steps; the only place a step syncs."""

    def __init__(self, every: int, report: Callable[[int, float | None, float, float], None], lr: Callable[[], float]):
        self.every, self.report, self.lr = max(1, every), report, lr  # lr(): read afresh (optimizers get swapped)
        self.t0, self.last = time.perf_counter(), 0

    def __call__(self, done: int, loss: torch.Tensor) -> None:
        if done % self.every:
            return
        now = time.perf_counter()
        its = (done - self.last) / max(now - self.t0, 1e-9)
        self.t0, self.last = now, done
        self.report(done, float(loss.detach()), self.lr(), its)

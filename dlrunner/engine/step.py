"""One batch's forward and backward pass, and what can go wrong in it: a non-finite loss (stop
before the weights are touched), out of memory (the batch in pieces whose gradients add up to the
whole batch's), and a rank's uneven share of a batch in a data-parallel run."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from dlrunner.engine.oom import pieces
from dlrunner.engine.precision import Precision
from dlrunner.tricks.base import Tricks


class NonFiniteLoss(Exception):
    """The training loss became NaN/Inf; carries the batch so it can be replayed and localized."""

    def __init__(self, step: int, loss: float, batch: tuple[torch.Tensor, torch.Tensor]):
        super().__init__(f"non-finite loss ({loss}) at step {step}")
        self.step, self.loss, self.batch = step, loss, batch


def check_finite(loss: torch.Tensor, step: int, batch: tuple, any_rank: Callable[[bool], bool] | None) -> None:
    """Raise NonFiniteLoss when the loss is NaN/Inf (on any rank: a NaN on one stops all of them).
    A device sync: the loop asks for it every few steps on a GPU."""
    bad = not bool(torch.isfinite(loss.detach()))
    if any_rank is not None:
        bad = any_rank(bad)
    if bad:
        raise NonFiniteLoss(step, float(loss.detach()), batch)


def share(weight: float, lo: int, hi: int, n: int) -> float:
    """The factor on the loss of samples [lo, hi) of a batch of n: the batch mean is the share-
    weighted sum of piece means, times this rank's `weight` in an uneven data-parallel batch, so
    the averaged gradient is the whole batch's."""
    return weight * (hi - lo) / n


@dataclass
class Backward:
    """Gradients of one batch's loss (the optimizer does not step here)."""

    forward: nn.Module  # the model, or its DistributedDataParallel wrapper
    loss_fn: Callable
    optimizer: torch.optim.Optimizer
    precision: Precision
    tricks: Tricks
    batches: Any = None  # the batch source; in a data-parallel run its `weight` is this rank's share of the batch
    any_rank: Callable[[bool], bool] | None = None  # a local flag -> the same answer on every rank

    def __call__(self, x: torch.Tensor, y: torch.Tensor, micro: int, step: int,
                 check: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Accumulate over pieces of at most `micro` samples (one piece, the usual case: no
        slicing, no extra op). Returns (loss, logits), detached when in pieces. check: test the
        loss for NaN/Inf before each backward, so the weights are not touched."""
        self.optimizer.zero_grad(set_to_none=True)
        n, weight = len(y), getattr(self.batches, "weight", 1.0)  # read per batch: shares differ between batches
        parts = pieces(n, micro)
        total, outs = None, []
        for lo, hi in parts:
            xs, ys = (x, y) if len(parts) == 1 else (x[lo:hi], y[lo:hi])
            with self.precision.autocast():
                out = self.forward(xs)  # (B, K) logits
                loss = self.loss_fn(out, ys)
            if check:
                check_finite(loss, step, (x, y), self.any_rank)
            factor = share(weight, lo, hi, n)
            self.precision.backward(loss * factor if factor != 1.0 else loss)
            if len(parts) == 1:
                return loss, out
            total = loss.detach() * ((hi - lo) / n) + (0 if total is None else total)
            outs.append(out.detach())
        return total, torch.cat(outs)

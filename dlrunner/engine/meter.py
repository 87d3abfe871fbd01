"""What an epoch measures: sample-weighted loss and accuracy (Meter), and the progress display's
refresh (Throughput)."""
from __future__ import annotations

import time
from typing import Callable

import torch
import torch.distributed as dist


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

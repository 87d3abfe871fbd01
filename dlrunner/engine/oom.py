"""Surviving out-of-memory in a training step: free what the failed attempt held, halve the
micro-batch and accumulate gradients over the pieces, so the optimizer still takes one step per
batch with the same effective batch (Lightning users know this as accumulate_grad_batches; here
it happens on its own, once, and is reported in the console and in summary.json)."""
from __future__ import annotations

import gc
from typing import Callable, TypeVar

import torch

from dlrunner.errors import DlrunError

T = TypeVar("T")

REMEDIES = ("a smaller model (model.width / model.depth)", "mixed precision (precision=bf16-mixed or trick=amp)",
            "smaller inputs (data.size)", "fewer other processes on the GPU", "device=cpu")


def free_memory(device: torch.device) -> None:
    """Return what a failed attempt held: its tensors are unreachable once the exception is gone,
    the collector breaks reference cycles, the caching allocator gives blocks back."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def pieces(n: int, micro: int) -> list[tuple[int, int]]:
    """[lo, hi) ranges of at most `micro` samples covering a batch of n."""
    return [(lo, min(lo + micro, n)) for lo in range(0, n, micro)]


class OOMGuard:
    """Runs a step at the current micro-batch size; on torch.OutOfMemoryError halves it and
    retries the same batch. The size found is kept for the rest of the run (and the next runs
    of this process). At one sample per piece an OOM becomes a DlrunError naming the remedies."""

    def __init__(self, device: torch.device, note: Callable[[str], None] = print):
        self.device, self.note = device, note
        self.micro: int | None = None  # None: whole batches
        self.batch: int | None = None  # the batch size when memory first ran out
        self.events = 0  # halvings
        self.told = False

    def run(self, step: Callable[[int], T], n: int) -> T:
        """`step(micro)` trains on one batch of n samples in pieces of at most `micro`."""
        while True:
            micro = min(self.micro or n, n)
            failed = False
            try:
                result = step(micro)
                if self.micro is not None and not self.told:  # once, with the size that worked
                    self.told = True
                    self.note(f"out of memory at batch size {self.batch}: continuing with micro-batches of "
                              f"{self.micro} and gradient accumulation (same effective batch, one optimizer "
                              f"step per batch)")
                return result
            except torch.OutOfMemoryError:
                failed = True  # handled below, outside the except block, where the traceback (and the
                # tensors its frames hold) is already released
            if failed:
                free_memory(self.device)
                self.shrink(micro, n)

    def shrink(self, micro: int, n: int) -> None:
        if micro <= 1:
            raise DlrunError("out of memory with a micro-batch of 1 sample; try " + ", ".join(REMEDIES))
        if self.batch is None:
            self.batch = n
        self.micro = (micro + 1) // 2
        self.events += 1

    def report(self) -> dict | None:
        """summary.json's `oom` entry (None when memory never ran out)."""
        if self.micro is None:
            return None
        return {"batch_size": self.batch, "micro_batch": self.micro, "halvings": self.events,
                "accumulation": -(-self.batch // self.micro)}

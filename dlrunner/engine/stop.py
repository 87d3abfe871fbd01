"""Stopping on SIGINT/SIGTERM between steps, so that a checkpoint can be saved first."""
from __future__ import annotations

import signal

import torch

from dlrunner.engine import distributed


class Interrupted(Exception):
    """Training stopped on SIGINT/SIGTERM after saving a checkpoint."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopSignal:
    """Turns SIGINT/SIGTERM into a flag the loop checks after each step (a second Ctrl-C kills).

    Data parallel: every rank must stop after the same step (DDP steps together), so the flag is
    only answered every `every` checks, with the largest signal number any rank received; every
    rank makes the same checks in the same order, so they all stop at the same one."""

    def __init__(self, world: distributed.World = distributed.SINGLE, device: torch.device | None = None,
                 every: int = 1):
        self.signum: int | None = None
        self._old = {}
        self.world, self.device, self.every, self.calls = world, device or torch.device("cpu"), max(1, every), 0

    def __enter__(self):
        for s in (signal.SIGINT, signal.SIGTERM):
            self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signum is not None:
            signal.signal(signum, self._old[signum])
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)

    def __call__(self) -> bool:
        if not self.world.active:
            return self.signum is not None
        self.calls += 1
        if self.calls % self.every:
            return False
        t = torch.tensor([float(self.signum or 0)], device=self.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        if t.item():
            self.signum = int(t.item())
        return bool(t.item())

"""1cycle (Smith 2018, "A disciplined approach to neural network hyper-parameters"):
LR warms up from max_lr/div_factor to max_lr, then anneals far below the start, while
momentum (SGD) or beta1 (Adam) goes 0.95 -> 0.85 -> 0.95. Suggested: max_lr from lr_finder,
pct_start 0.25 (fastai), div_factor 25, final_div_factor 1e4."""
from __future__ import annotations

import torch

from dlrunner.engine import schedules
from dlrunner.tricks.base import Trick


class OneCycle(Trick):
    name = "onecycle"
    owns = frozenset({"schedule"})

    def __init__(self, max_lr: float | None = None, pct_start: float = 0.25, div_factor: float = 25.0,
                 final_div_factor: float = 1e4, base_momentum: float = 0.85, max_momentum: float = 0.95):
        self.configured_max_lr, self.pct_start = max_lr, pct_start
        self.div_factor, self.final_div_factor = div_factor, final_div_factor
        self.base_momentum, self.max_momentum = base_momentum, max_momentum
        self.job = None

    @property
    def max_lr(self) -> float | None:
        """The cycle's peak: the LR another trick found for this run (lr_finder: the job's peak_lr),
        else the configured max_lr (None: the optimizer's LR)."""
        peak = self.job.peak_lr if self.job is not None else None
        return peak if peak is not None else self.configured_max_lr

    def schedule(self, optimizer: torch.optim.Optimizer, total_steps: int, steps_per_epoch: int):
        return schedules.onecycle(optimizer, total_steps, steps_per_epoch, max_lr=self.max_lr,
                                  pct_start=self.pct_start, div_factor=self.div_factor,
                                  final_div_factor=self.final_div_factor, base_momentum=self.base_momentum,
                                  max_momentum=self.max_momentum)

    def bind(self, job) -> None:
        self.job = job

    def report(self) -> dict:
        groups = self.job.optimizer.param_groups if self.job is not None else []
        peaks = [g["max_lr"] for g in groups if "max_lr" in g]
        return {"max_lr": max(peaks) if peaks else self.max_lr, "pct_start": self.pct_start,
                "div_factor": self.div_factor, "final_div_factor": self.final_div_factor}

"""The built job: everything one run trains with, as plain objects (dlrunner.build makes it from the
config; tricks see it read-only and return their replacements)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from dlrunner.data.core import DataBundle
from dlrunner.engine.precision import Precision
from dlrunner.tricks.base import Tricks


@dataclass
class Job:
    """Everything one run trains with."""

    data: DataBundle
    model: nn.Module
    loss_fn: Callable
    optimizer: torch.optim.Optimizer
    schedule: Any
    precision: Precision
    tricks: Tricks
    device: torch.device
    train: Any  # batches
    val: Any
    test: Any
    epochs: int
    make_optimizer: Callable[[Any], torch.optim.Optimizer]  # the configured optimizer, for new params
    make_schedule: Callable[[torch.optim.Optimizer], Any]  # the configured schedule over the whole run
    full_model: nn.Module | None = None  # set when `model` trains only part of it (precompute)
    watch: Any = None  # the run's watchdog (dlrunner.watch), set by the runner
    peak_lr: float | None = None  # the LR a trick found for the schedule to peak at (lr_finder): onecycle's max_lr

    @property
    def steps_per_epoch(self) -> int:
        return len(self.train)

    @property
    def base_model(self) -> nn.Module:
        """The module whose weights are saved (under torch.compile, the original one)."""
        if self.full_model is not None:
            return self.full_model
        return getattr(self.model, "_orig_mod", self.model)

"""Exponential moving average of the weights (Polyak & Juditsky 1992; as in timm's ModelEma),
with torch.optim.swa_utils.AveragedModel over parameters and buffers. Evaluation uses the
averaged model (`val/acc`); the live model is reported as `val/plain_acc`. The decay warms up as
min(decay, (1 + n) / (10 + n)) so early epochs are not dominated by the initial weights.
Suggested: decay 0.999 (a few thousand steps or more), 0.99 for short runs. Use EMA or SWA, not both."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from dlrunner.errors import DlrunError
from dlrunner.tricks.base import Trick


class EMA(Trick):
    name = "ema"
    owns = frozenset({"weight averaging"})

    def __init__(self, decay: float = 0.999, warmup: bool = True):
        if not 0 < decay < 1:
            raise DlrunError(f"trick.ema.decay must be in (0, 1), got {decay}")
        self.decay, self.warmup = float(decay), bool(warmup)
        self.avg: AveragedModel | None = None

    def _avg_fn(self, avg: torch.Tensor, cur: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        d = min(self.decay, (1 + float(n)) / (10 + float(n))) if self.warmup else self.decay
        return d * avg + (1 - d) * cur

    def bind(self, job: Any) -> None:
        self.avg = AveragedModel(job.base_model, avg_fn=self._avg_fn, use_buffers=True)

    def after_step(self, model: nn.Module, step: int) -> None:
        self.avg.update_parameters(getattr(model, "_orig_mod", model))

    def eval_model(self, model: nn.Module) -> nn.Module:
        return self.avg.module.eval()

    def state_dict(self) -> dict:
        return {"avg": self.avg.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.avg.load_state_dict(state["avg"])

    def report(self) -> dict:
        return {"decay": self.decay, "updates": int(self.avg.n_averaged)}

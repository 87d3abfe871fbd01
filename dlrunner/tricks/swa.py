"""Stochastic Weight Averaging (Izmailov et al. 2018, "Averaging Weights Leads to Wider Optima"):
from `start_frac` of training on, average the weights at each epoch end
(torch.optim.swa_utils.AveragedModel), then recompute BatchNorm statistics for the averaged
weights with `update_bn` (resetting them by hand with momentum=0 gave ~0 accuracy, Lightning
#14866). `swa_lr` (optional) holds the LR constant while averaging, as in the paper.
Suggested: start_frac 0.75, swa_lr ~ 0.05x-0.5x of the peak LR. Use SWA or EMA, not both."""
from __future__ import annotations

from typing import Any

from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from torch.optim.swa_utils import AveragedModel, update_bn

from dlrunner.errors import DlrunError
from dlrunner.tricks.base import Trick
from dlrunner.tricks.context import Parts


class SWA(Trick):
    name = "swa"
    owns = frozenset({"weight averaging"})

    def __init__(self, start_frac: float = 0.75, swa_lr: float | None = None):
        if not 0 <= start_frac < 1:
            raise DlrunError(f"trick.swa.start_frac must be in [0, 1), got {start_frac}")
        if swa_lr is not None and not swa_lr > 0:
            raise DlrunError(f"trick.swa.swa_lr must be > 0, got {swa_lr}")
        self.start_frac, self.swa_lr = float(start_frac), swa_lr
        self.job = self.avg = None
        self.start_epoch = 0

    def bind(self, job: Any) -> None:
        self.job = job
        self.avg = AveragedModel(job.base_model)  # equal-weight running mean of the snapshots
        self.start_epoch = int(self.start_frac * job.epochs)
        self.has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in job.base_model.modules())

    def _hold_lr(self) -> Parts:
        for g in self.job.optimizer.param_groups:
            g["lr"] = self.swa_lr
        return Parts(schedule=LambdaLR(self.job.optimizer, lambda step: 1.0))

    def on_epoch_start(self, epoch: int) -> Parts | None:
        return self._hold_lr() if self.swa_lr is not None and epoch == self.start_epoch else None

    def on_epoch_end(self, epoch: int) -> dict[str, float]:
        if epoch < self.start_epoch:
            return {}
        self.avg.update_parameters(self.job.base_model)
        if self.has_bn:  # statistics that belong to the averaged weights, so val metrics are right
            update_bn((x for _, (x, _) in self.job.train.iterate(0)), self.avg, device=self.job.device)
        return {"swa/n_averaged": float(self.avg.n_averaged)}

    def eval_model(self, model: nn.Module) -> nn.Module | None:
        return self.avg.module.eval() if int(self.avg.n_averaged) > 0 else None

    def state_dict(self) -> dict:
        return {"avg": self.avg.state_dict()}

    def load_state_dict(self, state: dict) -> Parts | None:
        self.avg.load_state_dict(state["avg"])
        if self.swa_lr is not None and int(self.avg.n_averaged) > 0:
            return self._hold_lr()  # before the resume loads the schedule state into it
        return None

    def report(self) -> dict:
        return {"start_epoch": self.start_epoch, "n_averaged": int(self.avg.n_averaged), "swa_lr": self.swa_lr,
                "bn_updated": self.has_bn}

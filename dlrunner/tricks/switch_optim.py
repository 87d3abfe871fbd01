"""Switching optimizers mid-run (the guides: "make switch between them"; Keskar & Socher 2017,
"Improving Generalization Performance by Switching from Adam to SGD"): train with the configured
optimizer, then from `at_epoch` on with a fresh `to` optimizer at its own constant LR.
Suggested: Adam/AdamW early, SGD with momentum late, at ~half of training; SGD needs a larger
LR than Adam (e.g. 1e-2 to 1e-1 vs 3e-4). Owns the schedule (constant LR after the switch)."""
from __future__ import annotations

import importlib
from typing import Any

from torch.optim.lr_scheduler import LambdaLR

from dlrunner import conf_lists
from dlrunner.errors import DlrunError
from dlrunner.tricks.base import Trick
from dlrunner.tricks.context import Parts


class SwitchOptim(Trick):
    name = "switch_optim"
    owns = frozenset({"schedule"})

    def __init__(self, to: str = "sgd", at_epoch: int | None = None, lr: float = 0.01, momentum: float = 0.9,
                 nesterov: bool = False, weight_decay: float = 0.0):
        optimizers = conf_lists.names("optim")  # conf/optim/ is the list of optimizers
        if to not in optimizers:
            raise DlrunError(f"trick.switch_optim.to must be one of {', '.join(optimizers)}; got {to!r}")
        if not lr > 0:
            raise DlrunError(f"trick.switch_optim.lr must be > 0, got {lr}")
        self.to, self.at_epoch, self.lr = to, at_epoch, float(lr)
        self.builder, defaults = _builder(to)
        # the `to` optimizer's conf file, with this trick's momentum / nesterov where it has them (sgd)
        self.kw = {**defaults, **{k: v for k, v in (("momentum", momentum), ("nesterov", nesterov)) if k in defaults},
                   "weight_decay": weight_decay}
        self.job, self.switched = None, False

    def bind(self, job: Any) -> None:
        self.job = job
        self.at_epoch = job.epochs // 2 if self.at_epoch is None else int(self.at_epoch)
        if not 0 < self.at_epoch < job.epochs:
            raise DlrunError(f"trick.switch_optim.at_epoch must be in 1..{job.epochs - 1}, got {self.at_epoch}")

    def _switch(self) -> Parts:
        params = [p for g in self.job.optimizer.param_groups for p in g["params"]]
        optimizer = self.builder(params, **{**self.kw, "lr": self.lr})
        self.switched = True
        return Parts(optimizer=optimizer, schedule=LambdaLR(optimizer, lambda step: 1.0))

    def on_epoch_start(self, epoch: int) -> Parts | None:
        return self._switch() if epoch == self.at_epoch and not self.switched else None

    def on_epoch_end(self, epoch: int) -> dict[str, float]:
        return {"switch_optim/switched": float(self.switched)}

    def state_dict(self) -> dict:
        return {"switched": self.switched}

    def load_state_dict(self, state: dict) -> Parts | None:
        if state.get("switched") and not self.switched:
            return self._switch()  # before the resume loads the saved optimizer state into it
        return None

    def report(self) -> dict:
        return {"to": self.to, "at_epoch": self.at_epoch, "lr": self.lr, "switched": self.switched}


def _builder(name: str) -> tuple[Any, dict]:
    """conf/optim/NAME.yaml's builder and its keys (the optimizer's settings there, `lr` aside)."""
    keys = conf_lists.node("optim", name)
    module, _, attr = str(keys.pop("_target_")).rpartition(".")
    keys.pop("_partial_", None)
    keys.pop("lr", None)
    return getattr(importlib.import_module(module), attr), keys

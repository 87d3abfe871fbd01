"""Learning-rate schedules, stepped once per batch. Each builder is completed at run time
with the optimizer, the total number of steps and the steps per epoch."""
from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR

from dlrunner.errors import DlrunError


def constant(optimizer: torch.optim.Optimizer, total_steps: int, steps_per_epoch: int) -> LRScheduler:
    """The optimizer's lr throughout."""
    return LambdaLR(optimizer, lambda step: 1.0)


def onecycle(optimizer: torch.optim.Optimizer, total_steps: int, steps_per_epoch: int, max_lr: float | None = None,
             pct_start: float = 0.25, div_factor: float = 25.0, final_div_factor: float = 1e4,
             cycle_momentum: bool = True, base_momentum: float = 0.85, max_momentum: float = 0.95) -> LRScheduler:
    """1cycle (Smith 2018): cosine warm-up to max_lr over pct_start, then cosine annealing;
    momentum (or Adam's beta1) moves the opposite way."""
    if not 0.0 < pct_start < 1.0:
        raise DlrunError(f"onecycle pct_start must be in (0, 1), got {pct_start}")
    if not (div_factor > 0 and final_div_factor > 0):
        raise DlrunError(f"onecycle div_factor and final_div_factor must be > 0, got {div_factor} and {final_div_factor}")
    if not 0 <= base_momentum <= max_momentum < 1:
        raise DlrunError(f"onecycle needs 0 <= base_momentum <= max_momentum < 1, got {base_momentum} and {max_momentum}")
    # per parameter group, so discriminative LRs keep their ratios: peak_i = max_lr * lr_i / max(lr)
    lrs = [g["lr"] for g in optimizer.param_groups]
    peak = [lr * (max_lr / max(lrs)) for lr in lrs] if max_lr is not None else lrs
    if not min(peak) > 0:
        raise DlrunError(f"onecycle max_lr must be > 0, got {max_lr}")
    has_momentum = "momentum" in optimizer.defaults or "betas" in optimizer.defaults
    if cycle_momentum and "momentum" in optimizer.defaults and optimizer.defaults["momentum"] == 0:
        cycle_momentum = False  # torch refuses to cycle a momentum that is off
    # +1: the scheduler also steps after the last optimizer step, which must land on the end
    return OneCycleLR(optimizer, max_lr=peak, total_steps=max(total_steps, 1) + 1, pct_start=pct_start,
                      div_factor=div_factor, final_div_factor=final_div_factor,
                      cycle_momentum=cycle_momentum and has_momentum, base_momentum=base_momentum,
                      max_momentum=max_momentum, anneal_strategy="cos")


def cosine(optimizer: torch.optim.Optimizer, total_steps: int, steps_per_epoch: int, eta_min: float = 0.0,
           warmup_epochs: float = 0.0) -> LRScheduler:
    """Linear warm-up, then cosine annealing from lr to eta_min at the last step."""
    if eta_min < 0 or warmup_epochs < 0:
        raise DlrunError(f"cosine needs eta_min >= 0 and warmup_epochs >= 0, got {eta_min} and {warmup_epochs}")
    base = optimizer.param_groups[0]["lr"]
    warm = int(warmup_epochs * steps_per_epoch)
    floor = eta_min / base if base > 0 else 0.0

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = min(1.0, (step - warm) / max(1, total_steps - warm))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))
    return LambdaLR(optimizer, factor)


def sgdr(optimizer: torch.optim.Optimizer, total_steps: int, steps_per_epoch: int, cycle_epochs: float = 5.0,
         cycle_mult: int = 1, eta_min: float = 0.0) -> LRScheduler:
    """SGDR (Loshchilov & Hutter 2017): cosine cycles with warm restarts."""
    if cycle_epochs <= 0 or int(cycle_mult) < 1 or eta_min < 0:
        raise DlrunError("sgdr needs cycle_epochs > 0, an integer cycle_mult >= 1 and eta_min >= 0")
    return torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        optimizer, T_0=max(1, int(round(cycle_epochs * steps_per_epoch))), T_mult=int(cycle_mult), eta_min=eta_min)


def step(optimizer: torch.optim.Optimizer, total_steps: int, steps_per_epoch: int, step_epochs: float = 10.0,
         gamma: float = 0.1) -> LRScheduler:
    """Multiply the LR by gamma every step_epochs epochs."""
    if step_epochs <= 0 or not 0 < gamma <= 1:
        raise DlrunError("step schedule needs step_epochs > 0 and gamma in (0, 1]")
    return torch.optim.lr_scheduler.StepLR(optimizer, max(1, int(round(step_epochs * steps_per_epoch))), gamma)

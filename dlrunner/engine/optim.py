"""Optimizers as flat-argument builders (each config key is one argument)."""
from __future__ import annotations

from typing import Iterable

import torch

from dlrunner.errors import DlrunError


def _check(lr: float, **betas: float) -> None:
    if not lr > 0:
        raise DlrunError(f"optim.lr must be > 0, got {lr}")
    for k, v in betas.items():
        if not 0.0 <= v < 1.0:
            raise DlrunError(f"optim.{k} must be in [0, 1), got {v}")


def adamw(params: Iterable, lr: float = 3e-4, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
          weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """AdamW (Loshchilov & Hutter 2019): Adam with decoupled weight decay."""
    _check(lr, beta1=beta1, beta2=beta2)
    return torch.optim.AdamW(params, lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay)


def adam(params: Iterable, lr: float = 3e-4, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
         weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """Adam (Kingma & Ba 2015)."""
    _check(lr, beta1=beta1, beta2=beta2)
    return torch.optim.Adam(params, lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay)


def sgd(params: Iterable, lr: float = 0.01, momentum: float = 0.9, nesterov: bool = False,
        weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """SGD with (Nesterov) momentum."""
    _check(lr, momentum=momentum)
    if nesterov and momentum <= 0:
        raise DlrunError("optim.nesterov needs optim.momentum > 0")
    return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)

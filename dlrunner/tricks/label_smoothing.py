"""Label smoothing (Szegedy et al. 2016, "Rethinking the Inception Architecture"): train on
targets (1 - eps) * one_hot + eps / K. Targets become soft once, here, so mixup/cutmix compose
with it in either order (Composer PR #1407: smoothing integer labels after mixup went wrong).
Suggested: eps 0.1."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from dlrunner.errors import DlrunError
from dlrunner.tricks.base import Trick


def soft_targets(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class ids (B,) -> one-hot (B, K) floats; soft targets pass through."""
    return F.one_hot(y, num_classes).float() if y.dim() == 1 else y


def smooth(y: torch.Tensor, num_classes: int, eps: float) -> torch.Tensor:
    return soft_targets(y, num_classes) * (1 - eps) + eps / num_classes


class LabelSmoothing(Trick):
    name = "label_smoothing"

    def __init__(self, eps: float = 0.1):
        if not 0 < eps < 1:
            raise DlrunError(f"trick.label_smoothing.eps must be in (0, 1), got {eps}")
        self.eps = float(eps)
        self.k = 0

    def bind(self, job: Any) -> None:
        if getattr(job.loss_fn, "label_smoothing", 0.0):
            raise DlrunError("trick=label_smoothing and loss.label_smoothing both smooth the labels; keep one")
        self.k = job.data.num_classes

    def on_batch(self, batch: tuple, step: int) -> tuple:
        x, y = batch
        return x, smooth(y, self.k, self.eps)

    def report(self) -> dict:
        return {"eps": self.eps}

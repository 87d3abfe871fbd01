"""Gradient clipping by global norm (Pascanu et al. 2013, "On the difficulty of training
recurrent neural networks"). Runs after the fp16 GradScaler has unscaled the gradients, so the
threshold is in true units (clipping scaled gradients was a bug in Lightning, PR #9606).
Suggested: max_norm 1.0 for transformers/LSTMs; watch `grad_clip/clipped` in metrics.csv."""
from __future__ import annotations

import torch
from torch import nn

from dlrunner.errors import DlrunError
from dlrunner.tricks.base import Trick


class GradClip(Trick):
    name = "grad_clip"

    def __init__(self, max_norm: float = 1.0, norm_type: float = 2.0):
        if not max_norm > 0:
            raise DlrunError(f"trick.grad_clip.max_norm must be > 0, got {max_norm}")
        if not float(norm_type) > 0:
            raise DlrunError(f"trick.grad_clip.norm_type must be > 0 (2 for the L2 norm, inf for the max), got {norm_type}")
        self.max_norm, self.norm_type = float(max_norm), float(norm_type)
        self.clipped = self.steps = None

    def after_backward(self, model: nn.Module, step: int) -> None:
        norm = nn.utils.clip_grad_norm_(model.parameters(), self.max_norm, self.norm_type)
        if self.clipped is None:
            self.clipped = torch.zeros((), device=norm.device)
            self.steps = 0
        # finite only: an fp16 overflow step is skipped by the GradScaler, not clipped
        self.clipped += ((norm > self.max_norm) & torch.isfinite(norm)).float()  # on the device: no sync per step
        self.steps += 1

    def on_epoch_end(self, epoch: int) -> dict[str, float]:
        if not self.steps:
            return {}
        frac = float(self.clipped) / self.steps
        self.clipped, self.steps = None, 0
        return {"grad_clip/clipped": frac}  # share of this epoch's steps that were clipped

    def report(self) -> dict:
        return {"max_norm": self.max_norm, "norm_type": self.norm_type}

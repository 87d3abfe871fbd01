"""Test-time augmentation (as in fastai's Learner.tta; airbench uses flips and 1-px shifts):
average the predicted probabilities over `n` augmented views, then mix with the plain view:
p = (1 - beta) * mean(p_aug) + beta * p_plain. The model stays in eval mode (dropout off,
BatchNorm running stats) and the views are fixed (no randomness at evaluation).
Reported as `val/acc` (with TTA) beside `val/plain_acc` (without). Suggested: n 4, beta 0.25."""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from dlrunner.errors import DlrunError
from dlrunner.tricks.base import Trick


def shift(x: torch.Tensor, d: int, dim: int) -> torch.Tensor:
    """Shift by d along dim, zero-filled (zero is the mean after normalization)."""
    out = torch.roll(x, d, dims=dim)
    idx = [slice(None)] * x.dim()
    idx[dim] = slice(0, d) if d > 0 else slice(d, None)
    out[tuple(idx)] = 0
    return out


def views(modality: str, flip: bool) -> list[Callable[[torch.Tensor], torch.Tensor]]:
    if modality == "image":
        out = [lambda x: x.flip(-1)] if flip else []
        return out + [lambda x, d=d, a=a: shift(x, d, a) for a in (-1, -2) for d in (1, -1)]
    return [lambda x, d=d: shift(x, d, -1) for d in (1, -1, 2, -2)]


class TTA(Trick):
    name = "tta"
    needs = {"images or sequences": "trick=tta needs images or sequences; data={data} is tabular"}

    def __init__(self, n: int = 4, beta: float = 0.25):
        if int(n) < 1 or not 0 <= beta <= 1:
            raise DlrunError("trick.tta needs n >= 1 and beta in [0, 1]")
        self.n, self.beta = int(n), float(beta)
        self.views: list = []

    def bind(self, job: Any) -> None:
        self.views = views(job.data.modality, job.data.flip)[: self.n]

    def predict(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        plain = F.softmax(model(x).float(), dim=1)
        aug = torch.stack([F.softmax(model(v(x)).float(), dim=1) for v in self.views]).mean(0)
        return torch.log((1 - self.beta) * aug + self.beta * plain + 1e-12)  # log-probs: the loss stays CE

    def report(self) -> dict:
        return {"views": len(self.views), "beta": self.beta}

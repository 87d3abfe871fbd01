"""mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019): train on convex combinations of
sample pairs (mixup) or on images with a patch pasted from another (CutMix), with targets mixed
in the same proportion. One lambda ~ Beta(alpha, alpha) per batch, drawn from torch's RNG (so a
resumed run draws the same ones). Suggested: alpha 0.2 (ImageNet) to 1.0 (CIFAR)."""
from __future__ import annotations

import math
from typing import Any

import torch

from dlrunner.errors import DlrunError
from dlrunner.tricks.base import Trick
from dlrunner.tricks.label_smoothing import soft_targets


def mix(x: torch.Tensor, y: torch.Tensor, lam: float, perm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """mixup of a batch with its permutation; y are soft targets (B, K)."""
    return lam * x + (1 - lam) * x[perm], lam * y + (1 - lam) * y[perm]


def cutmix(x: torch.Tensor, y: torch.Tensor, lam: float, perm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste a box of area ~(1 - lam) from the permuted batch; lam is corrected to the exact area."""
    H, W = x.shape[-2:]
    h, w = int(H * math.sqrt(1 - lam)), int(W * math.sqrt(1 - lam))
    cx = int(torch.randint(0, W, (1,)))
    cy = int(torch.randint(0, H, (1,)))
    y0, y1, x0, x1 = max(cy - h // 2, 0), min(cy + h // 2, H), max(cx - w // 2, 0), min(cx + w // 2, W)
    x = x.clone()
    x[..., y0:y1, x0:x1] = x[perm][..., y0:y1, x0:x1]
    lam = 1 - (y1 - y0) * (x1 - x0) / (H * W)
    return x, lam * y + (1 - lam) * y[perm]


class Mixup(Trick):
    name = "mixup"

    def __init__(self, alpha: float = 0.2, cutmix_alpha: float = 0.0, switch_prob: float = 0.5, prob: float = 1.0):
        if alpha < 0 or cutmix_alpha < 0 or alpha + cutmix_alpha == 0:
            raise DlrunError("trick.mixup needs alpha > 0 and/or cutmix_alpha > 0 (both >= 0)")
        if not 0 <= prob <= 1 or not 0 <= switch_prob <= 1:
            raise DlrunError("trick.mixup.prob and switch_prob must be in [0, 1]")
        self.alpha, self.cutmix_alpha, self.switch_prob, self.prob = alpha, cutmix_alpha, switch_prob, prob
        if cutmix_alpha > 0:  # CutMix cuts boxes out of images
            self.needs = {"images": "trick.mixup.cutmix_alpha needs images; data={data} is {modality}"}
        self.k = 0

    def bind(self, job: Any) -> None:
        self.k = job.data.num_classes

    def on_batch(self, batch: tuple, step: int) -> tuple:
        x, y = batch
        y = soft_targets(y, self.k)
        if float(torch.rand(())) >= self.prob:
            return x, y
        use_cut = self.cutmix_alpha > 0 and (self.alpha == 0 or float(torch.rand(())) < self.switch_prob)
        a = self.cutmix_alpha if use_cut else self.alpha
        lam = float(torch.distributions.Beta(a, a).sample())
        perm = torch.randperm(len(x)).to(x.device)
        return (cutmix if use_cut else mix)(x, y, lam, perm)

    def report(self) -> dict:
        return {"alpha": self.alpha, "cutmix_alpha": self.cutmix_alpha, "prob": self.prob}

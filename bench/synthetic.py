"""CIFAR-shaped data generated here (no download), for the GPU throughput benchmark: a `data._target_`
that returns (x, y), so dlrun splits and normalizes it like any user data set."""
from __future__ import annotations

import torch


def cifar_like(n: int = 50_000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n random 3x32x32 images with 0-255 pixel values and 10 balanced classes."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8).float()
    return x, torch.arange(n) % 10

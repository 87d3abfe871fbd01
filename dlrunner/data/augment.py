"""Batched, on-device augmentation: one call per batch, no per-sample Python."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


def translate(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Shift each image by up to +-pad pixels (zero = the mean after normalization)."""
    B, C, H, W = x.shape
    xp = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (B, 1), device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (B, 1), device=x.device)
    rows = (torch.arange(H, device=x.device) + dy)[:, None, :, None]  # (B, 1, H, 1)
    cols = (torch.arange(W, device=x.device) + dx)[:, None, None, :]  # (B, 1, 1, W)
    b = torch.arange(B, device=x.device)[:, None, None, None]
    c = torch.arange(C, device=x.device)[None, :, None, None]
    return xp[b, c, rows, cols]


def hflip(x: torch.Tensor) -> torch.Tensor:
    """Flip a random half of the batch left-right."""
    mask = torch.rand(x.shape[0], device=x.device) < 0.5
    return torch.where(mask[:, None, None, None], x.flip(-1), x)


def time_shift(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Shift each sequence by up to +-pad steps, zero-filled."""
    B, C, T = x.shape
    xp = F.pad(x, (pad, pad))
    d = torch.randint(0, 2 * pad + 1, (B, 1), device=x.device)
    idx = (torch.arange(T, device=x.device) + d)[:, None, :].expand(B, C, T)
    return xp.gather(2, idx)


def make_augment(modality: str, flip: bool, in_shape: tuple[int, ...]) -> Callable[[torch.Tensor], torch.Tensor]:
    """The default training augmentation for a modality (mild: shifts, optional flips, noise)."""
    if modality == "image":
        pad = max(1, in_shape[-1] // 14)  # 2 px at 28, 2 px at 32, 4 px at 64

        def aug(x):
            x = translate(x, pad)
            return hflip(x) if flip else x
        return aug
    if modality == "sequence":
        return lambda x: time_shift(x, max(1, in_shape[-1] // 20)) + 0.05 * torch.randn_like(x)
    return lambda x: x + 0.05 * torch.randn_like(x)  # tabular: jitter in normalized units

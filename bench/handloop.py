"""The baseline: a minimal hand-written PyTorch training loop, as a practitioner would type it."""
from __future__ import annotations

import torch
from torch import nn


def hand_epoch(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               xv: torch.Tensor, yv: torch.Tensor, batch_size: int, gen: torch.Generator,
               order: list[torch.Tensor] | None = None) -> tuple[float, float]:
    """One epoch of training plus a validation pass; returns (train loss, val acc). `order`: the
    index batches to take (to replay another loop's order), else a fresh permutation."""
    model.train()
    perm = torch.randperm(len(y), generator=gen)
    total = 0.0
    for idx in order if order is not None else (perm[i:i + batch_size] for i in range(0, len(y), batch_size)):
        out = model(x[idx])
        loss = nn.functional.cross_entropy(out, y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.item() * len(idx)
    model.eval()
    with torch.no_grad():
        correct = sum((model(xv[i:i + 256]).argmax(1) == yv[i:i + 256]).sum().item() for i in range(0, len(yv), 256))
    return total / len(y), correct / len(yv)

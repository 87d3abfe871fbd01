"""Numeric precision of the training step: fp32, or torch.amp autocast in bf16 / fp16 + GradScaler."""
from __future__ import annotations

from contextlib import nullcontext

import torch

from dlrunner.errors import DlrunError

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
PRECISIONS = {"32": None, "bf16-mixed": "bf16", "16-mixed": "fp16"}  # precision= value -> autocast dtype


def resolve_dtype(dtype: str, device: torch.device) -> str:
    """'auto' -> bf16 where the device has it (every CPU, Ampere+ GPUs), else fp16."""
    if dtype == "auto":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            return "fp16"
        return "bf16"
    if dtype not in DTYPES:
        raise DlrunError(f"amp dtype must be auto, bf16 or fp16; got {dtype!r}")
    return dtype


class Precision:
    """Autocast for the forward pass; for fp16 a GradScaler, unscaled before any clipping.

    Step order (Micikevicius et al. 2018): scale(loss).backward -> unscale_ -> clip -> step -> update.
    """

    def __init__(self, dtype: str | None, device: torch.device):
        self.dtype = resolve_dtype(dtype, device) if dtype else None
        self.device = device
        self.scaler = torch.amp.GradScaler(device.type) if self.dtype == "fp16" else None

    @property
    def name(self) -> str:
        return f"{self.dtype}-mixed" if self.dtype else "fp32"

    def autocast(self):
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=DTYPES[self.dtype])

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler:
            self.scaler.step(optimizer)  # skips the step when gradients overflowed
            self.scaler.update()
        else:
            optimizer.step()

    def state_dict(self) -> dict:
        return self.scaler.state_dict() if self.scaler else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scaler and state:
            self.scaler.load_state_dict(state)

"""Mixed precision (Micikevicius et al. 2018, "Mixed Precision Training") via torch.amp:
autocast the forward pass to bf16 (no scaler needed) or fp16 (with GradScaler: loss scaled
before backward, gradients unscaled before clipping, the step skipped on overflow)."""
from __future__ import annotations

import torch

from dlrunner.engine.precision import Precision, resolve_dtype
from dlrunner.tricks.base import Trick


class Amp(Trick):
    name = "amp"
    owns = frozenset({"precision"})

    def __init__(self, dtype: str = "auto"):
        resolve_dtype(dtype, torch.device("cpu"))  # reject a bad value before any work
        self.dtype = dtype
        self._precision: Precision | None = None

    def precision(self, device: torch.device) -> Precision:
        if self._precision is None:
            self._precision = Precision(self.dtype, device)
        return self._precision

    def report(self) -> dict:
        p = self._precision
        out = {"dtype": p.dtype if p else self.dtype}
        if p is not None and p.scaler is not None:
            out["grad_scale"] = float(p.scaler.get_scale())
        return out

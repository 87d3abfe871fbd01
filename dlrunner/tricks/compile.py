"""torch.compile: graph capture and kernel fusion. Off on CPU unless asked (minutes of warm-up,
small gains there); recompiles on every new input shape (progressive resizing). Checkpoints keep
the original module's weights, so a compiled run resumes into an uncompiled one and back."""
from __future__ import annotations

import warnings

import torch
from torch import nn

from dlrunner.errors import DlrunError
from dlrunner.tricks.base import Trick

MODES = ("default", "reduce-overhead", "max-autotune")


class Compile(Trick):
    name = "compile"

    def __init__(self, enabled: str | bool = "auto", mode: str = "default", backend: str = "inductor"):
        if mode not in MODES:
            raise DlrunError(f"trick.compile.mode must be one of {', '.join(MODES)}; got {mode!r}")
        if enabled not in ("auto", True, False):
            raise DlrunError(f"trick.compile.enabled must be auto, true or false; got {enabled!r}")
        self.enabled, self.mode, self.backend = enabled, mode, backend
        self.compiled = False

    def setup(self, model: nn.Module) -> nn.Module:
        on_cuda = next(model.parameters()).device.type == "cuda"
        if self.enabled is False or (self.enabled == "auto" and not on_cuda):
            if self.enabled == "auto":
                warnings.warn("trick=compile is off on CPU (set trick.compile.enabled=true to force it)")
            return model
        kw = {"backend": self.backend} if self.backend != "inductor" else {"mode": self.mode}
        self.compiled = True
        return torch.compile(model, **kw)

    def report(self) -> dict:
        return {"compiled": self.compiled, "backend": self.backend, "mode": self.mode}

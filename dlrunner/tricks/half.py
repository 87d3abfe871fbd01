"""Half tensors: the whole model in bf16 or fp16 (the guides: "slash your parameter size in
half"), with BatchNorm kept in fp32 and the loss computed in fp32 (Micikevicius et al. 2018).
Unlike `amp` there are no fp32 master weights, so fp16 can lose small updates (and Adam's eps
of 1e-8 is 0 in fp16): prefer bf16 (the default where the device has it). Use half or amp."""
from __future__ import annotations

import torch
from torch import nn

from dlrunner.errors import DlrunError
from dlrunner.engine.precision import DTYPES, Precision, resolve_dtype
from dlrunner.tricks.base import Trick


def _to_half(module: nn.Module, args: tuple, dtype: torch.dtype) -> tuple:
    return tuple(a.to(dtype) if torch.is_tensor(a) and a.is_floating_point() else a for a in args)


def _to_float(module: nn.Module, args: tuple, out):
    return out.float() if torch.is_tensor(out) else out


class Half(Trick):
    name = "half"
    owns = frozenset({"precision"})

    def __init__(self, dtype: str = "auto"):
        resolve_dtype(dtype, torch.device("cpu"))  # reject a bad value before any work
        self.dtype_name = dtype
        self.dtype: torch.dtype | None = None

    def setup(self, model: nn.Module) -> nn.Module:
        device = next(model.parameters()).device
        self.dtype = DTYPES[resolve_dtype(self.dtype_name, device)]
        if self.dtype == torch.float16:
            for m in model.modules():
                if isinstance(m, (nn.LSTM, nn.GRU)) and device.type == "cpu":
                    raise DlrunError("trick=half with fp16 recurrent layers is not supported on CPU; use dtype=bf16")
        model.to(self.dtype)
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.float()  # statistics and affine parameters stay fp32
                m.register_forward_pre_hook(lambda mod, args: _to_half(mod, args, torch.float32))
                m.register_forward_hook(lambda mod, args, out, dt=self.dtype: out.to(dt))
        model.register_forward_pre_hook(lambda mod, args: _to_half(mod, args, self.dtype))
        model.register_forward_hook(_to_float)  # logits in fp32: the loss is computed in fp32
        return model

    def precision(self, device: torch.device) -> Precision:
        return Precision(None, device)  # no autocast, no scaler: the weights themselves are half

    def report(self) -> dict:
        return {"dtype": str(self.dtype).replace("torch.", "")}

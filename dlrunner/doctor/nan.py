"""Where a NaN or Inf comes from: replay one batch with forward hooks that check every module's
output, and name the first module whose inputs were finite but whose output was not."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from dlrunner.doctor.activations import Observer


@dataclass
class NonFiniteReport:
    """What a replay found. `origin` is 'inputs', 'parameters', a module name, 'loss' or None."""

    origin: str | None
    module_type: str | None = None
    operation: str | None = None  # the torch function inside that module, when the replay saw it
    evidence: list[str] = field(default_factory=list)
    fix: str = ""

    def lines(self) -> list[str]:
        head = {None: "no non-finite value on replay (it depends on the step, e.g. a random draw or the update)",
                "inputs": "the input batch itself holds NaN/Inf",
                "parameters": "the weights are already non-finite",
                "loss": "the model's outputs are finite; the loss function produced the NaN/Inf"}
        op = f", by `{self.operation}`" if self.operation else ""
        first = head.get(self.origin, f"first produced by module `{self.origin}` ({self.module_type}){op}")
        return [first, *self.evidence] + ([f"fix: {self.fix}"] if self.fix else [])

    def to_dict(self) -> dict:
        return {"origin": self.origin, "module_type": self.module_type, "operation": self.operation, "evidence": self.evidence, "fix": self.fix}


def _finite(t) -> bool:
    if isinstance(t, torch.Tensor):
        return not t.is_floating_point() or bool(torch.isfinite(t).all())
    if isinstance(t, (tuple, list)):
        return all(_finite(v) for v in t)
    return True


def _bad_tensors(model: nn.Module) -> list[str]:
    named = list(model.named_parameters()) + list(model.named_buffers())
    return [n for n, t in named if t.is_floating_point() and not torch.isfinite(t).all()]


def _stats(t: torch.Tensor) -> str:
    t = t.detach().float()
    fin = t[torch.isfinite(t)]
    rng = f"finite range [{fin.min():.3g}, {fin.max():.3g}]" if fin.numel() else "no finite value"
    return f"{int((~torch.isfinite(t)).sum())}/{t.numel()} non-finite, {rng}"


def locate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable,
           autocast: Callable = None) -> NonFiniteReport:
    """Replay (x, y) through model and loss, in the model's current mode, without touching grads."""
    if x.is_floating_point() and not torch.isfinite(x).all():
        return NonFiniteReport("inputs", evidence=[f"inputs: {_stats(x)}"],
                               fix="clean the data (NaN/Inf in the raw files or a division by a zero std)")
    bad = _bad_tensors(model)
    if bad:
        return NonFiniteReport("parameters", evidence=[f"non-finite tensors: {', '.join(bad[:6])}"
                                                       + (" ..." if len(bad) > 6 else "")],
                               fix="the previous updates diverged: lower optim.lr, add trick=grad_clip, "
                                   "or check BatchNorm running_var")
    first: list[tuple[str, nn.Module, tuple, torch.Tensor]] = []

    def hook(name):
        def fn(mod, inp, out):
            if not first and _finite(inp) and not _finite(out):
                tensor = out if isinstance(out, torch.Tensor) else next(
                    (o for o in out if isinstance(o, torch.Tensor) and not _finite(o)), None)
                first.append((name, mod, inp, tensor))
        return fn

    handles = [m.register_forward_hook(hook(n or type(model).__name__)) for n, m in model.named_modules()]
    try:
        with torch.no_grad(), (autocast() if autocast else torch.autocast("cpu", enabled=False)):
            with Observer(model, nonfinite=True) as obs:  # the operation, module hooks alone see the module
                out = model(x)
            loss = loss_fn(out.float(), y) if _finite(out) else None
    finally:
        for h in handles:
            h.remove()
    op = obs.first_nonfinite
    if first:
        name, mod, inp, out_t = first[0]
        if op and op["module"] != name:  # a torch function in a module that has no hook of its own
            name, mod = op["module"], dict(model.named_modules()).get(op["module"], mod)
        ins = [i for i in inp if isinstance(i, torch.Tensor) and i.is_floating_point()]
        ev = [f"its input: {_stats(ins[0])}" if ins else "its input: (none)",
              f"its output: {_stats(out_t)}" if out_t is not None else "its output: non-finite"]
        return NonFiniteReport(name, type(mod).__name__, op["operation"] if op else None, ev,
                               _fix_for(mod, ins[0] if ins else None))
    if loss is not None and not _finite(loss):
        return NonFiniteReport("loss", evidence=[f"outputs: {_stats(out)}; loss {float(loss)}"],
                               fix="check log/exp/div in the loss (log of a value <= 0, exp overflow); "
                                   "feed logits to a logits loss")
    return NonFiniteReport(None)


def _fix_for(mod: nn.Module, inp: torch.Tensor | None) -> str:
    big = inp is not None and bool(torch.isfinite(inp).all()) and float(inp.detach().abs().max()) > 1e4
    if big:
        return ("its inputs are huge (> 1e4): normalize the data, lower optim.lr, add trick=grad_clip; "
                "under fp16 values over 65504 overflow: use precision=bf16-mixed")
    if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
        return "BatchNorm saw a constant or tiny batch: check running_var, raise the batch size"
    return "check log/exp/sqrt/div in this module's forward for values out of their domain"

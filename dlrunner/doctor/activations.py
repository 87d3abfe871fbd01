"""Activation statistics from the tensors the model actually computes. A TorchFunctionMode sees
every activation call, whether it comes from an nn module (nn.ReLU calls F.relu) or is written as
a function in forward (`torch.tanh(x)`, `F.relu(x)`, `x.sigmoid()`); forward hooks on every
module name where it ran: the module path plus the operation, e.g. `fc1 (torch.tanh)`.

Thresholds from REFERENCE (AutoTrainer, DeepDiagnosis): a ReLU unit is dead when it is <= 0 on
every sample (flag a site with > 70% dead units); a tanh/sigmoid site saturates when > 50% of
its pre-activations have |x| >= 5."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

DEAD_FRACTION = 0.7  # share of dead units that flags a ReLU site
SATURATED_FRACTION = 0.5  # share of |pre-activation| >= SATURATION that flags a tanh/sigmoid site
SATURATION = 5.0


def _ops() -> dict[Callable, tuple[str, str]]:
    """The activation functions observed: function -> (its name in reports, what to measure)."""
    T = torch.Tensor
    dead = [(F.relu, "F.relu"), (torch.relu, "torch.relu"), (torch.relu_, "torch.relu_"), (T.relu, "Tensor.relu"),
            (T.relu_, "Tensor.relu_"), (F.relu6, "F.relu6")]
    sat = [(torch.tanh, "torch.tanh"), (T.tanh, "Tensor.tanh"), (T.tanh_, "Tensor.tanh_"),
           (torch.sigmoid, "torch.sigmoid"), (T.sigmoid, "Tensor.sigmoid"), (T.sigmoid_, "Tensor.sigmoid_")]
    return {**{f: (n, "relu") for f, n in dead}, **{f: (n, "sat") for f, n in sat}}


# activation modules whose own call is the operation: reported by their path alone (`features.1`)
ACT_MODULES = (nn.ReLU, nn.ReLU6, nn.Tanh, nn.Sigmoid)


@dataclass
class Site:
    """One place an activation is computed: statistics accumulated over every forward."""

    name: str
    kind: str  # relu | sat
    unit_max: list[torch.Tensor] = field(default_factory=list)  # relu: per-unit max, one way per unit axis
    saturated: int = 0
    total: int = 0
    lo: float = math.inf
    hi: float = -math.inf

    @property
    def dead(self) -> float:
        """Share of units never positive; for a 3-D output the unit axis is ambiguous (channels of
        a conv1d, features of a transformer), so the smaller of the two readings counts."""
        if not self.unit_max:
            return 0.0
        return min(float((m <= 0).float().mean()) for m in self.unit_max)

    @property
    def units(self) -> int:
        return len(self.unit_max[0]) if self.unit_max else 0

    def to_dict(self) -> dict:
        d = {"kind": self.kind, "range": [self.lo, self.hi]}
        if self.kind == "relu":
            d |= {"dead": self.dead, "units": self.units}
        else:
            d["saturated"] = self.saturated / max(self.total, 1)
        return d


def _unit_max(t: torch.Tensor) -> list[torch.Tensor]:
    """Per-unit max over samples (and positions): dim 1 for 2-D and 4-D+, both ways for 3-D."""
    if t.dim() < 2:
        return [t.reshape(-1)]
    axes = [1] if t.dim() != 3 else [1, 2]
    return [t.transpose(0, a).reshape(t.shape[a], -1).max(1).values for a in axes]


class Observer(TorchFunctionMode):
    """`with Observer(model) as obs: model(x)`: obs.sites holds every activation site's statistics;
    with nonfinite=True, obs.first_nonfinite names the first operation (any, not only activations)
    that turned finite inputs into NaN/Inf."""

    def __init__(self, model: nn.Module, nonfinite: bool = False):
        super().__init__()
        self.model, self.nonfinite = model, nonfinite
        self.ops = _ops()
        self.sites: dict[str, Site] = {}
        self.stack: list[tuple[str, nn.Module]] = []
        self.calls: dict[tuple[str, str, str], int] = {}
        self.first_nonfinite: dict | None = None
        self.cuts: list[str] = []  # `.data` / `.detach()` taken inside forward on a tensor that needs a gradient
        self.producer: dict[int, tuple[str, torch.Tensor]] = {}  # id(output) -> the module that returned it
        self.handles: list = []

    def __enter__(self):
        root = type(self.model).__name__
        for name, m in self.model.named_modules():
            self.handles.append(m.register_forward_pre_hook(self._push(name or root, m)))
            self.handles.append(m.register_forward_hook(self._pop))
        return super().__enter__()

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        self.handles.clear()
        return super().__exit__(*exc)

    def _push(self, name: str, mod: nn.Module):
        def fn(m, inp):
            if not self.stack:  # a new forward of the whole model: numbering restarts
                self.calls.clear()
                self.producer.clear()
            self.stack.append((name, mod))
        return fn

    def _pop(self, m, inp, out):
        if self.stack:
            name, _ = self.stack.pop()
            if isinstance(out, torch.Tensor) and self.stack:  # the root's output feeds nothing inside
                self.producer[id(out)] = (name, out)

    def _where(self, op: str, x: torch.Tensor) -> str:
        """`path` for an activation module; `path (op after producer)` for a function in forward."""
        path, mod = self.stack[-1] if self.stack else (type(self.model).__name__, None)
        if isinstance(mod, ACT_MODULES):
            return path
        made = self.producer.get(id(x))
        after = f" after {made[0]}" if made and made[1] is x else ""
        n = self.calls.get((path, op, after), 0) + 1  # a second call of the same kind gets a number
        self.calls[(path, op, after)] = n
        return f"{path} ({op}{after})" if n == 1 else f"{path} ({op}{after} #{n})"

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        known = self.ops.get(func)
        first = args[0] if args else None
        site = None
        if known and isinstance(first, torch.Tensor) and first.is_floating_point():
            site = self._where(known[0], first)
            if known[1] == "sat":  # before the call: an in-place op overwrites its input
                self._saturation(site, first)
        cut = _cut_name(func)
        if cut and isinstance(first, torch.Tensor) and first.requires_grad and self.stack:
            self.cuts.append(self._where(cut, first))
        finite_in = self.nonfinite and self.first_nonfinite is None and _all_finite(args)
        out = func(*args, **kwargs)
        if site and known[1] == "relu" and isinstance(out, torch.Tensor):
            self._dead(site, out)
        if finite_in and not _all_finite((out,)):
            name = getattr(func, "__name__", str(func))
            path, mod = self.stack[-1] if self.stack else (type(self.model).__name__, self.model)
            self.first_nonfinite = {"module": path, "module_type": type(mod).__name__ if mod is not None else None,
                                    "operation": name}
        return out

    def _site(self, name: str, kind: str) -> Site:
        return self.sites.setdefault(name, Site(name, kind))

    def _saturation(self, name: str, x: torch.Tensor) -> None:
        s = self._site(name, "sat")
        x = x.detach()
        s.saturated += int((x.abs() >= SATURATION).sum())
        s.total += x.numel()
        s.lo, s.hi = min(s.lo, float(x.min())), max(s.hi, float(x.max()))

    def _dead(self, name: str, out: torch.Tensor) -> None:
        s = self._site(name, "relu")
        t = out.detach().float()
        maxes = _unit_max(t)
        s.unit_max = maxes if not s.unit_max or [len(m) for m in s.unit_max] != [len(m) for m in maxes] \
            else [torch.maximum(a, b) for a, b in zip(s.unit_max, maxes)]
        s.lo, s.hi = min(s.lo, float(t.min())), max(s.hi, float(t.max()))


def _cut_name(func) -> str | None:
    """'.data' or '.detach()' when func is one of them (reading .data arrives as its descriptor's __get__)."""
    if func is torch.Tensor.detach:
        return ".detach()"
    if getattr(func, "__self__", None) is torch._C.TensorBase.__dict__.get("data"):
        return ".data"
    return None


def _all_finite(values) -> bool:
    for v in values:
        if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all()):
            return False
        if isinstance(v, (tuple, list)) and not _all_finite(v):
            return False
    return True


@torch.no_grad()
def observe(model: nn.Module, xs: torch.Tensor, autocast: Callable, chunk: int = 256) -> dict[str, Site]:
    """Every activation site's statistics over `xs`, in eval mode (the model's mode is restored)."""
    was = model.training
    model.eval()
    try:
        with Observer(model) as obs, autocast():
            for part in xs.split(chunk):
                model(part)
    finally:
        model.train(was)
    return obs.sites


def problems(sites: dict[str, Site], samples: int) -> list[tuple[str, str]]:
    """(evidence, fix) for each site with too many dead or saturated units."""
    out = []
    for name, s in sites.items():
        if s.kind == "relu" and s.dead > DEAD_FRACTION:
            out.append((f"`{name}`: {100 * s.dead:.0f}% of its {s.units} ReLU units are dead on {samples} samples",
                        "lower the LR, use LeakyReLU/GELU, check init and normalization"))
        elif s.kind == "sat" and s.total and s.saturated / s.total > SATURATED_FRACTION:
            out.append((f"`{name}`: {100 * s.saturated / s.total:.0f}% of pre-activations saturate "
                        f"(|x| >= {SATURATION:g}), range [{s.lo:.3g}, {s.hi:.3g}]",
                        "normalize inputs, use a smaller init (model.init=glorot) or ReLU"))
    return out

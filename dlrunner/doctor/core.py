"""What every check shares: its result (a Finding), and the job under examination (an Exam) that
hands out a fresh copy of the initial weights and optimizer for each experiment."""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from dlrunner.build import Job

ORDER = {"pass": 0, "skip": 0, "warn": 1, "fail": 2}
MARK = {"pass": "✓", "skip": "-", "warn": "⚠", "fail": "✗"}


@dataclass
class Item:
    """One observation: its verdict, what was measured, and what to do about it."""

    status: str
    evidence: str
    fix: str = ""


@dataclass
class Finding:
    """The result of one check: the worst of its items decides its verdict."""

    key: str
    title: str
    items: list[Item] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def add(self, status: str, evidence: str, fix: str = "") -> None:
        self.items.append(Item(status, evidence, fix))

    @property
    def status(self) -> str:
        if not self.items:
            return "pass"
        if all(i.status == "skip" for i in self.items):
            return "skip"
        return max((i.status for i in self.items), key=ORDER.__getitem__)

    @property
    def summary(self) -> str:
        """The headline: the worst items' evidence, or the first item when all is well."""
        worst = [i for i in self.items if i.status == self.status]
        return "; ".join(i.evidence for i in worst[:2]) if worst else ""

    def to_dict(self) -> dict:
        return {"key": self.key, "title": self.title, "status": self.status, "seconds": round(self.seconds, 2),
                "items": [vars(i) for i in self.items], "details": self.details}


class Exam:
    """The configured job plus what the checks need: its initial state (restored before every
    experiment), a fixed first batch, and a sample of each split."""

    def __init__(self, job: Job, opts: dict[str, Any]):
        self.job, self.opts = job, opts
        self.model = job.model
        self.init_state = copy.deepcopy(job.base_model.state_dict())
        self.device = job.device
        self.num_classes = job.data.num_classes
        self.ln_c = math.log(self.num_classes)
        with torch.random.fork_rng(devices=[]):
            _, (x, y) = next(job.train.iterate(0))
        self.x, self.y = x, y  # the exact first batch the net receives
        self.findings: dict[str, Finding] = {}
        self.repairs: list = []  # doctor.repair: the cures tried (dlrunner.doctor.repair)

    def reset(self) -> None:
        """Back to the initial weights (every experiment starts from the same point)."""
        self.job.base_model.load_state_dict(self.init_state)
        self.model.zero_grad(set_to_none=True)

    def optimizer(self, lr_factor: float = 1.0, weight_decay: float | None = None) -> torch.optim.Optimizer:
        """A fresh copy of the configured optimizer over the trainable parameters."""
        opt = self.job.make_optimizer([p for p in self.model.parameters() if p.requires_grad])
        for g in opt.param_groups:
            g["lr"] = g["lr"] * lr_factor
            if weight_decay is not None and "weight_decay" in g:
                g["weight_decay"] = weight_decay
        return opt

    @property
    def lr(self) -> float:
        return max(g["lr"] for g in self.optimizer().param_groups)

    def step(self, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        """One plain training step (the job's precision, no tricks): returns (loss, batch accuracy)."""
        self.model.train()
        prec = self.job.precision
        with prec.autocast():
            out = self.model(x)
            loss = self.job.loss_fn(out.float(), y)
        opt.zero_grad(set_to_none=True)
        prec.backward(loss)
        prec.unscale(opt)
        prec.step(opt)
        acc = (out.detach().argmax(1) == (y if y.dim() == 1 else y.argmax(1))).float().mean()
        return float(loss.detach()), float(acc)

    @torch.no_grad()
    def accuracy(self, batches, limit: int = 2048) -> float:
        """Eval-mode accuracy on up to `limit` samples of a split."""
        self.model.eval()
        correct = n = 0
        for _, (x, y) in batches.iterate(0):
            with self.job.precision.autocast():
                out = self.model(x)
            correct += int((out.argmax(1) == y).sum())
            n += len(y)
            if n >= limit:
                break
        self.model.train()
        return correct / max(n, 1)

    def sample(self, batches, limit: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
        """Up to `limit` samples of a split, as the net receives them."""
        xs, ys, n = [], [], 0
        with torch.random.fork_rng(devices=[]):
            for _, (x, y) in batches.iterate(0):
                xs.append(x)
                ys.append(y)
                n += len(y)
                if n >= limit:
                    break
        return torch.cat(xs)[:limit], torch.cat(ys)[:limit]


def leaf_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if not list(m.children())]


def set_dropout(model: nn.Module, p: float | None, saved: dict | None = None) -> dict:
    """Set every Dropout's p (None: restore from `saved`); returns the previous values."""
    prev = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            prev[name] = m.p
            m.p = saved[name] if p is None and saved else (p if p is not None else m.p)
    return prev

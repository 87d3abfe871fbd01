"""Gradual unfreezing with discriminative learning rates (Howard & Ruder 2018, ULMFiT; fastai's
`freeze_to`, Lightning's BackboneFinetuning): for a model started from other weights, train the
head alone first, then unfreeze one more layer group (from the top down) every `every` epochs.
Layer groups get geometrically spaced LRs, from lr / lr_div (the first group) to lr (the head).
Frozen BatchNorm layers keep their running statistics (eval mode) unless `train_bn`: users were
surprised when frozen BN statistics still moved (Lightning #15062). Suggested: lr_div 100."""
from __future__ import annotations

from typing import Any

from torch import nn

from dlrunner.errors import DlrunError
from dlrunner.tricks.base import Trick
from dlrunner.tricks.context import Parts


def layer_groups(model: nn.Module) -> list[nn.Module]:
    """Top-level children that hold parameters, input side first; a model with fewer than three
    is split one level deeper (e.g. LeNet's features and classifier)."""
    groups = [m for m in model.children() if any(True for _ in m.parameters())]
    if len(groups) < 3:
        groups = [c for g in groups for c in (list(g.children()) or [g]) if any(True for _ in c.parameters())]
    return groups


def discriminative_lrs(lr: float, n: int, lr_div: float) -> list[float]:
    """n LRs spaced geometrically from lr / lr_div up to lr (fastai's slice(lo, hi))."""
    return [lr] if n == 1 else [lr / lr_div ** (1 - i / (n - 1)) for i in range(n)]


class GradualUnfreezing(Trick):
    name = "gradual_unfreezing"
    needs = {"trained weights": "trick=gradual_unfreezing needs a model that starts from trained weights: "
                                "set model.init_from=RUN_OR_CKPT, or a torchvision resnet with pretrained weights"}

    def __init__(self, every: int = 1, lr_div: float = 100.0, train_bn: bool = False):
        if int(every) < 1 or not lr_div >= 1:
            raise DlrunError("trick.gradual_unfreezing needs every >= 1 and lr_div >= 1")
        self.every, self.lr_div, self.train_bn = int(every), float(lr_div), bool(train_bn)
        self.groups: list[nn.Module] = []
        self.unfrozen = 0
        self.job: Any = None

    def bind(self, job: Any) -> Parts:
        self.job, model = job, job.base_model
        self.groups = layer_groups(model)
        if len(self.groups) < 2:
            raise DlrunError(f"trick=gradual_unfreezing: {type(model).__name__} has a single layer group")
        lr = job.optimizer.param_groups[0]["lr"]
        lrs = discriminative_lrs(lr, len(self.groups), self.lr_div)
        optimizer = job.make_optimizer([{"params": list(g.parameters()), "lr": r} for g, r in zip(self.groups, lrs)])
        for g in self.groups:
            for m in g.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.register_forward_pre_hook(self._freeze_bn_stats)
        self._apply(1)
        return Parts(optimizer=optimizer, schedule=job.make_schedule(optimizer))

    def _freeze_bn_stats(self, module: nn.Module, args: tuple) -> None:
        if not self.train_bn and not any(p.requires_grad for p in module.parameters(recurse=False)):
            module.train(False)  # frozen: normalize with, and keep, the pretrained statistics

    def _apply(self, unfrozen: int) -> None:
        self.unfrozen = min(unfrozen, len(self.groups))
        for i, g in enumerate(self.groups):
            for p in g.parameters():
                p.requires_grad_(i >= len(self.groups) - self.unfrozen)

    def on_epoch_start(self, epoch: int) -> None:
        self._apply(1 + epoch // self.every)

    def on_epoch_end(self, epoch: int) -> dict[str, float]:
        return {"unfreeze/groups": float(self.unfrozen)}

    def state_dict(self) -> dict:
        return {"unfrozen": self.unfrozen}

    def load_state_dict(self, state: dict) -> None:
        self._apply(int(state["unfrozen"]))

    def report(self) -> dict:
        return {"groups": len(self.groups), "unfrozen": self.unfrozen, "every": self.every,
                "lrs": [g["lr"] for g in self.job.optimizer.param_groups] if self.job else []}

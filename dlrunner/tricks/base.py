"""The hook protocol every trick implements. The loop, with its hook points:

    model = trick.setup(model)                          # once: surgery (freezing, masks, layout)
    schedule = trick.schedule(opt, total, per_epoch)    # a trick that owns the LR schedule
    precision = trick.precision(device)                 # a trick that owns the numeric format
    parts = trick.bind(view)                            # once: the built job, read-only (model, optimizer, data...)
    parts = trick.before_fit(run_dir)                   # fresh runs only (not on resume): e.g. LR range test
    for epoch in range(epochs):
        parts = trick.on_epoch_start(epoch)             # e.g. unfreeze a layer group, switch the optimizer
        for step, (x, y) in batches:
            x, y = trick.on_batch((x, y), step)         # e.g. mixup, label smoothing (soft targets)
            with precision.autocast():
                out = model(x)
                loss = loss_fn(out, y)
            precision.backward(loss); precision.unscale(opt)
            trick.after_backward(model, step)           # e.g. clip: gradients are unscaled here
            precision.step(opt); schedule.step()
            trick.after_step(model, step)
        evaluate(..., predict=trick.predict)            # TTA, ensembles; eval_model(): EMA/SWA weights
                                                        # (the plain model is reported too)
        row |= trick.on_epoch_end(epoch)                # extra metrics for metrics.csv (phase, sparsity)
    trick.on_train_end()                                # e.g. SWA's BatchNorm update, making pruning permanent
    summary["tricks"][name] = trick.report()            # what it did: chosen LR, sparsity, sizes used...
    trick.state_dict() / parts = trick.load_state_dict(state)   # a resumed run continues the trick

A trick sees the job through a read-only view (tricks/context.py). A hook that replaces the
optimizer, the schedule, the model or a batch source returns `Parts(...)`; Tricks.apply puts them
into the job, the loop reads them afresh every epoch, and they are what the checkpoint saves.
What a trick cannot run with is declared on its class and checked in Tricks, before training:
`owns` and `conflicts` when the tricks are built (before the data), `needs` when the job is.

Hooks run in the order the tricks were listed on the command line.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from dlrunner.data.core import Split
from dlrunner.errors import DlrunError
from dlrunner.tricks.context import Parts, View


class Trick:
    """No-op hooks; a trick overrides the ones it needs."""

    name: str = "trick"
    owns: frozenset[str] = frozenset()  # exclusive resources: "schedule", "precision", "weight averaging"
    # other tricks (by name) or resources (an `owns` entry) this one cannot run with -> the refusal,
    # `{me}` and `{other}` filled in with the two tricks' names
    conflicts: dict[str, str] = {}
    # what the run must give it -> the refusal ({data}, {modality} filled in): "images", "images or
    # sequences", "trained weights", "in-memory data" (checked by Tricks.bind), "one process" (validate)
    needs: dict[str, str] = {}

    def setup(self, model: nn.Module) -> nn.Module:
        return model

    def schedule(self, optimizer: torch.optim.Optimizer, total_steps: int, steps_per_epoch: int):
        return None

    def precision(self, device: torch.device):
        return None

    def bind(self, job: View) -> Parts | None:
        return None  # reads the built job (read-only); returns what it replaces

    def before_fit(self, run_dir: Path) -> Parts | None:
        return None

    def on_epoch_start(self, epoch: int) -> Parts | None:
        return None

    def on_batch(self, batch: tuple, step: int) -> tuple:
        return batch

    def after_backward(self, model: nn.Module, step: int) -> None:
        pass

    def after_step(self, model: nn.Module, step: int) -> None:
        pass

    def eval_model(self, model: nn.Module) -> nn.Module | None:
        return None  # a different set of weights to evaluate (EMA, SWA); None: the live model

    def predict(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
        return None  # None: not this trick's business, use the plain forward

    def on_epoch_end(self, epoch: int) -> dict[str, float]:
        return {}

    def on_train_end(self) -> None:
        pass

    def report(self) -> dict[str, Any]:
        return {}  # what the trick did, for summary.json (chosen LR, sparsity, sizes used...)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> Parts | None:
        return None  # a trick whose state means other parts (a switched optimizer) returns them


# a trick's need -> whether the built job meets it
MET: dict[str, Callable[[Any], bool]] = {
    "images": lambda job: job.data.modality == "image",
    "images or sequences": lambda job: job.data.modality != "tabular",
    "trained weights": lambda job: bool(getattr(job.base_model, "dlrun_pretrained", None)),
    "in-memory data": lambda job: all(isinstance(s, Split) for s in (job.data.train, job.data.val, job.data.test)),
}


class Tricks:
    """The selected tricks, called in order. Every combination rule is checked here, when they are
    built (before the data and the model): two owners of one resource, two replacements of the
    predictions, and each trick's declared `conflicts`."""

    def __init__(self, tricks: list[Trick], external_owners: dict[str, str] | None = None):
        owners = dict(external_owners or {})
        for t in tricks:
            for res in t.owns:
                if res in owners:
                    raise DlrunError(f"trick={t.name} conflicts with {owners[res]}: both set the {res}; keep one")
                owners[res] = f"trick={t.name}"
        self.items = list(tricks)
        self.job: Any = None  # the job the tricks were bound to (where their replacements go)
        predictors = [t.name for t in self.items if type(t).predict is not Trick.predict]
        if len(predictors) > 1:
            raise DlrunError(f"trick={predictors[0]} and trick={predictors[1]} both replace the predictions; keep one")
        for t in self.items:
            for other in self.items:
                clash = next((t.conflicts[k] for k in (other.name, *sorted(other.owns)) if k in t.conflicts), None)
                if other is not t and clash:
                    raise DlrunError(clash.format(me=t.name, other=other.name))

    def __iter__(self):
        return iter(self.items)

    def first(self, hook: str, *args):
        """The first non-None answer of a hook that one trick owns (schedule, precision, predict)."""
        for t in self.items:
            out = getattr(t, hook)(*args)
            if out is not None:
                return out
        return None

    def setup(self, model: nn.Module) -> nn.Module:
        for t in self.items:
            model = t.setup(model)
        return model

    def bind(self, job: Any) -> None:
        """Check what each trick needs of the built job, then show it the job (read-only) and put in
        what it replaces."""
        self.job = job
        for t in self.items:
            for need, refusal in t.needs.items():
                if need in MET and not MET[need](job):
                    raise DlrunError(refusal.format(data=job.data.name, modality=job.data.modality))
        for t in self.items:
            self.apply(t.bind(View(job)))

    def apply(self, parts: Parts | None) -> None:
        """The one place a trick's replacement (optimizer, schedule, model, batches, peak LR) enters the job."""
        for name, value in (parts.items() if parts is not None else []):
            setattr(self.job, name, value)
        if parts is not None and parts.peak_lr is not None and parts.schedule is None:
            self.job.schedule = self.job.make_schedule(self.job.optimizer)  # the schedule over the run, on the new peak

    def before_fit(self, run_dir: Path) -> None:
        for t in self.items:
            self.apply(t.before_fit(run_dir))

    def on_epoch_start(self, epoch: int) -> None:
        for t in self.items:
            self.apply(t.on_epoch_start(epoch))

    def on_epoch_end(self, epoch: int) -> dict[str, float]:
        out: dict[str, float] = {}
        for t in self.items:
            out.update(t.on_epoch_end(epoch))
        return out

    def on_train_end(self) -> None:
        for t in self.items:
            t.on_train_end()

    @property
    def changes_predictions(self) -> bool:
        """True when some trick overrides predict (then plain predictions are reported too)."""
        return any(type(t).predict is not Trick.predict or type(t).eval_model is not Trick.eval_model
                   for t in self.items)

    def on_batch(self, batch: tuple, step: int) -> tuple:
        for t in self.items:
            batch = t.on_batch(batch, step)
        return batch

    def after_backward(self, model: nn.Module, step: int) -> None:
        for t in self.items:
            t.after_backward(model, step)

    def after_step(self, model: nn.Module, step: int) -> None:
        for t in self.items:
            t.after_step(model, step)

    def predict(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Evaluation forward: the averaged weights if a trick keeps them, through the trick that
        replaces predictions (TTA, ensembles) if any, else a plain forward."""
        averaged = self.first("eval_model", model)
        model = model if averaged is None else averaged
        out = self.first("predict", model, x)
        return model(x) if out is None else out

    def report(self) -> dict[str, dict]:
        return {t.name: t.report() for t in self.items}

    def state_dict(self) -> dict[str, dict]:
        return {t.name: t.state_dict() for t in self.items}

    def load_state_dict(self, state: dict[str, dict]) -> None:
        for t in self.items:
            if t.name in state:
                self.apply(t.load_state_dict(state[t.name]))

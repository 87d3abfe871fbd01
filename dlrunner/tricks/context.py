"""What a trick sees of the run, and how it changes it: a read-only view of the built job, and
`Parts`, the replacements a hook returns (a new optimizer, schedule, model or batch source, or the
LR the schedule is to peak at). No trick changes another: one that finds a value another uses
declares it here, and the other reads it from the job.
Tricks.apply puts them into the job, the one place a trick's change lands: the loop reads them
afresh every epoch, and they are what the checkpoint saves."""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any


@dataclass
class Parts:
    """Replacements for parts of the run; None leaves a part as it is."""

    optimizer: Any = None
    schedule: Any = None
    model: Any = None  # the module that trains (e.g. the head on cached activations)
    full_model: Any = None  # the whole network when `model` is part of it (its weights are saved)
    train: Any = None  # batch sources
    val: Any = None
    test: Any = None
    # the LR the schedule is to peak at (lr_finder's suggestion): the job keeps it, and without a
    # new `schedule` alongside, the schedule is rebuilt on it (a schedule trick such as onecycle reads it)
    peak_lr: float | None = None

    def items(self) -> list[tuple[str, Any]]:
        return [(f.name, getattr(self, f.name)) for f in fields(self) if getattr(self, f.name) is not None]


class View:
    """The job as a trick sees it: every part readable, none assignable (return Parts instead)."""

    __slots__ = ("_job",)

    def __init__(self, job: Any):
        object.__setattr__(self, "_job", job)

    def __getattr__(self, name: str) -> Any:
        if name == "_job":  # not set yet (a copy being built): no job to ask
            raise AttributeError(name)
        return getattr(self._job, name)

    def __reduce__(self):  # a deep copy (of a model whose hooks hold a trick) copies the job it shows
        return View, (self._job,)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"a trick's view of the job is read-only: return Parts({name}=...) from the hook")

"""Old import paths of modules that moved into modes/, engine/ and reporting/. Code written
against them (the doctor, the watchdog, the sweep, a user's notebook) keeps working: the old name
is the new module itself, so a patch through either name applies to both."""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys

MOVED = {f"dlrunner.{old}": f"dlrunner.{new}" for old, new in {
    "runner": "modes.train", "final": "modes.final", "climb": "modes.climb", "rung": "modes.climb_rung",
    "predict": "modes.predict", "export": "modes.export", "compare": "modes.compare",
    "loop": "engine.loop", "precision": "engine.precision", "oom": "engine.oom", "batchsize": "engine.batchsize",
    "checkpoint": "engine.checkpoint", "distributed": "engine.distributed", "optim": "engine.optim",
    "schedules": "engine.schedules",
    "console": "reporting.console", "loggers": "reporting.loggers", "wandb_logger": "reporting.wandb_logger",
    "plots": "reporting.plots", "canvas": "reporting.canvas", "painter": "reporting.painter",
    "analysis": "reporting.analysis", "verdict": "reporting.verdict", "rundir": "reporting.rundir",
    "timing": "reporting.timing",
}.items()}


# builders that conf/ names in `_target_`: a job's identity (resume=auto, climb) keeps their former
# paths, so a run started before the move is still found and continued
TARGETS = ("optim", "schedules", "loggers", "wandb_logger")


def former_paths(text: str) -> str:
    """`text` with the conf builders' module paths as they were before the move."""
    for old in TARGETS:
        text = text.replace(f"{MOVED['dlrunner.' + old]}.", f"dlrunner.{old}.")
    return text


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds `dlrunner.engine.loop` as `dlrunner.engine.loop` (imported on first use, not before)."""

    def find_spec(self, name, path=None, target=None):
        return importlib.util.spec_from_loader(name, self) if name in MOVED else None

    def create_module(self, spec):
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module) -> None:
        # the import machinery has just set the old name's spec on it: put the module's own back
        module.__spec__ = importlib.machinery.PathFinder.find_spec(module.__name__,
                                                                   sys.modules[module.__package__].__path__)

def install() -> None:
    """Answer the old paths (once per process)."""
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.append(_Alias())

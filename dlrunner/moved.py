"""Old import paths of the config builders that moved into engine/ and reporting/ (the modules a
`_target_` names). A config written against them keeps working: the old name is the new module
itself, so a patch through either name applies to both."""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys

# builders that conf/ names in `_target_` and that moved into engine/ and reporting/: a user's
# config, or a checkpoint's saved config, may still name their former paths (`dlrunner.optim.sgd`);
# a job's identity (resume=auto, climb) keeps those former paths, so a run started before the move
# is still found and continued
TARGETS = {"optim": "engine.optim", "schedules": "engine.schedules", "loggers": "reporting.loggers",
           "wandb_logger": "reporting.wandb_logger"}
MOVED = {f"dlrunner.{old}": f"dlrunner.{new}" for old, new in TARGETS.items()}


def former_paths(text: str) -> str:
    """`text` with the conf builders' module paths as they were before the move."""
    for old in TARGETS:
        text = text.replace(f"{MOVED['dlrunner.' + old]}.", f"dlrunner.{old}.")
    return text


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds `dlrunner.optim` as `dlrunner.engine.optim` (imported on first use, not before)."""

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

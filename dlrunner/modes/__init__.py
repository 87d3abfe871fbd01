"""What `dlrun mode=...` does: one module per mode, each with `run(job: ModeRun) -> float | None`
(the value Hydra's sweeper gets back). cli.py dispatches through MODES and validate.py reads it.

    train     modes/train.py     train the configured job (the default)
    final     modes/final.py     retrain on train+val, score the test split once
    eval      modes/eval.py      a checkpoint on the val or test split
    lr_find   modes/lr_find.py   the LR range test alone
    doctor    modes/doctor.py    the bug checklist on the configured job (dlrunner/doctor/)
    climb     modes/climb.py     climb the model ladder, one `dlrun` run per rung (climb_rung.py)
    predict   modes/predict.py   a checkpoint on new files
    export    modes/export.py    a checkpoint as TorchScript, ONNX or safetensors
    compare   modes/compare.py   the runs under a folder side by side
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# mode name -> its module under dlrunner.modes, imported when chosen (a mode's imports are its runs' cost alone)
MODES: dict[str, str] = {"train": "train", "eval": "eval", "lr_find": "lr_find", "doctor": "doctor",
                         "compare": "compare", "predict": "predict", "export": "export", "climb": "climb",
                         "final": "final"}


@dataclass
class ModeRun:
    """What every mode is handed: the composed config and where its run writes."""

    cfg: Any  # the composed DictConfig (modes and build are the only readers of the config)
    run_dir: Path  # this run's folder (Hydra's output dir)
    choices: dict[str, str]  # Hydra's group selections: which file of each conf/ group was picked
    out: Any  # the console (dlrunner.reporting.console.Reporter)
    hydra: Any = None  # Hydra's runtime config: the command line a mode relaunches (climb)


def run(job: ModeRun) -> float | None:
    """Run the selected mode."""
    return importlib.import_module(f"dlrunner.modes.{MODES[str(job.cfg.mode)]}").run(job)

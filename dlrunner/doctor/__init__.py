"""`dlrun mode=doctor`: the guides' bug checklist run on the configured job before training.

Each check measures something, gives a verdict (pass / warn / fail), the evidence and the fix;
the single-batch overfit's failure shape is mapped to the guides' causes, ranked by what the
other checks found. Writes doctor.md and doctor.json; the exit status is 1 when a check fails."""
from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Callable

from dlrunner.doctor import capacity, training
from dlrunner.doctor.data_look import data_look
from dlrunner.doctor.gradient_flow import gradient_flow
from dlrunner.doctor.logging_check import logging_sanity
from dlrunner.doctor.loss_checks import loss_at_init, loss_inputs
from dlrunner.doctor.memory import memory
from dlrunner.doctor.mode_check import train_eval_mode
from dlrunner.doctor.model_look import model_look
from dlrunner.doctor.numerics import numerics
from dlrunner.doctor.core import Exam, Finding
from dlrunner.doctor.report import print_report, write_report

# key -> the check (called with the exam and the run folder), in the order they run
CHECKS: dict[str, Callable] = {
    "data": lambda ex, d: data_look(ex, d),
    "model": lambda ex, d: model_look(ex),
    "loss_init": lambda ex, d: loss_at_init(ex),
    "loss_inputs": lambda ex, d: loss_inputs(ex),
    "mode": lambda ex, d: train_eval_mode(ex),
    "gradients": lambda ex, d: gradient_flow(ex),
    "numerics": lambda ex, d: numerics(ex),
    "overfit": lambda ex, d: training.overfit_one_batch(ex),
    "baselines": lambda ex, d: training.baselines(ex),
    "capacity": lambda ex, d: capacity.capacity(ex),
    "memory": lambda ex, d: memory(ex),
    "logging": lambda ex, d: logging_sanity(ex),
}


def examine(job, run_dir: Path, opts: dict) -> Exam:
    """Run the selected checks on a built job; the findings are in exam.findings, in order."""
    ex = Exam(job, opts)
    skip = set(opts.get("skip") or [])
    unknown = skip - set(CHECKS)
    if unknown:
        from dlrunner.errors import DlrunError
        raise DlrunError(f"doctor.skip: unknown check {sorted(unknown)[0]!r}; checks: {', '.join(CHECKS)}")
    for key, fn in CHECKS.items():
        if key in skip:
            continue
        t0 = time.perf_counter()
        try:
            finding = fn(ex, run_dir)
        except Exception as e:  # a broken user model must not take the whole examination down
            finding = Finding(key, key)
            last = traceback.extract_tb(e.__traceback__)[-1]
            finding.add("fail", f"the check crashed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
                                f"(at {Path(last.filename).name}:{last.lineno})",
                        "fix this error first: training would hit it too")
            try:
                ex.reset()
            except Exception:
                pass
        finding.seconds = time.perf_counter() - t0
        ex.findings[key] = finding
    ex.causes = training.rank_causes(ex)
    return ex


def report(ex: Exam, run_dir: Path, console, wall: float, config_yaml: str) -> int:
    """Print the report and write doctor.md / doctor.json; returns the exit status (1 if a check failed)."""
    print_report(ex, console, wall)
    write_report(ex, run_dir, wall, config_yaml)
    return 1 if any(f.status == "fail" for f in ex.findings.values()) else 0

"""mode=doctor: the guides' bug checklist on the configured job (the checks live in dlrunner/doctor/)."""
from __future__ import annotations

import sys

from dlrunner.modes import ModeRun


def run(job: ModeRun) -> float:
    """Examine the job and write doctor.md / doctor.json; exit status 1 when a check fails (a CI gate)."""
    from dlrunner import doctor

    status = doctor.run(job.cfg, job.run_dir, job.choices, job.out)
    if status:
        sys.exit(status)
    return 0.0

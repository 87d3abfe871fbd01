"""`make bench` doctor: `dlrun mode=doctor` on every model rung with its bundled data."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path


DOCTOR_JOBS = {"lenet / digits (default)": [], "resnet / digits": ["model=resnet"],
               "lstm / mnist1d": ["data=mnist1d", "model=lstm"], "conv1d / mnist1d": ["data=mnist1d", "model=conv1d"],
               "transformer / mnist1d": ["data=mnist1d", "model=transformer"], "mlp / tabular": ["data=tabular", "model=mlp"]}


def doctor(tmp: Path) -> dict:
    out = {}
    for name, args in DOCTOR_JOBS.items():
        d = tmp / ("doctor-" + name.split()[0])
        d.mkdir()
        t0 = time.time()
        proc = subprocess.run([sys.executable, "-m", "dlrunner", "mode=doctor", *args, "hydra.run.dir=outputs/run"],
                              cwd=d, capture_output=True, text=True)
        wall = time.time() - t0
        doc = json.loads((d / "outputs" / "run" / "doctor.json").read_text())
        out[name] = {"command": " ".join(["dlrun mode=doctor", *args]), "exit": proc.returncode,
                     "wall_s_incl_startup": round(wall, 2), "counts": doc["counts"],
                     "seconds": {c["key"]: c["seconds"] for c in doc["checks"]}}
        print(name, out[name], flush=True)
    return out

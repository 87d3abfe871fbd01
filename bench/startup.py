"""`make bench ARGS="--only startup"`: what a run costs besides its epochs.

- smoke: `dlrun debug=smoke` against bench/handsmoke.py (the same job by hand), whole processes,
  alternated in pairs after one untimed run of each (the data set cache, the OS file cache); the
  median of the per-pair ratios dlrun / hand.
- multirun: a 6-job `dlrun -m` of the default job at 5 epochs; each job's span runs from the
  moment Hydra starts it (its .hydra/config.yaml) to the next job's start (the last: to the end of
  the process); its fixed cost is the span minus its epochs (metrics.csv `time`); jobs 2-6.
- help: `dlrun --help` against `python -c "import torch"` (the floor of any PyTorch command).
- doctor: `dlrun mode=doctor` on the default job, wall time; and its CPU time (user + system of
  the process), which other jobs on a shared machine disturb less than the wall time.
"""
from __future__ import annotations

import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def wall(cmd: list[str], cwd: Path, env: dict | None = None) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True, env=env)
    return time.perf_counter() - t0


def epochs_time(run: Path) -> float:
    with (run / "metrics.csv").open() as f:
        return sum(float(r["time"]) for r in csv.DictReader(f))


def smoke(tmp: Path, pairs: int = 5) -> dict:
    d = tmp / "smoke"
    d.mkdir()
    dl = [sys.executable, "-m", "dlrunner", "debug=smoke"]
    hand = [sys.executable, str(ROOT / "bench" / "handsmoke.py"), str(d / "hand.pt")]
    wall(dl, d), wall(hand, d)  # untimed: dlrun prepares its data cache, both warm the file cache
    rows = []
    for _ in range(pairs):
        t_dl, t_hand = wall(dl, d), wall(hand, d)
        run = max((p.parent for p in (d / "outputs").rglob("summary.json")), key=lambda p: p.stat().st_mtime)
        s = json.loads((run / "summary.json").read_text())
        rows.append({"dlrun_s": round(t_dl, 3), "hand_s": round(t_hand, 3), "ratio": round(t_dl / t_hand, 3),
                     "dlrun_epochs_s": round(epochs_time(run), 3), "dlrun_timings": s.get("timings")})
        print("startup smoke", rows[-1], flush=True)
    return {"pairs": rows, "median_ratio": round(statistics.median(r["ratio"] for r in rows), 3),
            "median_dlrun_s": round(statistics.median(r["dlrun_s"] for r in rows), 3),
            "median_hand_s": round(statistics.median(r["hand_s"] for r in rows), 3)}


def multirun(tmp: Path, jobs: int = 6, epochs: int = 5) -> dict:
    d = tmp / "multirun"
    d.mkdir()
    seeds = ",".join(str(s) for s in range(jobs))
    wall([sys.executable, "-m", "dlrunner", "debug=smoke"], d)  # the data cache, as any earlier run leaves it
    subprocess.run([sys.executable, "-m", "dlrunner", "-m", f"epochs={epochs}", f"seed={seeds}",
                    "hydra.sweep.dir=sweep"], cwd=d, check=True, capture_output=True, text=True)
    end = time.time()
    runs = sorted((d / "sweep").iterdir(), key=lambda p: int(p.name) if p.name.isdigit() else -1)
    runs = [r for r in runs if r.name.isdigit()]
    starts = [(r / ".hydra" / "config.yaml").stat().st_mtime for r in runs] + [end]
    rows = []
    for i, r in enumerate(runs):
        span, ep = starts[i + 1] - starts[i], epochs_time(r)
        s = json.loads((r / "summary.json").read_text())
        rows.append({"job": i + 1, "span_s": round(span, 3), "epochs_s": round(ep, 3), "fixed_s": round(span - ep, 3),
                     "timings": s.get("timings")})
        print("startup multirun", rows[-1], flush=True)
    return {"jobs": rows, "median_fixed_s_jobs_2_on": round(statistics.median(r["fixed_s"] for r in rows[1:]), 3)}


def help_and_floor(tmp: Path, repeats: int = 5) -> dict:
    helps = [wall([sys.executable, "-m", "dlrunner", "--help"], tmp) for _ in range(repeats)]
    floors = [wall([sys.executable, "-c", "import torch"], tmp) for _ in range(repeats)]
    return {"help_s": round(statistics.median(helps), 3), "import_torch_s": round(statistics.median(floors), 3)}


def doctor(tmp: Path, repeats: int = 2) -> dict:
    import resource

    d = tmp / "doctor"
    d.mkdir(exist_ok=True)
    walls, cpus = [], []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        walls.append(wall([sys.executable, "-m", "dlrunner", "mode=doctor"], d))
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return {"walls_s": [round(w, 2) for w in walls], "median_s": round(statistics.median(walls), 2),
            "cpu_s": [round(c, 2) for c in cpus], "cpu_median_s": round(statistics.median(cpus), 2)}


def startup(tmp: Path) -> dict:
    env_root = tmp / "data"
    os.environ["DLRUN_DATA"] = str(env_root)  # one data cache for every process below
    return {"smoke": smoke(tmp), "multirun": multirun(tmp), "help": help_and_floor(tmp), "doctor": doctor(tmp)}

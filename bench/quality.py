"""`make bench` quality and determinism: whole `dlrun` runs, their accuracy and wall time; two
runs with the same seed give identical metrics."""
from __future__ import annotations

import csv
from pathlib import Path

from common import dlrun


def quality(tmp: Path) -> dict:
    out = {}
    jobs = {f"digits_lenet_seed{s}": [f"seed={s}"] for s in range(3)}
    jobs["mnist1d_conv1d"] = ["data=mnist1d", "model=conv1d", "eval_test=true"]
    for name, args in jobs.items():
        d = tmp / name
        d.mkdir()
        s, wall = dlrun(args, d)
        rows = list(csv.DictReader((d / "outputs" / "run" / "metrics.csv").open()))
        first97 = next((int(r["epoch"]) for r in rows if float(r["val/acc"]) >= 0.97), None)
        out[name] = {"command": " ".join(["dlrun", *args]), "wall_s_incl_startup": round(wall, 2),
                     "first_epoch_val_acc_ge_0.97": first97,
                     "best_val_acc": s["best"]["val/acc"], "best_epoch": s["best_epoch"],
                     "test_acc": s["best"].get("test/acc"), "epochs": s["epochs_run"]}
        print(name, out[name], flush=True)
    return out


def determinism(tmp: Path) -> dict:
    rows = []
    for i in range(2):
        d = tmp / f"det{i}"
        d.mkdir()
        dlrun(["debug=smoke", "seed=7"], d)
        rows.append([r.rsplit(",", 1)[0] for r in (d / "outputs/run/metrics.csv").read_text().splitlines()])
    return {"identical_metrics": rows[0] == rows[1]}

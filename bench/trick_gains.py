"""`make bench` precompute and tricks: each trick against the same run without it (same seed),
and precompute's cached head training against running the frozen layers every step."""
from __future__ import annotations

import csv
import statistics
import subprocess
from pathlib import Path

from common import dlrun


def precompute(tmp: Path) -> dict:
    """Transfer from digits 0-4 to 5-9: train resnet's head on frozen layers, cached vs run every step."""
    out = {}
    src = tmp / "pc_src"
    src.mkdir()
    dlrun(["model=resnet", "model.width=32", "epochs=3", "data.classes=[0,1,2,3,4]"], src)
    for cache in ("false", "true"):
        d = tmp / f"pc_{cache}"
        d.mkdir()
        args = ["model=resnet", "model.width=32", "epochs=4", "data.classes=[5,6,7,8,9]", "optim.lr=1e-2",
                f"model.init_from={src / 'outputs' / 'run'}", "trick=precompute", f"trick.precompute.cache={cache}"]
        s, wall = dlrun(args, d)
        times = [float(r["time"]) for r in csv.DictReader((d / "outputs/run/metrics.csv").open())]
        out[f"cache_{cache}"] = {"command": " ".join(["dlrun", *args]), "median_epoch_s": statistics.median(times),
                                 "best_val_acc": s["best"]["val/acc"]}
    out["speedup"] = round(out["cache_false"]["median_epoch_s"] / out["cache_true"]["median_epoch_s"], 1)
    print("precompute", out, flush=True)
    return out


LENET = []  # dlrun's defaults: lenet on digits, 20 epochs, seed 0
RESNET = ["model=resnet", "model.width=16", "epochs=8"]
TRICK_JOBS = {  # trick -> (baseline overrides, extra overrides for the trick)
    **{t: (LENET, []) for t in ("lr_finder", "onecycle", "amp", "half", "tta", "swa", "ema", "dsd", "prune",
                                "label_smoothing", "mixup", "grad_clip", "channels_last")},
    "snapshot_ensemble": (LENET, ["trick.snapshot_ensemble.cycles=4"]),
    "switch_optim": (LENET, ["trick.switch_optim.lr=0.05"]),
    "progressive_resizing": (RESNET, []),
    "compile": (RESNET, ["trick.compile.enabled=true"]),
    "gradual_unfreezing": (["model=resnet", "model.width=16", "epochs=8", "data.classes=[5,6,7,8,9]",
                            "optim.lr=1e-2", "model.init_from={src}"], []),
    "precompute": (["model=resnet", "model.width=16", "epochs=8", "data.classes=[5,6,7,8,9]",
                    "optim.lr=1e-2", "model.init_from={src}"], []),
}


def tricks(tmp: Path, names: list[str] | None = None) -> dict:
    """Each trick against the same run without it (same seed): best val acc and wall time."""
    out, base = {}, {}
    src = tmp / "transfer_src"  # the "other classes" run that transfer tricks start from
    src.mkdir()
    dlrun(["model=resnet", "model.width=16", "epochs=3", "data.classes=[0,1,2,3,4]"], src)
    only = set(names or TRICK_JOBS)
    for name, (baseline, extra) in TRICK_JOBS.items():
        if name not in only:
            continue
        baseline = [b.replace("{src}", str(src / "outputs" / "run")) for b in baseline]
        key = " ".join(b.replace(str(tmp), "TMP") for b in baseline)
        if key not in base:
            d = tmp / f"base{len(base)}"
            d.mkdir()
            s, wall = dlrun(baseline, d)
            base[key] = {"command": " ".join(["dlrun", *baseline]), "best_val_acc": s["best"]["val/acc"],
                         "wall_s": round(wall, 2)}
        d = tmp / f"trick_{name}"
        d.mkdir()
        args = [*baseline, f"trick={name}", *extra]
        try:
            s, wall = dlrun(args, d)
        except subprocess.CalledProcessError as e:
            out[name] = {"command": " ".join(["dlrun", *args]), "error": (e.stderr or "").strip().splitlines()[-1:]}
            continue
        best = s["best"]
        out[name] = {"command": " ".join(["dlrun", *args]), "best_val_acc": best["val/acc"],
                     "best_val_plain_acc": best.get("val/plain_acc"), "wall_s": round(wall, 2),
                     "baseline": base[key], "report": s["tricks"][name]}
        print(name, out[name]["best_val_acc"], base[key]["best_val_acc"], wall, flush=True)
    return out

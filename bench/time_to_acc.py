"""`make bench` tta: time to a target val accuracy on the bundled data sets, dlrun's defaults and
lr_finder + onecycle."""
from __future__ import annotations

from pathlib import Path

from common import dlrun, mnist1d_root
from measure import median, read_metrics, time_to_target


TTA_JOBS = {  # name -> (overrides, target val acc); epochs: dlrun's 20, the tabular MLP needs more
    "digits_lenet": ([], 0.96),
    "mnist1d_conv1d": (["data=mnist1d", "model=conv1d"], 0.90),
    "tabular_mlp": (["data=tabular", "model=mlp", "epochs=40"], 0.95),
}
TTA_PRESETS = {"defaults": [], "lr_finder+onecycle": ["trick=[lr_finder,onecycle]"]}


def tta(tmp: Path, seeds: int = 3) -> dict:
    """Time to a target val accuracy, per data set and preset, over `seeds` seeds: the first epoch that
    reaches it, the loop seconds up to it (metrics.csv's `time`: train + val of each epoch), and the
    process's wall time to it (start-up, data, LR range test included; less the epochs after it)."""
    out = {}
    for job, (args, target) in TTA_JOBS.items():
        for preset, extra in TTA_PRESETS.items():
            runs = []
            for seed in range(seeds):
                d = tmp / f"tta-{job}-{preset}-{seed}"
                d.mkdir()
                a = [*args, *extra, f"seed={seed}", *([mnist1d_root(tmp)] if "data=mnist1d" in args else [])]
                s, wall = dlrun(a, d)
                hit = time_to_target(read_metrics(d / "outputs/run/metrics.csv"), target)
                runs.append({"seed": seed, "epoch": hit["epoch"], "loop_s": hit["loop_s"],
                             "wall_s": None if hit["epoch"] is None else round(wall - hit["loop_s_after"], 2),
                             "best_val_acc": s["best"]["val/acc"], "epochs": s["epochs_run"],
                             "run_wall_s": round(wall, 2)})
            hits = [r for r in runs if r["epoch"] is not None]
            res = {"command": " ".join(["dlrun", *args, *extra]), "target": target, "device": s["device"],
                   "reached": f"{len(hits)}/{len(runs)}", "median_epoch": median([r["epoch"] for r in hits]),
                   "median_loop_s": median([r["loop_s"] for r in hits]),
                   "median_wall_s": median([r["wall_s"] for r in hits]), "runs": runs}
            out[f"{job} {preset}"] = res
            print("tta", job, preset, {k: v for k, v in res.items() if k != "runs"}, flush=True)
    return out

"""`make bench` scaling: time per epoch as data.fraction, model.width and data.batch_size double."""
from __future__ import annotations

from pathlib import Path

from common import mnist1d_root, train_here
from measure import median, ratios, steady


SCALING = {  # job -> (overrides, {knob: values, each twice the one before})
    "digits_lenet": ([], {"data.fraction": [0.25, 0.5, 1.0], "model.width": [6, 12, 24],
                          "data.batch_size": [16, 32, 64, 128, 256]}),
    "mnist1d_conv1d": (["data=mnist1d", "model=conv1d"], {"data.fraction": [0.25, 0.5, 1.0],
                                                           "model.width": [32, 64, 128],
                                                           "data.batch_size": [16, 32, 64, 128, 256]}),
}


def scaling(tmp: Path, epochs: int = 6) -> dict:
    """Median epoch time (train + val + checkpoint + metrics.csv, after the first epoch) of short dlrun
    runs as one knob doubles, and its ratio to the row before."""
    out = {}
    for job, (args, knobs) in SCALING.items():
        root = [mnist1d_root(tmp)] if "data=mnist1d" in args else []
        for knob, values in knobs.items():
            rows = []
            for v in values:
                starts, s = train_here(tmp / f"scaling-{job}-{knob}-{v}", [*args, *root, f"{knob}={v}",
                                                                           f"epochs={epochs}"])
                sec = median(steady(starts))
                rows.append({"value": v, "s_per_epoch": round(sec, 4), "train_samples": s["data"]["train"],
                             "samples_per_s": round(s["data"]["train"] / sec), "params": s["model"]["params"]})
            for row, ratio in zip(rows, ratios([r["s_per_epoch"] for r in rows])):
                row["ratio_to_previous"] = None if ratio is None else round(ratio, 2)
            out[f"{job} {knob}"] = {"overrides": args, "epochs": epochs, "device": s["device"], "rows": rows}
            print("scaling", job, knob, rows, flush=True)
    return out

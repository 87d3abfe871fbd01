"""`make bench`: the numbers in the README, measured here. Results go to bench/results/*.json.

1. quality: `dlrun` (digits + lenet, defaults) wall time including start-up, and best val acc;
   `dlrun data=mnist1d model=conv1d` test accuracy.
2. overhead: time per epoch of dlrun's loop (train + val + checkpoint + metrics.csv) against a
   minimal hand-written loop (train + val), same model, data, batch size and seed, run
   alternately in one process; the ratio of medians.
3. determinism: two runs with the same seed give identical metrics.
4. doctor: `dlrun mode=doctor` on every model rung with its bundled data: wall time incl. start-up,
   verdict counts, and the seconds of each check.
"""
from __future__ import annotations

import argparse
import copy
import csv
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {torch.get_num_threads()} threads, {gpu}, torch {torch.__version__}"


def dlrun(args: list[str], cwd: Path) -> tuple[dict, float]:
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "dlrunner", *args, "hydra.run.dir=outputs/run"], cwd=cwd, check=True,
                   capture_output=True, text=True)
    wall = time.time() - t0
    return json.loads((cwd / "outputs" / "run" / "summary.json").read_text()), wall


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


def overhead(tmp: Path, overrides: list[str], rounds: int) -> dict:
    from hydra import compose, initialize_config_dir

    from dlrunner import runner
    from dlrunner.build import build_job
    from dlrunner.checkpoint import Checkpointer
    from dlrunner.console import Reporter
    from dlrunner.loop import Meter, TrainState
    from dlrunner.rundir import register_resolvers
    from handloop import hand_epoch

    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["device=cpu", *overrides])
    job = build_job(cfg, torch.device("cpu"), print)
    hand_model = copy.deepcopy(job.model)
    hand_opt = torch.optim.AdamW(hand_model.parameters(), lr=float(cfg.optim.lr), weight_decay=0.0)
    x, y, xv, yv = job.data.train.x, job.data.train.y, job.data.val.x, job.data.val.y
    gen = torch.Generator().manual_seed(0)
    state, quiet = TrainState(), Reporter(live=False)
    quiet.console.quiet = True
    run_dir = tmp / "overhead"
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    t_dl, t_hand = [], []
    saver = Checkpointer(run_dir / "checkpoints", float(cfg.checkpoint_interval))
    with runner.StopSignal() as stop:
        def dl_epoch():
            cfg.epochs = state.epoch + 1
            runner.run_epochs(cfg, job, state, Meter(job.device), stop, saver, run_dir, quiet)

        def timed(fn, *a) -> float:
            t0 = time.perf_counter()
            fn(*a)
            return time.perf_counter() - t0
        for r in range(rounds + 1):  # round 0 warms both up and is not counted; order alternates (ABBA)
            first_dl = r % 2 == 0
            a = timed(dl_epoch) if first_dl else timed(hand_epoch, hand_model, hand_opt, x, y, xv, yv, job.data.batch_size, gen)
            b = timed(hand_epoch, hand_model, hand_opt, x, y, xv, yv, job.data.batch_size, gen) if first_dl else timed(dl_epoch)
            if r:
                t_dl.append(a if first_dl else b)
                t_hand.append(b if first_dl else a)
    med_dl, med_hand = statistics.median(t_dl), statistics.median(t_hand)
    res = {"overrides": overrides, "rounds": rounds, "dlrun_s_per_epoch": round(med_dl, 4),
           "hand_s_per_epoch": round(med_hand, 4), "ratio": round(med_dl / med_hand, 3),
           "ratio_of_fastest": round(min(t_dl) / min(t_hand), 3)}  # less sensitive to a noisy neighbour
    print("overhead", res, flush=True)
    return res


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


def determinism(tmp: Path) -> dict:
    rows = []
    for i in range(2):
        d = tmp / f"det{i}"
        d.mkdir()
        dlrun(["debug=smoke", "seed=7"], d)
        rows.append([r.rsplit(",", 1)[0] for r in (d / "outputs/run/metrics.csv").read_text().splitlines()])
    return {"identical_metrics": rows[0] == rows[1]}


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tricks", nargs="*", default=None, help="with --only tricks: just these")
    ap.add_argument("--rounds", type=int, default=10, help="alternating epochs per overhead measurement")
    ap.add_argument("--only", choices=["quality", "overhead", "precompute", "tricks", "determinism", "doctor"],
                    default=None)
    args = ap.parse_args()
    res = {"machine": machine(), "date": time.strftime("%Y-%m-%d")}
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        if args.only in (None, "quality"):
            res["quality"] = quality(tmp)
        if args.only in (None, "overhead"):
            res["overhead"] = {"digits_lenet": overhead(tmp, [], args.rounds),
                               "mnist1d_conv1d": overhead(tmp, ["data=mnist1d", "model=conv1d",
                                                               f"data.root={tmp / 'data'}"], args.rounds)}
        if args.only in (None, "precompute"):
            res["precompute"] = precompute(tmp)
        if args.only in (None, "tricks"):
            res["tricks"] = tricks(tmp, args.tricks)
        if args.only in (None, "determinism"):
            res["determinism"] = determinism(tmp)
        if args.only in (None, "doctor"):
            res["doctor"] = doctor(tmp)
    suffix = args.only or "all"
    if args.tricks:
        suffix += "-" + "-".join(args.tricks)
    out = ROOT / "bench" / "results" / f"cpu-{suffix}.json"
    out.write_text(json.dumps(res, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

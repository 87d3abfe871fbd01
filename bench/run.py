"""`make bench`: the numbers in the README, measured here. Results go to bench/results/*.json.

1. quality: `dlrun` (digits + lenet, defaults) wall time including start-up, and best val acc;
   `dlrun data=mnist1d model=conv1d` test accuracy.
2. overhead: time per epoch of dlrun's loop (train + val + checkpoint + metrics.csv) against a
   minimal hand-written loop (train + val), same model, data, batch size and seed, run
   alternately in one process; the ratio of medians.
3. determinism: two runs with the same seed give identical metrics.
4. doctor: `dlrun mode=doctor` on every model rung with its bundled data: wall time incl. start-up,
   verdict counts, and the seconds of each check.
5. lightning: the same job under PyTorch Lightning (bench/lightning_job.py, the `bench` extra): time per
   epoch, whole runs alternated in rounds; the ratio dlrun / Lightning of medians, and final val accs.
6. tta: time to a target val accuracy on the bundled data sets, dlrun's defaults and lr_finder + onecycle.
7. scaling: time per epoch as data.fraction, model.width and data.batch_size double.
8. gpu: images/s and model FLOP utilization of resnet18 in bf16 + channels_last (+ compile) at batch
   256-1024, data on the device vs through a DataLoader (CUDA only; `skipped` otherwise).
9. startup: what a run costs besides its epochs (bench/startup.py): `dlrun debug=smoke` against the same
   job by hand, the fixed cost per job of a multirun, `dlrun --help`, `dlrun mode=doctor`.
10. presets: every recipe in conf/experiment/ as its header runs it (bench/presets.py); the figures
   its header quotes.
11. watch: time per epoch with the watchdog on against off, same job, alternated (bench/watch.py).
12. search (bench/search.py): the importance sweep against quasi-random search and Optuna's TPE, same
   space, budget, job and launcher; each pick scored on the test split with 3 fresh seeds (an hour or
   more on 2 CPU cores: `--only search`, `--search digits_lenet` for one job).
Results go to bench/results/cpu-*.json, or gpu-*.json where CUDA is present.
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
from contextlib import contextmanager
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from dlrunner.reporting.console import Reporter  # noqa: E402  (this checkout's dlrunner, put first on the path above)
from measure import median, mfu, peak_bf16, ratios, read_metrics, steady, time_to_target  # noqa: E402


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


def same_weights(tmp: Path, overrides: list[str], device: str = "cpu", epochs: int = 2) -> dict:
    """dlrun's loop and the hand loop from the same initial weights over the same batches
    (deterministic=true): the largest difference between their final weights."""
    from omegaconf import OmegaConf

    from dlrunner.modes import train as runner
    from dlrunner.build import build_job
    from dlrunner.engine.checkpoint import Checkpointer
    from dlrunner.reporting.console import Reporter
    from dlrunner.data.batches import epoch_chunks
    from dlrunner.engine.loop import Meter, TrainState
    from handloop import hand_epoch

    cfg = compose_cfg([f"device={device}", "deterministic=true", f"epochs={epochs}", *overrides])
    dev = torch.device(device)
    job = build_job(cfg, dev, print)
    hand_model = copy.deepcopy(job.model)
    hand_opt = torch.optim.AdamW(hand_model.parameters(), lr=float(cfg.optim.lr), weight_decay=0.0)
    x, y = job.data.train.x.to(dev), job.data.train.y.to(dev)
    xv, yv = job.data.val.x.to(dev), job.data.val.y.to(dev)
    quiet = Reporter(live=False)
    quiet.console.quiet = True
    run_dir = tmp / "same_weights"
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    with runner.StopSignal() as stop:
        runner.run_epochs(cfg, job, TrainState(), Meter(dev), stop, Checkpointer(run_dir / "checkpoints", 1e9),
                          run_dir, quiet, config_yaml=OmegaConf.to_yaml(cfg))
    for e in range(epochs):
        order = [c.to(dev) for c in epoch_chunks(len(y), job.data.batch_size, True, int(cfg.seed), e)]
        hand_epoch(hand_model, hand_opt, x, y, xv, yv, job.data.batch_size, torch.Generator(), order=order)
    diff = max((a - b).abs().max().item() for a, b in zip(job.model.state_dict().values(),
                                                          hand_model.state_dict().values()))
    res = {"epochs": epochs, "device": device, "max_abs_weight_diff": diff, "equal": diff == 0.0}
    print("same_weights", overrides, res, flush=True)
    return res


def overhead(tmp: Path, overrides: list[str], rounds: int, device: str = "cpu") -> dict:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from dlrunner.modes import train as runner
    from dlrunner.build import build_job
    from dlrunner.engine.checkpoint import Checkpointer
    from dlrunner.reporting.console import Reporter
    from dlrunner.engine.loop import Meter, TrainState
    from dlrunner.reporting.rundir import register_resolvers
    from handloop import hand_epoch

    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"device={device}", *overrides])
    job = build_job(cfg, torch.device(device), print)
    hand_model = copy.deepcopy(job.model)
    hand_opt = torch.optim.AdamW(hand_model.parameters(), lr=float(cfg.optim.lr), weight_decay=0.0)
    x, y, xv, yv = (t.to(device) for t in (job.data.train.x, job.data.train.y, job.data.val.x, job.data.val.y))
    gen = torch.Generator().manual_seed(0)
    state, quiet = TrainState(), Reporter(live=False)
    quiet.console.quiet = True
    run_dir = tmp / "overhead"
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    t_dl, t_hand = [], []
    saver = Checkpointer(run_dir / "checkpoints", float(cfg.checkpoint_interval))
    config_yaml = OmegaConf.to_yaml(cfg, resolve=True)  # once per run, as `dlrun` makes it
    with runner.StopSignal() as stop:
        def dl_epoch():
            cfg.epochs = state.epoch + 1
            runner.run_epochs(cfg, job, state, Meter(job.device), stop, saver, run_dir, quiet, config_yaml=config_yaml)

        def timed(fn, *a) -> float:
            t0 = time.perf_counter()
            fn(*a)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            return time.perf_counter() - t0
        for r in range(rounds + 1):  # round 0 warms both up and is not counted; order alternates (ABBA)
            first_dl = r % 2 == 0
            a = timed(dl_epoch) if first_dl else timed(hand_epoch, hand_model, hand_opt, x, y, xv, yv, job.data.batch_size, gen)
            b = timed(hand_epoch, hand_model, hand_opt, x, y, xv, yv, job.data.batch_size, gen) if first_dl else timed(dl_epoch)
            if r:
                t_dl.append(a if first_dl else b)
                t_hand.append(b if first_dl else a)
    med_dl, med_hand = statistics.median(t_dl), statistics.median(t_hand)
    res = {"overrides": overrides, "device": device, "rounds": rounds, "dlrun_s_per_epoch": round(med_dl, 4),
           "hand_s_per_epoch": round(med_hand, 4), "ratio": round(med_dl / med_hand, 3),
           "ratio_of_fastest": round(min(t_dl) / min(t_hand), 3),  # less sensitive to a noisy neighbour
           "same_weights": same_weights(tmp, overrides, device)}
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


def compose_cfg(overrides: list[str]):
    """conf/ composed with these overrides, as `dlrun` composes it."""
    from hydra import compose, initialize_config_dir

    from dlrunner.reporting.rundir import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=overrides)


class EpochStarts(Reporter):
    """A silent Reporter that notes when each epoch starts (as Lightning's on_train_epoch_start)."""

    def __init__(self):
        super().__init__(live=False)
        self.console.quiet = True
        self.starts: list[float] = []

    @contextmanager
    def epoch(self, *args, **kwargs):
        self.starts.append(time.perf_counter())
        yield


def train_here(run_dir: Path, overrides: list[str]) -> tuple[list[float], dict]:
    """`dlrun <overrides>` in this process, all of it (build, epochs with checkpoints and metrics.csv,
    the end-of-run analysis) but Hydra's start-up; returns when each epoch started, and summary.json."""
    from dlrunner.modes import train as runner
    run_dir.mkdir(parents=True)
    out = EpochStarts()
    runner.train(compose_cfg(overrides), run_dir, {}, out)
    return out.starts, json.loads((run_dir / "summary.json").read_text())


def mnist1d_root(tmp: Path) -> str:
    return f"data.root={tmp / 'data'}"  # generated once, shared by every run


LIGHTNING_JOBS = {"digits_lenet": [], "mnist1d_conv1d": ["data=mnist1d", "model=conv1d"]}


def lightning(tmp: Path, rounds: int = 4, epochs: int = 6) -> dict:
    """dlrun against Lightning on the same job (bench/lightning_job.py): whole runs of `epochs` epochs,
    the four contenders' order rotating each round; the epoch times after each run's first, pooled."""
    try:
        import lightning_job
    except ImportError:
        return {"skipped": 'pip install -e ".[bench]"'}
    import lightning as L

    from dlrunner.build import build_job, pick_device

    def with_lightning(overrides: list[str], loader: str):
        def run(d: Path) -> tuple[list[float], float]:
            job = build_job(compose_cfg(overrides), pick_device("auto"), print)
            return lightning_job.fit(job, epochs, d, loader)
        return run

    def with_dlrun(overrides: list[str]):
        def run(d: Path) -> tuple[list[float], float]:
            starts, s = train_here(d, overrides)
            return starts, s["final"]["val/acc"]
        return run

    out = {"lightning_version": L.__version__}
    for name, args in LIGHTNING_JOBS.items():
        overrides = [*args, f"epochs={epochs}", *([mnist1d_root(tmp)] if "data=mnist1d" in args else [])]
        contenders = {"dlrun": with_dlrun(overrides),
                      "dlrun_ckpt_every_epoch": with_dlrun([*overrides, "checkpoint_interval=0"]),
                      "lightning": with_lightning(overrides, "dataloader"),
                      "lightning_dlrun_batches": with_lightning(overrides, "dlrun")}
        times, acc = {k: [] for k in contenders}, {}
        for r in range(rounds):
            names = list(contenders)
            for k in names[r % len(names):] + names[:r % len(names)]:
                starts, acc[k] = contenders[k](tmp / f"lightning-{name}-{k}-{r}")
                times[k] += steady(starts)
        med = {k: median(v) for k, v in times.items()}
        res = {"overrides": overrides, "epochs": epochs, "rounds": rounds,
               **{f"{k}_s_per_epoch": round(v, 4) for k, v in med.items()},
               **{f"{k}_val_acc": v for k, v in acc.items()},
               "ratio": round(med["dlrun"] / med["lightning"], 3),
               "ratio_of_fastest": round(min(times["dlrun"]) / min(times["lightning"]), 3),
               "ratio_dlrun_batches": round(med["dlrun"] / med["lightning_dlrun_batches"], 3),
               "ratio_ckpt_every_epoch": round(med["dlrun_ckpt_every_epoch"] / med["lightning"], 3)}
        out[name] = res
        print("lightning", name, res, flush=True)
    return out


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


GPU_BATCHES = (256, 512, 1024)
GPU_MODEL = ["model=resnet18", "model.pretrained=false"]  # torchvision's, 3x3 stem for 32x32 inputs
GPU_VARIANTS = {  # name -> (overrides, where batches come from: tensors on the device | DataLoader workers)
    "bf16 + channels_last": (["trick=[amp,channels_last]", "trick.amp.dtype=bf16"], "device"),
    "bf16 + channels_last + compile": (["trick=[amp,channels_last,compile]", "trick.amp.dtype=bf16"], "device"),
    "bf16 + channels_last, DataLoader": (["trick=[amp,channels_last]", "trick.amp.dtype=bf16"], "loader"),
}


def step_flops(job) -> int:
    """FLOPs of one training step (forward + backward) of the uncompiled model on a training batch."""
    from torch.utils.flop_counter import FlopCounterMode

    _, (x, y) = next(job.train.iterate(0))
    with FlopCounterMode(display=False) as counter:
        with job.precision.autocast():
            loss = job.loss_fn(job.base_model(x), y)
        loss.backward()
    job.optimizer.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def timed_steps(job, cfg, warmup: int, steps: int) -> float:
    """Seconds for `steps` training steps of dlrun's loop (loop.train_epoch) that follow `warmup` steps
    (cuDNN autotuning, torch.compile) in the same epoch, so a DataLoader's prefetching runs on."""
    from dlrunner.engine.loop import Meter, Throughput, TrainState, train_epoch

    sync = torch.cuda.synchronize if job.device.type == "cuda" else (lambda: None)
    every, done, marks = int(cfg.log_every), [0], []

    def stop() -> bool:  # called after every step
        done[0] += 1
        if done[0] in (warmup, warmup + steps):
            sync()
            marks.append(time.perf_counter())
        return done[0] >= warmup + steps

    train_epoch(job.model, job.train, job.loss_fn, job.optimizer, job.schedule, job.precision, job.tricks,
                TrainState(), Meter(job.device), stop, Throughput(every, lambda *a: None, lambda: 0.0),
                nan_every=every)
    return marks[1] - marks[0]


def gpu(tmp: Path, device: str | None = None, batches=GPU_BATCHES, model=GPU_MODEL, n: int = 50_000,
        warmup: int = 10, steps: int = 30, variants=None, workers: int = 4) -> dict:
    """Training throughput of dlrun's loop on CIFAR-shaped data generated here (bench/synthetic.py):
    images/s, and model FLOP utilization against the GPU's dense bf16 peak (FLOPs counted by
    torch.utils.flop_counter on one step). device: cuda by default; anything else is for testing."""
    if device is None:
        if not torch.cuda.is_available():
            return {"skipped": "no CUDA"}
        device = "cuda"
    from torch.utils.data import TensorDataset

    from dlrunner.build import build_job, pick_device
    from dlrunner.data.batches import LoaderBatches

    name = torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu"
    peak = peak_bf16(name) if device.startswith("cuda") else None
    out = {"gpu": name, "peak_bf16_tflops": peak and peak / 1e12, "model": model, "images": n,
           "warmup_steps": warmup, "timed_steps": steps, "dataloader_workers": workers, "rows": []}
    for variant, (args, source) in GPU_VARIANTS.items():
        if variants is not None and variant not in variants:
            continue
        for bs in batches:
            cfg = compose_cfg([f"device={device}", *model, "data._target_=synthetic.cifar_like", f"+data.n={n}",
                               "data.val_fraction=0.02", "data.test_fraction=0.02", f"data.batch_size={bs}", *args])
            job = build_job(cfg, pick_device(device), print)
            if source == "loader":  # the same tensors, held on the host, through DataLoader workers
                data = TensorDataset(job.data.train.x, job.data.train.y)
                job.train = LoaderBatches(data, bs, shuffle=True, seed=int(cfg.seed), device=job.device,
                                          num_workers=workers)
            n_steps = min(steps, len(job.train) - 1 - warmup)  # full batches only: one shape to compile
            if n_steps < 1:
                raise ValueError(f"gpu: {n} images give too few batches of {bs} for {warmup} + {steps} steps")
            if device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            sec = timed_steps(job, cfg, warmup, n_steps)
            flops = step_flops(job)  # after the timing: it starts an iterator of its own
            row = {"variant": variant, "batch_size": bs, "images_per_s": round(n_steps * bs / sec),
                   "step_ms": round(1000 * sec / n_steps, 2), "gflops_per_image": round(flops / bs / 1e9, 3),
                   "tflops_per_s": round(flops * n_steps / sec / 1e12, 1),
                   "mfu": None if peak is None else round(mfu(flops, n_steps / sec, peak), 4),
                   "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)
                   if device.startswith("cuda") else None}
            out["rows"].append(row)
            print("gpu", row, flush=True)
            del job
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tricks", nargs="*", default=None, help="with --only tricks: just these")
    ap.add_argument("--rounds", type=int, default=10, help="alternating epochs per overhead measurement")
    ap.add_argument("--seeds", type=int, default=3, help="seeds per time-to-accuracy row")
    ap.add_argument("--only", choices=["quality", "overhead", "precompute", "tricks", "determinism", "doctor",
                                       "lightning", "tta", "scaling", "gpu", "startup", "presets",
                                       "watch", "search"], default=None)
    ap.add_argument("--presets", nargs="*", default=None, help="with --only presets: just these")
    ap.add_argument("--search", nargs="*", default=None, help="with --only search: just these jobs (bench/search.py JOBS)")
    ap.add_argument("--methods", nargs="*", default=None, help="with --only search: just these sweep.method values")
    ap.add_argument("--results", type=Path, default=ROOT / "bench" / "results", help="folder for the JSON")
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
            if torch.cuda.is_available():  # the CUDA bar: resnet on CIFAR-shaped data (bench/synthetic.py)
                res["overhead"]["cifar_resnet_cuda"] = overhead(
                    tmp, ["model=resnet", "data._target_=synthetic.cifar_like", "+data.n=20000", "data.batch_size=256",
                          "data.val_fraction=0.1", "data.test_fraction=0.1"], args.rounds, device="cuda")
        if args.only in (None, "precompute"):
            res["precompute"] = precompute(tmp)
        if args.only in (None, "tricks"):
            res["tricks"] = tricks(tmp, args.tricks)
        if args.only in (None, "determinism"):
            res["determinism"] = determinism(tmp)
        if args.only in (None, "doctor"):
            res["doctor"] = doctor(tmp)
        if args.only in (None, "lightning"):
            res["lightning"] = lightning(tmp)
        if args.only in (None, "tta"):
            res["tta"] = tta(tmp, args.seeds)
        if args.only in (None, "scaling"):
            res["scaling"] = scaling(tmp)
        if args.only in (None, "gpu"):
            res["gpu"] = gpu(tmp)
        if args.only in (None, "startup"):
            from startup import startup

            res["startup"] = startup(tmp)
        if args.only in (None, "presets"):
            from presets import presets

            res["presets"] = presets(tmp, args.presets)
        if args.only in (None, "watch"):  # the watchdog's cost against the same epochs without it
            import watch as watch_bench

            res["watch"] = {name: watch_bench.cost(tmp, o, args.rounds, compose_cfg) for name, o in
                            {"digits_lenet": [], "mnist1d_conv1d": ["data=mnist1d", "model=conv1d",
                                                                   f"data.root={tmp / 'data'}"]}.items()}
        if args.only in (None, "search"):
            from search import search  # bench/search.py

            res["search"] = search(tmp, args.search, args.methods)
    suffix = args.only or "all"
    if args.tricks:
        suffix += "-" + "-".join(args.tricks)
    if args.presets:  # a subset: cpu-presets.json keeps every preset's figures
        suffix += "-" + "-".join(args.presets)
    if args.search:
        suffix += "-" + "-".join(args.search + (args.methods or []))
    args.results.mkdir(parents=True, exist_ok=True)
    out = args.results / f"{'gpu' if torch.cuda.is_available() else 'cpu'}-{suffix}.json"
    out.write_text(json.dumps(res, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

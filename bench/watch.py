"""The watchdog's cost (`make bench`, `--only watch`), two ways: time per epoch of the same job with
watch on and off, alternated ABBA in one process (round 0 warms up and is not counted), the ratio
of medians; the same in process CPU time (less sensitive to other processes on a shared machine:
time this process waits for a core is not counted); and the seconds spent inside the watchdog's
calls as a share of the epochs they ran in (median over the watched epochs). The bar: at most 2%."""
from __future__ import annotations

import statistics
import time
from pathlib import Path


def cost(tmp: Path, overrides: list[str], rounds: int, compose_cfg, device: str = "cpu") -> dict:
    import torch
    from omegaconf import OmegaConf

    from dlrunner import watch
    from dlrunner.build import build_job
    from dlrunner.engine.checkpoint import Checkpointer
    from dlrunner.engine.loop import Meter, TrainState
    from dlrunner.modes import train as runner
    from dlrunner.reporting.console import Reporter
    from measure import abba

    cfg = compose_cfg([f"device={device}", *overrides])
    job = build_job(cfg, torch.device(device), print)
    dog = watch.build(job, print, int(cfg.watch_every))
    inside = timed_calls(dog)  # wall and CPU seconds in the watchdog's calls during the current epoch
    state, quiet = TrainState(), Reporter(live=False)
    quiet.console.quiet = True
    run_dir = tmp / "watch_cost"
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    saver = Checkpointer(run_dir / "checkpoints", float(cfg.checkpoint_interval))
    config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
    with runner.StopSignal() as stop:
        def epoch(on: bool) -> tuple[float, float, float, float]:
            """(wall, CPU) seconds of one epoch, and the watchdog's share of each (watched epochs)."""
            job.watch = dog if on else None
            cfg.epochs = state.epoch + 1
            inside[0] = inside[1] = 0.0
            t0, c0 = time.perf_counter(), time.process_time()
            runner.run_epochs(cfg, job, state, Meter(job.device), stop, saver, run_dir, quiet, config_yaml=config_yaml)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t, c = time.perf_counter() - t0, time.process_time() - c0
            return t, c, (inside[0] / t if on else 0.0), (inside[1] / c if on else 0.0)
        watched, plain = abba(lambda: epoch(True), lambda: epoch(False), rounds)
    (times_on, cpu_on, shares, cpu_shares), (times_off, cpu_off, _, _) = zip(*watched), zip(*plain)
    on, off = statistics.median(times_on), statistics.median(times_off)
    res = {"overrides": overrides, "device": device, "rounds": rounds, "every": int(cfg.watch_every),
           "steps_per_epoch": len(job.train), "checks": dog.checks, "findings": len(dog.alerts),
           "watch_s_per_epoch": round(on, 4), "no_watch_s_per_epoch": round(off, 4), "ratio": round(on / off, 4),
           "ratio_of_fastest": round(min(times_on) / min(times_off), 4),
           "cpu_ratio": round(statistics.median(cpu_on) / statistics.median(cpu_off), 4),
           "share_of_epoch": round(statistics.median(shares), 5), "share_max": round(max(shares), 5),
           "cpu_share_of_epoch": round(statistics.median(cpu_shares), 5)}
    print("watch", res, flush=True)
    return res


def timed_calls(dog) -> list[float]:
    """Wrap the watchdog's per-step and per-epoch calls so that they add their wall and CPU
    seconds to the returned pair (reset it per epoch)."""
    inside = [0.0, 0.0]

    def timed(fn):
        def call(*a, **k):
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                return fn(*a, **k)
            finally:
                inside[0] += time.perf_counter() - t0
                inside[1] += time.process_time() - c0
        return call
    for name in ("before_step", "after_step", "epoch_end"):
        setattr(dog, name, timed(getattr(dog, name)))
    return inside

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

    from dlrunner import runner, watch
    from dlrunner.build import build_job
    from dlrunner.checkpoint import Checkpointer
    from dlrunner.console import Reporter
    from dlrunner.loop import Meter, TrainState

    cfg = compose_cfg([f"device={device}", *overrides])
    job = build_job(cfg, torch.device(device), print)
    dog = watch.build(job, print, int(cfg.watch_every))
    inside = [0.0, 0.0]  # wall and CPU seconds in the watchdog's calls during the current epoch

    def timed_call(fn):
        def call(*a, **k):
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                return fn(*a, **k)
            finally:
                inside[0] += time.perf_counter() - t0
                inside[1] += time.process_time() - c0
        return call
    for name in ("before_step", "after_step", "epoch_end"):
        setattr(dog, name, timed_call(getattr(dog, name)))
    state, quiet = TrainState(), Reporter(live=False)
    quiet.console.quiet = True
    run_dir = tmp / "watch_cost"
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    saver = Checkpointer(run_dir / "checkpoints", float(cfg.checkpoint_interval))
    config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
    times: dict[bool, list[float]] = {True: [], False: []}
    cpu: dict[bool, list[float]] = {True: [], False: []}
    shares: list[float] = []
    cpu_shares: list[float] = []
    with runner.StopSignal() as stop:
        def epoch(on: bool) -> tuple[float, float]:
            job.watch = dog if on else None
            cfg.epochs = state.epoch + 1
            inside[0] = inside[1] = 0.0
            t0, c0 = time.perf_counter(), time.process_time()
            runner.run_epochs(cfg, job, state, Meter(job.device), stop, saver, run_dir, quiet, config_yaml=config_yaml)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t, c = time.perf_counter() - t0, time.process_time() - c0
            if on:
                shares.append(inside[0] / t)
                cpu_shares.append(inside[1] / c)
            return t, c
        for r in range(rounds + 1):
            order = (True, False) if r % 2 == 0 else (False, True)
            for on in order:
                t, c = epoch(on)
                if r:
                    times[on].append(t)
                    cpu[on].append(c)
    on, off = statistics.median(times[True]), statistics.median(times[False])
    res = {"overrides": overrides, "device": device, "rounds": rounds, "every": int(cfg.watch_every),
           "steps_per_epoch": len(job.train), "checks": dog.checks, "findings": len(dog.alerts),
           "watch_s_per_epoch": round(on, 4), "no_watch_s_per_epoch": round(off, 4), "ratio": round(on / off, 4),
           "ratio_of_fastest": round(min(times[True]) / min(times[False]), 4),
           "cpu_ratio": round(statistics.median(cpu[True]) / statistics.median(cpu[False]), 4),
           "share_of_epoch": round(statistics.median(shares[1:]), 5), "share_max": round(max(shares[1:]), 5),
           "cpu_share_of_epoch": round(statistics.median(cpu_shares[1:]), 5)}
    print("watch", res, flush=True)
    return res

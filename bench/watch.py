"""The watchdog's cost (`make bench`, `--only watch`): time per epoch of the same job with watch on
and off, alternated ABBA in one process (round 0 warms up and is not counted); the ratio of
medians. The bar: at most 1.02."""
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
    state, quiet = TrainState(), Reporter(live=False)
    quiet.console.quiet = True
    run_dir = tmp / "watch_cost"
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    saver = Checkpointer(run_dir / "checkpoints", float(cfg.checkpoint_interval))
    config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
    times: dict[bool, list[float]] = {True: [], False: []}
    with runner.StopSignal() as stop:
        def epoch(on: bool) -> float:
            job.watch = dog if on else None
            cfg.epochs = state.epoch + 1
            t0 = time.perf_counter()
            runner.run_epochs(cfg, job, state, Meter(job.device), stop, saver, run_dir, quiet, config_yaml=config_yaml)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            return time.perf_counter() - t0
        for r in range(rounds + 1):
            order = (True, False) if r % 2 == 0 else (False, True)
            for on in order:
                t = epoch(on)
                if r:
                    times[on].append(t)
    on, off = statistics.median(times[True]), statistics.median(times[False])
    res = {"overrides": overrides, "device": device, "rounds": rounds, "every": int(cfg.watch_every),
           "steps_per_epoch": len(job.train), "checks": dog.checks, "findings": len(dog.alerts),
           "watch_s_per_epoch": round(on, 4), "no_watch_s_per_epoch": round(off, 4), "ratio": round(on / off, 4),
           "ratio_of_fastest": round(min(times[True]) / min(times[False]), 4)}
    print("watch", res, flush=True)
    return res

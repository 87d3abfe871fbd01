"""`make bench` overhead: dlrun's epoch against a minimal hand-written loop, same model, data,
batch size and seed, alternated in one process; and that both end on the very same weights."""
from __future__ import annotations

import copy
import statistics
import time
from pathlib import Path

import torch

from common import compose_cfg


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
    from omegaconf import OmegaConf

    from dlrunner.modes import train as runner
    from dlrunner.build import build_job
    from dlrunner.engine.checkpoint import Checkpointer
    from dlrunner.reporting.console import Reporter
    from dlrunner.engine.loop import Meter, TrainState
    from handloop import hand_epoch
    from measure import abba

    cfg = compose_cfg([f"device={device}", *overrides])
    job = build_job(cfg, torch.device(device), print)
    hand_model = copy.deepcopy(job.model)
    hand_opt = torch.optim.AdamW(hand_model.parameters(), lr=float(cfg.optim.lr), weight_decay=0.0)
    x, y, xv, yv = (t.to(device) for t in (job.data.train.x, job.data.train.y, job.data.val.x, job.data.val.y))
    gen = torch.Generator().manual_seed(0)
    state, quiet = TrainState(), Reporter(live=False)
    quiet.console.quiet = True
    run_dir = tmp / "overhead"
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
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
        t_dl, t_hand = abba(lambda: timed(dl_epoch),
                            lambda: timed(hand_epoch, hand_model, hand_opt, x, y, xv, yv, job.data.batch_size, gen),
                            rounds)
    med_dl, med_hand = statistics.median(t_dl), statistics.median(t_hand)
    res = {"overrides": overrides, "device": device, "rounds": rounds, "dlrun_s_per_epoch": round(med_dl, 4),
           "hand_s_per_epoch": round(med_hand, 4), "ratio": round(med_dl / med_hand, 3),
           "ratio_of_fastest": round(min(t_dl) / min(t_hand), 3),  # less sensitive to a noisy neighbour
           "same_weights": same_weights(tmp, overrides, device)}
    print("overhead", res, flush=True)
    return res

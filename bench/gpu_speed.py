"""`make bench` gpu: images/s and model FLOP utilization of resnet18 on CIFAR-shaped data (CUDA only)."""
from __future__ import annotations

import time
from pathlib import Path

import torch

from common import compose_cfg
from measure import mfu, peak_bf16


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
